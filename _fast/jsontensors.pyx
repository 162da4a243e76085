# distutils: language = c++
# distutils: sources = _fast/simdjson_unity.cc
# distutils: extra_compile_args = -std=c++17
"""Native JSON decoding of Seldon and V2 request bodies into numpy arrays.

simdjson parses the body (numbers are converted once, correctly rounded, into its tape);
this module walks the tape: it finds the tensors (Seldon ``data.ndarray`` and
``data.tensor.values``, V2 ``inputs[].data``), checks their nesting and element types, and
writes their elements straight into numpy buffers, so no Python object is made per element.
Everything else in the document becomes the same Python objects ``json.loads`` would give.

A document this module does not decide on its own (malformed for simdjson, NaN literals,
integers beyond 64 bits, a tensor that is ragged, mixed or out of range) makes the call
return ``None``; codec/native.py then runs the reference codec, whose result (or CodecError)
is by definition the right one.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.long cimport PyLong_FromLongLong, PyLong_FromUnsignedLongLong
from cpython.float cimport PyFloat_FromDouble
from cpython.unicode cimport PyUnicode_DecodeUTF8
from cpython.mem cimport PyMem_Malloc
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, INT64_MIN
from libc.math cimport isinf
from libcpp.vector cimport vector
from cython.operator cimport preincrement as inc

cimport numpy as cnp

cnp.import_array()

import numpy as np


cdef extern from "json_dom.h":
    cdef cppclass element "simdjson::dom::element":
        element()

    cdef cppclass array "simdjson::dom::array":
        cppclass iterator:
            element operator*()
            iterator operator++()
            bint operator!=(iterator)
        iterator begin()
        iterator end()

    cdef cppclass jobject "simdjson::dom::object":
        cppclass iterator:
            iterator operator++()
            bint operator!=(iterator)
            uint32_t key_length()
            const char *key_c_str()
            element value()
        iterator begin()
        iterator end()

    cdef cppclass parser "simdjson::dom::parser":
        parser() except +


cdef extern from "json_dom.h" namespace "fsj":
    cdef enum:
        K_ARRAY, K_OBJECT, K_INT64, K_UINT64, K_DOUBLE, K_STRING, K_BOOL, K_NULL
    int kind(const element &) noexcept nogil
    double as_double(const element &) noexcept nogil
    int64_t as_int64(const element &) noexcept nogil
    uint64_t as_uint64(const element &) noexcept nogil
    bint as_bool(const element &) noexcept nogil
    array as_array(const element &) noexcept nogil
    jobject as_object(const element &) noexcept nogil
    const char *as_str(const element &, size_t *) noexcept nogil
    size_t array_size(const array &) noexcept nogil
    size_t array_slots(const array &) noexcept nogil
    element first(const array &) noexcept nogil
    int parse(parser &, const char *, size_t, element *) noexcept nogil
    const char *implementation_name() noexcept nogil


cdef extern from "shortest.h" namespace "fss":
    double shortest_f16(uint16_t) noexcept nogil


cdef enum:
    MAX_DEPTH = 512  # deeper documents go to the reference (json/orjson recursion limits)
    MAX_NDIM = 32
    SATURATED = 0xFFFFFF  # simdjson's array size counter saturates here
    KEEP_PARSER_BYTES = 16 * 1024 * 1024  # larger bodies get a one-off parser, freed after


# past this product of a declared shape's dimensions (zeros as ones) the reference decides
cdef size_t SHAPE_BOUND = 0xFFFFFFFFFFFF


class NeedsReference(Exception):
    """This document is for the reference codec to decide."""


cdef class _Parser:
    """A reusable simdjson parser (its buffers grow to the largest body seen) plus a
    scratch list of tensor leaves. Used with the GIL held, by one call at a time."""

    cdef parser *p
    cdef vector[element] leaves
    cdef bint busy

    def __cinit__(self):
        self.p = new parser()
        self.busy = False

    def __dealloc__(self):
        del self.p


cdef _Parser _shared = _Parser()


# ------------------------------------------------------------------ generic values


cdef inline bint _maybe_big_int(double d) noexcept:
    """simdjson stores an integer token beyond 64 bits as a double; from the tape it cannot be
    told apart from a float token, so every double of that magnitude goes to the reference
    (json.loads keeps such integers as ints)."""
    return d >= 9223372036854775808.0 or d <= -9223372036854775808.0


cdef str _decode_str(const char *data, size_t size):
    try:
        return PyUnicode_DecodeUTF8(data, <Py_ssize_t>size, NULL)
    except UnicodeDecodeError:
        raise NeedsReference() from None


cdef object to_py(const element &e, int depth):
    """The Python value json.loads would give for this element."""
    cdef int k = kind(e)
    cdef size_t size
    cdef const char *text
    cdef double d
    if k == K_DOUBLE:
        d = as_double(e)
        if _maybe_big_int(d):
            raise NeedsReference()
        return PyFloat_FromDouble(d)
    if k == K_INT64:
        return PyLong_FromLongLong(as_int64(e))
    if k == K_STRING:
        text = as_str(e, &size)
        return _decode_str(text, size)
    if k == K_ARRAY:
        return _list(as_array(e), depth + 1)
    if k == K_OBJECT:
        return _dict(as_object(e), depth + 1)
    if k == K_UINT64:
        return PyLong_FromUnsignedLongLong(as_uint64(e))
    if k == K_BOOL:
        return True if as_bool(e) else False
    return None


cdef list _list(array a, int depth):
    if depth > MAX_DEPTH:
        raise NeedsReference()
    cdef list out = []
    cdef element child
    for child in a:
        out.append(to_py(child, depth))
    return out


cdef dict _dict(jobject o, int depth):
    if depth > MAX_DEPTH:
        raise NeedsReference()
    cdef dict out = {}
    cdef jobject.iterator it = o.begin()
    cdef jobject.iterator stop = o.end()
    while it != stop:
        out[_decode_str(it.key_c_str(), it.key_length())] = to_py(it.value(), depth)
        inc(it)
    return out


cdef inline bint _key_is(jobject.iterator &it, const char *name, uint32_t size):
    cdef uint32_t i
    cdef const char *key
    if it.key_length() != size:
        return False
    key = it.key_c_str()
    for i in range(size):
        if key[i] != name[i]:
            return False
    return True


# ------------------------------------------------------------------ tensor structure


cdef int _rect_shape(const element &e, cnp.npy_intp *shape) noexcept:
    """Follow first elements down from an array: the shape numpy would give it if it is
    rectangular. Returns ndim, or -1 if it cannot be a fast-path tensor (too deep, an array
    too long for simdjson's size counter, or more elements than the document holds)."""
    cdef int ndim = 0
    cdef size_t n
    cdef size_t total = 1
    cdef size_t bound
    cdef element cur = e
    cdef array a = as_array(e)
    bound = array_slots(a)
    while kind(cur) == K_ARRAY:
        if ndim == MAX_NDIM:
            return -1
        a = as_array(cur)
        n = array_size(a)
        if n >= SATURATED:
            return -1
        shape[ndim] = <cnp.npy_intp>n
        ndim += 1
        if n == 0:
            return ndim
        total *= n
        if total > bound:
            return -1
        cur = first(a)
    return ndim


cdef bint _collect(const element &e, int depth, int ndim, cnp.npy_intp *shape, vector[element] *leaves) noexcept:
    """Append the leaves of a rectangular nested array (row-major) to ``leaves``; False if
    the nesting is ragged (an array of another length, or an array where a leaf should be)."""
    cdef array a = as_array(e)
    cdef element child
    if <cnp.npy_intp>array_size(a) != shape[depth]:
        return False
    if depth == ndim - 1:
        for child in a:
            if kind(child) == K_ARRAY:
                return False
            leaves.push_back(child)
        return True
    for child in a:
        if kind(child) != K_ARRAY or not _collect(child, depth + 1, ndim, shape, leaves):
            return False
    return True


cdef bint _fill_f64(const element &e, int depth, int ndim, cnp.npy_intp *shape, double *out,
                    size_t *idx, bint *has_double) noexcept:
    """Write the leaves of a rectangular nested array of JSON numbers within int64 into
    ``out`` (row-major, as float64); False if ragged or any leaf is something else."""
    cdef array a = as_array(e)
    cdef element child
    cdef int k
    cdef size_t i = idx[0]
    if <cnp.npy_intp>array_size(a) != shape[depth]:
        return False
    if depth == ndim - 1:
        for child in a:
            k = kind(child)
            if k == K_DOUBLE:
                out[i] = as_double(child)
                if _maybe_big_int(out[i]):
                    return False
                has_double[0] = True
            elif k == K_INT64:
                out[i] = <double>as_int64(child)
            else:
                return False
            i += 1
        idx[0] = i
        return True
    for child in a:
        if kind(child) != K_ARRAY or not _fill_f64(child, depth + 1, ndim, shape, out, idx, has_double):
            return False
    return True


cdef void _fill_i64(const element &e, int depth, int ndim, int64_t *out, size_t *idx) noexcept:
    """Second pass for an all-integer array that _fill_f64 has already checked."""
    cdef element child
    if depth == ndim - 1:
        for child in as_array(e):
            out[idx[0]] = as_int64(child)
            idx[0] += 1
        return
    for child in as_array(e):
        _fill_i64(child, depth + 1, ndim, out, idx)


cdef object seldon_array(_Parser ps, const element &e):
    """np.array(value) for a numeric rectangular nested array of JSON numbers within int64
    (int64 if all are integers, else float64), or None for the generic path."""
    cdef cnp.npy_intp shape[MAX_NDIM]
    cdef int ndim = _rect_shape(e, shape)
    cdef size_t idx = 0
    cdef bint has_double = False
    cdef cnp.ndarray out
    if ndim < 0:
        return None
    out = cnp.PyArray_EMPTY(ndim, shape, cnp.NPY_FLOAT64, 0)
    if not _fill_f64(e, 0, ndim, shape, <double *>cnp.PyArray_DATA(out), &idx, &has_double):
        return None
    if has_double or idx == 0:
        return out
    out = cnp.PyArray_EMPTY(ndim, shape, cnp.NPY_INT64, 0)
    idx = 0
    _fill_i64(e, 0, ndim, <int64_t *>cnp.PyArray_DATA(out), &idx)
    return out


# ------------------------------------------------------------------ Seldon


cdef object _seldon_numeric_or_py(_Parser ps, const element &e, int depth):
    cdef object arr
    if kind(e) == K_ARRAY:
        arr = seldon_array(ps, e)
        if arr is not None:
            return arr
    return to_py(e, depth)


cdef dict _seldon_tensor(_Parser ps, jobject o, int depth):
    cdef dict out = {}
    cdef jobject.iterator it = o.begin()
    cdef jobject.iterator stop = o.end()
    while it != stop:
        key = _decode_str(it.key_c_str(), it.key_length())
        if _key_is(it, b"values", 6):
            out[key] = _seldon_numeric_or_py(ps, it.value(), depth)
        else:
            out[key] = to_py(it.value(), depth)
        inc(it)
    return out


cdef dict _seldon_data(_Parser ps, jobject o, int depth):
    cdef dict out = {}
    cdef jobject.iterator it = o.begin()
    cdef jobject.iterator stop = o.end()
    cdef element value
    while it != stop:
        key = _decode_str(it.key_c_str(), it.key_length())
        value = it.value()
        if _key_is(it, b"ndarray", 7):
            out[key] = _seldon_numeric_or_py(ps, value, depth)
        elif _key_is(it, b"tensor", 6) and kind(value) == K_OBJECT:
            out[key] = _seldon_tensor(ps, as_object(value), depth + 1)
        else:
            out[key] = to_py(value, depth)
        inc(it)
    return out


cdef object _seldon_message_list(_Parser ps, const element &e, int depth):
    cdef list out = []
    cdef element child
    for child in as_array(e):
        if kind(child) == K_OBJECT:
            out.append(_seldon_message(ps, as_object(child), depth + 1, False))
        else:
            out.append(to_py(child, depth))
    return out


cdef dict _seldon_message(_Parser ps, jobject o, int depth, bint top):
    cdef dict out = {}
    cdef jobject.iterator it = o.begin()
    cdef jobject.iterator stop = o.end()
    cdef element value
    while it != stop:
        key = _decode_str(it.key_c_str(), it.key_length())
        value = it.value()
        if _key_is(it, b"data", 4) and kind(value) == K_OBJECT:
            out[key] = _seldon_data(ps, as_object(value), depth + 1)
        elif top and _key_is(it, b"seldonMessages", 14) and kind(value) == K_ARRAY:
            out[key] = _seldon_message_list(ps, value, depth + 1)
        else:
            out[key] = to_py(value, depth)
        inc(it)
    return out


# ------------------------------------------------------------------ V2


cdef enum:
    DT_BOOL, DT_INT, DT_UINT, DT_FP16, DT_FP32, DT_FP64, DT_BYTES

_V2_CODES = {
    "BOOL": (DT_BOOL, 1), "INT8": (DT_INT, 1), "INT16": (DT_INT, 2), "INT32": (DT_INT, 4),
    "INT64": (DT_INT, 8), "UINT8": (DT_UINT, 1), "UINT16": (DT_UINT, 2), "UINT32": (DT_UINT, 4),
    "UINT64": (DT_UINT, 8), "FP16": (DT_FP16, 2), "FP32": (DT_FP32, 4), "FP64": (DT_FP64, 8),
    "BYTES": (DT_BYTES, 0),
}


cdef object v2_tensor(_Parser ps, const element &data, str datatype, const element &shape_el):
    """The array of a V2 input's data, declared datatype and shape; NeedsReference for
    anything the reference must judge (bad shape, unknown datatype, ragged, wrong element
    types, out of range, count mismatch)."""
    cdef cnp.npy_intp shape[MAX_NDIM]
    cdef cnp.npy_intp dshape[MAX_NDIM]
    cdef int ndim = 0, dndim, code, width, k
    cdef size_t i, count = 1, bound = 1, dim_size
    cdef element dim
    cdef int64_t v, lo = 0
    cdef uint64_t u, hi = 0
    cdef size_t size
    cdef const char *text
    cdef double d
    cdef float f
    cdef char *out
    cdef cnp.ndarray arr
    entry = _V2_CODES.get(datatype)
    if entry is None or kind(data) != K_ARRAY:
        raise NeedsReference()
    code, width = entry
    for dim in as_array(shape_el):
        if ndim == MAX_NDIM or kind(dim) != K_INT64 or as_int64(dim) < 0:
            raise NeedsReference()
        shape[ndim] = <cnp.npy_intp>as_int64(dim)
        dim_size = <size_t>shape[ndim]
        # checked multiplication: a product that would wrap (a shape [2^32, 2^32] with no data
        # reads as 0 elements) or that numpy can't hold (zero dimensions count as one there)
        # is the reference's to refuse (400)
        if dim_size > 1 and bound > SHAPE_BOUND // dim_size:
            raise NeedsReference()
        bound *= dim_size if dim_size > 1 else 1
        count *= dim_size
        ndim += 1
    dndim = _rect_shape(data, dshape)
    if dndim < 0:
        raise NeedsReference()
    ps.leaves.clear()
    if not _collect(data, 0, dndim, dshape, &ps.leaves) or ps.leaves.size() != count:
        raise NeedsReference()
    if code == DT_BYTES:
        items = []
        for i in range(count):
            if kind(ps.leaves[i]) != K_STRING:
                raise NeedsReference()
            text = as_str(ps.leaves[i], &size)
            items.append(PyBytes_FromStringAndSize(text, <Py_ssize_t>size))
        arr = np.empty(count, dtype=object)
        arr[:] = items
        return arr.reshape([shape[i] for i in range(ndim)])
    if code == DT_BOOL:
        arr = cnp.PyArray_EMPTY(ndim, shape, cnp.NPY_BOOL, 0)
    elif code == DT_INT:
        arr = cnp.PyArray_EMPTY(ndim, shape, {1: cnp.NPY_INT8, 2: cnp.NPY_INT16, 4: cnp.NPY_INT32, 8: cnp.NPY_INT64}[width], 0)
        lo = -(<int64_t>1 << (8 * width - 1)) if width < 8 else INT64_MIN
        hi = (<uint64_t>1 << (8 * width - 1)) - 1
    elif code == DT_UINT:
        arr = cnp.PyArray_EMPTY(ndim, shape, {1: cnp.NPY_UINT8, 2: cnp.NPY_UINT16, 4: cnp.NPY_UINT32, 8: cnp.NPY_UINT64}[width], 0)
        hi = (<uint64_t>1 << (8 * width)) - 1 if width < 8 else <uint64_t>0xFFFFFFFFFFFFFFFF
    elif code == DT_FP32:
        arr = cnp.PyArray_EMPTY(ndim, shape, cnp.NPY_FLOAT32, 0)
    else:  # FP64, and FP16 (cast from float64 by numpy below)
        arr = cnp.PyArray_EMPTY(ndim, shape, cnp.NPY_FLOAT64, 0)
    out = <char *>cnp.PyArray_DATA(arr)
    for i in range(count):
        k = kind(ps.leaves[i])
        if code == DT_BOOL:
            if k != K_BOOL:
                raise NeedsReference()
            out[i] = 1 if as_bool(ps.leaves[i]) else 0
        elif code == DT_INT:
            if k != K_INT64:
                raise NeedsReference()
            v = as_int64(ps.leaves[i])
            if v < lo or (v > 0 and <uint64_t>v > hi):
                raise NeedsReference()
            if width == 1:
                (<int8_t *>out)[i] = <int8_t>v
            elif width == 2:
                (<int16_t *>out)[i] = <int16_t>v
            elif width == 4:
                (<int32_t *>out)[i] = <int32_t>v
            else:
                (<int64_t *>out)[i] = v
        elif code == DT_UINT:
            if k == K_INT64:
                v = as_int64(ps.leaves[i])
                if v < 0:
                    raise NeedsReference()
                u = <uint64_t>v
            elif k == K_UINT64:
                u = as_uint64(ps.leaves[i])
            else:
                raise NeedsReference()
            if u > hi:
                raise NeedsReference()
            if width == 1:
                (<uint8_t *>out)[i] = <uint8_t>u
            elif width == 2:
                (<uint16_t *>out)[i] = <uint16_t>u
            elif width == 4:
                (<uint32_t *>out)[i] = <uint32_t>u
            else:
                (<uint64_t *>out)[i] = u
        else:
            if k == K_DOUBLE:
                d = as_double(ps.leaves[i])
                if _maybe_big_int(d):
                    raise NeedsReference()
            elif k == K_INT64:
                d = <double>as_int64(ps.leaves[i])
            elif k == K_UINT64:
                d = <double>as_uint64(ps.leaves[i])
            else:
                raise NeedsReference()
            if code == DT_FP32:
                f = <float>d
                if isinf(f):  # simdjson numbers are finite, so this is an overflow
                    raise NeedsReference()
                (<float *>out)[i] = f
            else:
                (<double *>out)[i] = d
    if code == DT_FP16:
        with np.errstate(over="ignore"):
            half = arr.astype(np.float16)
        if count and bool(np.isinf(half).any()):
            raise NeedsReference()
        return half
    return arr


cdef dict _v2_input(_Parser ps, jobject o, int depth):
    cdef dict out = {}
    cdef jobject.iterator it = o.begin()
    cdef jobject.iterator stop = o.end()
    cdef element data, datatype, shape
    cdef bint has_data = False, has_datatype = False, has_shape = False
    cdef size_t size
    cdef const char *text
    while it != stop:
        key = _decode_str(it.key_c_str(), it.key_length())
        if _key_is(it, b"data", 4):
            data = it.value()
            has_data = True
            out[key] = None  # placeholder keeps the key's first position, as json does
        else:
            if _key_is(it, b"datatype", 8):
                datatype = it.value()
                has_datatype = True
            elif _key_is(it, b"shape", 5):
                shape = it.value()
                has_shape = True
            out[key] = to_py(it.value(), depth)
        inc(it)
    if has_data:
        if has_datatype and has_shape and kind(datatype) == K_STRING and kind(shape) == K_ARRAY:
            text = as_str(datatype, &size)
            out["data"] = v2_tensor(ps, data, _decode_str(text, size), shape)
        else:
            out["data"] = to_py(data, depth)
    return out


cdef dict _v2_request(_Parser ps, jobject o, int depth):
    cdef dict out = {}
    cdef jobject.iterator it = o.begin()
    cdef jobject.iterator stop = o.end()
    cdef element value, child
    cdef list inputs
    while it != stop:
        key = _decode_str(it.key_c_str(), it.key_length())
        value = it.value()
        if _key_is(it, b"inputs", 6) and kind(value) == K_ARRAY:
            inputs = []
            for child in as_array(value):
                if kind(child) == K_OBJECT:
                    inputs.append(_v2_input(ps, as_object(child), depth + 2))
                else:
                    inputs.append(to_py(child, depth + 1))
            out[key] = inputs
        else:
            out[key] = to_py(value, depth)
        inc(it)
    return out


# ------------------------------------------------------------------ entry points


cdef object _decode(object body, int which):
    cdef Py_buffer view
    cdef element root
    cdef _Parser ps = _shared
    cdef bint shared
    if isinstance(body, str):
        return None
    PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
    try:
        shared = not ps.busy and view.len <= KEEP_PARSER_BYTES
        if not shared:
            ps = _Parser()
        ps.busy = True
        try:
            if parse(ps.p[0], <const char *>view.buf, <size_t>view.len, &root) != 0:
                return None
            if which == 2:
                return to_py(root, 0)
            if which == 0:
                if kind(root) == K_OBJECT:
                    return _seldon_message(ps, as_object(root), 1, True)
                if kind(root) == K_ARRAY:
                    return _seldon_message_list(ps, root, 1)
            elif kind(root) == K_OBJECT:
                return _v2_request(ps, as_object(root), 1)
            return to_py(root, 0)
        except NeedsReference:
            return None
        finally:
            ps.busy = False
            ps.leaves.clear()
    finally:
        PyBuffer_Release(&view)


def loads(body):
    """Any JSON document as json.loads gives it, or None when the reference must decide."""
    return _decode(body, 2)


def parse_seldon_json(body):
    """Seldon message (or message list) with numeric ndarray/tensor.values as numpy arrays,
    or None when the reference codec must decide."""
    return _decode(body, 0)


def parse_v2_json(body):
    """V2 inference request with each ``inputs[i].data`` decoded to its declared datatype and
    shape, or None when the reference codec must decide."""
    return _decode(body, 1)


# ------------------------------------------------------------------ reply values


cdef float *_f16_table = NULL  # the 65536 halves' shortest decimals as float32, built on first use


cdef float *_half_table() except NULL:
    global _f16_table
    cdef uint32_t bits
    cdef float *table
    if _f16_table == NULL:
        table = <float *>PyMem_Malloc(65536 * sizeof(float))
        if table == NULL:
            raise MemoryError()
        for bits in range(65536):
            table[bits] = <float>shortest_f16(<uint16_t>bits)
        _f16_table = table
    return _f16_table


def half_shortest_float32(values):
    """A float16 array (any shape, layout or byte order) as a flat float32 array of the
    float32 nearest to each half's shortest round-trip decimal, whose own shortest text is the
    half's (float16(0.1), 0.0999755859375, becomes float32(0.1)); NaN and infinities stay.
    TypeError for anything else."""
    cdef cnp.ndarray src, out
    cdef cnp.npy_intp n, i
    cdef float *dst
    cdef const uint16_t *bits
    cdef const float *table
    if not isinstance(values, np.ndarray) or values.dtype.kind != "f" or values.dtype.itemsize != 2:
        raise TypeError("half_shortest_float32 takes a float16 array")
    src = np.ascontiguousarray(values.reshape(-1), dtype=values.dtype.newbyteorder("="))
    n = cnp.PyArray_SIZE(src)
    out = cnp.PyArray_EMPTY(1, &n, cnp.NPY_FLOAT32, 0)
    dst = <float *>cnp.PyArray_DATA(out)
    table = _half_table()
    bits = <const uint16_t *>cnp.PyArray_DATA(src)
    with nogil:
        for i in range(n):
            dst[i] = table[bits[i]]
    return out


def all_finite(values):
    """Whether an array (any shape, layout or byte order) holds no NaN or infinity: one C pass
    over native-endian C-contiguous float16/32/64 data (numpy's isfinite().all() costs a few
    microseconds per call on small arrays), numpy for other float layouts and complex, True
    for every other dtype. TypeError for anything but an ndarray."""
    cdef cnp.ndarray arr
    cdef cnp.npy_intp n, i
    cdef int t
    cdef const void *data
    cdef int bad = 0
    if not isinstance(values, np.ndarray):
        raise TypeError("all_finite takes a numpy array")
    arr = <cnp.ndarray>values
    t = cnp.PyArray_TYPE(arr)
    if not (t == cnp.NPY_DOUBLE or t == cnp.NPY_FLOAT or t == cnp.NPY_FLOAT16) \
            or not cnp.PyArray_ISNOTSWAPPED(arr) or not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        if cnp.PyArray_ISFLOAT(arr) or cnp.PyArray_ISCOMPLEX(arr):
            return bool(np.isfinite(arr).all())
        return True
    n = cnp.PyArray_SIZE(arr)
    data = cnp.PyArray_DATA(arr)
    with nogil:  # no early exit: the OR-reduction over exponent checks vectorises
        if t == cnp.NPY_DOUBLE:
            for i in range(n):
                bad |= ((<const uint64_t *>data)[i] & 0x7FF0000000000000ULL) == 0x7FF0000000000000ULL
        elif t == cnp.NPY_FLOAT:
            for i in range(n):
                bad |= ((<const uint32_t *>data)[i] & 0x7F800000U) == 0x7F800000U
        else:
            for i in range(n):
                bad |= ((<const uint16_t *>data)[i] & 0x7C00) == 0x7C00
    return bad == 0


def simd_implementation():
    """Which of simdjson's kernels runs on this CPU (e.g. 'haswell', 'icelake', 'fallback')."""
    return implementation_name().decode("ascii")
