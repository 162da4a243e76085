"""V2 adapter in-process: wire <-> numpy for REST JSON, the binary extension and gRPC, the
model mapping of SeldonService.infer, and zero-copy of binary inputs. No sockets here; the
real-server behaviour is in test_v2_rest.py and test_v2_grpc.py."""
from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastseldon import codec
from fastseldon import v2_protocol as v2
from fastseldon.codec.datatypes import dtype_for
from fastseldon.errors import BadRequest, FastSeldonError, NotImplementedHook, UserModelError
from fastseldon.proto import grpc_service_pb2 as pb
from fastseldon.service import SeldonService
from fastseldon.settings import UnitSettings
from fastseldon.steps import Call, drive_sync
from fastseldon.types import InferRequest, InferResult, Tensor
from fastseldon.user_model import UserModel
from models import v2_models

HEADER = b"inference-header-content-length"


def rest(doc: dict, *chunks: bytes) -> InferRequest:
    head = json.dumps(doc).encode()
    headers = {HEADER: str(len(head)).encode()} if chunks else {}
    return v2.decode_rest_request(head + b"".join(chunks), headers, "m", "")


def bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


# --------------------------------------------------------------------------- REST JSON decoding


@pytest.mark.parametrize(
    ("datatype", "data", "expected"),
    [
        ("FP32", [1.5, 2, -3.25, 0.1], np.array([1.5, 2, -3.25, 0.1], dtype=np.float32)),
        ("FP64", [[1.5, 2], [-3.25, 1e300]], np.array([1.5, 2, -3.25, 1e300])),
        ("FP16", [1.0, 0.5, -2.0, 65504.0], np.array([1.0, 0.5, -2.0, 65504.0], dtype=np.float16)),
        ("INT64", [2**62, -(2**63), 0, 7], np.array([2**62, -(2**63), 0, 7], dtype=np.int64)),
        ("INT8", [-128, 127, 0, 1], np.array([-128, 127, 0, 1], dtype=np.int8)),
        ("UINT64", [2**64 - 1, 0, 1, 2], np.array([2**64 - 1, 0, 1, 2], dtype=np.uint64)),
        ("UINT16", [65535, 0, 1, 2], np.array([65535, 0, 1, 2], dtype=np.uint16)),
        ("BOOL", [[True, False], [False, True]], np.array([True, False, False, True])),
        ("BYTES", ["a", "héllo", "", "z"], np.array([b"a", "héllo".encode(), b"", b"z"], dtype=object)),
    ],
)
def test_json_inputs_decode_to_declared_dtype(datatype, data, expected):
    req = rest({"inputs": [{"name": "x", "shape": [2, 2], "datatype": datatype, "data": data}]})
    (tensor,) = req.inputs
    assert tensor.datatype == datatype and tensor.data.shape == (2, 2)
    assert tensor.data.dtype == expected.dtype
    assert tensor.data.reshape(-1).tolist() == expected.tolist()


def test_json_request_fields():
    req = rest({
        "id": "req-1",
        "parameters": {"binary_data_output": True, "custom": 3},
        "inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [4], "parameters": {"content_type": "np"}}],
        "outputs": [{"name": "a", "parameters": {"binary_data": False}}, {"name": "b"}],
    })
    assert req.id == "req-1" and req.parameters == {"custom": 3} and req.binary_output
    assert req.inputs[0].parameters == {"content_type": "np"}
    assert [(o.name, o.binary, o.parameters) for o in req.outputs] == [("a", False, {}), ("b", None, {})]
    assert req.model_name == "m" and not req.typed_contents


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ([1, 2], "must be a JSON object"),
        ({"inputs": []}, "non-empty 'inputs'"),
        ({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}, "needs a 'name'"),
        ({"inputs": [{"name": "x", "shape": [1], "data": [1]}]}, "needs a 'datatype'"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP99", "data": [1]}]}, "Input 'x': Unknown datatype 'FP99'"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "BF16", "data": [1]}]}, "BF16"),
        ({"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}, "Input 'x': Tensor data has 2 elements"),
        ({"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}, "non-negative"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "INT8", "data": [1, 300]}]}, "out of range for INT8"),
        ({"inputs": [{"name": "x", "shape": [2], "datatype": "INT64", "data": [1, 2.5]}]}, "must be integers"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "BOOL", "data": [1]}]}, "true/false"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}, "must be numbers"),
        ({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3]]}]}, "ragged"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}, "neither 'data' nor binary_data_size"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}] * 2}, "appears more than once"),
        ({"id": 5, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}, "id must be a string"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": [{"x": 1}]}, "needs a 'name'"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "parameters": {"binary_data_output": "yes"}},
         "must be true or false"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]},
         "no Inference-Header-Content-Length"),
        ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "parameters": {"binary_data_size": 4}}]},
         "both 'data' and binary_data_size"),
    ],
)
def test_bad_json_requests_are_400(doc, needle):
    with pytest.raises(BadRequest) as err:
        rest(doc)
    assert err.value.http_status == 400
    assert needle in err.value.message


def test_invalid_json_is_400():
    with pytest.raises(FastSeldonError) as err:
        v2.decode_rest_request(b'{"inputs": [', {}, "m", "")
    assert err.value.http_status == 400 and "Invalid JSON" in err.value.message


# --------------------------------------------------------------------------- binary extension


def test_binary_inputs_are_views_onto_the_body():
    a = np.arange(6, dtype=np.float32)
    b = np.array([1, -2], dtype=np.int64)
    doc = {"inputs": [
        {"name": "a", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": a.nbytes}},
        {"name": "j", "shape": [1], "datatype": "FP64", "data": [0.5]},
        {"name": "b", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": b.nbytes}},
        {"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 13}},
    ]}
    head = json.dumps(doc).encode()
    body = head + a.tobytes() + b.tobytes() + bytes_tensor(b"abc", b"\xff\x00")
    req = v2.decode_rest_request(body, {HEADER: str(len(head)).encode()}, "m", "")
    got = {t.name: t.data for t in req.inputs}
    np.testing.assert_array_equal(got["a"], a.reshape(2, 3))
    np.testing.assert_array_equal(got["b"], b)
    assert got["j"].tolist() == [0.5]
    assert got["s"].tolist() == [b"abc", b"\xff\x00"]
    whole = np.frombuffer(body, dtype=np.uint8)
    assert np.shares_memory(got["a"], whole) and np.shares_memory(got["b"], whole)  # no copy
    assert not got["a"].flags.writeable
    assert "binary_data_size" not in req.inputs[0].parameters


@pytest.mark.parametrize(
    ("sizes", "extra", "header_delta", "needle"),
    [
        ((8,), b"", 0, "needs 12 bytes, got 8"),  # chunk smaller than the shape
        ((12,), b"\x00" * 4, 0, "4 bytes of binary data after the JSON header belong to no input"),
        ((16,), b"", 0, "runs past the end of the body"),
        ((12,), b"", 10**6, "the body has only"),
        ((-1,), b"", 0, "non-negative integer"),
    ],
)
def test_bad_binary_framing_is_400(sizes, extra, header_delta, needle):
    doc = {"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "parameters": {"binary_data_size": sizes[0]}}]}
    head = json.dumps(doc).encode()
    body = head + np.zeros(3, np.float32).tobytes()[: max(sizes[0], 0)] + extra
    with pytest.raises(BadRequest) as err:
        v2.decode_rest_request(body, {HEADER: str(len(head) + header_delta).encode()}, "m", "")
    assert needle in err.value.message


def test_bad_bytes_prefix_and_bool_bytes_are_400():
    doc = {"inputs": [{"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]}
    head = json.dumps(doc).encode()
    with pytest.raises(BadRequest, match="truncated"):
        v2.decode_rest_request(head + struct.pack("<I", 9) + b"ab", {HEADER: str(len(head)).encode()}, "m", "")
    doc = {"inputs": [{"name": "b", "shape": [2], "datatype": "BOOL", "parameters": {"binary_data_size": 2}}]}
    head = json.dumps(doc).encode()
    with pytest.raises(BadRequest, match="0 or 1"):
        v2.decode_rest_request(head + b"\x01\x07", {HEADER: str(len(head)).encode()}, "m", "")


def test_header_values_and_compression():
    doc = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}
    body = json.dumps(doc).encode()
    with pytest.raises(BadRequest, match="non-negative integer"):
        v2.decode_rest_request(body, {HEADER: b"12a"}, "m", "")
    with pytest.raises(BadRequest, match="raw binary request"):
        v2.decode_rest_request(body, {HEADER: b"0"}, "m", "")
    import gzip
    import zlib

    for encoding, packed in ((b"gzip", gzip.compress(body)), (b"deflate", zlib.compress(body))):
        req = v2.decode_rest_request(packed, {b"content-encoding": encoding}, "m", "")
        assert req.inputs[0].data.tolist() == [1.0]
    with pytest.raises(FastSeldonError) as err:
        v2.decode_rest_request(body, {b"content-encoding": b"br"}, "m", "")
    assert err.value.http_status == 415
    with pytest.raises(FastSeldonError) as err:
        v2.decode_rest_request(gzip.compress(b" " * 10_000 + body), {b"content-encoding": b"gzip"}, "m", "", max_body=1000)
    assert err.value.http_status == 413


# --------------------------------------------------------------------------- REST encoding


def _split(response) -> tuple[dict, bytes]:
    headers = dict(response.headers)
    length = int(headers.get(b"Inference-Header-Content-Length", len(response.body)))
    return json.loads(response.body[:length]), response.body[length:]


def test_outputs_json_by_default_binary_when_asked():
    out = InferResult([
        Tensor("f", "FP32", np.array([[0.5, 1.5]], dtype=np.float32)),
        Tensor("s", "BYTES", np.array([b"x", b"yz"], dtype=object)),
        Tensor("b", "BOOL", np.array([True, False])),
    ])
    req = rest({"id": "7", "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]})
    resp = v2.encode_rest_response(out, req, "m", "")
    doc, rest_bytes = _split(resp)
    assert resp.content_type == b"application/json" and rest_bytes == b"" and not resp.headers
    assert doc == {"model_name": "m", "id": "7", "outputs": [
        {"name": "f", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 1.5]},
        {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["x", "yz"]},
        {"name": "b", "datatype": "BOOL", "shape": [2], "data": [True, False]},
    ]}
    req = rest({"parameters": {"binary_data_output": True}, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                "outputs": [{"name": "f"}, {"name": "s"}, {"name": "b", "parameters": {"binary_data": False}}]})
    resp = v2.encode_rest_response(out, req, "m", "2")
    doc, chunks = _split(resp)
    assert resp.content_type == b"application/octet-stream" and doc["model_version"] == "2"
    f, s, b = doc["outputs"]
    assert f["parameters"] == {"binary_data_size": 8} and "data" not in f
    assert s["parameters"] == {"binary_data_size": 4 + 1 + 4 + 2}
    assert b["data"] == [True, False] and "parameters" not in b
    assert chunks == np.array([0.5, 1.5], dtype=np.float32).tobytes() + bytes_tensor(b"x", b"yz")


def test_non_utf8_bytes_output_must_go_binary():
    out = InferResult([Tensor("s", "BYTES", np.array([b"\xff"], dtype=object))])
    req = rest({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]})
    with pytest.raises(BadRequest, match="request it as binary"):
        v2.encode_rest_response(out, req, "m", "")


# --------------------------------------------------------------------------- gRPC


def grpc_body(raw: list[bytes] | None = None, **fields) -> bytes:
    msg = pb.ModelInferRequest(**fields)
    return msg.SerializeToString() + b"".join(codec.length_delimited(7, r) for r in raw or [])


def test_grpc_raw_contents_are_views_onto_the_body():
    x = np.arange(4, dtype=np.float64)
    body = grpc_body([x.tobytes(), bytes_tensor(b"q")], model_name="m", id="g1", inputs=[
        pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP64", shape=[2, 2]),
        pb.ModelInferRequest.InferInputTensor(name="s", datatype="BYTES", shape=[1]),
    ])
    req = v2.decode_grpc_request(body)
    assert req.id == "g1" and req.model_name == "m" and not req.typed_contents
    np.testing.assert_array_equal(req.inputs[0].data, x.reshape(2, 2))
    assert np.shares_memory(req.inputs[0].data, np.frombuffer(body, dtype=np.uint8))
    assert req.inputs[1].data.tolist() == [b"q"]


@pytest.mark.parametrize(
    ("datatype", "field", "values", "expected"),
    [
        ("FP32", "fp32_contents", [0.5, -1.0], np.array([0.5, -1.0], dtype=np.float32)),
        ("FP64", "fp64_contents", [0.1, 1e300], np.array([0.1, 1e300])),
        ("INT8", "int_contents", [-128, 127], np.array([-128, 127], dtype=np.int8)),
        ("INT32", "int_contents", [-(2**31), 5], np.array([-(2**31), 5], dtype=np.int32)),
        ("INT64", "int64_contents", [2**62, -3], np.array([2**62, -3], dtype=np.int64)),
        ("UINT8", "uint_contents", [0, 255], np.array([0, 255], dtype=np.uint8)),
        ("UINT64", "uint64_contents", [2**64 - 1, 0], np.array([2**64 - 1, 0], dtype=np.uint64)),
        ("BOOL", "bool_contents", [True, False], np.array([True, False])),
        ("BYTES", "bytes_contents", [b"a", b"\x00b"], np.array([b"a", b"\x00b"], dtype=object)),
    ],
)
def test_grpc_typed_contents_round_trip(datatype, field, values, expected):
    contents = pb.InferTensorContents(**{field: values})
    tensor = pb.ModelInferRequest.InferInputTensor(name="x", datatype=datatype, shape=[2], contents=contents)
    body = grpc_body(model_name="m", inputs=[tensor])
    req = v2.decode_grpc_request(body)
    assert req.typed_contents
    assert req.inputs[0].data.dtype == expected.dtype and req.inputs[0].data.tolist() == expected.tolist()
    reply = pb.ModelInferResponse()
    reply.ParseFromString(v2.encode_grpc_response(InferResult([Tensor("y", datatype, req.inputs[0].data)]), req, "m", ""))
    # typed in, raw out: Triton's replies always use raw_output_contents (all tritonclient reads)
    assert not reply.outputs[0].HasField("contents") and len(reply.raw_output_contents) == 1
    assert v2.codec.decode_raw(reply.raw_output_contents[0], datatype, [2]).tolist() == expected.tolist()
    assert list(reply.outputs[0].shape) == [2]


@pytest.mark.parametrize(
    ("inputs", "raw", "needle"),
    [
        ([], None, "at least one input"),
        ([pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[2])], [b"\x00" * 4], "needs 8 bytes, got 4"),
        ([pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1])] * 2, [b"\x00" * 4] * 2, "appears more than once"),
        ([pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1])], [b"\x00" * 4] * 2, "2 entries for 1 inputs"),
        ([pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP16", shape=[1])], None, "no typed contents field"),
        ([pb.ModelInferRequest.InferInputTensor(name="x", datatype="INT8", shape=[1],
                                                 contents=pb.InferTensorContents(int_contents=[1000]))], None, "out of range for INT8"),
        ([pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[3],
                                                 contents=pb.InferTensorContents(fp32_contents=[1]))], None, "has 1 elements"),
        ([pb.ModelInferRequest.InferInputTensor(name="x", datatype="WAT", shape=[1])], [b"\x00"], "Unknown datatype"),
        ([pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1],
                                                 contents=pb.InferTensorContents(fp32_contents=[1]))],
         [b"\x00" * 4], "typed contents although"),
    ],
)
def test_bad_grpc_requests_are_invalid_argument(inputs, raw, needle):
    with pytest.raises(BadRequest) as err:
        v2.decode_grpc_request(grpc_body(raw, model_name="m", inputs=inputs))
    assert err.value.grpc_code == "INVALID_ARGUMENT" and needle in err.value.message


def test_grpc_response_raw_by_default_and_parameters():
    req = v2.decode_grpc_request(grpc_body([b"\x00" * 4], model_name="m", inputs=[
        pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1])]))
    result = InferResult([Tensor("y", "FP16", np.array([1.5, 2], dtype=np.float16))],
                            {"flag": True, "n": 3, "big": 2**64 - 1, "f": 0.5, "s": "t"})
    reply = pb.ModelInferResponse()
    reply.ParseFromString(v2.encode_grpc_response(result, req, "m", "4"))
    assert reply.model_version == "4" and list(reply.outputs[0].shape) == [2]
    assert np.frombuffer(reply.raw_output_contents[0], dtype="<f2").tolist() == [1.5, 2.0]
    assert {k: v2.param_value(p) for k, p in reply.parameters.items()} == {"flag": True, "n": 3, "big": 2**64 - 1, "f": 0.5, "s": "t"}


def test_stream_reply_wraps_an_infer_response():
    inner = pb.ModelInferResponse(model_name="m", id="x" * 300).SerializeToString()
    wrapped = pb.ModelStreamInferResponse()
    wrapped.ParseFromString(v2.stream_reply(inner))
    assert wrapped.infer_response.id == "x" * 300 and wrapped.error_message == ""


# --------------------------------------------------------------------------- metadata


def test_model_metadata_keeps_kfserving_style_entries():
    meta = {"versions": ["", "1"], "platform": "p", "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [-1, 2]},
        {"messagetype": "tensor", "schema": {"names": ["a"]}},  # Seldon-style: no V2 equivalent
    ], "outputs": [{"name": "y", "datatype": "INT64"}]}
    assert v2.model_metadata(meta, "m") == {
        "name": "m", "versions": ["1"], "platform": "p",
        "inputs": [{"name": "a", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "y", "datatype": "INT64", "shape": []}],
    }


# --------------------------------------------------------------------------- SeldonService.infer


def service_for(obj) -> SeldonService:
    settings = UnitSettings(interface_name=type(obj).__name__, model_name="m")
    return SeldonService(UserModel.from_object(obj), settings, metrics=None)


def drive(steps, calls: list | None = None):
    """Run a service generator in-process with the real sync driver, recording the calls."""

    def invoke(call: Call):
        if calls is not None:
            calls.append(call)
        return call.hook.fn(*call.args, **call.kwargs)

    return drive_sync(steps, invoke)


def infer(obj, doc: dict, calls: list | None = None) -> InferResult:
    return drive(service_for(obj).infer(rest(doc)), calls)


def one(name, datatype, data, shape=None):
    arr = np.asarray(data)
    return {"name": name, "datatype": datatype, "shape": list(shape or arr.shape), "data": arr.ravel().tolist()}


def test_single_numeric_input_is_a_batchable_predict_call():
    calls: list[Call] = []
    result = infer(v2_models.Echo(), {"inputs": [one("x", "FP64", [[1.0, 2.0]])]}, calls)
    (call,) = calls
    assert call.batchable and isinstance(call.args[0], np.ndarray) and call.args[1] == []
    assert [(t.name, t.datatype, t.data.tolist()) for t in result.outputs] == [("output-0", "FP64", [[2.0, 4.0]])]


@pytest.mark.parametrize(
    "inputs",
    [
        [one("x", "FP64", [1.0]), one("y", "INT64", [2])],  # several inputs: a dict
        [one("s", "BYTES", ["a"])],  # not stackable numbers
        [one("x", "FP64", 1.0, shape=[])],  # a scalar has no rows
    ],
)
def test_other_inputs_are_not_batchable(inputs):
    calls: list[Call] = []
    infer(v2_models.Echo(), {"inputs": inputs}, calls)
    assert not calls[0].batchable


def test_several_inputs_arrive_as_a_dict_and_come_back_by_name():
    calls: list[Call] = []
    result = infer(v2_models.Echo(), {"inputs": [one("a", "INT64", [1, 2]), one("b", "BOOL", [True])]}, calls)
    x, names = calls[0].args
    assert list(x) == ["a", "b"] and names == ["a", "b"] and x["a"].dtype == np.int64
    assert [(t.name, t.datatype) for t in result.outputs] == [("a", "INT64"), ("b", "BOOL")]


def test_meta_carries_id_and_parameters():
    result = infer(v2_models.Echo(), {"id": "r1", "parameters": {"k": 1}, "inputs": [one("s", "BYTES", ["meta"])]})
    (out,) = result.outputs
    assert out.datatype == "BYTES"
    assert json.loads(out.data[0]) == {"meta": {"id": "r1", "parameters": {"k": 1}}, "names": []}


def test_output_names_from_metadata_then_class_names_then_defaults():
    described = infer(v2_models.Described(), {"inputs": [one("x", "FP64", [[1.0, 2.0, 3.0]])]})
    assert [(t.name, t.data.tolist()) for t in described.outputs] == [("doubled", [[2.0, 4.0, 6.0]]), ("total", [6.0])]
    named = infer(v2_models.Named(), {"inputs": [one("x", "INT32", [[1, 5]])]})
    assert [(t.name, t.datatype, t.data.tolist()) for t in named.outputs] == [("low", "INT32", [1]), ("high", "INT32", [5])]
    single = infer(v2_models.Named(), {"inputs": [one("x", "INT32", [[1]])]})
    assert [t.name for t in single.outputs] == ["output-0"]


def test_requested_outputs_filter_and_order():
    doc = {"inputs": [one("x", "FP64", [[1.0, 2.0, 3.0]])], "outputs": [{"name": "total"}, {"name": "doubled"}]}
    assert [t.name for t in infer(v2_models.Described(), doc).outputs] == ["total", "doubled"]
    doc["outputs"] = [{"name": "nope"}]
    with pytest.raises(BadRequest, match=r"Unknown output\(s\) \['nope'\]; the model's outputs are \['doubled', 'total'\]"):
        infer(v2_models.Described(), doc)


def test_predict_raw_gets_the_request_dict_and_answers_in_v2():
    result = infer(v2_models.Raw(), {"inputs": [one("a", "FP32", [1.5, 2.5]), one("b", "INT64", [[1], [2]])]})
    assert result.parameters == {"inputs": 2, "first": "a"}
    total, names = result.outputs
    got = (total.name, total.datatype, total.data.dtype, total.data.shape, total.data.tolist())
    assert got == ("total", "FP32", np.float32, (1, 1), [[7.0]])
    assert (names.datatype, names.data.tolist()) == ("BYTES", ["a", "b"])


def test_predict_raw_can_fall_through_to_predict():
    result = infer(v2_models.FallThrough(), {"inputs": [one("x", "INT64", [1])]})
    assert result.outputs[0].data.tolist() == [101]


def test_model_outputs_that_are_not_tensors_are_500():
    with pytest.raises(UserModelError, match="complex128"):
        infer(v2_models.Echo(), {"inputs": [one("s", "BYTES", ["complex"])]})

    class Objects:
        def predict(self, X, names):
            return np.array([{"a": 1}], dtype=object)

    with pytest.raises(UserModelError, match="neither str nor bytes"):
        infer(Objects(), {"inputs": [one("x", "FP64", [1.0])]})

    class Ragged:
        def predict(self, X, names):
            return [[1, 2], [3]]

    with pytest.raises(UserModelError, match="not a V2 tensor"):
        infer(Ragged(), {"inputs": [one("x", "FP64", [1.0])]})


def test_a_model_without_predict_is_unimplemented():
    class Router:
        def route(self, X, names):
            return 0

    with pytest.raises(NotImplementedHook):
        infer(Router(), {"inputs": [one("x", "FP64", [1.0])]})


# --------------------------------------------------------------------------- round trips (property-based)

NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"]
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)


def same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype.kind == "f":
        np.testing.assert_array_equal(got, want)  # NaN == NaN here
        assert (np.signbit(got) == np.signbit(want)).all() or np.isnan(want).any()
    else:
        assert got.tolist() == want.tolist()


def reply_to_request(result: InferResult, binary: bool) -> InferRequest:
    """Encode a result as a REST response, then feed its outputs back as a request's inputs."""
    ask = InferRequest("m", "", None, [], binary_output=binary)
    doc, chunks = _split(v2.encode_rest_response(result, ask, "m", ""))
    inputs = []
    for out in doc["outputs"]:
        item = {k: out[k] for k in ("name", "datatype", "shape")}
        if "data" in out:
            item["data"] = out["data"]
        else:
            item["parameters"] = {"binary_data_size": out["parameters"]["binary_data_size"]}
        inputs.append(item)
    head = json.dumps({"inputs": inputs}).encode()
    headers = {HEADER: str(len(head)).encode()} if binary else {}
    return v2.decode_rest_request(head + chunks, headers, "m", "")


@settings(max_examples=150, deadline=None)
@given(datatype=st.sampled_from(NUMERIC), data=st.data(), binary=st.booleans())
def test_rest_output_fed_back_as_input_is_the_same_array(datatype, data, binary):
    arr = data.draw(hnp.arrays(dtype_for(datatype), SHAPES))
    back = reply_to_request(InferResult([Tensor("y", datatype, arr)]), binary)
    same(back.inputs[0].data, arr)


@settings(max_examples=100, deadline=None)
@given(items=st.lists(st.binary(max_size=40), max_size=6), binary=st.booleans())
def test_rest_bytes_round_trip(items, binary):
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    if not binary:  # JSON carries text: keep to UTF-8
        arr[:] = [b.decode("utf-8", "replace").encode() for b in items]
    back = reply_to_request(InferResult([Tensor("s", "BYTES", arr)]), binary)
    assert back.inputs[0].data.tolist() == arr.tolist()


@settings(max_examples=150, deadline=None)
@given(datatype=st.sampled_from(NUMERIC + ["BYTES"]), data=st.data())
def test_grpc_raw_output_fed_back_as_raw_input_is_the_same_array(datatype, data):
    if datatype == "BYTES":
        items = data.draw(st.lists(st.binary(max_size=20), max_size=5))
        arr = np.empty(len(items), dtype=object)
        arr[:] = items
    else:
        arr = data.draw(hnp.arrays(dtype_for(datatype), SHAPES))
    ask = InferRequest("m", "", None, [])
    reply = pb.ModelInferResponse()
    reply.ParseFromString(v2.encode_grpc_response(InferResult([Tensor("y", datatype, arr)]), ask, "m", ""))
    out = reply.outputs[0]
    body = grpc_body(list(reply.raw_output_contents), model_name="m", inputs=[
        pb.ModelInferRequest.InferInputTensor(name="y", datatype=out.datatype, shape=list(out.shape))])
    back = v2.decode_grpc_request(body).inputs[0].data
    if datatype == "BYTES":
        assert back.tolist() == arr.tolist()
    else:
        same(back, arr)


def _whole_document(result: InferResult, request: InferRequest, model_name: str, model_version: str) -> bytes:
    """The reply's JSON as one ``codec.dumps`` of the whole document: what encode_rest_response's parts add up to."""
    flags = {o.name: o.binary for o in request.outputs} if request.outputs else {}
    outputs = []
    for t in result.outputs:
        entry = {"name": t.name, "datatype": t.datatype, "shape": list(t.data.shape)}
        params = dict(t.parameters)
        flag = flags.get(t.name)
        if request.binary_output if flag is None else flag:
            params["binary_data_size"] = memoryview(codec.encode_raw(t.data, t.datatype)).nbytes
        else:
            entry["data"] = codec.v2_json_data(t.data)
        if params:
            entry["parameters"] = params
        outputs.append(entry)
    doc = {"model_name": model_name, **({"model_version": model_version} if model_version else {}),
           **({"id": request.id} if request.id is not None else {}), **({"parameters": result.parameters} if result.parameters else {}),
           "outputs": outputs}
    return codec.dumps(doc)


@pytest.mark.parametrize("case", ["plain", "named", "nan", "fp32", "bytes", "binary", "scalar"])
def test_rest_reply_is_the_whole_documents_dumps(case: str) -> None:
    data = np.array([[1.5, -2.0, 3.25]])
    outputs = [Tensor("output-0", "FP64", data, {})]
    request = InferRequest("m", "", None, [], None, {}, False)
    version = ""
    if case == "named":
        outputs = [Tensor('sortie "é"\n', "INT64", np.array([1, 2]), {"unit": "cm", "w": 0.5}),
                   Tensor("b", "FP64", data, {})]
        request = InferRequest("m", "", "req-\u2603", [], None, {}, False)
        version = "7"
    elif case == "nan":
        outputs = [Tensor("y", "FP64", np.array([np.nan, np.inf, 1.0]), {"bad": float("nan")})]
    elif case == "fp32":
        outputs = [Tensor("y", "FP32", np.array([0.1, 2.5], dtype=np.float32), {})]
    elif case == "bytes":
        outputs = [Tensor("y", "BYTES", np.array([b"ab", "c\u00e9".encode()], dtype=object), {})]
    elif case == "binary":
        outputs = [Tensor("y", "FP64", data, {}), Tensor("z", "INT32", np.array([1, 2], dtype=np.int32), {})]
        request = InferRequest("m", "", None, [], [v2.RequestedOutput("z", True, {})], {}, False)
    elif case == "scalar":
        outputs = [Tensor("y", "FP64", np.array(2.0), {})]
    result = InferResult(outputs, {"p": [1, 2]} if case == "named" else {})
    body, _content_type, headers = v2.encode_rest_response(result, request, "mödel", version)
    head = _whole_document(result, request, "mödel", version)
    assert body[:len(head)] == head
    if headers:
        assert headers == [(b"Inference-Header-Content-Length", str(len(head)).encode())]


def _raw_infer_request(arrays, datatype="FP64", outputs=(), params=None, tensor_params=None, rid="", raws=None):
    from fastseldon.proto import grpc_service_pb2 as v2pb

    req = v2pb.ModelInferRequest(model_name="m", id=rid)
    for i, arr in enumerate(arrays):
        tensor = req.inputs.add(name=f"in{i}", datatype=datatype, shape=list(arr.shape))
        for key, value in (tensor_params or {}).items():
            tensor.parameters[key].string_param = value
    for name in outputs:
        req.outputs.add(name=name).parameters["binary_data"].bool_param = True
    for key, value in (params or {}).items():
        req.parameters[key].int64_param = value
    for arr in arrays if raws is None else raws:
        req.raw_input_contents.append(np.ascontiguousarray(arr, dtype="<f8").tobytes())
    return req.SerializeToString()


def test_grpc_raw_request_form_is_reused_with_the_same_request():
    """Raw-input requests without an id keep their decoded rest per its bytes: every later request of
    that form (other values, a wrong byte count, a missing raw entry) decodes or fails as the first did."""
    v2 = pytest.importorskip("fastseldon.v2_protocol")
    v2._RAW_FORMS.clear()
    a, b = np.arange(6.0).reshape(2, 3), np.arange(4.0)
    bodies = [
        _raw_infer_request([a]), _raw_infer_request([a + 1]), _raw_infer_request([a, b], outputs=("y",)),
        _raw_infer_request([a], params={"p": 3}, tensor_params={"content_type": "np"}),
        _raw_infer_request([a], raws=[np.arange(5.0)]), _raw_infer_request([a, b], raws=[a]),
        _raw_infer_request([a], rid="r1"),
    ]

    def uncached(body):
        return v2._decode_grpc_request(*codec.decode_infer_request(body))

    for _ in range(3):
        for body in bodies:
            try:
                expected = uncached(body)
            except BadRequest as exc:
                with pytest.raises(BadRequest, match=re.escape(str(exc))):
                    v2.decode_grpc_request(body)
                continue
            got = v2.decode_grpc_request(body)
            for field in ("model_name", "model_version", "id", "outputs", "parameters", "binary_output", "typed_contents"):
                assert getattr(got, field) == getattr(expected, field), field
            assert [(t.name, t.datatype, t.parameters, t.data.dtype, t.data.shape) for t in got.inputs] == \
                [(t.name, t.datatype, t.parameters, t.data.dtype, t.data.shape) for t in expected.inputs]
            assert all(np.array_equal(g.data, e.data) for g, e in zip(got.inputs, expected.inputs))
    assert len(v2._RAW_FORMS) == 3  # the request with an id is not kept, nor is a form that failed first
