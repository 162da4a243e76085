"""Native protobuf wire-format reading and writing for tensor payloads.

The same splitting rules as codec/reference.py (see there), as C loops over the request
bytes: find ``SeldonMessage.data.tensor`` or ``ModelInferRequest.raw_input_contents`` and
return their offsets, so the caller can build numpy views onto the body; cut everything
else out into one small buffer for the generated protobuf class. Functions return None for
any layout they leave to the generated class (duplicated or unpacked fields, groups, bad
wire types, truncation) — never read outside the buffer.

Writers build response bytes in one allocation: message head from the generated class,
then tensor bytes copied straight from the array's buffer.
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

import numpy as np


cdef struct Field:
    uint64_t number
    int wire
    Py_ssize_t start
    Py_ssize_t payload
    Py_ssize_t stop


cdef inline int read_varint(const uint8_t *buf, Py_ssize_t *pos, Py_ssize_t end, uint64_t *out) noexcept nogil:
    cdef uint64_t result = 0
    cdef int shift = 0
    cdef uint8_t byte
    while True:
        if pos[0] >= end or shift > 63:
            return -1
        byte = buf[pos[0]]
        pos[0] += 1
        result |= (<uint64_t>(byte & 0x7F)) << shift
        if byte < 0x80:
            if shift == 63 and byte > 1:
                return -1
            out[0] = result
            return 0
        shift += 7


cdef inline int next_field(const uint8_t *buf, Py_ssize_t *pos, Py_ssize_t end, Field *f) noexcept nogil:
    """Read one field: 1 if read, 0 at the end, -1 for a layout left to protobuf."""
    cdef uint64_t tag, size = 0, ignored
    if pos[0] >= end:
        return 0
    f.start = pos[0]
    if read_varint(buf, pos, end, &tag) < 0:
        return -1
    f.number = tag >> 3
    f.wire = <int>(tag & 7)
    if f.number == 0 or tag > <uint64_t>0xFFFFFFFFU:
        return -1
    if f.wire == 0:
        if read_varint(buf, pos, end, &ignored) < 0:
            return -1
        f.payload = pos[0]
        f.stop = pos[0]
        return 1
    if f.wire == 1:
        size = 8
    elif f.wire == 5:
        size = 4
    elif f.wire == 2:
        if read_varint(buf, pos, end, &size) < 0:
            return -1
    else:
        return -1
    f.payload = pos[0]
    if size > <uint64_t>(end - f.payload):
        return -1
    pos[0] = f.payload + <Py_ssize_t>size
    f.stop = pos[0]
    return 1


cdef inline int oneof_member(const uint8_t *buf, Py_ssize_t pos, Py_ssize_t end, uint64_t number,
                              uint64_t others_lo, uint64_t others_hi, Field *member) noexcept nogil:
    """Find submessage field ``number`` of a oneof among the fields in buf[pos:end]: 1 if it is
    there (read into ``member``), 0 if not, -1 for a layout left to protobuf: the field twice
    (protobuf merges) or not length-delimited, another member of the oneof (fields
    others_lo..others_hi: the last one wins) present, or fields next_field refuses."""
    cdef Field f
    cdef int r, seen = 0
    member.number = member.wire = member.start = member.payload = member.stop = 0  # read only on 1; gcc can't tell
    while True:
        r = next_field(buf, &pos, end, &f)
        if r < 0:
            return -1
        if r == 0:
            return seen
        if f.number == number:
            if seen or f.wire != 2:
                return -1
            seen = 1
            member[0] = f
        elif others_lo <= f.number <= others_hi:
            return -1


cdef inline Py_ssize_t varint_size(uint64_t value) noexcept nogil:
    cdef Py_ssize_t n = 1
    while value >= 0x80:
        value >>= 7
        n += 1
    return n


cdef inline Py_ssize_t put_varint(uint8_t *out, uint64_t value) noexcept nogil:
    cdef Py_ssize_t n = 0
    while value >= 0x80:
        out[n] = <uint8_t>((value & 0x7F) | 0x80)
        value >>= 7
        n += 1
    out[n] = <uint8_t>value
    return n + 1


cdef inline Py_ssize_t put_bytes(uint8_t *out, const uint8_t *src, Py_ssize_t size) noexcept nogil:
    if size > 0:
        memcpy(out, src, <size_t>size)
    return size


def split_seldon(body):
    """For SeldonMessage bytes: ``(rest, values_offset, values_nbytes)`` where ``rest`` is
    the message without data.tensor's values (shape kept), or ``(None, 0, 0)`` when there is
    no tensor; None when protobuf must parse the whole body."""
    cdef Py_buffer view
    cdef const uint8_t *buf
    cdef Py_ssize_t end, pos, p, shape_len = 0, data_inner, tensor_inner, total, w
    cdef Field f, data, tensor
    cdef Py_ssize_t values_at = 0, values_len = 0
    cdef int r, n_values = 0
    cdef uint64_t ignored
    cdef bytes rest
    cdef uint8_t *out
    PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
    try:
        buf = <const uint8_t *>view.buf
        end = view.len
        # SeldonMessage.data (3) of oneof data_oneof {data, binData, strData, jsonData, customData (7)}
        r = oneof_member(buf, 0, end, 3, 4, 7, &data)
        if r <= 0:
            return None if r < 0 else (None, 0, 0)
        # DefaultData.tensor (2) of oneof data_oneof {tensor, ndarray, tftensor (4)}
        r = oneof_member(buf, data.payload, data.stop, 2, 3, 4, &tensor)
        if r <= 0:
            return None if r < 0 else (None, 0, 0)
        # first pass over the tensor: validate, measure the shape payloads, find the values
        pos = tensor.payload
        while True:
            r = next_field(buf, &pos, tensor.stop, &f)
            if r < 0:
                return None
            if r == 0:
                break
            if f.number == 1:
                if f.wire != 2:
                    return None
                p = f.payload
                while p < f.stop:
                    if read_varint(buf, &p, f.stop, &ignored) < 0:
                        return None
                shape_len += f.stop - f.payload
            elif f.number == 2:
                if n_values or f.wire != 2 or (f.stop - f.payload) % 8:
                    return None
                n_values = 1
                values_at = f.payload
                values_len = f.stop - f.payload
        # rest = top level without data + data(3){ data minus tensor + tensor(2){ shape(1) } }
        tensor_inner = (1 + varint_size(<uint64_t>shape_len) + shape_len) if shape_len else 0
        data_inner = (tensor.start - data.payload) + (data.stop - tensor.stop) + 1 + varint_size(<uint64_t>tensor_inner) + tensor_inner
        total = data.start + (end - data.stop) + 1 + varint_size(<uint64_t>data_inner) + data_inner
        rest = PyBytes_FromStringAndSize(NULL, total)
        out = <uint8_t *>PyBytes_AS_STRING(rest)
        w = put_bytes(out, buf, data.start)
        w += put_bytes(out + w, buf + data.stop, end - data.stop)
        out[w] = 0x1A
        w += 1
        w += put_varint(out + w, <uint64_t>data_inner)
        w += put_bytes(out + w, buf + data.payload, tensor.start - data.payload)
        w += put_bytes(out + w, buf + tensor.stop, data.stop - tensor.stop)
        out[w] = 0x12
        w += 1
        w += put_varint(out + w, <uint64_t>tensor_inner)
        if shape_len:
            out[w] = 0x0A
            w += 1
            w += put_varint(out + w, <uint64_t>shape_len)
            pos = tensor.payload
            while next_field(buf, &pos, tensor.stop, &f) == 1:
                if f.number == 1:
                    w += put_bytes(out + w, buf + f.payload, f.stop - f.payload)
        return (rest, values_at, values_len)
    finally:
        PyBuffer_Release(&view)


def split_repeated_bytes(body, int field):
    """``(rest, [(start, stop), ...])``: the message without every occurrence of one
    ``repeated bytes`` field, and where each occurrence's payload lies; None when protobuf
    must parse the whole body."""
    cdef Py_buffer view
    cdef const uint8_t *buf
    cdef Py_ssize_t end, pos = 0, kept = 0, total = 0, w = 0
    cdef Field f
    cdef int r
    cdef list found = []
    cdef bytes rest
    cdef uint8_t *out
    PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
    try:
        buf = <const uint8_t *>view.buf
        end = view.len
        while True:
            r = next_field(buf, &pos, end, &f)
            if r < 0:
                return None
            if r == 0:
                break
            if f.number == <uint64_t>field:
                if f.wire != 2:
                    return None
                total += f.start - kept
                kept = f.stop
                found.append((f.payload, f.stop))
        if not found:
            return (body if type(body) is bytes else bytes(body), found)
        total += end - kept
        rest = PyBytes_FromStringAndSize(NULL, total)
        out = <uint8_t *>PyBytes_AS_STRING(rest)
        pos = 0
        kept = 0
        while next_field(buf, &pos, end, &f) == 1:
            if f.number == <uint64_t>field:
                w += put_bytes(out + w, buf + kept, f.start - kept)
                kept = f.stop
        put_bytes(out + w, buf + kept, end - kept)
        return (rest, found)
    finally:
        PyBuffer_Release(&view)


def seldon_tensor_message(bytes status, bytes meta, list names, tuple shape, values):
    """SeldonMessage bytes: ``status`` and ``meta`` (serialised submessages, or None), then
    data(3){names(1)..., tensor(2){shape(1) packed, values(2) packed from ``values``}}.
    ``values`` is a C-contiguous little-endian float64 buffer. Arguments of other types are a
    TypeError (their bytes are read directly)."""
    cdef Py_buffer vals
    cdef Py_ssize_t status_len = -1, meta_len = -1, names_len = 0, shape_len = 0
    cdef Py_ssize_t tensor_inner = 0, data_inner, total, w = 0
    cdef const char *text
    cdef list encoded = [name.encode("utf-8") for name in names]
    cdef bytes item, result
    cdef uint8_t *out
    cdef object dim
    cdef uint64_t d
    if status is not None:
        status_len = len(status)
    if meta is not None:
        meta_len = len(meta)
    for item in encoded:
        names_len += 1 + varint_size(<uint64_t>len(item)) + len(item)
    for dim in shape:
        shape_len += varint_size(<uint64_t>dim)
    PyObject_GetBuffer(values, &vals, PyBUF_SIMPLE)
    try:
        if shape_len:
            tensor_inner += 1 + varint_size(<uint64_t>shape_len) + shape_len
        if vals.len:
            tensor_inner += 1 + varint_size(<uint64_t>vals.len) + vals.len
        data_inner = names_len + 1 + varint_size(<uint64_t>tensor_inner) + tensor_inner
        total = 1 + varint_size(<uint64_t>data_inner) + data_inner
        if status_len >= 0:
            total += 1 + varint_size(<uint64_t>status_len) + status_len
        if meta_len >= 0:
            total += 1 + varint_size(<uint64_t>meta_len) + meta_len
        result = PyBytes_FromStringAndSize(NULL, total)
        out = <uint8_t *>PyBytes_AS_STRING(result)
        if status_len >= 0:
            out[w] = 0x0A
            w += 1
            w += put_varint(out + w, <uint64_t>status_len)
            w += put_bytes(out + w, <const uint8_t *>PyBytes_AS_STRING(status), status_len)
        if meta_len >= 0:
            out[w] = 0x12
            w += 1
            w += put_varint(out + w, <uint64_t>meta_len)
            w += put_bytes(out + w, <const uint8_t *>PyBytes_AS_STRING(meta), meta_len)
        out[w] = 0x1A
        w += 1
        w += put_varint(out + w, <uint64_t>data_inner)
        for item in encoded:
            out[w] = 0x0A
            w += 1
            w += put_varint(out + w, <uint64_t>len(item))
            w += put_bytes(out + w, <const uint8_t *>PyBytes_AS_STRING(item), len(item))
        out[w] = 0x12
        w += 1
        w += put_varint(out + w, <uint64_t>tensor_inner)
        if shape_len:
            out[w] = 0x0A
            w += 1
            w += put_varint(out + w, <uint64_t>shape_len)
            for dim in shape:
                d = dim
                w += put_varint(out + w, d)
        if vals.len:
            out[w] = 0x12
            w += 1
            w += put_varint(out + w, <uint64_t>vals.len)
            w += put_bytes(out + w, <const uint8_t *>vals.buf, vals.len)
        if w != total:
            raise ValueError(f"seldon_tensor_message wrote {w} of {total} bytes")
        return result
    finally:
        PyBuffer_Release(&vals)


def append_repeated_bytes(bytes head not None, int tag, list raws not None):
    """``head`` followed by one length-delimited field (``tag`` byte) per buffer in ``raws``,
    each copied once into the result. ``raws`` is a list: it is walked twice (sizes, then
    bytes), which a generator could not be."""
    cdef Py_buffer view
    cdef Py_ssize_t total = len(head), w, n, i
    cdef Py_ssize_t count = len(raws)
    cdef list sizes = []
    cdef bytes result
    cdef uint8_t *out
    for raw in raws:
        n = memoryview(raw).nbytes
        sizes.append(n)
        total += 1 + varint_size(<uint64_t>n) + n
    result = PyBytes_FromStringAndSize(NULL, total)
    out = <uint8_t *>PyBytes_AS_STRING(result)
    w = put_bytes(out, <const uint8_t *>PyBytes_AS_STRING(head), len(head))
    if len(raws) != count:
        raise ValueError("the list of raw buffers changed while being written")
    for i in range(count):
        PyObject_GetBuffer(raws[i], &view, PyBUF_SIMPLE)
        try:
            if view.len != <Py_ssize_t>sizes[i]:
                raise ValueError("a raw buffer changed size while being written")
            out[w] = <uint8_t>tag
            w += 1
            w += put_varint(out + w, <uint64_t>view.len)
            w += put_bytes(out + w, <const uint8_t *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)
    if w != total:
        raise ValueError(f"append_repeated_bytes wrote {w} of {total} bytes")
    return result


def decode_bytes_elements(buffer, Py_ssize_t count):
    """V2 BYTES raw contents -> list of ``count`` bytes; ValueError saying what is wrong."""
    cdef Py_buffer view
    cdef const uint8_t *buf
    cdef Py_ssize_t pos = 0, end, i
    cdef uint32_t size
    cdef list out = []
    PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE)
    try:
        buf = <const uint8_t *>view.buf
        end = view.len
        for i in range(count):
            if end - pos < 4:
                raise ValueError(f"BYTES tensor data is truncated: element {i} has no length prefix")
            size = (<uint32_t>buf[pos]) | (<uint32_t>buf[pos + 1] << 8) | (<uint32_t>buf[pos + 2] << 16) | (<uint32_t>buf[pos + 3] << 24)
            pos += 4
            if <uint64_t>(end - pos) < <uint64_t>size:
                raise ValueError(f"BYTES tensor data is truncated: element {i} needs {size} bytes")
            out.append(PyBytes_FromStringAndSize(<const char *>buf + pos, <Py_ssize_t>size))
            pos += size
        if pos != end:
            raise ValueError(f"BYTES tensor data has {end - pos} bytes after its {count} elements")
        return out
    finally:
        PyBuffer_Release(&view)


def encode_bytes_elements(list items not None):
    """V2 BYTES raw contents of a list of bytes objects (each length-prefixed; another type is a TypeError)."""
    cdef Py_ssize_t total = 0, w = 0, n
    cdef bytes item, result
    cdef uint8_t *out
    for item in items:
        total += 4 + len(item)
    result = PyBytes_FromStringAndSize(NULL, total)
    out = <uint8_t *>PyBytes_AS_STRING(result)
    for item in items:
        n = len(item)
        out[w] = <uint8_t>(n & 0xFF)
        out[w + 1] = <uint8_t>((n >> 8) & 0xFF)
        out[w + 2] = <uint8_t>((n >> 16) & 0xFF)
        out[w + 3] = <uint8_t>((n >> 24) & 0xFF)
        w += 4
        w += put_bytes(out + w, <const uint8_t *>PyBytes_AS_STRING(item), n)
    if w != total:
        raise ValueError(f"encode_bytes_elements wrote {w} of {total} bytes")
    return result
