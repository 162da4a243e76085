"""V2 gRPC (inference.GRPCInferenceService) against the real server with tritonclient.grpc,
plus hand-built messages for typed contents and malformed requests."""
from __future__ import annotations

import queue

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tritongrpc
from tritonclient.utils import InferenceServerException

from fastseldon.proto import grpc_service_pb2 as pb
from support.serving import MODELS, running

SERVICE = "/inference.GRPCInferenceService/"
DTYPES = {
    "FP32": np.array([[0.5, -1.25, 1.0e38], [1e-30, 0.0, 7.0]], dtype=np.float32),
    "FP64": np.array([[0.1, -2.5e300, 1.0], [3.0, 4.0, -0.0]]),
    "FP16": np.array([[0.5, -2.0, 1000.0], [1.0, 0.0, 3.0]], dtype=np.float16),
    "INT64": np.array([[2**62, -(2**63), 0], [1, -1, 7]], dtype=np.int64),
    "INT8": np.array([[-128, 127, 0], [1, -1, 7]], dtype=np.int8),
    "UINT32": np.array([[0, 2**32 - 1, 5], [1, 2, 3]], dtype=np.uint32),
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "BYTES": np.array([[b"a", "héllo".encode(), b""], [b"\xff\x00", b"{}", b"z" * 1000]], dtype=object),
}


@pytest.fixture(scope="module")
def echo():
    with running(["v2_models.Echo", "--model-name", "echo"], cwd=MODELS) as server:
        yield server


@pytest.fixture(scope="module")
def client(echo):
    c = tritongrpc.InferenceServerClient(echo.grpc_target)
    yield c
    c.close()


@pytest.fixture(scope="module")
def channel(echo):
    with grpc.insecure_channel(echo.grpc_target) as ch:
        yield ch


def call(channel, method: str, request, response_cls):
    fn = channel.unary_unary(SERVICE + method, request_serializer=lambda m: m.SerializeToString(),
                             response_deserializer=response_cls.FromString)
    return fn(request, timeout=10)


def make_input(name: str, arr: np.ndarray, datatype: str):
    item = tritongrpc.InferInput(name, list(arr.shape), datatype)
    item.set_data_from_numpy(arr)
    return item


def expected(arr: np.ndarray) -> np.ndarray:
    return arr * 2 if arr.dtype.kind == "f" else arr


# --------------------------------------------------------------------------- health and metadata


def test_health(client):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("echo")


def test_model_ready_for_unknown_model_is_not_found(client):
    with pytest.raises(InferenceServerException) as err:
        client.is_model_ready("nope")
    assert err.value.status() == "StatusCode.NOT_FOUND"


def test_server_metadata(client):
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "fastseldon" and meta["version"]
    assert meta["extensions"] == ["binary_tensor_data", "statistics", "model_repository"]


def test_model_metadata_from_init_metadata():
    with running(["v2_models.Described", "--model-name", "described"], cwd=MODELS) as server:
        client = tritongrpc.InferenceServerClient(server.grpc_target)
        meta = client.get_model_metadata("described", as_json=True)
        assert meta == {
            "name": "described", "versions": ["3"], "platform": "numpy_v1",
            "inputs": [{"name": "x", "datatype": "FP64", "shape": ["-1", "3"]}],  # int64 as JSON strings (protobuf's rule)
            "outputs": [
                {"name": "doubled", "datatype": "FP64", "shape": ["-1", "3"]},
                {"name": "total", "datatype": "FP64", "shape": ["-1"]},
            ],
        }
        x = np.array([[1.0, 2.0, 3.0]])
        result = client.infer("described", [make_input("x", x, "FP64")], model_version="3")
        assert result.get_response().model_version == "3"
        assert result.as_numpy("doubled").tolist() == [[2.0, 4.0, 6.0]] and result.as_numpy("total").tolist() == [6.0]
        with pytest.raises(InferenceServerException) as err:
            client.get_model_metadata("described", model_version="4")
        assert err.value.status() == "StatusCode.NOT_FOUND"
        client.close()


def test_repository_extension(client):
    index = client.get_model_repository_index(as_json=True)
    assert index == {"models": [{"name": "echo", "state": "READY"}]}
    client.load_model("echo")  # loaded, and it stays so
    with pytest.raises(InferenceServerException) as err:
        client.unload_model("echo")
    assert err.value.status() == "StatusCode.UNIMPLEMENTED" and "model repository extension" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.load_model("other")
    assert err.value.status() == "StatusCode.NOT_FOUND" and "one fixed model, 'echo'" in err.value.message()


@pytest.mark.parametrize(("call_", "extension"), [
    (lambda c: c.get_model_config("echo"), "model configuration"),
    (lambda c: c.get_system_shared_memory_status(), "system shared memory"),
    (lambda c: c.unregister_cuda_shared_memory(), "CUDA shared memory"),
    (lambda c: c.get_trace_settings(), "trace"),
    (lambda c: c.get_log_settings(), "logging"),
])
def test_unsupported_triton_extensions_say_which(client, call_, extension):
    """Not gRPC's bare "Method not found!": the answer names the extension."""
    with pytest.raises(InferenceServerException) as err:
        call_(client)
    assert err.value.status() == "StatusCode.UNIMPLEMENTED"
    assert f"Triton's {extension} extension is not supported" in err.value.message()


def test_statistics_extension(client):
    before = client.get_inference_statistics("echo", as_json=True)["model_stats"][0]
    x = np.array([1.0, 2.0])
    for _ in range(3):
        client.infer("echo", [make_input("x", x, "FP64")])
    with pytest.raises(InferenceServerException):
        client.infer("echo", [make_input("x", x, "FP64")], outputs=[tritongrpc.InferRequestedOutput("nope")])
    stats = client.get_inference_statistics("echo").model_stats[0]
    assert stats.name == "echo"
    infer = stats.inference_stats
    assert stats.inference_count - int(before.get("inference_count", 0)) == 3
    assert infer.success.count - int(before["inference_stats"]["success"].get("count", 0)) == 3
    assert infer.fail.count - int(before["inference_stats"]["fail"].get("count", 0)) == 1
    assert infer.compute_infer.ns > 0 and infer.compute_input.ns > 0 and infer.compute_output.ns > 0
    assert infer.success.ns >= infer.compute_infer.ns and stats.last_inference > 0
    assert client.get_inference_statistics().model_stats[0].name == "echo"  # all models: the one served
    with pytest.raises(InferenceServerException) as err:
        client.get_inference_statistics("other")
    assert err.value.status() == "StatusCode.NOT_FOUND"


# --------------------------------------------------------------------------- inference


@pytest.mark.parametrize("datatype", list(DTYPES))
def test_infer_each_datatype_raw_contents(client, datatype):
    arr = DTYPES[datatype]
    result = client.infer("echo", [make_input("x", arr, datatype)], request_id="id-" + datatype)
    response = result.get_response()
    assert response.id == "id-" + datatype and response.model_name == "echo"
    assert len(response.raw_output_contents) == 1  # what tritonclient reads
    out = result.get_output("output-0")
    assert out.datatype == datatype and list(out.shape) == [2, 3]
    assert result.as_numpy("output-0").tolist() == expected(arr).tolist()


def test_large_tensors(client):
    x = np.random.default_rng(3).normal(size=(1, 10_000)).astype(np.float32)
    np.testing.assert_array_equal(client.infer("echo", [make_input("x", x, "FP32")]).as_numpy("output-0"), x * 2)
    big = np.random.default_rng(4).normal(size=(4, 400_000)).astype(np.float32)  # 6.4 MB: over grpc's 4 MiB default
    np.testing.assert_array_equal(client.infer("echo", [make_input("x", big, "FP32")]).as_numpy("output-0"), big * 2)


def test_multiple_inputs_and_requested_outputs(client):
    a = np.array([[1.5, 2.5]])
    b = np.array([7, 8, 9], dtype=np.int64)
    s = np.array([b"p", b"qr"], dtype=object)
    inputs = [make_input("a", a, "FP64"), make_input("b", b, "INT64"), make_input("s", s, "BYTES")]
    result = client.infer("echo", inputs)
    assert [o.name for o in result.get_response().outputs] == ["a", "b", "s"]
    assert result.as_numpy("a").tolist() == a.tolist() and result.as_numpy("b").tolist() == b.tolist()
    assert result.as_numpy("s").tolist() == s.tolist()
    result = client.infer("echo", inputs, outputs=[tritongrpc.InferRequestedOutput("s"), tritongrpc.InferRequestedOutput("a")])
    assert [o.name for o in result.get_response().outputs] == ["s", "a"]
    with pytest.raises(InferenceServerException) as err:
        client.infer("echo", inputs, outputs=[tritongrpc.InferRequestedOutput("zzz")])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "Unknown output(s) ['zzz']" in err.value.message()


def test_parameters_reach_meta(client):
    result = client.infer("echo", [make_input("s", np.array([b"meta"], dtype=object), "BYTES")],
                          request_id="g7", parameters={"tenant": "t9", "n": 5, "on": True})
    import json

    seen = json.loads(result.as_numpy("output-0")[0])
    assert seen == {"meta": {"id": "g7", "parameters": {"tenant": "t9", "n": 5, "on": True}}, "names": []}


def test_typed_contents_in_raw_contents_out(channel):
    InputTensor = pb.ModelInferRequest.InferInputTensor
    request = pb.ModelInferRequest(model_name="echo", id="typed", inputs=[
        InputTensor(name="f", datatype="FP32", shape=[2], contents=pb.InferTensorContents(fp32_contents=[1.5, -2])),
        InputTensor(name="i", datatype="INT16", shape=[1, 2], contents=pb.InferTensorContents(int_contents=[-300, 300])),
        InputTensor(name="s", datatype="BYTES", shape=[1], contents=pb.InferTensorContents(bytes_contents=[b"hey"])),
    ])
    reply = call(channel, "ModelInfer", request, pb.ModelInferResponse)
    # Triton answers raw_output_contents whatever the request used (tritonclient reads nothing else)
    assert reply.id == "typed" and len(reply.raw_output_contents) == 3
    f, i, s = reply.outputs
    assert not any(o.HasField("contents") for o in reply.outputs)
    assert (f.name, f.datatype, list(f.shape)) == ("f", "FP32", [2])
    assert np.frombuffer(reply.raw_output_contents[0], "<f4").tolist() == [1.5, -2.0]
    assert (i.datatype, list(i.shape)) == ("INT16", [1, 2])
    assert np.frombuffer(reply.raw_output_contents[1], "<i2").tolist() == [-300, 300]
    assert reply.raw_output_contents[2] == b"\x03\x00\x00\x00hey"


def test_tritonclient_explicit_contents_flow(channel):
    """tritonclient's grpc_explicit_int_content / int8 / byte_content examples: typed contents sent
    through the generated stub, the reply read with tritonclient's own InferResult.as_numpy."""
    import tritonclient.grpc.service_pb2 as tpb
    import tritonclient.grpc.service_pb2_grpc as tpb_grpc

    stub = tpb_grpc.GRPCInferenceServiceStub(channel)
    request = tpb.ModelInferRequest(model_name="echo", model_version="")
    for name, datatype, field, values in (("INPUT0", "INT32", "int_contents", list(range(16))),
                                          ("INPUT1", "INT8", "int_contents", [-1] * 16),
                                          ("INPUT2", "BYTES", "bytes_contents", [str(v).encode() for v in range(16)])):
        tensor = tpb.ModelInferRequest().InferInputTensor(name=name, datatype=datatype, shape=[1, 16])
        getattr(tensor.contents, field).extend(values)
        request.inputs.extend([tensor])
    result = tritongrpc.InferResult(stub.ModelInfer(request))
    assert result.as_numpy("INPUT0").dtype == np.int32 and result.as_numpy("INPUT0").tolist() == [list(range(16))]
    assert result.as_numpy("INPUT1").dtype == np.int8 and result.as_numpy("INPUT1").tolist() == [[-1] * 16]
    assert result.as_numpy("INPUT2").tolist() == [[str(v).encode() for v in range(16)]]


def test_stream_infer(client):
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        x = np.array([1.0, 2.0])
        client.async_stream_infer("echo", [make_input("x", x, "FP64")], request_id="s1")
        client.async_stream_infer("nope", [make_input("x", x, "FP64")], request_id="s2")
        client.async_stream_infer("echo", [make_input("x", np.array([666.0]), "FP64")], request_id="s3")
        client.async_stream_infer("echo", [make_input("x", x * 5, "FP64")], request_id="s4")
        got = [answers.get(timeout=10) for _ in range(4)]
    finally:
        client.stop_stream()
    (r1, e1), (r2, e2), (r3, e3), (r4, e4) = got
    assert e1 is None and r1.get_response().id == "s1" and r1.as_numpy("output-0").tolist() == [2.0, 4.0]
    assert r2 is None and "Model 'nope' is not served here" in e2.message()
    assert r3 is None and "the number of the beast" in e3.message()
    assert e4 is None and r4.as_numpy("output-0").tolist() == [10.0, 20.0]  # the stream went on


# --------------------------------------------------------------------------- errors (and the server survives each)


def test_errors_through_tritonclient(client):
    x = np.zeros(2, np.float32)
    cases = [
        (lambda: client.infer("nope", [make_input("x", x, "FP32")]), "StatusCode.NOT_FOUND", "not served here"),
        (lambda: client.infer("echo", [make_input("x", x, "FP32")], model_version="2"), "StatusCode.NOT_FOUND", "no version '2'"),
        (lambda: client.infer("echo", [make_input("x", np.array([666.0]), "FP64")]), "StatusCode.INTERNAL", "the number of the beast"),
    ]
    for run, status, needle in cases:
        with pytest.raises(InferenceServerException) as err:
            run()
        assert err.value.status() == status and needle in err.value.message()
    assert client.infer("echo", [make_input("x", x + 1, "FP32")]).as_numpy("output-0").tolist() == [2.0, 2.0]


@pytest.mark.parametrize(
    ("request_msg", "raw", "needle"),
    [
        (pb.ModelInferRequest(model_name="echo", inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP99", shape=[1])]),
         [b"\x00" * 4], "Unknown datatype 'FP99'"),
        (pb.ModelInferRequest(model_name="echo", inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[3])]),
         [b"\x00" * 8], "needs 12 bytes, got 8"),
        (pb.ModelInferRequest(model_name="echo", inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1])]),
         [b"\x00" * 4, b"\x00" * 4], "2 entries for 1 inputs"),
        (pb.ModelInferRequest(model_name="echo", inputs=[pb.ModelInferRequest.InferInputTensor(name="s", datatype="BYTES", shape=[1])]),
         [b"\x05\x00\x00\x00ab"], "truncated"),
        (pb.ModelInferRequest(model_name="echo", inputs=[pb.ModelInferRequest.InferInputTensor(
            name="x", datatype="FP32", shape=[2], contents=pb.InferTensorContents(fp32_contents=[1.0]))]), None, "has 1 elements"),
    ],
)
def test_bad_requests_are_invalid_argument(channel, request_msg, raw, needle):
    request_msg.raw_input_contents.extend(raw or [])
    with pytest.raises(grpc.RpcError) as err:
        call(channel, "ModelInfer", request_msg, pb.ModelInferResponse)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in err.value.details()


def test_garbage_bytes_are_invalid_argument(channel):
    fn = channel.unary_unary(SERVICE + "ModelInfer")
    with pytest.raises(grpc.RpcError) as err:
        fn(b"\xff\xff\xff\xff\x0f garbage", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    ok = call(channel, "ServerLive", pb.ServerLiveRequest(), pb.ServerLiveResponse)
    assert ok.live
