"""V2 REST against the real server with tritonclient.http (and plain requests where the
wire itself is the point): health, metadata, JSON and binary tensors in and out, multiple
inputs, requested outputs, every error case, and Seldon v1 beside V2 on the same ports."""
from __future__ import annotations

import gzip
import json
import struct
import time

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as tritongrpc
import tritonclient.http as tritonhttp
from tritonclient.utils import InferenceServerException

from support.serving import MODELS, running

DTYPES = {
    "FP32": np.array([[0.5, -1.25, 1.0e38], [1e-30, 0.0, 7.0]], dtype=np.float32),
    "FP64": np.array([[0.1, -2.5e300, 1.0], [3.0, 4.0, -0.0]]),
    "INT64": np.array([[2**62, -(2**63), 0], [1, -1, 7]], dtype=np.int64),
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "BYTES": np.array([[b"a", "héllo".encode(), b""], [b"x" * 300, b"{}", b"z"]], dtype=object),
    "UINT8": np.array([[0, 255, 1], [2, 3, 4]], dtype=np.uint8),
    "INT16": np.array([[-32768, 32767, 0], [2, 3, 4]], dtype=np.int16),
    "FP16": np.array([[0.5, -2.0, 1000.0], [1.0, 0.0, 3.0]], dtype=np.float16),
}


def expected(arr: np.ndarray) -> np.ndarray:
    """What Echo returns: floats doubled, everything else as it came."""
    return arr * 2 if arr.dtype.kind == "f" else arr


@pytest.fixture(scope="module")
def echo():
    with running(["v2_models.Echo", "--model-name", "echo"], cwd=MODELS) as server:
        yield server


@pytest.fixture(scope="module")
def described():
    with running(["v2_models.Described", "--model-name", "described"], cwd=MODELS) as server:
        yield server


@pytest.fixture(scope="module")
def client(echo):
    c = tritonhttp.InferenceServerClient(f"127.0.0.1:{echo.http_port}")
    yield c
    c.close()


def make_input(name: str, arr: np.ndarray, datatype: str, binary: bool):
    item = tritonhttp.InferInput(name, list(arr.shape), datatype)
    item.set_data_from_numpy(arr, binary_data=binary)
    return item


def v2_post(server, path: str, doc, **kw):
    return requests.post(server.url + path, data=json.dumps(doc) if not isinstance(doc, bytes) else doc, timeout=10, **kw)


def assert_alive(server):
    reply = v2_post(server, "/v2/models/echo/infer", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [2]}]})
    assert reply.status_code == 200 and reply.json()["outputs"][0]["data"] == [4.0]


# --------------------------------------------------------------------------- health and metadata


def test_health_with_tritonclient(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("echo")
    assert not client.is_model_ready("nope")


def test_health_bodies_are_json_for_kserve_clients(echo):
    for path, body in (("/v2/health/live", {"live": True}), ("/v2/health/ready", {"ready": True}),
                       ("/v2/models/echo/ready", {"name": "echo", "ready": True})):
        reply = requests.get(echo.url + path, timeout=10)
        assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
        assert reply.json() == body


def test_server_metadata_advertises_binary_tensor_data(client, echo):
    meta = client.get_server_metadata()
    assert meta["name"] == "fastseldon" and "binary_tensor_data" in meta["extensions"] and meta["version"]
    assert requests.get(echo.url + "/v2", timeout=10).json() == meta


def test_model_metadata_from_init_metadata(described):
    client = tritonhttp.InferenceServerClient(f"127.0.0.1:{described.http_port}")
    meta = client.get_model_metadata("described")
    assert meta == {
        "name": "described",
        "versions": ["3"],
        "platform": "numpy_v1",
        "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 3]}],
        "outputs": [{"name": "doubled", "datatype": "FP64", "shape": [-1, 3]}, {"name": "total", "datatype": "FP64", "shape": [-1]}],
    }
    assert client.get_model_metadata("described", model_version="3") == meta
    assert client.is_model_ready("described", model_version="3")
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("described", model_version="9")
    assert err.value.status() == "404" and "no version '9'" in err.value.message()


def test_model_metadata_without_init_metadata(client):
    assert client.get_model_metadata("echo") == {"name": "echo", "platform": "", "inputs": [], "outputs": []}


def test_repository_index_load_and_unload(client):
    assert client.get_model_repository_index() == [{"name": "echo", "state": "READY"}]
    client.load_model("echo")  # it is loaded, and stays so: success
    with pytest.raises(InferenceServerException) as err:
        client.unload_model("echo")
    assert err.value.status() == "501" and "one fixed model" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.load_model("other")
    assert err.value.status() == "404" and "one fixed model, 'echo'" in err.value.message()


@pytest.mark.parametrize(("method", "path", "extension"), [
    ("GET", "/v2/models/echo/config", "model configuration"),
    ("GET", "/v2/models/echo/versions/1/config", "model configuration"),
    ("GET", "/v2/systemsharedmemory/status", "system shared memory"),
    ("POST", "/v2/systemsharedmemory/region/r0/register", "system shared memory"),
    ("POST", "/v2/cudasharedmemory/region/r0/unregister", "CUDA shared memory"),
    ("GET", "/v2/trace/setting", "trace"),
    ("POST", "/v2/models/echo/trace/setting", "trace"),
    ("GET", "/v2/logging", "logging"),
    ("POST", "/v2/repository/other/index", "model repository"),
])
def test_unsupported_triton_extensions_say_which(echo, method, path, extension):
    """Not a bare 404: 501 and a V2 error naming the extension."""
    r = requests.request(method, echo.url + path, json={}, timeout=10)
    assert r.status_code == 501
    assert f"Triton's {extension} extension is not supported" in r.json()["error"]


def test_statistics_extension(echo, client):
    before = client.get_inference_statistics("echo")["model_stats"][0]
    x = np.array([[1.0, 2.0]])
    for _ in range(2):
        client.infer("echo", [make_input("x", x, "FP64", binary=True)])
    r = requests.post(echo.url + "/v2/models/echo/infer", json={"inputs": [{"name": "x", "datatype": "FP64", "shape": [3], "data": [1]}]},
                      timeout=10)
    assert r.status_code == 400
    stats = client.get_inference_statistics("echo")
    assert list(stats) == ["model_stats"] and len(stats["model_stats"]) == 1
    entry = stats["model_stats"][0]
    assert set(entry) >= {"name", "version", "last_inference", "inference_count", "execution_count", "inference_stats",
                          "batch_stats", "memory_usage"}
    infer = entry["inference_stats"]
    assert set(infer) == {"success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss"}
    assert entry["inference_count"] - before["inference_count"] == 2
    assert infer["success"]["count"] - before["inference_stats"]["success"]["count"] == 2
    assert infer["fail"]["count"] - before["inference_stats"]["fail"]["count"] == 1
    assert infer["compute_infer"]["ns"] > 0 and entry["last_inference"] > 0
    assert client.get_inference_statistics()["model_stats"][0]["name"] == "echo"  # GET /v2/models/stats
    assert requests.get(echo.url + "/v2/models/other/stats", timeout=10).status_code == 404


def test_statistics_add_up_over_workers():
    """Every worker counts its own; whichever answers reports the server's totals."""
    with running(["v2_models.Echo", "--model-name", "echo", "--workers", "2"], cwd=MODELS) as server:
        body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1.0]}]}
        for _ in range(20):
            with requests.Session() as s:  # a new connection each time: both workers get some
                assert s.post(server.url + "/v2/models/echo/infer", json=body, timeout=10).status_code == 200
        deadline = time.monotonic() + 10
        while True:  # the other worker's totals arrive with its next flush (0.5 s)
            counts = {requests.get(server.url + "/v2/models/echo/stats", timeout=10).json()["model_stats"][0]["inference_count"]
                      for _ in range(6)}
            if counts == {20} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert counts == {20}


# --------------------------------------------------------------------------- inference


ENCODINGS = {"json-json": (False, False), "binary-binary": (True, True), "binary-json": (True, False), "json-binary": (False, True)}
# tritonclient won't write FP16 as JSON; that path is test_fp16_and_nested_json_with_plain_http
CASES = [(d, e) for d in DTYPES for e in ENCODINGS if not (d == "FP16" and not ENCODINGS[e][0])]


@pytest.mark.parametrize(("datatype", "encoding"), CASES)
def test_infer_each_datatype(client, datatype, encoding):
    arr = DTYPES[datatype]
    binary_in, binary_out = ENCODINGS[encoding]
    result = client.infer("echo", [make_input("x", arr, datatype, binary_in)],
                          outputs=[tritonhttp.InferRequestedOutput("output-0", binary_data=binary_out)])
    out = result.get_output("output-0")
    assert out["datatype"] == datatype and out["shape"] == [2, 3]
    assert ("parameters" in out and "binary_data_size" in out["parameters"]) == binary_out
    got = result.as_numpy("output-0")
    if datatype == "BYTES" and not binary_out:
        got = np.array([v.encode() if isinstance(v, str) else v for v in got.ravel()], dtype=object).reshape(got.shape)
    assert got.shape == (2, 3)
    assert got.tolist() == expected(arr).tolist()


def test_fp16_and_nested_json_with_plain_http(echo):
    doc = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP16", "data": [[0.5, 1.0], [2.0, -4.0]]}]}
    reply = v2_post(echo, "/v2/models/echo/infer", doc)
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"] == [{"name": "output-0", "datatype": "FP16", "shape": [2, 2], "data": [1.0, 2.0, 4.0, -8.0]}]


def test_default_request_gets_all_outputs_binary(client):
    x = np.arange(4, dtype=np.float32)
    result = client.infer("echo", [make_input("x", x, "FP32", True)])  # outputs=None: binary_data_output
    assert result.get_output("output-0")["parameters"]["binary_data_size"] == 16
    np.testing.assert_array_equal(result.as_numpy("output-0"), x * 2)


def test_large_binary_round_trip(client):
    x = np.random.default_rng(1).normal(size=(1, 10_000)).astype(np.float32)
    result = client.infer("echo", [make_input("x", x, "FP32", True)])
    np.testing.assert_array_equal(result.as_numpy("output-0"), x * 2)


def test_id_is_echoed_and_parameters_reach_meta(client):
    item = make_input("s", np.array([b"meta"], dtype=object), "BYTES", True)
    result = client.infer("echo", [item], request_id="req-42", parameters={"tenant": "t1", "k": 3})
    assert result.get_response()["id"] == "req-42"
    seen = json.loads(result.as_numpy("output-0")[0])
    assert seen == {"meta": {"id": "req-42", "parameters": {"tenant": "t1", "k": 3}}, "names": []}


def test_multiple_inputs_mixed_encodings(client):
    a = np.array([[1.5, 2.5]], dtype=np.float64)
    b = np.array([[1, 2, 3]], dtype=np.int64)
    s = np.array([b"q", b"rs"], dtype=object)
    t = np.array([True], dtype=bool)
    inputs = [make_input("a", a, "FP64", True), make_input("b", b, "INT64", False),
              make_input("s", s, "BYTES", True), make_input("t", t, "BOOL", False)]
    result = client.infer("echo", inputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["a", "b", "s", "t"]
    assert result.as_numpy("a").tolist() == a.tolist()  # a dict comes back as is: no doubling
    assert result.as_numpy("b").tolist() == b.tolist()
    assert result.as_numpy("s").tolist() == s.tolist()
    assert result.as_numpy("t").tolist() == t.tolist()


def test_requested_outputs_subset_order_and_encoding(client):
    a = np.array([1.0, 2.0])
    b = np.array([3, 4], dtype=np.int64)
    outputs = [tritonhttp.InferRequestedOutput("b", binary_data=False), tritonhttp.InferRequestedOutput("a", binary_data=True)]
    result = client.infer("echo", [make_input("a", a, "FP64", True), make_input("b", b, "INT64", True)], outputs=outputs)
    got = result.get_response()["outputs"]
    assert [o["name"] for o in got] == ["b", "a"]
    assert got[0]["data"] == [3, 4] and got[1]["parameters"] == {"binary_data_size": 16}
    assert result.as_numpy("a").tolist() == [1.0, 2.0] and result.as_numpy("b").tolist() == [3, 4]


def test_outputs_named_from_init_metadata_and_versioned_route(described):
    client = tritonhttp.InferenceServerClient(f"127.0.0.1:{described.http_port}")
    x = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    result = client.infer("described", [make_input("x", x, "FP64", True)], model_version="3")
    assert result.get_response()["model_version"] == "3"
    np.testing.assert_array_equal(result.as_numpy("doubled"), x * 2)
    np.testing.assert_array_equal(result.as_numpy("total"), x.sum(axis=1))


def test_gzip_request_compression(client):
    x = np.arange(100, dtype=np.float64)
    result = client.infer("echo", [make_input("x", x, "FP64", True)], request_compression_algorithm="gzip")
    np.testing.assert_array_equal(result.as_numpy("output-0"), x * 2)


def test_predict_raw_model():
    with running(["v2_models.Raw", "--model-name", "raw"], cwd=MODELS) as server:
        client = tritonhttp.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        result = client.infer("raw", [make_input("a", np.array([1.0, 2.0], dtype=np.float32), "FP32", True),
                                      make_input("b", np.array([4], dtype=np.int64), "INT64", False)])
        assert result.get_response()["parameters"] == {"inputs": 2, "first": "a"}
        assert result.as_numpy("total").tolist() == [[7.0]]
        assert result.as_numpy("names").tolist() == [b"a", b"b"]


# --------------------------------------------------------------------------- errors (and the server survives each)


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "needle"),
    [
        ("/v2/models/nope/infer", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}, {}, 404,
         "Model 'nope' is not served here"),
        ("/v2/models/echo/versions/7/infer", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}, {}, 404,
         "no version '7'"),
        ("/v2/models/echo/infer", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP128", "data": [1]}]}, {}, 400,
         "Unknown datatype 'FP128'"),
        ("/v2/models/echo/infer", {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]}, {}, 400,
         "Tensor data has 3 elements but shape [2, 2] needs 4"),
        ("/v2/models/echo/infer", {"inputs": [{"name": "x", "shape": [2], "datatype": "INT32", "data": [1, "a"]}]}, {}, 400,
         "INT32 tensor data must be integers"),
        ("/v2/models/echo/infer", b'{"inputs": [', {}, 400, "Invalid JSON"),
        ("/v2/models/echo/infer", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [666]}]}, {}, 500,
         "the number of the beast"),
        ("/v2/models/echo/infer", {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}],
                                   "outputs": [{"name": "missing"}]}, {}, 400, "Unknown output(s) ['missing']"),
    ],
)
def test_errors_are_json_with_status(echo, path, body, headers, status, needle):
    reply = v2_post(echo, path, body, headers=headers)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert needle in reply.json()["error"]
    assert_alive(echo)


def framed(doc: dict, payload: bytes, header_delta: int = 0) -> tuple[bytes, dict]:
    head = json.dumps(doc).encode()
    return head + payload, {"Inference-Header-Content-Length": str(len(head) + header_delta)}


@pytest.mark.parametrize(
    ("size", "payload", "delta", "needle"),
    [
        (16, np.zeros(4, np.float32).tobytes(), 0, "FP32 tensor of shape [2] needs 8 bytes, got 16"),
        (8, np.zeros(3, np.float32).tobytes(), 0, "4 bytes of binary data after the JSON header belong to no input"),
        (64, np.zeros(2, np.float32).tobytes(), 0, "runs past the end of the body"),
        (8, np.zeros(2, np.float32).tobytes(), 10_000, "the body has only"),
    ],
)
def test_bad_binary_framing_is_400(echo, size, payload, delta, needle):
    doc = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": size}}]}
    body, headers = framed(doc, payload, delta)
    reply = v2_post(echo, "/v2/models/echo/infer", body, headers=headers)
    assert reply.status_code == 400 and needle in reply.json()["error"]
    assert_alive(echo)


def test_truncated_bytes_element_is_400(echo):
    doc = {"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}]}
    body, headers = framed(doc, struct.pack("<I", 1) + b"a" + struct.pack("<I", 50))
    reply = v2_post(echo, "/v2/models/echo/infer", body, headers=headers)
    assert reply.status_code == 400 and "truncated" in reply.json()["error"]


def test_errors_through_tritonclient(client):
    with pytest.raises(InferenceServerException) as err:
        client.infer("nope", [make_input("x", np.zeros(1, np.float32), "FP32", True)])
    assert err.value.status() == "404"
    with pytest.raises(InferenceServerException) as err:
        client.infer("echo", [make_input("x", np.array([666.0]), "FP64", True)])
    assert err.value.status() == "500" and "the number of the beast" in err.value.message()


def test_wrong_methods_and_unknown_paths(echo):
    reply = requests.get(echo.url + "/v2/models/echo/infer", timeout=10)
    assert reply.status_code == 405 and "use POST" in reply.json()["error"]
    reply = requests.post(echo.url + "/v2/models/echo/ready", timeout=10)
    assert reply.status_code == 405
    reply = requests.get(echo.url + "/v2/models/echo/nothing-here", timeout=10)
    assert reply.status_code == 404 and "error" in reply.json()
    reply = requests.get(echo.url + "/v2/models/nope", timeout=10)
    assert reply.status_code == 404 and "'nope'" in reply.json()["error"]


def test_gzip_body_that_is_not_gzip_is_400(echo):
    reply = v2_post(echo, "/v2/models/echo/infer", b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert reply.status_code == 400 and "gzip" in reply.json()["error"]
    packed = gzip.compress(json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.5]}]}).encode())
    reply = v2_post(echo, "/v2/models/echo/infer", packed, headers={"Content-Encoding": "gzip"})
    assert reply.status_code == 200 and reply.json()["outputs"][0]["data"] == [3.0]


# --------------------------------------------------------------------------- Seldon v1 and V2 side by side


def test_same_server_answers_seldon_v1_and_v2_on_the_same_ports(echo):
    """One running server, one model: Seldon REST and V2 REST on the HTTP port, Seldon gRPC and V2 gRPC on the gRPC port."""
    from fastseldon.proto import prediction_pb2 as spb
    from fastseldon.proto import prediction_pb2_grpc as spb_grpc

    x = np.array([[1.0, 2.0, 3.0]])
    seldon = requests.post(echo.url + "/api/v1.0/predictions", json={"data": {"ndarray": x.tolist()}}, timeout=10)
    assert seldon.status_code == 200, seldon.text
    assert seldon.json()["data"]["ndarray"] == (x * 2).tolist()

    client = tritonhttp.InferenceServerClient(f"127.0.0.1:{echo.http_port}")
    v2_reply = client.infer("echo", [make_input("x", x, "FP64", True)])
    assert v2_reply.as_numpy("output-0").tolist() == (x * 2).tolist()

    with grpc.insecure_channel(echo.grpc_target) as channel:
        request = spb.SeldonMessage(data=spb.DefaultData(tensor=spb.Tensor(shape=[1, 3], values=x.ravel().tolist())))
        reply = spb_grpc.ModelStub(channel).Predict(request, timeout=10)
        assert list(reply.data.tensor.values) == (x * 2).ravel().tolist()
    grpc_client = tritongrpc.InferenceServerClient(echo.grpc_target)
    item = tritongrpc.InferInput("x", list(x.shape), "FP64")
    item.set_data_from_numpy(x)
    assert grpc_client.infer("echo", [item]).as_numpy("output-0").tolist() == (x * 2).tolist()
    grpc_client.close()


def test_seldon_v1_and_v2_requests_share_one_batched_predict(tmp_path):
    """With adaptive batching on, V1 and V2 requests for the same model coalesce into one predict."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from support.waiting import wait_until

    log = tmp_path / "calls.log"
    params = json.dumps([{"name": "log_path", "value": str(log), "type": "STRING"}])
    args = ["v2_models.BatchLog", "--model-name", "batched", "--parameters", params,
            "--max-batch-size", "32", "--max-batch-time-ms", "1000"]
    with running(args, cwd=MODELS) as server:
        def v1(value: float):
            reply = requests.post(server.url + "/api/v1.0/predictions", json={"data": {"ndarray": [[value, 1.0]]}}, timeout=20)
            assert reply.status_code == 200, reply.text
            return reply.json()["data"]["ndarray"]

        def v2(value: float):
            doc = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [value, 1.0]}]}
            reply = v2_post(server, "/v2/models/batched/infer", doc)
            assert reply.status_code == 200, reply.text
            return np.array(reply.json()["outputs"][0]["data"]).reshape(1, 2).tolist()

        blocker = threading.Thread(target=v1, args=(-1.0,))  # holds predict for 0.5 s so the others queue
        blocker.start()
        wait_until((tmp_path / "calls.log.held").exists, what="the blocker's predict to be running")
        with ThreadPoolExecutor(8) as pool:
            v1_futures = {value: pool.submit(v1, value) for value in (101.0, 102.0, 103.0)}
            v2_futures = {value: pool.submit(v2, value) for value in (201.0, 202.0, 203.0)}
            for value, future in {**v1_futures, **v2_futures}.items():
                assert future.result() == [[value * 2, 2.0]]  # each request gets its own row back
        blocker.join()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(v for call in calls for v in call) == [-1.0, 101.0, 102.0, 103.0, 201.0, 202.0, 203.0]
    mixed = [call for call in calls if any(100 < v < 200 for v in call) and any(v > 200 for v in call)]
    assert mixed, f"no predict call held both V1 and V2 rows: {calls}"
