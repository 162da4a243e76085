"""The codec: both implementations against the json/protobuf libraries, bit for bit.

Property tests (hypothesis) draw shapes, dtypes and values (±0.0, subnormals, extreme
exponents, NaN/Inf where the format allows them); unit tests pin the edge cases and the
zero-copy promise (decoded arrays share memory with the request bytes).
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import types

import numpy as np
import pytest
from google.protobuf.internal import encoder as pb_encoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastseldon import codec
from fastseldon.codec import reference
from fastseldon.errors import CodecError
from fastseldon.proto import grpc_service_pb2 as v2pb
from fastseldon.proto import prediction_pb2 as pb
from support.codec_cases import ERROR, IMPL_IDS, IMPLS, canon, native, outcome, seldon_view

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(params=IMPLS, ids=IMPL_IDS)
def impl(request):
    return request.param


# --------------------------------------------------------------------------- selection


def test_native_extension_present_when_required():
    """CI sets FASTSELDON_REQUIRE_EXT=1 so a build that silently lost the extension fails."""
    if os.environ.get("FASTSELDON_REQUIRE_EXT") == "1":
        assert native is not None
        assert codec.IMPLEMENTATION == ("reference" if os.environ.get("FASTSELDON_NO_EXT") == "1" else "native")


def test_no_ext_env_forces_reference():
    code = "from fastseldon import codec; print(codec.IMPLEMENTATION, codec.dumps.__module__)"
    env = dict(os.environ, FASTSELDON_NO_EXT="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["reference", "fastseldon.codec.reference"]


def test_public_names_exist():
    for name in ("CodecError", "IMPLEMENTATION", "loads", "dumps", "parse_seldon_json", "to_array"):
        assert hasattr(codec, name)
    assert codec.CodecError is CodecError
    assert codec.IMPLEMENTATION in ("native", "reference")


def test_all_is_exactly_the_public_api():
    """codec.__all__ is the one public list: every public name of the package, nothing else."""
    public = {
        name
        for name, value in vars(codec).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }
    assert len(set(codec.__all__)) == len(codec.__all__)
    assert set(codec.__all__) == public


# --------------------------------------------------------------------------- Seldon JSON


finite = st.floats(allow_nan=False, allow_infinity=False)
specials = st.sampled_from([0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 1e-310, 0.1, 1 / 3])
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
numbers = st.one_of(finite, specials, int64s, st.integers(-1000, 1000))


def rect(elements, max_dims=3, max_side=4):
    """Nested rectangular lists (1..max_dims deep) of drawn elements."""

    @st.composite
    def build(draw):
        shape = draw(st.lists(st.integers(0, max_side), min_size=1, max_size=max_dims))
        count = math.prod(shape)
        flat = draw(st.lists(elements, min_size=count, max_size=count))
        return np.array(flat + [None], dtype=object)[:-1].reshape(shape).tolist() if count else _empty(shape)

    return build()


def _empty(shape):
    if len(shape) == 1 or shape[0] == 0:
        return []
    return [_empty(shape[1:]) for _ in range(shape[0])]


def _expected_seldon(body: bytes, path):
    value = json.loads(body)
    for key in path:
        value = value[key]
    try:
        return canon(np.array(value))
    except (ValueError, TypeError, OverflowError):
        return ERROR


def _assert_seldon_matches(impl, body: bytes, path):
    doc = outcome(impl.parse_seldon_json, body)
    assert doc is not ERROR, body
    assert seldon_view(doc, impl.to_array) == seldon_view(json.loads(body), reference.to_array)
    got = doc
    for key in path:
        got = got[key]
    assert canon(outcome(impl.to_array, got)) == _expected_seldon(body, path)


@SETTINGS
@given(nd=rect(numbers))
def test_seldon_ndarray_numbers_equal_json_then_np_array(nd):
    body = json.dumps({"data": {"names": ["a"], "ndarray": nd}, "meta": {"puid": "p"}}).encode()
    for impl in IMPLS:
        _assert_seldon_matches(impl, body, ("data", "ndarray"))


@SETTINGS
@given(nd=rect(st.one_of(numbers, st.floats(), st.booleans(), st.none(), st.text(max_size=3), st.integers())))
def test_seldon_ndarray_any_values_equal_json_then_np_array(nd):
    body = json.dumps({"data": {"ndarray": nd}}).encode()
    for impl in IMPLS:
        _assert_seldon_matches(impl, body, ("data", "ndarray"))


@SETTINGS
@given(values=st.lists(numbers, max_size=50), shape=st.lists(st.integers(0, 5), max_size=3))
def test_seldon_tensor_values(values, shape):
    body = json.dumps({"data": {"tensor": {"shape": shape, "values": values}}}).encode()
    for impl in IMPLS:
        _assert_seldon_matches(impl, body, ("data", "tensor", "values"))


@pytest.mark.parametrize(
    "nd",
    [
        [[1, 2], [3, 4]],
        [[1, 2.5]],
        [1.0, 2],
        [],
        [[]],
        [[], []],
        [[[]]],
        [-0, -0.0],
        [9223372036854775807, -9223372036854775808],
        [9223372036854775808],
        [18446744073709551615, 1],
        [10**30],
        [1e400],
        [[1], [2, 3]],
        [[1, 2], [3]],
        [1, [2]],
        [[1, 2], 3],
        [[1, "a"]],
        [True, 1],
        [None],
        ["a", "b"],
        [{"x": 1}],
        [[[1, 2], [3, 4]], [[5, 6], [7, 8]]],
        [5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 4.9e-324],
    ],
)
def test_seldon_ndarray_edge_cases(impl, nd):
    body = json.dumps({"data": {"ndarray": nd}}).encode()
    _assert_seldon_matches(impl, body, ("data", "ndarray"))


def test_seldon_numeric_ndarray_is_an_array_natively():
    if native is None:
        pytest.skip("native codec not built")  # FASTSELDON_REQUIRE_EXT turns this case into a failure above
    doc = native.parse_seldon_json(b'{"data":{"ndarray":[[1,2.5],[3,4]]},"meta":{}}')
    assert isinstance(doc["data"]["ndarray"], np.ndarray) and doc["data"]["ndarray"].dtype == np.float64
    doc = native.parse_seldon_json(b'{"data":{"ndarray":[[1,2],[3,4]]}}')
    assert doc["data"]["ndarray"].dtype == np.int64
    doc = native.parse_seldon_json(b'{"seldonMessages":[{"data":{"tensor":{"shape":[2],"values":[1.5,2]}}}]}')
    assert isinstance(doc["seldonMessages"][0]["data"]["tensor"]["values"], np.ndarray)
    doc = native.parse_seldon_json(b'[{"data":{"ndarray":[1]}}]')
    assert isinstance(doc[0]["data"]["ndarray"], np.ndarray)


@pytest.mark.parametrize(
    "body",
    [
        b'{"data":{"ndarray":[NaN, Infinity, -Infinity, 1]}}',
        b'{"data":{"ndarray":[1,2]},"data":{"ndarray":[[3.5]]}}',
        b'{"jsonData":{"a":[1,2,{"b":null}]},"meta":{"tags":{"x":"\\u00e9\\ud83d\\ude00"}}}',
        b'{"strData":"hello"}',
        b'\xef\xbb\xbf{"data":{"ndarray":[1]}}',
        b'  {"data" : {"ndarray" : [ 1 , 2 ] } }  ',
        b"[]",
        b"null",
        b"3",
        b'"\\ud800"',
    ],
)
def test_seldon_documents_equal_json(impl, body):
    doc = outcome(impl.parse_seldon_json, body)
    assert seldon_view(doc, impl.to_array) == seldon_view(json.loads(body), reference.to_array)


@pytest.mark.parametrize("body", [b"", b"{", b'{"data":', b"[1,]", b"\xff\xfe", b'{"a":1}x', b"nan", b"{'a':1}"])
def test_malformed_json_is_a_codec_error(impl, body):
    with pytest.raises(CodecError):
        impl.parse_seldon_json(body)
    with pytest.raises(CodecError):
        impl.parse_v2_json(body)
    with pytest.raises(CodecError):
        impl.loads(body)


def test_ragged_ndarray_is_a_codec_error_in_to_array(impl):
    doc = impl.parse_seldon_json(b'{"data":{"ndarray":[[1],[2,3]]}}')
    with pytest.raises(CodecError):
        impl.to_array(doc["data"]["ndarray"])


# --------------------------------------------------------------------------- V2 JSON

V2_NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"]


@st.composite
def v2_tensor(draw):
    datatype = draw(st.sampled_from(V2_NUMERIC + ["BYTES"]))
    shape = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3))
    count = math.prod(shape)
    if datatype == "BOOL":
        elem = st.booleans()
    elif datatype == "BYTES":
        elem = st.text(max_size=5)
    elif datatype.startswith(("INT", "UINT")):
        info = np.iinfo(codec.dtype_for(datatype))
        elem = st.integers(int(info.min), int(info.max))
    else:
        elem = st.one_of(finite, specials, st.integers(-(2**63), 2**63 - 1), st.floats(width=16), st.floats(width=32))
    values = draw(st.lists(elem, min_size=count, max_size=count))
    nested = draw(st.booleans())
    data = np.array(values + [None], dtype=object)[:-1].reshape(shape).tolist() if nested and count else values
    return datatype, shape, values, data


def _expected_v2(datatype, shape, values):
    # JSON's NaN literal carries no sign or payload, so a drawn -nan decodes as the plain quiet NaN.
    values = [math.nan if isinstance(v, float) and math.isnan(v) else v for v in values]
    if datatype == "BYTES":
        out = np.empty(len(values), dtype=object)
        out[:] = [v.encode("utf-8", "surrogatepass") for v in values]
        return out.reshape(shape)
    if datatype in ("FP16", "FP32"):
        wide = np.array(values, dtype=np.float64)
        with np.errstate(over="ignore"):
            arr = wide.astype(codec.dtype_for(datatype))
        if (np.isinf(arr) & np.isfinite(wide)).any():  # finite values that overflow are refused; Infinity stays inf
            return ERROR
        return arr.reshape(shape)
    return np.array(values, dtype=codec.dtype_for(datatype)).reshape(shape)


@SETTINGS
@given(tensor=v2_tensor())
def test_v2_json_inputs_decode_to_declared_datatype_and_shape(tensor):
    datatype, shape, values, data = tensor
    body = json.dumps({"id": "r", "inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]}).encode()
    expected = _expected_v2(datatype, shape, values)
    for impl in IMPLS:
        got = outcome(impl.parse_v2_json, body)
        if expected is ERROR:
            assert got is ERROR
        else:
            assert canon(got["inputs"][0]["data"]) == canon(expected), impl.__name__
            assert got["id"] == "r" and got["inputs"][0]["shape"] == shape


@pytest.mark.parametrize(
    "inp",
    [
        {"datatype": "INT8", "shape": [1], "data": [128]},
        {"datatype": "UINT8", "shape": [1], "data": [-1]},
        {"datatype": "INT32", "shape": [1], "data": [1.0]},
        {"datatype": "INT64", "shape": [1], "data": [9223372036854775808]},
        {"datatype": "BOOL", "shape": [1], "data": [1]},
        {"datatype": "FP32", "shape": [1], "data": [True]},
        {"datatype": "FP32", "shape": [1], "data": [1e39]},
        {"datatype": "FP16", "shape": [1], "data": [70000]},
        {"datatype": "FP32", "shape": [1], "data": ["1"]},
        {"datatype": "BYTES", "shape": [1], "data": [1]},
        {"datatype": "FP32", "shape": [3], "data": [1, 2]},
        {"datatype": "FP32", "shape": [2], "data": [[1], [2, 3]]},
        {"datatype": "FP32", "shape": [-1], "data": [1]},
        {"datatype": "FP32", "shape": [True], "data": [1]},
        {"datatype": "BF16", "shape": [1], "data": [1]},
        {"datatype": "FP8", "shape": [1], "data": [1]},
        {"datatype": "FP32", "shape": [1], "data": 1},
    ],
)
def test_v2_json_bad_inputs_are_codec_errors(impl, inp):
    body = json.dumps({"inputs": [dict(name="x", **inp)]}).encode()
    with pytest.raises(CodecError):
        impl.parse_v2_json(body)


# Shapes whose element count overflows 64 bits (a [2^32, 2^32] shape with no data read as 0
# elements and reached numpy: 500 "array is too big"), or that numpy can't hold even empty.
HUGE_SHAPES = [[2**32, 2**32], [2**31, 2**31, 4], [0, 2**62], [2**62, 0], [2**63 - 1], [3, 2**62, 4], [2**21] * 3,
               [2**16] * 4 + [0]]


@pytest.mark.parametrize("shape", HUGE_SHAPES, ids=str)
@pytest.mark.parametrize("datatype", ["FP32", "INT64", "BOOL", "BYTES"])
def test_huge_shapes_are_codec_errors(impl, shape, datatype):
    body = json.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": []}]}).encode()
    with pytest.raises(CodecError, match="too large"):
        impl.parse_v2_json(body)
    with pytest.raises(CodecError, match="too large"):
        impl.decode_raw(b"", datatype, shape)


@SETTINGS
@given(shape=st.lists(st.sampled_from([0, 1, 2, 3, 2**16, 2**31, 2**32, 2**48, 2**62, 2**63 - 1]), min_size=1, max_size=5),
       data=st.sampled_from([[], [1], [1, 2], [[1], [2]]]))
def test_any_declared_shape_is_decoded_or_a_codec_error_alike(shape, data):
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP64", "shape": shape, "data": data}]}).encode()
    results = {canon(outcome(impl.parse_v2_json, body)) for impl in IMPLS}  # never another exception
    assert len(results) == 1, (shape, data)


def test_native_writers_take_only_the_types_they_read():
    """The writers read their arguments' bytes directly: a wrong type is a TypeError, never
    memory they were not given (a generator of buffers used to leave uninitialised bytes)."""
    wire = pytest.importorskip("fastseldon._fast.wire")
    values = np.arange(3, dtype=np.float64)
    with pytest.raises(TypeError):
        wire.append_repeated_bytes(b"head", 0x32, (b for b in [b"ab", b"cd"]))
    with pytest.raises(TypeError):
        wire.append_repeated_bytes(bytearray(b"head"), 0x32, [b"ab"])
    with pytest.raises(TypeError):
        wire.seldon_tensor_message(bytearray(b"x"), None, [], (3,), values)
    with pytest.raises(TypeError):
        wire.seldon_tensor_message(None, "meta", [], (3,), values)
    with pytest.raises(TypeError):
        wire.encode_bytes_elements([b"a", bytearray(b"b")])
    with pytest.raises(TypeError):
        wire.encode_bytes_elements((b"a",))
    assert wire.append_repeated_bytes(b"h", 0x32, [b"ab", memoryview(b"cd")]) == b"h\x32\x02ab\x32\x02cd"
    with pytest.raises(ValueError, match="truncated"):  # errors are raised, not returned as strings
        wire.decode_bytes_elements(b"\x05\x00\x00\x00ab", 1)


def test_v2_json_nan_literals_and_untouched_inputs(impl):
    body = b'{"inputs":[{"name":"a","datatype":"FP64","shape":[3],"data":[NaN,Infinity,-Infinity]},' \
           b'{"name":"b","datatype":"FP32","shape":[2],"parameters":{"binary_data_size":8}},{"name":"c","data":[1]}]}'
    doc = impl.parse_v2_json(body)
    a = doc["inputs"][0]["data"]
    assert a.dtype == np.float64 and np.isnan(a[0]) and a[1] == np.inf and a[2] == -np.inf
    assert "data" not in doc["inputs"][1] and doc["inputs"][2]["data"] == [1]


# --------------------------------------------------------------------------- JSON encode


@SETTINGS
@given(
    arr=st.one_of(
        st.lists(st.floats(), max_size=30).map(lambda v: np.array(v, dtype=np.float64)),
        st.lists(st.floats(width=32), max_size=30).map(lambda v: np.array(v, dtype=np.float32)),
        st.lists(st.floats(width=16), max_size=30).map(lambda v: np.array(v, dtype=np.float16)),
        st.lists(int64s, max_size=30).map(lambda v: np.array(v, dtype=np.int64)),
        st.lists(st.integers(0, 255), max_size=30).map(lambda v: np.array(v, dtype=np.uint8)),
        st.lists(st.booleans(), max_size=30).map(lambda v: np.array(v, dtype=bool)),
    ),
    rows=st.integers(1, 3),
)
def test_dumps_writes_tolist_values_exactly(arr, rows):
    arr = np.tile(arr, (rows, 1))
    obj = {"data": {"names": ["a"], "ndarray": arr, "tensor": {"values": arr.ravel()[::-1]}}, "meta": {"x": [1.5, None]}}
    outputs = {impl.__name__: impl.dumps(obj) for impl in IMPLS}
    assert len(set(outputs.values())) == 1, outputs
    back = json.loads(next(iter(outputs.values())))
    assert canon(back["data"]["ndarray"]) == canon(arr.tolist())
    assert canon(back["data"]["tensor"]["values"]) == canon(arr.ravel()[::-1].tolist())


def test_dumps_nonfinite_literals(impl):
    out = impl.dumps({"a": np.array([np.nan, np.inf, -np.inf, 1.0]), "b": [float("nan")], "c": np.float32(np.inf)})
    assert out == b'{"a":[NaN,Infinity,-Infinity,1.0],"b":[NaN],"c":Infinity}'
    assert impl.dumps({"a": None, "b": [1.5, 2]}) == b'{"a":null,"b":[1.5,2]}'


def test_dumps_odd_arrays(impl):
    arr = np.arange(12, dtype=">f8").reshape(3, 4)
    obj = {"t": arr[:, ::2], "s": np.array(["a", "é"]), "z": np.array(3.5), "o": np.array([1, "x"], dtype=object)}
    assert impl.dumps(obj) == reference.dumps(obj)
    assert json.loads(impl.dumps(obj)) == {"t": arr[:, ::2].tolist(), "s": ["a", "é"], "z": 3.5, "o": [1, "x"]}
    with pytest.raises(CodecError):
        impl.dumps({"c": np.array([1j])})


def test_v2_json_data(impl):
    assert impl.dumps(impl.v2_json_data(np.float32([[0.1, 2]]))) == b"[0.1,2.0]"
    assert impl.dumps(impl.v2_json_data(np.float16([0.1, 65504, -0.0, 6e-8]))) == b"[0.1,65500.0,-0.0,6e-8]"
    assert impl.dumps(impl.v2_json_data(np.float64([0.1, 2]))) == b"[0.1,2.0]"
    assert impl.v2_json_data(np.array([b"ab", "c"], dtype=object)) == ["ab", "c"]
    with pytest.raises(CodecError):
        impl.v2_json_data(np.array([b"\xff"], dtype=object))


# --------------------------------------------------------------------------- V2 FP32/FP16 reply text


def _tokens(out: bytes) -> list[bytes]:
    """The number tokens of the ``data`` array in ``out``."""
    start = out.index(b'"data":[') + 8
    inner = out[start : out.index(b"]", start)]
    return inner.split(b",") if inner else []


def _significant_digits(token: str) -> str:
    mantissa = token.lstrip("-").lower().partition("e")[0]
    return mantissa.replace(".", "").strip("0") or "0"


def _check_shortest_reply(arr: np.ndarray, nonfinite_elsewhere: bool) -> None:
    """Both codecs write the same bytes; each number parses back to the same float32/float16
    bits and has exactly as many significant digits as numpy's shortest repr of it."""
    dtype = np.dtype(arr.dtype.char)  # native byte order
    docs = {}
    for impl in IMPLS:
        doc = {"outputs": [{"name": "y", "datatype": "FP32", "data": impl.v2_json_data(arr)}]}
        if nonfinite_elsewhere:
            doc["parameters"] = {"x": float("nan")}
        docs[impl.__name__] = impl.dumps(doc)
    assert len(set(docs.values())) == 1, docs
    out = next(iter(docs.values()))
    flat = np.ascontiguousarray(arr.reshape(-1), dtype=dtype)
    tokens = _tokens(out)
    assert len(tokens) == flat.size
    back = np.array(json.loads(out)["outputs"][0]["data"], dtype=np.float64).astype(dtype)
    finite = np.isfinite(flat)
    assert np.array_equal(np.isnan(back), np.isnan(flat))
    assert np.array_equal(back[finite].view(f"u{dtype.itemsize}"), flat[finite].view(f"u{dtype.itemsize}"))
    for token, value, text in zip(tokens, flat.tolist(), flat.astype(str).tolist()):
        if math.isfinite(value):
            assert _significant_digits(token.decode()) == _significant_digits(text), (token, text)


@SETTINGS
@given(
    arr=st.one_of(
        st.lists(st.floats(width=32), max_size=40).map(lambda v: np.array(v, dtype=np.float32)),
        st.lists(st.integers(0, 2**32 - 1), max_size=40).map(lambda v: np.array(v, dtype=np.uint32).view(np.float32)),
        st.lists(st.floats(width=16), max_size=40).map(lambda v: np.array(v, dtype=np.float16)),
        st.lists(st.integers(0, 2**16 - 1), max_size=40).map(lambda v: np.array(v, dtype=np.uint16).view(np.float16)),
        st.lists(st.floats(2.0**-24, 2.0**44, width=32), max_size=40).map(lambda v: np.array(v, dtype=np.float32)),
    ),
    layout=st.sampled_from(["flat", "2d", "swapped", "strided"]),
    nonfinite_elsewhere=st.booleans(),
)
def test_v2_json_fp32_fp16_shortest_text(arr, layout, nonfinite_elsewhere):
    if layout == "2d" and arr.size % 2 == 0:
        arr = arr.reshape(2, -1)
    elif layout == "swapped":
        arr = arr.astype(arr.dtype.newbyteorder(">"))
    elif layout == "strided":
        arr = np.repeat(arr, 2)[::2]
    _check_shortest_reply(arr, nonfinite_elsewhere)


def test_v2_json_fp16_every_half():
    """All 65 536 halves, the native table against numpy's shortest repr, bit for bit."""
    _check_shortest_reply(np.arange(2**16, dtype=np.uint16).view(np.float16), False)


@pytest.mark.parametrize("text", [b"0.1", b"123456790.0", b"0.000001", b"-0.0", b"0.0", b"16777216.0"])
def test_v2_json_fp32_text(impl, text):
    """Numbers whose layout every orjson >= 3.10 writes alike (exponents: 3.10 writes 1e13, later ones 1e+13)."""
    value = np.float32(float(text))
    assert impl.dumps(impl.v2_json_data(np.array([value]))) == b"[" + text + b"]"


def test_v2_json_fp32_nonfinite(impl):
    data = impl.v2_json_data(np.float32([0.1, np.nan, np.inf, -np.inf]))
    assert impl.dumps({"data": data}) == b'{"data":[0.1,NaN,Infinity,-Infinity]}'
    assert impl.dumps({"data": impl.v2_json_data(np.float32([1e13, 0.1])), "x": float("nan")}) == b'{"data":[10000000000000.0,0.1],"x":NaN}'
    assert impl.dumps({"data": impl.v2_json_data(np.float16([0.1, np.nan]))}) == b'{"data":[0.1,NaN]}'


@pytest.mark.skipif(native is None, reason="native codec not built")
@pytest.mark.parametrize("value", [
    None, 1.5, [1.0], b"ab", np.float16(1.0), np.float32([1.0]), np.float64([1.0]), np.int16([1]),
    np.array([1.0], dtype=object), np.zeros((0, 3), np.float16), np.zeros((2, 0), ">f2"),
    np.float16(np.arange(12)).reshape(3, 4)[:, ::3], np.float16(3.5).reshape(()), np.array([1 + 2j], np.complex64),
])
def test_half_shortest_float32_takes_any_object(value):
    """The compiled entry point: a float16 array of any shape, layout and byte order, else TypeError."""
    from fastseldon._fast import jsontensors

    if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.dtype.itemsize == 2:
        out = jsontensors.half_shortest_float32(value)
        assert out.dtype == np.float32 and out.shape == (value.size,)
        assert np.array_equal(out.astype(np.float16), value.reshape(-1).astype(np.float16))
    else:
        with pytest.raises(TypeError):
            jsontensors.half_shortest_float32(value)


@pytest.mark.skipif(native is None, reason="native codec not built")
@SETTINGS
@given(
    bits=st.lists(st.integers(0, 2**64 - 1), max_size=40),
    dtype=st.sampled_from(["<f8", ">f8", "<f4", ">f4", "<f2", ">f2", "complex128", "int64", "uint8", "bool", "longdouble"]),
    layout=st.sampled_from(["flat", "2d", "strided", "reversed"]),
)
def test_all_finite_matches_numpy(bits, dtype, layout):
    """jsontensors.all_finite (the native dumps' NaN/Inf check) against np.isfinite().all()."""
    from fastseldon._fast import jsontensors

    raw = np.array(bits, dtype=np.uint64).view(np.uint8)
    width = np.dtype(dtype).itemsize
    arr = np.frombuffer(raw[: len(raw) // width * width].tobytes(), dtype=dtype)
    if layout == "2d" and arr.size % 2 == 0:
        arr = arr.reshape(2, -1)
    elif layout == "strided":
        arr = arr[::2]
    elif layout == "reversed":
        arr = arr[::-1]
    expected = bool(np.isfinite(arr).all()) if arr.dtype.kind in "fc" else True
    assert jsontensors.all_finite(arr) is expected


@pytest.mark.skipif(native is None, reason="native codec not built")
@pytest.mark.parametrize("value", [None, 1.5, [1.0, float("nan")], np.float64(np.nan), memoryview(b"ab")])
def test_all_finite_takes_only_arrays(value):
    from fastseldon._fast import jsontensors

    with pytest.raises(TypeError):
        jsontensors.all_finite(value)


# --------------------------------------------------------------------------- raw tensor bytes


@SETTINGS
@given(
    datatype=st.sampled_from(V2_NUMERIC),
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_raw_roundtrip_is_a_view(datatype, shape, seed):
    dtype = codec.dtype_for(datatype)
    size = math.prod(shape) * dtype.itemsize
    raw = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    if datatype == "BOOL":
        raw = bytes(b & 1 for b in raw)
    for impl in IMPLS:
        arr = impl.decode_raw(raw, datatype, shape)
        assert arr.dtype == dtype and arr.shape == tuple(shape)
        assert arr.tobytes() == raw
        if size:
            assert np.shares_memory(arr, np.frombuffer(raw, np.uint8))
        assert bytes(impl.encode_raw(arr)) == raw
        assert bytes(impl.encode_raw(arr.astype(arr.dtype.newbyteorder(">")), datatype)) == raw


@SETTINGS
@given(items=st.lists(st.binary(max_size=20), max_size=20))
def test_bytes_elements_roundtrip(items):
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    expected = b"".join(len(b).to_bytes(4, "little") + b for b in items)
    for impl in IMPLS:
        raw = impl.encode_raw(arr)
        assert bytes(raw) == expected
        assert canon(impl.decode_raw(raw, "BYTES", [len(items)])) == canon(arr)


@pytest.mark.parametrize(
    "raw,count",
    [(b"\x01\x00\x00", 1), (b"\x05\x00\x00\x00ab", 1), (b"\x00\x00\x00\x00x", 1), (b"", 1), (b"\x00\x00\x00\x00", 0)],
)
def test_bad_bytes_elements(impl, raw, count):
    with pytest.raises(CodecError):
        impl.decode_raw(raw, "BYTES", [count])


def test_raw_size_and_bool_checks(impl):
    with pytest.raises(CodecError):
        impl.decode_raw(b"\x00" * 7, "FP32", [2])
    with pytest.raises(CodecError):
        impl.decode_raw(b"\x02", "BOOL", [1])
    with pytest.raises(CodecError):
        impl.decode_raw(b"", "BF16", [0])
    with pytest.raises(CodecError):
        impl.encode_raw(np.array([1, 2], dtype=object), "BYTES")


# --------------------------------------------------------------------------- protobuf


def _seldon(values, shape, names=(), puid="", extra=None):
    msg = pb.SeldonMessage()
    if puid:
        msg.meta.puid = puid
        msg.meta.tags["k"].number_value = 1.5
    msg.data.names.extend(names)
    msg.data.tensor.SetInParent()
    msg.data.tensor.shape.extend(shape)
    msg.data.tensor.values.extend(values)
    if extra:
        extra(msg)
    return msg


def _library_split(body: bytes):
    """What protobuf itself says: the message without tensor values, and the values."""
    try:
        msg = pb.SeldonMessage.FromString(body)
    except Exception:  # noqa: BLE001
        return ERROR
    values = None
    if msg.WhichOneof("data_oneof") == "data" and msg.data.WhichOneof("data_oneof") == "tensor":
        values = np.array(msg.data.tensor.values, dtype=np.float64)
        msg.data.tensor.ClearField("values")
    msg.DiscardUnknownFields()
    return msg.SerializeToString(deterministic=True), canon(values) if values is not None else None


def _codec_split(impl, body: bytes):
    try:
        msg, values = impl.decode_seldon_message(body)
    except CodecError:
        return ERROR
    msg.DiscardUnknownFields()
    return msg.SerializeToString(deterministic=True), canon(values) if values is not None else None


@SETTINGS
@given(
    values=st.lists(st.floats(), max_size=40),
    shape=st.lists(st.integers(0, 2**31 - 1), max_size=4),
    names=st.lists(st.text(max_size=4), max_size=3),
    puid=st.text(max_size=5),
)
def test_seldon_proto_matches_protobuf(values, shape, names, puid):
    body = _seldon(values, shape, names, puid).SerializeToString()
    expected = _library_split(body)
    for impl in IMPLS:
        assert _codec_split(impl, body) == expected
        msg, vals = impl.decode_seldon_message(body)
        if values:
            assert np.shares_memory(vals, np.frombuffer(body, np.uint8))
            assert not vals.flags.writeable


@SETTINGS
@given(
    values=st.lists(st.floats(), max_size=40),
    names=st.lists(st.text(max_size=4), max_size=3),
    puid=st.text(max_size=5),
    cols=st.integers(1, 4),
)
def test_encode_seldon_message_equals_protobuf(values, names, puid, cols):
    arr = np.array(values[: len(values) // cols * cols], dtype=np.float64).reshape(-1, cols)
    head = pb.SeldonMessage()
    if puid:
        head.meta.puid = puid
        head.meta.tags["k"].number_value = 1.5
    head.status.code = 3
    head.data.names.extend(names)
    expected = _seldon(arr.ravel().tolist(), arr.shape, names, puid)
    expected.status.code = 3
    for impl in IMPLS:
        out = impl.encode_seldon_message(head, arr)
        assert out == expected.SerializeToString()
        ints = np.arange(arr.size, dtype=np.int32).reshape(arr.shape)
        assert impl.encode_seldon_message(head, ints) == impl.encode_seldon_message(head, ints.astype(np.float64))


def test_zero_copy_seldon_tensor_1x10000():
    arr = np.random.default_rng(1).random((1, 10000))
    body = _seldon(arr.ravel().tolist(), arr.shape).SerializeToString()
    for impl in IMPLS:
        msg, values = impl.decode_seldon_message(body)
        assert values.base is not None and np.shares_memory(values, np.frombuffer(body, np.uint8))
        assert np.array_equal(values.reshape(list(msg.data.tensor.shape)), arr)
        assert list(msg.data.tensor.shape) == [1, 10000] and len(msg.data.tensor.values) == 0


@pytest.mark.parametrize(
    "extra",
    [
        lambda m: None,
        lambda m: m.meta.routing.__setitem__("r", 2),
        lambda m: m.meta.metrics.add(key="k", value=1.5),
    ],
)
def test_seldon_proto_other_fields_kept(impl, extra):
    body = _seldon([1.0, 2.0], [1, 2], ["a", "b"], "p", extra).SerializeToString()
    msg, values = impl.decode_seldon_message(body)
    full = pb.SeldonMessage.FromString(body)
    assert list(values) == [1.0, 2.0]
    full.data.tensor.ClearField("values")
    assert msg == full


def _field(number, wire, payload=b""):
    if wire == 2:
        return codec.length_delimited(number, payload)
    tag = bytearray()
    reference._put_varint(tag, number << 3 | wire)
    return bytes(tag) + payload


_TENSOR = _field(2, 2, _field(1, 2, b"\x02") + _field(2, 2, b"\x00" * 16))  # DefaultData.tensor
# The oneofs the splitter must respect: SeldonMessage.data (3) among 4..7, DefaultData.tensor
# (2) among 3..4; fields just outside those ranges are unknown fields and do not clash.
ONEOF_LAYOUTS = [
    _field(3, 2, _TENSOR),  # the plain case: split
    _field(3, 2, _TENSOR) + _field(4, 2, b"bin"),  # binData after data
    _field(7, 2, b"") + _field(3, 2, _TENSOR),  # customData before data
    _field(3, 2, _TENSOR) + _field(8, 2, b"?"),  # unknown field 8: still split
    _field(2, 2, b"") + _field(3, 2, _TENSOR) + _field(1, 2, b""),  # meta and status around data
    _field(3, 2, _TENSOR + _field(4, 2, b"")),  # tftensor after tensor
    _field(3, 2, _field(3, 2, b"") + _TENSOR),  # ndarray before tensor
    _field(3, 2, _field(1, 2, b"n") + _TENSOR + _field(5, 2, b"?")),  # names, unknown 5: split
    _field(3, 2, _TENSOR + _TENSOR),  # tensor twice (merged)
    _field(3, 2, _field(2, 0, b"\x01")),  # tensor with the wrong wire type
    _field(3, 2, b""),  # data without tensor
    _field(3, 2, _field(1, 2, b"n")),  # names only
]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        _field(2, 2, _field(1, 2, b"x")),  # meta only
        _field(3, 2, _field(3, 2, b"")),  # ndarray
        _field(5, 2, b"hi"),  # strData
        _field(3, 2, _field(2, 2, _field(2, 1, b"\x00" * 8) * 2)),  # unpacked doubles
        _field(3, 2, _field(2, 2, _field(2, 2, b"\x00" * 8) * 2)),  # values split in two packed runs
        _field(3, 2, _field(2, 2, _field(1, 0, b"\x02") + _field(2, 2, b"\x00" * 16))),  # unpacked shape
        _field(3, 2, _field(2, 2, _field(2, 2, b"\x00" * 8))) * 2,  # data twice (merged)
        _field(3, 2, _field(2, 2, b"")) + _field(5, 2, b"s"),  # oneof: last one wins
        _field(3, 2, _field(2, 2, _field(1, 2, b"\xff\xff\xff\xff\x0f"))),  # shape -1
        _field(3, 2, _field(2, 2, _field(9, 5, b"abcd") + _field(2, 2, b"\x00" * 8))),  # unknown field in tensor
        _field(3, 2, _field(2, 2, _field(2, 2, b"\x00" * 7))),  # packed length not a multiple of 8
        _field(3, 0, b"\x01"),  # data with the wrong wire type
        b"\x1a\x05\x12\x03\x12\x08",  # truncated
        b"\x1a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # varint overflow
        b"\x0b\x0c",  # group
        b"\x00",  # field 0
        b"\x1f",  # wire type 7
    ]
    + ONEOF_LAYOUTS,
)
def test_seldon_proto_unusual_layouts_match_protobuf(impl, body):
    assert _codec_split(impl, body) == _library_split(body)


@pytest.mark.skipif(native is None, reason="native codec not built")
@pytest.mark.parametrize("body", ONEOF_LAYOUTS)
def test_seldon_split_takes_the_same_layouts_in_both(body):
    """The wire reader and the reference split (or leave to protobuf) the same messages."""
    from fastseldon._fast import wire

    try:
        rest, offset, size, _shape = reference._split_seldon(memoryview(body))
        expected = (rest, offset, size)
    except reference._Fallback:
        expected = None
    assert wire.split_seldon(body) == expected


@SETTINGS
@given(
    raws=st.lists(st.binary(max_size=40), max_size=4),
    name=st.text(max_size=5),
    params=st.dictionaries(st.text(max_size=3), st.integers(-5, 5), max_size=2),
)
def test_infer_request_matches_protobuf(raws, name, params):
    req = v2pb.ModelInferRequest(model_name=name, id="i")
    for i, raw in enumerate(raws):
        req.inputs.add(name=f"in{i}", datatype="UINT8", shape=[len(raw)])
        req.raw_input_contents.append(raw)
    for k, v in params.items():
        req.parameters[k].int64_param = v
    body = req.SerializeToString()
    stripped = v2pb.ModelInferRequest.FromString(body)
    stripped.ClearField("raw_input_contents")
    for impl in IMPLS:
        msg, views = impl.decode_infer_request(body)
        assert msg == stripped
        assert [bytes(v) for v in views] == raws
        for view in views:
            if len(view):
                arr = impl.decode_raw(view, "UINT8", [len(view)])
                assert np.shares_memory(arr, np.frombuffer(body, np.uint8))
        assert v2pb.ModelInferRequest.FromString(impl.encode_infer_request(msg, views)) == req


def test_encode_infer_response_equals_protobuf(impl):
    outs = [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([b"a", b"bc"], dtype=object)]
    resp = v2pb.ModelInferResponse(model_name="m", id="x")
    for i, arr in enumerate(outs):
        resp.outputs.add(name=f"o{i}", datatype=codec.datatype_for(arr.dtype), shape=arr.shape)
    full = v2pb.ModelInferResponse()
    full.CopyFrom(resp)
    raws = [impl.encode_raw(a) for a in outs]
    full.raw_output_contents.extend(bytes(r) for r in raws)
    assert impl.encode_infer_response(resp, raws) == full.SerializeToString()


@pytest.mark.parametrize(
    "raw,size",
    # a response of one raw output of `raw` bytes is `size` bytes: around the 1-, 2- and 3-byte
    # length varints, and one past 2 MiB (a 4-byte length)
    [
        (None, 0), (0, 2), (10, 12), (125, 127), (126, 128), (200, 203),
        (16380, 16383), (16381, 16384), (20000, 20004), (2_100_000, 2_100_005),
    ],
)
def test_length_delimited_equals_protobuf_stream_response(raw, size):
    """length_delimited(2, response bytes) is protobuf's ModelStreamInferResponse{infer_response}."""
    resp = v2pb.ModelInferResponse()
    if raw is not None:
        resp.raw_output_contents.append(bytes(range(256)) * (raw // 256) + bytes(raw % 256))
    payload = resp.SerializeToString()
    assert len(payload) == size
    framed = codec.length_delimited(2, payload)
    assert type(framed) is bytes
    assert framed == v2pb.ModelStreamInferResponse(infer_response=resp).SerializeToString()
    assert v2pb.ModelStreamInferResponse.FromString(framed).infer_response == resp


@pytest.mark.parametrize("number", [1, 2, 7, 15, 16, 2047, 2048, 262143, 2**29 - 1])
@pytest.mark.parametrize("size", [0, 127, 128, 16383, 16384])
def test_length_delimited_equals_protobuf_encoder(number, size):
    """Tag and length varints of every width, against protobuf's own encoder."""
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    expected = pb_encoder.TagBytes(number, 2) + pb_encoder._VarintBytes(size) + payload
    assert codec.length_delimited(number, payload) == expected
    if number == 7:  # ModelInferRequest.raw_input_contents
        assert codec.length_delimited(7, payload) == v2pb.ModelInferRequest(raw_input_contents=[payload]).SerializeToString()


def test_zero_copy_v2_raw_input_1x10000():
    arr = np.random.default_rng(2).random((1, 10000)).astype(np.float32)
    req = v2pb.ModelInferRequest(model_name="m")
    req.inputs.add(name="x", datatype="FP32", shape=[1, 10000])
    req.raw_input_contents.append(arr.tobytes())
    body = req.SerializeToString()
    for impl in IMPLS:
        msg, views = impl.decode_infer_request(body)
        out = impl.decode_raw(views[0], msg.inputs[0].datatype, list(msg.inputs[0].shape))
        assert np.shares_memory(out, np.frombuffer(body, np.uint8)) and np.array_equal(out, arr)


def test_bad_protobuf_is_a_codec_error(impl):
    with pytest.raises(CodecError):
        impl.decode_seldon_message(b"\x1a\x05\x12\x03\x12\x08")
    with pytest.raises(CodecError):
        impl.decode_infer_request(b"\x3a\x05ab")
    with pytest.raises(CodecError):
        impl.encode_seldon_message(pb.SeldonMessage(), np.array(["a"]))


# --------------------------------------------------------------------------- Seldon adapter wiring


def _adapter_messages():
    bodies = [
        _seldon([1.0, 2.0, 3.0, 4.0], [2, 2], ["a", "b"], "p").SerializeToString(),
        _seldon([], [], [], "").SerializeToString(),
        _seldon([1.5], [], [], "").SerializeToString(),
        pb.SeldonMessage(strData="s").SerializeToString(),
        b"",
    ]
    nd = pb.SeldonMessage()
    nd.data.ndarray.values.add().number_value = 2.0
    bodies.append(nd.SerializeToString())
    return bodies


@pytest.mark.parametrize("body", _adapter_messages())
def test_seldon_adapter_proto_decode_matches_library_path(body):
    sp = pytest.importorskip("fastseldon.seldon_protocol")
    try:
        expected = sp.message_from_proto(sp.parse_proto(pb.SeldonMessage, body))
    except CodecError:
        with pytest.raises(CodecError):
            sp.message_from_proto_bytes(body)
        return
    except Exception as exc:  # noqa: BLE001 - the same error type must come out of both
        with pytest.raises(type(exc)):
            sp.message_from_proto_bytes(body)
        return
    got = sp.message_from_proto_bytes(body)
    assert (got.kind, got.names, got.meta, got.raw) == (expected.kind, expected.names, expected.meta, expected.raw)
    if isinstance(expected.payload, np.ndarray):
        assert canon(np.asarray(got.payload)) == canon(np.asarray(expected.payload))
    else:
        assert got.payload == expected.payload
    if isinstance(got.payload, np.ndarray):
        assert got.payload.flags.writeable


@pytest.mark.parametrize(
    "payload,kind,names,meta",
    [
        (np.arange(6, dtype=np.float64).reshape(2, 3), "tensor", None, {}),
        (np.arange(6, dtype=np.int32).reshape(3, 2), "tensor", ["x", "y"], {"puid": "q", "tags": {"a": 1}}),
        (np.float32([0.1, 2]), "jsonData", None, {}),
        (np.array(3.5), "tensor", None, {}),
        (np.array([[1, 2]]), "ndarray", None, {}),
        (np.array(["a"]), "tensor", None, {}),
        ([[1.0, 2.0]], "tensor", None, {}),
        ("text", "tensor", None, {}),
    ],
)
def test_seldon_adapter_proto_encode_matches_library_path(payload, kind, names, meta):
    sp = pytest.importorskip("fastseldon.seldon_protocol")
    reply = sp.Reply(payload, kind, names, meta)
    assert sp.reply_to_proto_bytes(reply) == sp.reply_to_proto(reply).SerializeToString()


@pytest.mark.parametrize(
    "payload",
    [
        np.arange(6, dtype=np.float64).reshape(2, 3),
        np.arange(6, dtype=np.int64).reshape(3, 2),
        np.arange(24, dtype=">f8").reshape(2, 3, 4),
        np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        np.zeros((0, 5)),
        np.arange(10.0).reshape(1, 10)[:, ::2],
    ],
)
def test_seldon_default_tensor_reply_head_is_reused_with_the_same_bytes(payload):
    """A default-names, empty-meta tensor reply's head is written once per shape and reused: every
    reply of the shape (other values, the same shape) still equals the library's bytes."""
    sp = pytest.importorskip("fastseldon.seldon_protocol")
    sp._TENSOR_HEADS.clear()
    for values in (payload, payload + 1, payload * -0.5):
        reply = sp.Reply(values, "tensor", None, {})
        assert sp.reply_to_proto_bytes(reply) == sp.reply_to_proto(reply).SerializeToString()
    assert payload.shape in sp._TENSOR_HEADS


def _tensor_request(values, shape, names=(), puid=""):
    pb = pytest.importorskip("fastseldon.proto.prediction_pb2")
    msg = pb.SeldonMessage()
    msg.data.tensor.values.extend(values)
    msg.data.tensor.shape.extend(shape)
    msg.data.names.extend(names)
    if puid:
        msg.meta.puid = puid
    return msg.SerializeToString()


@pytest.mark.parametrize("full_raw", [False, True])
def test_seldon_tensor_request_form_is_reused_with_the_same_message(full_raw):
    """Tensor requests without meta keep their shape and names per the rest of the message: every
    later request of that form (other values, a wrong count, other names) decodes as the first did."""
    sp = pytest.importorskip("fastseldon.seldon_protocol")
    pb = pytest.importorskip("fastseldon.proto.prediction_pb2")
    sp._TENSOR_FORMS.clear()
    bodies = [_tensor_request([1.0, 2, 3], [1, 3]), _tensor_request([4.0, 5, 6], [1, 3]),
              _tensor_request([1.0, 2], [1, 3]), _tensor_request([1.0, 2, 3], [1, 3], ["a", "b", "c"]),
              _tensor_request([1.0, 2, 3, 4], [2, 2]), _tensor_request([5.0, 6], []),
              _tensor_request([7.0, 8, 9], [1, 3], puid="p")]
    for _ in range(3):
        for body in bodies:
            msg, values = codec.decode_seldon_message(body)
            raw = pb.SeldonMessage.FromString(body) if full_raw else msg
            try:
                expected = sp.message_from_proto(msg, values=values.copy(), raw=raw)
            except sp.BadRequest as exc:
                with pytest.raises(sp.BadRequest, match=re.escape(str(exc))):
                    sp.message_from_proto_bytes(body, full_raw=full_raw)
                continue
            got = sp.message_from_proto_bytes(body, full_raw=full_raw)
            assert (got.kind, got.names, got.meta, got.raw) == (expected.kind, expected.names, expected.meta, expected.raw)
            assert got.payload.shape == expected.payload.shape and np.array_equal(got.payload, expected.payload)
            assert got.payload.flags.writeable
    assert len(sp._TENSOR_FORMS) == 4  # the meta request is not kept; [1, 3] with and without names are two
