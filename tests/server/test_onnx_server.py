"""OnnxModel behind the real server: Seldon REST and gRPC, V2, errors, metadata, startup
failures. Each server is a `fastseldon serve` subprocess on free ports."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import onnx  # noqa: F401 - the [test] extra: builds the models served here
import onnxruntime as ort
import pytest
import requests
import tritonclient.grpc as tritongrpc
from google.protobuf import empty_pb2, json_format

from fastseldon.proto import prediction_pb2 as pb
from fastseldon.proto import prediction_pb2_grpc as pb_grpc
from support.onnx_models import Mlp, TwoInput
from support.serving import Server, free_port, running

ONNX_CLASS = "fastseldon.runtimes.onnx.OnnxModel"
RTOL, ATOL = 1e-5, 1e-6
START_TIMEOUT_S = 60


def onnx_parameters(path: str | Path, **extra: str) -> str:
    params = [{"name": "model_uri", "value": str(path), "type": "STRING"}]
    params += [{"name": k, "value": v, "type": "STRING"} for k, v in extra.items()]
    return json.dumps(params)


@contextmanager
def onnx_server(args: list[str], tmp_path: Path) -> Iterator[Server]:
    """``running()`` from serving.py, plus a connected gRPC channel before the first test."""
    with running(args, cwd=tmp_path, log_dir=tmp_path) as server:
        with grpc.insecure_channel(server.grpc_target) as channel:
            grpc.channel_ready_future(channel).result(timeout=START_TIMEOUT_S)
        yield server


def startup_failure(args: list[str], tmp_path: Path) -> tuple[int, str]:
    """Run a server that must refuse to start; return (exit code, output)."""
    cmd = [sys.executable, "-m", "fastseldon", "serve", *args, "--http-port", str(free_port()),
           "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    try:
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"server kept running instead of failing at startup: {exc.stdout} {exc.stderr}") from None
    return done.returncode, done.stdout + done.stderr


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx-models")
    mlp = Mlp(seed=42)
    return {"mlp": mlp, "mlp_path": mlp.save(folder / "mlp.onnx"), "two_path": TwoInput().save(folder / "two.onnx")}


@pytest.fixture(scope="module")
def mlp_server(models, tmp_path_factory):
    args = [ONNX_CLASS, "--parameters", onnx_parameters(models["mlp_path"], device="cpu"), "--model-name", "mlp"]
    with onnx_server(args, tmp_path_factory.mktemp("mlp-server")) as server:
        yield server


@pytest.fixture(scope="module")
def two_server(models, tmp_path_factory):
    args = [ONNX_CLASS, "--parameters", onnx_parameters(models["two_path"]), "--model-name", "two"]
    with onnx_server(args, tmp_path_factory.mktemp("two-server")) as server:
        yield server


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4))


# ----------------------------------------------------------------------------- Seldon REST
@pytest.mark.parametrize("n", [1, 5])
def test_rest_ndarray_matches_numpy(mlp_server, models, n):
    x = rows(n, n)
    reply = requests.post(mlp_server.url + "/api/v1.0/predictions", json={"data": {"ndarray": x.tolist()}}, timeout=10)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["data"]["names"] == ["t:0", "t:1", "t:2"]
    np.testing.assert_allclose(body["data"]["ndarray"], models["mlp"].reference(x), rtol=RTOL, atol=ATOL)


def test_rest_tensor_matches_numpy(mlp_server, models):
    x = rows(3, 7)
    request = {"data": {"tensor": {"shape": list(x.shape), "values": x.ravel().tolist()}}}
    body = requests.post(mlp_server.url + "/predict", json=request, timeout=10).json()
    assert body["data"]["tensor"]["shape"] == [3, 3]
    got = np.array(body["data"]["tensor"]["values"]).reshape(3, 3)
    np.testing.assert_allclose(got, models["mlp"].reference(x), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    ("request_body", "needle"),
    [
        ({"data": {"ndarray": [[1.0, 2.0, 3.0]]}}, "input 'x' expects FP32 with shape [-1, 4]; got shape [1, 3]"),
        ({"data": {"ndarray": [["a", "b", "c", "d"]]}}, "got string values"),
        ({"jsonData": {"y": [[1, 2, 3, 4]]}}, "unknown input(s) ['y']"),
    ],
)
def test_rest_bad_input_is_400_and_server_survives(mlp_server, request_body, needle):
    reply = requests.post(mlp_server.url + "/api/v1.0/predictions", json=request_body, timeout=10)
    assert reply.status_code == 400, reply.text
    status = reply.json()["status"]
    assert status["reason"] == "MICROSERVICE_BAD_DATA"
    assert needle in status["info"]
    ok = requests.post(mlp_server.url + "/api/v1.0/predictions", json={"data": {"ndarray": [[0, 0, 0, 0]]}}, timeout=10)
    assert ok.status_code == 200


def test_rest_two_inputs_via_json_data(two_server):
    a, b = [[0.5, 1.5, -2.0], [1.0, 2.0, 3.0]], [[1, 2, 3], [4, 5, 6]]
    reply = requests.post(two_server.url + "/api/v1.0/predictions", json={"jsonData": {"a": a, "b": b}}, timeout=10)
    assert reply.status_code == 200, reply.text
    out = reply.json()["jsonData"]
    ref = TwoInput.reference(a, b)
    np.testing.assert_allclose(out["y"], ref["y"], rtol=RTOL)
    np.testing.assert_allclose(out["total"], ref["total"], rtol=RTOL)


def test_rest_two_input_model_rejects_a_bare_array(two_server):
    reply = requests.post(two_server.url + "/api/v1.0/predictions", json={"data": {"ndarray": [[1, 2, 3]]}}, timeout=10)
    assert reply.status_code == 400
    assert "the model has 2 inputs (a, b)" in reply.json()["status"]["info"]


def test_rest_metadata(mlp_server, two_server):
    meta = requests.get(mlp_server.url + "/metadata", timeout=10).json()
    assert meta["platform"] == "onnx_onnxv1"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 3]}]
    assert meta["custom"]["execution_provider"] == "CPUExecutionProvider"
    two = requests.get(two_server.url + "/metadata", timeout=10).json()
    assert [(i["name"], i["datatype"]) for i in two["inputs"]] == [("a", "FP32"), ("b", "INT64")]
    assert [(o["name"], o["shape"]) for o in two["outputs"]] == [("y", [-1, 3]), ("total", [-1])]


# ----------------------------------------------------------------------------- Seldon gRPC
def test_grpc_tensor_and_ndarray_match_numpy(mlp_server, models):
    x = rows(4, 9)
    with grpc.insecure_channel(mlp_server.grpc_target) as channel:
        stub = pb_grpc.ModelStub(channel)
        tensor_req = pb.SeldonMessage(data=pb.DefaultData(tensor=pb.Tensor(shape=list(x.shape), values=x.ravel())))
        reply = stub.Predict(tensor_req, timeout=10)
        got = np.array(reply.data.tensor.values).reshape(tuple(reply.data.tensor.shape))
        np.testing.assert_allclose(got, models["mlp"].reference(x), rtol=RTOL, atol=ATOL)
        nd_req = json_format.ParseDict({"data": {"ndarray": x.tolist()}}, pb.SeldonMessage())
        nd = json_format.MessageToDict(stub.Predict(nd_req, timeout=10))
        np.testing.assert_allclose(nd["data"]["ndarray"], models["mlp"].reference(x), rtol=RTOL, atol=ATOL)


def test_grpc_bad_shape_is_invalid_argument(mlp_server):
    with grpc.insecure_channel(mlp_server.grpc_target) as channel:
        stub = pb_grpc.ModelStub(channel)
        bad = pb.SeldonMessage(data=pb.DefaultData(tensor=pb.Tensor(shape=[2, 2], values=[1, 2, 3, 4])))
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(bad, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "expects FP32 with shape [-1, 4]; got shape [2, 2]" in info.value.details()


def test_grpc_two_inputs_via_json_data(two_server):
    a, b = [[1.0, 2.0, 3.0]], [[2, 2, 2]]
    with grpc.insecure_channel(two_server.grpc_target) as channel:
        stub = pb_grpc.SeldonStub(channel)
        request = json_format.ParseDict({"jsonData": {"a": a, "b": b}}, pb.SeldonMessage())
        out = json_format.MessageToDict(stub.Predict(request, timeout=10))["jsonData"]
    assert out == {"y": [[2.0, 4.0, 6.0]], "total": [12.0]}


def test_grpc_metadata(mlp_server):
    with grpc.insecure_channel(mlp_server.grpc_target) as channel:
        meta = pb_grpc.ModelStub(channel).Metadata(empty_pb2.Empty(), timeout=10)
    assert meta.platform == "onnx_onnxv1"
    assert [(i.name, i.datatype, list(i.shape)) for i in meta.inputs] == [("x", "FP32", [-1, 4])]
    assert [(o.name, o.datatype, list(o.shape)) for o in meta.outputs] == [("probs", "FP32", [-1, 3])]


# ----------------------------------------------------------------------------- workers and batching
def _concurrent_predictions(url: str, requests_rows: list[np.ndarray]) -> list[np.ndarray]:
    from concurrent.futures import ThreadPoolExecutor

    def call(x: np.ndarray) -> np.ndarray:
        reply = requests.post(url + "/api/v1.0/predictions", json={"data": {"ndarray": x.tolist()}}, timeout=30)
        assert reply.status_code == 200, reply.text
        return np.array(reply.json()["data"]["ndarray"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(call, requests_rows))


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(["--workers", "2"], id="two-workers"),
        pytest.param(["--max-batch-size", "8", "--max-batch-time-ms", "20"], id="adaptive-batching"),
    ],
)
def test_concurrent_requests_each_get_their_own_rows(models, tmp_path, extra):
    # Each forked worker builds its own session; a batcher must split stacked rows back.
    batch = [rows(n % 3 + 1, seed=100 + n) for n in range(24)]
    args = ["--onnx", str(models["mlp_path"]), "--device", "cpu", *extra]
    with onnx_server(args, tmp_path) as server:
        results = _concurrent_predictions(server.url, batch)
    for x, got in zip(batch, results):
        np.testing.assert_allclose(got, models["mlp"].reference(x), rtol=RTOL, atol=ATOL)


def test_batching_leaves_a_fixed_batch_model_alone(tmp_path):
    # Input declared [1, 4]: stacking two requests would make [2, 4] and fail both.
    mlp = Mlp(seed=5, batch=1)
    path = mlp.save(tmp_path / "fixed.onnx")
    batch = [rows(1, seed=200 + n) for n in range(16)]
    with onnx_server(["--onnx", str(path), "--max-batch-size", "8", "--max-batch-time-ms", "20"], tmp_path) as server:
        results = _concurrent_predictions(server.url, batch)
    for x, got in zip(batch, results):
        np.testing.assert_allclose(got, mlp.reference(x), rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------- the --onnx shortcut
def test_onnx_flag_serves_the_file(models, tmp_path):
    x = rows(2, 4)
    with onnx_server(["--onnx", str(models["mlp_path"]), "--device", "cpu"], tmp_path) as server:
        body = requests.post(server.url + "/api/v1.0/predictions", json={"data": {"ndarray": x.tolist()}}, timeout=10).json()
    np.testing.assert_allclose(body["data"]["ndarray"], models["mlp"].reference(x), rtol=RTOL, atol=ATOL)


def _save_classifier(path: Path) -> Path:
    """An iris-like classifier: one FP32 input, two outputs of different element types
    (label INT64, probabilities FP32), as sklearn-onnx writes them."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["probabilities"], axis=1),
         helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0)],
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_outputs_keep_their_declared_types_and_the_model_its_file_name(tmp_path):
    """Each output of a several-output model keeps its element type on V2 REST and gRPC (the FP32
    probabilities are not widened to FP64), and ``--onnx iris.onnx`` serves a model named iris."""
    model = _save_classifier(tmp_path / "iris.onnx")
    x = np.array([[0.1, 2.0, 0.3], [3.0, 0.0, 1.0]], dtype=np.float32)
    softmax = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    with onnx_server(["--onnx", str(model), "--device", "cpu"], tmp_path) as server:
        body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": x.ravel().tolist()}]}
        reply = requests.post(server.url + "/v2/models/iris/infer", json=body, timeout=10)
        assert reply.status_code == 200, reply.text
        outputs = {o["name"]: o for o in reply.json()["outputs"]}
        assert {n: (o["datatype"], o["shape"]) for n, o in outputs.items()} == {
            "label": ("INT64", [2]), "probabilities": ("FP32", [2, 3])}
        assert outputs["label"]["data"] == [1, 0]
        client = tritongrpc.InferenceServerClient(server.grpc_target)
        infer_input = tritongrpc.InferInput("x", [2, 3], "FP32")
        infer_input.set_data_from_numpy(x)
        result = client.infer("iris", [infer_input])
        assert result.as_numpy("probabilities").dtype == np.float32 and result.as_numpy("label").dtype == np.int64
        np.testing.assert_allclose(result.as_numpy("probabilities"), softmax, rtol=1e-5)
        client.close()
        assert requests.get(server.url + "/v2/models/iris/ready", timeout=10).status_code == 200


# ----------------------------------------------------------------------------- startup failures
def test_missing_model_file_exits_non_zero(tmp_path):
    missing = tmp_path / "absent.onnx"
    code, output = startup_failure([ONNX_CLASS, "--parameters", onnx_parameters(missing)], tmp_path)
    assert code != 0
    assert "absent.onnx" in output and "no such ONNX model file" in output


def test_invalid_model_file_exits_non_zero(tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(os.urandom(256))
    code, output = startup_failure(["--onnx", str(bad)], tmp_path)
    assert code != 0
    assert "cannot load ONNX model" in output and "garbage.onnx" in output


def test_cuda_without_cuda_exits_non_zero(models, tmp_path):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDAExecutionProvider present: --device cuda is expected to start (test_onnx_gpu.py)")
    code, output = startup_failure(["--onnx", str(models["mlp_path"]), "--device", "cuda"], tmp_path)
    assert code != 0
    assert "CUDAExecutionProvider" in output and "onnxruntime-gpu" in output


# ----------------------------------------------------------------------------- V2


def test_v2_rest_infer_mlp(mlp_server, models):
    x = rows(3, 21).astype(np.float32)
    request = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    reply = requests.post(mlp_server.url + "/v2/models/mlp/infer", json=request, timeout=10)
    assert reply.status_code == 200, reply.text
    (out,) = reply.json()["outputs"]
    assert out["name"] == "probs" and out["datatype"] == "FP32" and out["shape"] == [3, 3]
    np.testing.assert_allclose(np.array(out["data"]).reshape(3, 3), models["mlp"].reference(x), rtol=RTOL, atol=ATOL)


def test_v2_rest_infer_two_inputs(two_server):
    a = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]], dtype=np.float32)
    b = np.array([[1, 2, 3], [2, 2, 2]], dtype=np.int64)
    request = {"inputs": [
        {"name": "a", "shape": [2, 3], "datatype": "FP32", "data": a.ravel().tolist()},
        {"name": "b", "shape": [2, 3], "datatype": "INT64", "data": b.ravel().tolist()},
    ]}
    reply = requests.post(two_server.url + "/v2/models/two/infer", json=request, timeout=10)
    assert reply.status_code == 200, reply.text
    outputs = {o["name"]: o for o in reply.json()["outputs"]}
    ref = TwoInput.reference(a, b)
    assert outputs["y"]["shape"] == [2, 3] and outputs["total"]["shape"] == [2]
    np.testing.assert_allclose(np.array(outputs["y"]["data"]).reshape(2, 3), ref["y"], rtol=RTOL)
    np.testing.assert_allclose(outputs["total"]["data"], ref["total"], rtol=RTOL)


def test_v2_rest_wrong_shape_is_400(mlp_server):
    request = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    reply = requests.post(mlp_server.url + "/v2/models/mlp/infer", json=request, timeout=10)
    assert reply.status_code == 400
    assert "expects FP32 with shape [-1, 4]" in reply.json()["error"]


def test_v2_model_metadata(two_server):
    meta = requests.get(two_server.url + "/v2/models/two", timeout=10).json()
    assert meta["name"] == "two" and meta["platform"] == "onnx_onnxv1"
    assert meta["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "b", "datatype": "INT64", "shape": [-1, 3]},
    ]
    assert meta["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "total", "datatype": "FP32", "shape": [-1]},
    ]


def test_v2_grpc_infer_with_tritonclient(mlp_server, models):
    x = rows(2, 33).astype(np.float32)
    client = tritongrpc.InferenceServerClient(mlp_server.grpc_target)
    infer_input = tritongrpc.InferInput("x", list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x)
    result = client.infer("mlp", [infer_input])
    np.testing.assert_allclose(result.as_numpy("probs"), models["mlp"].reference(x), rtol=RTOL, atol=ATOL)
