"""``fastseldon graph``: real graph servers, each shape run in-process, all-remote (every unit a real
``fastseldon serve`` process) and mixed, with identical answers."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
import yaml

from fastseldon.proto import prediction_pb2 as pb
from fastseldon.proto import prediction_pb2_grpc as pbg
from support.serving import MODELS, Server, running

MODES = ("in-process", "remote", "mixed")


def node(name: str, cls: str | None = None, type: str | None = "MODEL", children=(), params: dict | None = None,
         **extra: Any) -> dict:
    doc: dict[str, Any] = {"name": name, **extra}
    if type:
        doc["type"] = type
    if children:
        doc["children"] = list(children)
    if params:
        doc["parameters"] = [{"name": k, "value": str(v), "type": _ptype(v)} for k, v in params.items()]
    if cls:
        doc["_cls"] = cls
    return doc


def _ptype(v: Any) -> str:
    return "BOOL" if isinstance(v, bool) else "INT" if isinstance(v, int) else "FLOAT" if isinstance(v, float) else "STRING"


def _walk(doc: dict) -> list[dict]:
    return [doc] + [n for c in doc.get("children", []) for n in _walk(c)]


def sdep(graph: dict, annotations: dict | None = None, name: str = "demo") -> dict:
    containers = [{"name": n["name"], "image": f"test/{n['name']}:1.0",
                   "env": [{"name": "MODEL_NAME", "value": n["_cls"]}]} for n in _walk(graph) if "_cls" in n]

    def clean(n: dict) -> dict:
        out = {k: v for k, v in n.items() if k != "_cls"}
        if "children" in out:
            out["children"] = [clean(c) for c in out["children"]]
        return out

    spec: dict[str, Any] = {"predictors": [{"name": "main", "graph": clean(graph),
                                            "componentSpecs": [{"spec": {"containers": containers}}] if containers else []}]}
    if annotations:
        spec["annotations"] = annotations
    return {"apiVersion": "machinelearning.seldon.io/v1", "kind": "SeldonDeployment", "metadata": {"name": name},
            "spec": spec}


SERVICE_TYPES = {"MODEL": "MODEL", "TRANSFORMER": "TRANSFORMER", "OUTPUT_TRANSFORMER": "OUTPUT_TRANSFORMER",
                 "ROUTER": "ROUTER", "COMBINER": "COMBINER"}


@contextmanager
def graph(doc: dict, mode: str, tmp_path: Path, env: dict | None = None, extra: list[str] | None = None
          ) -> Iterator[Server]:
    """Serve ``doc`` with its units placed as ``mode`` says; yields the graph server."""
    spec_path = tmp_path / f"graph-{mode}.yaml"
    spec_path.write_text(yaml.safe_dump(doc))
    units = [n for n in _walk(doc["spec"]["predictors"][0]["graph"])]
    containers = {c["name"]: c for c in doc["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"]} \
        if doc["spec"]["predictors"][0]["componentSpecs"] else {}
    loaded = [n for n in units if n["name"] in containers]
    remote = loaded if mode == "remote" else loaded[::2] if mode == "mixed" else []
    with ExitStack() as stack:
        args = ["--source", str(MODELS), *(extra or [])]
        for n in remote:
            c = containers[n["name"]]
            params = json.dumps(n.get("parameters", []))
            unit_env = {"PREDICTIVE_UNIT_ID": n["name"], "PREDICTIVE_UNIT_IMAGE": c["image"]}
            server = stack.enter_context(running(
                [c["env"][0]["value"], "--service-type", SERVICE_TYPES.get(n.get("type", "MODEL"), "MODEL"),
                 "--parameters", params], env=unit_env))
            args += ["--remote", f"{n['name']}=http://127.0.0.1:{server.http_port}"]
        yield stack.enter_context(running([str(spec_path), *args], command="graph", env=env))


def predict(server: Server, values, headers: dict | None = None) -> requests.Response:
    return requests.post(server.url + "/api/v1.0/predictions", json={"data": {"ndarray": values}},
                         headers=headers or {}, timeout=30)


def answers(doc: dict, tmp_path: Path, values, env: dict | None = None) -> list[dict]:
    """The graph's JSON answer in each mode (status code folded in)."""
    out = []
    for mode in MODES:
        with graph(doc, mode, tmp_path, env=env) as server:
            resp = predict(server, values)
            out.append({"status": resp.status_code, "body": resp.json()})
    return out


def assert_same(results: list[dict]) -> dict:
    for mode, result in zip(MODES[1:], results[1:]):
        assert result == results[0], f"{mode} differs from in-process:\n{result}\nvs\n{results[0]}"
    return results[0]


# --------------------------------------------------------------------------- shapes


def test_transformer_into_model_chain(tmp_path):
    doc = sdep(node("t", "graph_units.AddOne", "TRANSFORMER", [node("m", "graph_units.Double")]))
    got = assert_same(answers(doc, tmp_path, [[1.0, 2.0]]))
    assert got["status"] == 200
    assert got["body"]["data"]["ndarray"] == [[4.0, 6.0]]
    meta = got["body"]["meta"]
    assert meta["tags"] == {"add_one": True, "times_2": True}  # tags merged down the chain
    assert meta["requestPath"] == {"t": "test/t:1.0", "m": "test/m:1.0"}
    assert [m["key"] for m in meta["metrics"]] == ["double_calls"]


def test_output_transformer_wraps_its_child(tmp_path):
    doc = sdep(node("neg", "graph_units.Negate", "OUTPUT_TRANSFORMER", [node("m", "graph_units.Double")]))
    got = assert_same(answers(doc, tmp_path, [[1.0, -3.0]]))
    assert got["body"]["data"]["ndarray"] == [[-2.0, 6.0]]


def _router(route, children, **params):
    return node("r", "graph_units.FixedRouter", "ROUTER", children, {"route": route, **params})


def test_router_picks_child_n_and_records_routing(tmp_path):
    doc = sdep(_router(1, [node("d2", "graph_units.Double"), node("d3", "graph_units.Double", params={"factor": 3.0})]))
    got = assert_same(answers(doc, tmp_path, [[1.0]], env={"SELDON_ENABLE_ROUTING_INJECTION": "true"}))
    assert got["body"]["data"]["ndarray"] == [[3.0]]
    assert got["body"]["meta"]["routing"] == {"r": 1, "d3": -1}
    assert "router_tag" not in got["body"]["meta"].get("tags", {})  # a router's own reply is dropped


def test_router_minus_one_runs_all_and_returns_child_zero_minus_two_returns_the_input(tmp_path):
    children = [node("d2", "graph_units.Double"), node("d3", "graph_units.Double", params={"factor": 3.0})]
    all_children = assert_same(answers(sdep(_router(-1, children)), tmp_path, [[1.0]],
                                       env={"SELDON_ENABLE_ROUTING_INJECTION": "1"}))
    assert all_children["body"]["data"]["ndarray"] == [[2.0]]
    assert all_children["body"]["meta"]["routing"] == {"r": -1, "d2": -1, "d3": -1}
    none = assert_same(answers(sdep(_router(-2, children)), tmp_path, [[5.0]]))
    assert none["body"]["data"]["ndarray"] == [[5.0]]


def test_a_route_out_of_range_is_400_naming_the_router(tmp_path):
    doc = sdep(_router(5, [node("d2", "graph_units.Double")]))
    got = assert_same(answers(doc, tmp_path, [[1.0]]))
    assert got["status"] == 400 and "'r'" in got["body"]["status"]["info"] and "5" in got["body"]["status"]["info"]


def test_combiner_over_three_children_and_nested_router_to_combiner(tmp_path):
    leaves = [node("d2", "graph_units.Double"), node("d3", "graph_units.Double", params={"factor": 3.0}),
              node("t1", "graph_units.AddOne", "TRANSFORMER")]
    combined = assert_same(answers(sdep(node("sum", "graph_units.Sum", "COMBINER", leaves)), tmp_path, [[1.0, 2.0]]))
    assert combined["body"]["data"]["ndarray"] == [[2 + 3 + 2, 4 + 6 + 3]]
    assert combined["body"]["meta"]["tags"] == {"times_2": True, "times_3": True, "add_one": True}
    nested = sdep(_router(1, [node("d5", "graph_units.Double", params={"factor": 5.0}),
                              node("sum", "graph_units.Sum", "COMBINER", leaves[:2])]))
    got = assert_same(answers(nested, tmp_path, [[1.0]]))
    assert got["body"]["data"]["ndarray"] == [[5.0]]


def test_methods_override_calls_a_node_on_the_way_down_and_up(tmp_path):
    doc = sdep(node("both", "graph_units.AddOne", None, [node("m", "graph_units.Double")],
                    methods=["TRANSFORM_INPUT", "TRANSFORM_OUTPUT"]))
    # AddOne has no transform_output: Seldon's wrapper passes the message through unchanged
    got = assert_same(answers(doc, tmp_path, [[1.0]]))
    assert got["body"]["data"]["ndarray"] == [[4.0]]


def test_the_first_error_aborts_the_walk_with_its_status(tmp_path):
    boom = sdep(node("t", "graph_units.AddOne", "TRANSFORMER", [node("f", "graph_units.Fail")]))
    got = assert_same(answers(boom, tmp_path, [[1.0]]))
    assert got["status"] == 500 and got["body"]["status"]["info"] == "unit exploded"
    refused = sdep(node("t", "graph_units.AddOne", "TRANSFORMER", [node("f", "graph_units.Fail", params={"status": 404})]))
    got = assert_same(answers(refused, tmp_path, [[1.0]]))
    assert got["status"] == 404 and "refused with 404" in got["body"]["status"]["info"]


def test_random_abtest_splits_by_ratio_with_a_fixed_seed(tmp_path):
    doc = sdep(node("ab", None, "ROUTER", [node("d2", "graph_units.Double"),
                                           node("d3", "graph_units.Double", params={"factor": 3.0})],
                    implementation="RANDOM_ABTEST", parameters=[{"name": "ratioA", "value": "0.3", "type": "FLOAT"}]))
    with graph(doc, "in-process", tmp_path, extra=["--seed", "7"]) as server:
        picks = [predict(server, [[1.0]]).json()["data"]["ndarray"][0][0] for _ in range(400)]
    share_a = picks.count(2.0) / len(picks)
    assert set(picks) == {2.0, 3.0}
    assert abs(share_a - 0.3) < 0.07, share_a  # binomial sd at n=400 is 0.023


def test_feedback_teaches_an_epsilon_greedy_router_the_rewarded_branch(tmp_path):
    doc = sdep(node("bandit", "fastseldon.components.EpsilonGreedy", "ROUTER",
                    [node("a", "graph_units.Rewardable"), node("b", "graph_units.Rewardable")],
                    {"n_branches": 2, "epsilon": 0.0, "best_branch": 0, "seed": 1}))
    for mode in MODES:
        with graph(doc, mode, tmp_path, env={"SELDON_ENABLE_ROUTING_INJECTION": "1"}) as server:
            first = predict(server, [[1.0]]).json()
            assert first["meta"]["routing"] == {"bandit": 0, "a": -1}
            for reward, branch in ((0.0, 0), (1.0, 1)):
                body = {"request": {"data": {"ndarray": [[1.0]]}}, "reward": reward,
                        "response": {"meta": {"routing": {"bandit": branch}}}}
                resp = requests.post(server.url + "/api/v1.0/feedback", json=body, timeout=30)
                assert resp.status_code == 200, resp.text
            later = predict(server, [[1.0]]).json()
            assert later["meta"]["routing"]["bandit"] == 1, mode  # the router learnt from the reward
            assert later["data"]["ndarray"] == [[1.0]]  # branch b saw exactly one feedback call


def test_puid_header_is_kept_or_generated(tmp_path):
    doc = sdep(node("m", "graph_units.Double"))
    with graph(doc, "in-process", tmp_path) as server:
        assert predict(server, [[1.0]], {"Seldon-Puid": "abc-123"}).headers["seldon-puid"] == "abc-123"
        generated = predict(server, [[1.0]]).headers["seldon-puid"]
        assert len(generated) == 36 and generated.count("-") == 4


def test_rest_timeout_annotation_bounds_a_slow_remote_unit(tmp_path):
    doc = sdep(node("slow", "graph_units.Slow", params={"seconds": 3.0}), annotations={"seldon.io/rest-timeout": "300"})
    with graph(doc, "remote", tmp_path) as server:
        resp = predict(server, [[1.0]])
        assert resp.status_code == 504 and "within" in resp.json()["status"]["info"]
        assert requests.get(server.url + "/live", timeout=5).status_code == 200


def test_engine_predictor_runs_the_same_graph_as_the_file(tmp_path):
    doc = sdep(node("t", "graph_units.AddOne", "TRANSFORMER", [node("m", "graph_units.Double")]))
    with graph(doc, "in-process", tmp_path) as server:
        from_file = predict(server, [[1.0]]).json()
    spec_path = tmp_path / "graph-in-process.yaml"
    predictor = yaml.safe_load(spec_path.read_text())["spec"]["predictors"][0]
    env = {"ENGINE_PREDICTOR": base64.b64encode(json.dumps(predictor).encode()).decode(), "SELDON_DEPLOYMENT_ID": "demo"}
    with running(["--source", str(MODELS)], command="graph", env=env) as server:
        assert predict(server, [[1.0]]).json() == from_file


def test_grpc_predict_and_graph_metadata(tmp_path):
    doc = sdep(node("t", "graph_units.AddOne", "TRANSFORMER", [node("m", "graph_units.Double")]))
    with graph(doc, "mixed", tmp_path) as server, grpc.insecure_channel(server.grpc_target) as channel:
        request = pb.SeldonMessage()
        request.data.tensor.shape.extend([1, 2])
        request.data.tensor.values.extend([1.0, 2.0])
        reply = pbg.SeldonStub(channel).Predict(request, timeout=30)
        assert list(reply.data.tensor.values) == [4.0, 6.0]
        meta = pbg.SeldonStub(channel).GraphMetadata(_empty(), timeout=30)
        assert set(meta.models) == {"t", "m"} and meta.name == "main"
        rest = requests.get(server.url + "/api/v1.0/metadata/m", timeout=10).json()
        assert rest["name"] == "m"


def _empty():
    from google.protobuf import empty_pb2

    return empty_pb2.Empty()


def test_v2_infer_runs_the_whole_graph_under_the_deployment_name(tmp_path):
    doc = sdep(node("t", "graph_units.AddOne", "TRANSFORMER", [node("m", "graph_units.Double")]))
    with graph(doc, "in-process", tmp_path) as server:
        body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 2], "data": [1.0, 2.0]}]}
        out = requests.post(server.url + "/v2/models/demo/infer", json=body, timeout=30).json()
        assert out["outputs"][0]["data"] == [4.0, 6.0] and out["outputs"][0]["shape"] == [1, 2]


def test_v2_answers_each_in_process_unit_under_its_node_name(tmp_path):
    import tritonclient.grpc as tritongrpc
    import tritonclient.http as tritonhttp
    from tritonclient.utils import InferenceServerException

    doc = sdep(node("t", "graph_units.AddOne", "TRANSFORMER", [node("m", "graph_units.Double", params={"factor": 3.0})]))
    x = np.array([[1.0, 2.0]])
    with graph(doc, "in-process", tmp_path) as server:
        http = tritonhttp.InferenceServerClient(f"127.0.0.1:{server.http_port}")
        item = tritonhttp.InferInput("x", [1, 2], "FP64")
        item.set_data_from_numpy(x)
        assert http.infer("m", [item]).as_numpy("output-0").tolist() == [[3.0, 6.0]]  # the node alone, not the chain
        assert http.is_model_ready("m") and http.get_model_metadata("m")["name"] == "m"
        with pytest.raises(InferenceServerException) as err:
            http.infer("ghost", [item])
        assert err.value.status() == "404" and "'t'" in err.value.message() and "'m'" in err.value.message()
        body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 2], "data": [1.0, 2.0]}]}
        whole = requests.post(server.url + "/v2/models/demo/infer", json=body, timeout=30).json()
        assert whole["outputs"][0]["data"] == [6.0, 9.0]  # the deployment name still runs the whole graph
        grpc_client = tritongrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        gitem = tritongrpc.InferInput("x", [1, 2], "FP64")
        gitem.set_data_from_numpy(x)
        assert grpc_client.infer("m", [gitem]).as_numpy("output-0").tolist() == [[3.0, 6.0]]
        assert grpc_client.is_model_ready("t") and grpc_client.get_model_metadata("t", as_json=True)["name"] == "t"
        with pytest.raises(InferenceServerException) as err:
            grpc_client.unload_model("m")
        assert err.value.status() == "StatusCode.UNIMPLEMENTED"
        http.close()
        grpc_client.close()


@pytest.mark.parametrize(("mutate", "needle"), [
    (lambda g: g.update(type="ROUTER", children=[]), "router needs children"),
    (lambda g: g.update(name="ghost"), "no container named 'ghost'"),
    (lambda g: g.update(type="UNKNOWN_TYPE"), "UNKNOWN_TYPE needs methods"),
    (lambda g: g.update(implementation="RANDOM_ABTEST", type="ROUTER"), "exactly 2 children"),
    (lambda g: g.update(parameters=[{"name": "factor", "value": "2"}]), "parameter 'factor'"),
])
def test_invalid_graphs_are_refused_with_one_line_naming_the_node(tmp_path, mutate, needle):
    doc = sdep(node("m", "graph_units.Double"))
    mutate(doc["spec"]["predictors"][0]["graph"])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    done = subprocess.run([sys.executable, "-m", "fastseldon", "graph", str(path), "--source", str(MODELS)],
                          capture_output=True, text=True, timeout=60, env={**os.environ})
    assert done.returncode == 2 and needle in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_in_process_units_pass_arrays_without_serialization():
    """The executor over LocalUnits hands each unit the previous unit's array object."""
    import asyncio

    from fastseldon.graph.app import load_graph_app
    from fastseldon.graph.spec import from_document
    from fastseldon.settings import ServerSettings
    from fastseldon.types import Message

    seen: list[Any] = []
    doc = sdep(node("t", "graph_units.AddOne", "TRANSFORMER", [node("m", "graph_units.Double")]))
    predictor = from_document(doc)

    async def main():
        app = await load_graph_app(ServerSettings(inline_hook_seconds=0.0), predictor, MODELS, {},
                                   asyncio.get_running_loop())
        model = app.units["m"].service.model.obj  # type: ignore[attr-defined]
        original = model.predict

        def spy(X, names):
            seen.append(X)
            return original(X, names)

        model.predict = spy
        app.units["m"].service.model.predict[0].fn = spy  # type: ignore[attr-defined]
        x = np.array([[1.0, 2.0]])
        out, _ = await app.executor.predict(Message("ndarray", x, []))
        app.close()
        return out

    out = asyncio.run(main())
    assert isinstance(seen[0], np.ndarray) and seen[0].tolist() == [[2.0, 3.0]]
    assert out.payload.tolist() == [[4.0, 6.0]]
