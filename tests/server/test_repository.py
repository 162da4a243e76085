"""``fastseldon serve --repository DIR``: three models (two Python classes, one ONNX) generated here,
each answering by name over V2 REST, V2 gRPC and Seldon REST, and the model repository extension
(index, load, unload) through tritonclient, with one worker and with two."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as tritongrpc
import tritonclient.http as tritonhttp
from tritonclient.utils import InferenceServerException

from support.onnx_models import Mlp
from support.serving import running

DOUBLER = """import numpy as np


class MyModel:
    def predict(self, X, names):
        return np.asarray(X) * {factor}
"""

ADDER = """import numpy as np


class Adder:
    def __init__(self, offset=0.0, marker=""):
        self.offset = offset
        self.marker = marker

    def predict(self, X, names):
        return np.asarray(X) + self.offset

    def __del__(self):
        if self.marker:
            with open(self.marker, "a") as f:
                f.write("freed\\n")
"""

BROKEN = """class MyModel:
    def __init__(self):
        raise RuntimeError("this model never loads")
"""

MLP = Mlp(seed=3)
X = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


def write_model(folder: Path, source: str, env: dict[str, str], module: str = "MyModel") -> Path:
    (folder / ".s2i").mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(source)
    (folder / ".s2i" / "environment").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return folder


def make_repository(root: Path) -> Path:
    repo = root / "models"
    write_model(repo / "doubler", DOUBLER.format(factor=2), {"MODEL_NAME": "MyModel", "SERVICE_TYPE": "MODEL"})
    params = [{"name": "offset", "value": "10", "type": "FLOAT"},
              {"name": "marker", "value": str(root / "adder-freed"), "type": "STRING"}]
    write_model(repo / "adder", ADDER, {"MODEL_NAME": "Adder", "PREDICTIVE_UNIT_PARAMETERS": json.dumps(params)}, "Adder")
    (repo / "mlp").mkdir()
    MLP.save(repo / "mlp" / "model.onnx")
    return repo


def expected(name: str, x: np.ndarray) -> np.ndarray:
    return {"doubler": x * 2, "adder": x + 10, "mlp": MLP.reference(x)}[name]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repository(tmp_path_factory.mktemp("repository"))


@pytest.fixture(scope="module")
def server(repo):
    with running(["--repository", str(repo)]) as s:
        yield s


@pytest.fixture(scope="module")
def http_client(server):
    c = tritonhttp.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    yield c
    c.close()


@pytest.fixture(scope="module")
def grpc_client(server):
    c = tritongrpc.InferenceServerClient(server.grpc_target)
    yield c
    c.close()


def infer_http(client, name: str, x: np.ndarray = X) -> np.ndarray:
    item = tritonhttp.InferInput("x", list(x.shape), "FP32")
    item.set_data_from_numpy(x)
    out = client.infer(name, [item])
    return out.as_numpy(out.get_response()["outputs"][0]["name"])


def infer_grpc(client, name: str, x: np.ndarray = X) -> np.ndarray:
    item = tritongrpc.InferInput("x", list(x.shape), "FP32")
    item.set_data_from_numpy(x)
    out = client.infer(name, [item])
    return out.as_numpy(out.get_response(as_json=True)["outputs"][0]["name"])


def seldon(server, name: str | None, x: np.ndarray = X, via: str = "header") -> requests.Response:
    body = {"data": {"ndarray": x.tolist()}}
    if via == "path":
        return requests.post(f"{server.url}/models/{name}/api/v1.0/predictions", json=body, timeout=10)
    headers = {"Seldon-Model": name} if name else {}
    return requests.post(server.url + "/api/v1.0/predictions", json=body, headers=headers, timeout=10)


def index(server) -> dict[str, dict]:
    return {m["name"]: m for m in requests.post(server.url + "/v2/repository/index", timeout=10).json()}


# --------------------------------------------------------------------------- every model by name


@pytest.mark.parametrize("name", ["doubler", "adder", "mlp"])
def test_each_model_answers_by_name_over_v2_rest_v2_grpc_and_seldon_rest(server, http_client, grpc_client, name):
    want = expected(name, X)
    np.testing.assert_allclose(infer_http(http_client, name), want, rtol=1e-5)
    np.testing.assert_allclose(infer_grpc(grpc_client, name), want, rtol=1e-5)
    for via in ("header", "path"):
        resp = seldon(server, name, via=via)
        assert resp.status_code == 200, resp.text
        np.testing.assert_allclose(resp.json()["data"]["ndarray"], want, rtol=1e-5)
    assert http_client.is_model_ready(name) and grpc_client.is_model_ready(name)


def test_each_model_has_its_own_metadata(server, http_client, grpc_client):
    meta = http_client.get_model_metadata("mlp")
    assert meta["name"] == "mlp" and meta["platform"] == "onnx_onnxv1"
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [("x", "FP32", [-1, 4])]
    assert grpc_client.get_model_metadata("mlp", as_json=True)["inputs"][0]["name"] == "x"
    assert http_client.get_model_metadata("doubler")["name"] == "doubler"
    seldon_meta = requests.get(server.url + "/metadata", headers={"Seldon-Model": "mlp"}, timeout=10).json()
    assert seldon_meta["platform"] == "onnx_onnxv1"


def test_index_lists_every_model_ready_over_rest_and_grpc(server, http_client, grpc_client):
    want = [("adder", "READY"), ("doubler", "READY"), ("mlp", "READY")]
    assert [(m["name"], m["state"]) for m in http_client.get_model_repository_index()] == want
    assert [(m["name"], m["state"]) for m in grpc_client.get_model_repository_index(as_json=True)["models"]] == want
    assert requests.get(server.url + "/v2", timeout=10).json()["extensions"][-1] == "model_repository"


def test_statistics_are_per_model(server, http_client):
    before = http_client.get_inference_statistics("doubler")["model_stats"][0]["inference_count"]
    infer_http(http_client, "doubler")
    stats = http_client.get_inference_statistics("doubler")["model_stats"]
    assert [s["name"] for s in stats] == ["doubler"] and stats[0]["inference_count"] == before + 1
    every = {s["name"] for s in http_client.get_inference_statistics()["model_stats"]}
    assert every == {"adder", "doubler", "mlp"}


# --------------------------------------------------------------------------- bad names


def test_unknown_models_are_404_naming_the_served_ones(server, http_client, grpc_client):
    with pytest.raises(InferenceServerException) as err:
        infer_http(http_client, "nope")
    assert err.value.status() == "404" and "'nope'" in err.value.message() and "doubler" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        infer_grpc(grpc_client, "nope")
    assert err.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as err:
        grpc_client.is_model_ready("nope")
    assert err.value.status() == "StatusCode.NOT_FOUND"
    assert not http_client.is_model_ready("nope")
    for via in ("header", "path"):
        resp = seldon(server, "nope", via=via)
        assert resp.status_code == 404 and "'nope'" in resp.json()["status"]["info"]
    for action in ("load", "unload"):
        resp = requests.post(f"{server.url}/v2/repository/models/nope/{action}", timeout=10)
        assert resp.status_code == 404 and "no such model" in resp.json()["error"]
    with pytest.raises(InferenceServerException) as err:
        grpc_client.load_model("nope")
    assert err.value.status() == "StatusCode.NOT_FOUND"


def test_a_seldon_request_that_names_no_model_is_400_listing_them(server):
    resp = seldon(server, None)
    assert resp.status_code == 400
    info = resp.json()["status"]["info"]
    assert "Seldon-Model" in info and "/models/{name}/api/v1.0/predictions" in info and "mlp" in info


def seldon_grpc(server, name: str | None, x: np.ndarray = X):
    from fastseldon.proto import prediction_pb2 as sp

    request = sp.SeldonMessage()
    request.data.tensor.shape.extend(x.shape)
    request.data.tensor.values.extend(x.ravel().tolist())
    with grpc.insecure_channel(server.grpc_target) as channel:
        predict = channel.unary_unary("/seldon.protos.Model/Predict", request_serializer=sp.SeldonMessage.SerializeToString,
                                      response_deserializer=sp.SeldonMessage.FromString)
        reply = predict(request, metadata=[("seldon-model", name)] if name else None, timeout=10)
    return np.array(reply.data.tensor.values).reshape(tuple(reply.data.tensor.shape))


@pytest.mark.parametrize("name", ["doubler", "adder", "mlp"])
def test_seldon_grpc_names_the_model_with_seldon_model_metadata(server, name):
    np.testing.assert_allclose(seldon_grpc(server, name), expected(name, X), rtol=1e-5)


@pytest.mark.parametrize(("name", "code", "needle"), [
    (None, grpc.StatusCode.INVALID_ARGUMENT, "seldon-model call metadata"),
    ("nope", grpc.StatusCode.NOT_FOUND, "'nope' is not served here"),
])
def test_seldon_grpc_without_a_known_model_says_which_there_are(server, name, code, needle):
    with pytest.raises(grpc.RpcError) as err:
        seldon_grpc(server, name)
    assert err.value.code() == code and needle in err.value.details() and "doubler" in err.value.details()


def test_repository_paths_check_their_method_and_shape(server):
    assert requests.get(server.url + "/v2/repository/models/adder/load", timeout=10).status_code == 405
    resp = requests.post(server.url + "/v2/repository/models/adder/reload", timeout=10)
    assert resp.status_code == 501 and "model repository" in resp.json()["error"]
    assert requests.post(server.url + "/v2/repository/index", data=b"[", timeout=10).status_code == 400


# --------------------------------------------------------------------------- unload and load


def test_unload_and_load_over_http(server, http_client, repo):
    marker = repo.parent / "adder-freed"
    marker.unlink(missing_ok=True)
    http_client.unload_model("adder")
    assert marker.read_text() == "freed\n"  # the instance was dropped, not just hidden
    assert not http_client.is_model_ready("adder")
    assert index(server)["adder"] == {"name": "adder", "state": "UNAVAILABLE", "reason": "unloaded"}
    with pytest.raises(InferenceServerException) as err:
        infer_http(http_client, "adder")
    assert err.value.status() == "404" and "not loaded" in err.value.message()
    assert seldon(server, "adder").status_code == 404
    with pytest.raises(grpc.RpcError) as grpc_err:
        seldon_grpc(server, "adder")
    assert grpc_err.value.code() == grpc.StatusCode.NOT_FOUND
    np.testing.assert_allclose(infer_http(http_client, "doubler"), X * 2)  # the others serve on
    http_client.unload_model("adder")  # twice is fine, as in Triton
    http_client.load_model("adder")
    assert http_client.is_model_ready("adder") and index(server)["adder"]["state"] == "READY"
    np.testing.assert_allclose(infer_http(http_client, "adder"), X + 10)
    assert seldon(server, "adder").json()["data"]["ndarray"] == (X + 10).tolist()


def test_unload_and_load_over_grpc(server, grpc_client):
    grpc_client.unload_model("mlp")
    assert grpc_client.is_model_ready("mlp") is False
    models = {m["name"]: m for m in grpc_client.get_model_repository_index(as_json=True)["models"]}
    assert models["mlp"]["state"] == "UNAVAILABLE" and models["mlp"]["reason"] == "unloaded"
    with pytest.raises(InferenceServerException) as err:
        infer_grpc(grpc_client, "mlp")
    assert err.value.status() == "StatusCode.NOT_FOUND"
    grpc_client.load_model("mlp")
    assert grpc_client.is_model_ready("mlp")
    np.testing.assert_allclose(infer_grpc(grpc_client, "mlp"), MLP.reference(X), rtol=1e-5)


def test_mlservers_repository_service_unloads_and_loads_too(server, grpc_client):
    from fastseldon.proto import grpc_service_pb2 as pb

    service = "/inference.model_repository.ModelRepositoryService/"
    with grpc.insecure_channel(server.grpc_target) as channel:
        def call(method, request, reply):
            return channel.unary_unary(service + method, request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=reply.FromString)(request, timeout=30)

        call("RepositoryModelUnload", pb.RepositoryModelUnloadRequest(model_name="adder"), pb.RepositoryModelUnloadResponse)
        assert grpc_client.is_model_ready("adder") is False
        states = call("RepositoryIndex", pb.RepositoryIndexRequest(ready=True), pb.RepositoryIndexResponse)
        assert [m.name for m in states.models] == ["doubler", "mlp"]
        call("RepositoryModelLoad", pb.RepositoryModelLoadRequest(model_name="adder"), pb.RepositoryModelLoadResponse)
    np.testing.assert_allclose(infer_grpc(grpc_client, "adder"), X + 10)


def test_load_imports_the_model_again_from_disk(server, http_client, repo):
    source = repo / "doubler" / "MyModel.py"
    try:
        source.write_text(DOUBLER.format(factor=3) + "\n# edited\n")  # another size: no stale bytecode
        np.testing.assert_allclose(infer_http(http_client, "doubler"), X * 2)  # nothing changes until a load
        http_client.load_model("doubler")  # a loaded model is loaded again, as Triton does
        np.testing.assert_allclose(infer_http(http_client, "doubler"), X * 3)
    finally:
        source.write_text(DOUBLER.format(factor=2))
        http_client.load_model("doubler")
    np.testing.assert_allclose(infer_http(http_client, "doubler"), X * 2)


def test_a_model_added_after_start_loads_and_a_broken_one_says_why(server, http_client, repo):
    write_model(repo / "late", DOUBLER.format(factor=5), {"MODEL_NAME": "MyModel"})  # MyModel.py, as doubler's
    write_model(repo / "broken", BROKEN, {"MODEL_NAME": "MyModel"})
    try:
        assert "late" not in index(server)
        http_client.load_model("late")
        np.testing.assert_allclose(infer_http(http_client, "late"), X * 5)
        np.testing.assert_allclose(infer_http(http_client, "doubler"), X * 2)  # same module name, its own class
        with pytest.raises(InferenceServerException) as err:
            http_client.load_model("broken")
        assert err.value.status() == "400" and "this model never loads" in err.value.message()
        entry = index(server)["broken"]
        assert entry["state"] == "UNAVAILABLE" and "this model never loads" in entry["reason"]
    finally:
        http_client.unload_model("late")
        for name in ("late", "broken"):  # the other tests serve this repository too
            shutil.rmtree(repo / name)


# --------------------------------------------------------------------------- workers, start-up


def answers_on_fresh_connections(s, name: str, times: int = 8) -> set[int]:
    """The statuses of ``times`` V2 infers of ``name``, each on a new connection (the kernel spreads
    new connections over the workers' SO_REUSEPORT sockets)."""
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X.ravel().tolist()}]}
    statuses = set()
    for _ in range(times):
        with requests.Session() as session:
            statuses.add(session.post(f"{s.url}/v2/models/{name}/infer", json=body, timeout=10).status_code)
    return statuses


def worker_pids(s) -> list[int]:
    return [int(line.split("worker ")[1].split()[0]) for line in s.output().splitlines() if "fastseldon: worker" in line
            and line.rstrip().endswith("ready")]


def test_with_two_workers_a_load_or_unload_is_answered_once_both_workers_applied_it(repo):
    with running(["--repository", str(repo), "--workers", "2"]) as s:
        client = tritonhttp.InferenceServerClient(f"127.0.0.1:{s.http_port}")
        gclient = tritongrpc.InferenceServerClient(s.grpc_target)
        try:
            assert answers_on_fresh_connections(s, "adder") == {200}
            client.unload_model("adder")
            assert answers_on_fresh_connections(s, "adder") == {404}  # no worker still serves it
            assert answers_on_fresh_connections(s, "doubler") == {200}
            assert [m["state"] for m in client.get_model_repository_index()] == ["UNAVAILABLE", "READY", "READY"]
            gclient.load_model("adder")
            assert answers_on_fresh_connections(s, "adder") == {200}
            gclient.unload_model("mlp")
            assert answers_on_fresh_connections(s, "mlp") == {404}
            # a worker that dies is replaced with the models the others serve: mlp stays unloaded
            victim = worker_pids(s)[0]
            os.kill(victim, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while len(worker_pids(s)) < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(worker_pids(s)) == 3, s.output()
            time.sleep(0.5)
            assert answers_on_fresh_connections(s, "mlp", times=12) == {404}
            assert answers_on_fresh_connections(s, "adder", times=12) == {200}
            client.load_model("mlp")  # and the new worker follows changes too
            assert answers_on_fresh_connections(s, "mlp", times=12) == {200}
        finally:
            client.close()
            gclient.close()


def serve_fails(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastseldon", "serve", *args, "--http-port", "0", "--grpc-port", "0",
                           "--metrics-port", "0"], capture_output=True, text=True, timeout=60)


def test_a_model_that_fails_at_start_stops_the_server_naming_it(tmp_path):
    repo = make_repository(tmp_path)
    write_model(repo / "broken", BROKEN, {"MODEL_NAME": "MyModel"})
    done = serve_fails(["--repository", str(repo)])
    assert done.returncode == 3
    assert "model 'broken'" in done.stderr and "this model never loads" in done.stderr


@pytest.mark.parametrize(("layout", "needle"), [
    ("empty", "holds no models"),
    ("no-class", "model 'thing': thing/ has no MyModel.py"),
    ("bad-env", "unknown SERVICE_TYPE 'WIZARD'"),
])
def test_a_repository_that_cannot_be_served_is_refused_with_one_line(tmp_path, layout, needle):
    repo = tmp_path / "models"
    repo.mkdir()
    if layout == "no-class":
        (repo / "thing").mkdir()
    elif layout == "bad-env":
        write_model(repo / "m", DOUBLER.format(factor=2), {"SERVICE_TYPE": "WIZARD"})
    done = serve_fails(["--repository", str(repo)])
    assert done.returncode == 2 and needle in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
