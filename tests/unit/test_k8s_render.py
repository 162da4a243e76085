"""``fastseldon k8s``: SeldonDeployments rendered in-process, their content checked, and every
manifest validated offline against Kubernetes' own schemas (kubernetes-validate --strict).

Services, HPAs and PDBs are checked here by schema and content only; the Deployments also
run for real under ``podman kube play`` (tests/images/k8s_play.py, from s2i/test-images.sh)."""
from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fastseldon.graph import k8s
from fastseldon.graph.cli import _endpoint_remotes, _parser, _seldon_args
from fastseldon.graph.spec import SpecError, from_engine_predictor

KUBERNETES = "1.37.0"  # the newest schema set kubernetes-validate bundles

# --------------------------------------------------------------------------- building SeldonDeployments


def unit(name: str, type: str | None = "MODEL", children: tuple[dict[str, Any], ...] = (), **extra: Any) -> dict[str, Any]:
    node: dict[str, Any] = {"name": name, **extra}
    if type:
        node["type"] = type
    if children:
        node["children"] = list(children)
    return node


def sdep(graph: dict[str, Any], containers: list[list[dict[str, Any]]] | None = None, name: str = "demo",
         **spec: Any) -> dict[str, Any]:
    """One predictor ``main``; containers per componentSpec (default: every node with a container, one spec)."""
    if containers is None:
        names = [n["name"] for n in _walk(graph) if n.get("implementation") not in ("RANDOM_ABTEST", "AVERAGE_COMBINER")]
        containers = [[{"name": n, "image": f"registry.example/{n}:1.0"} for n in names]]
    predictor = {"name": "main", "graph": graph, "componentSpecs": [{"spec": {"containers": c}} for c in containers]}
    return {"apiVersion": "machinelearning.seldon.io/v1", "kind": "SeldonDeployment",
            "metadata": {"name": name, "namespace": "models"}, "spec": {"predictors": [predictor], **spec}}


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node] + [n for c in node.get("children", []) for n in _walk(c)]


SHAPES = {
    "single model": unit("m"),
    "transformer into model": unit("t", "TRANSFORMER", (unit("m"),)),
    "output transformer wraps its child": unit("o", "OUTPUT_TRANSFORMER", (unit("m"),)),
    "router over two models": unit("r", "ROUTER", (unit("a"), unit("b"))),
    "combiner over three models": unit("c", "COMBINER", (unit("a"), unit("b"), unit("d"))),
    "model chaining": unit("m1", "MODEL", (unit("m2"),)),
    "methods override, no type": unit("x", None, (unit("m"),), methods=["TRANSFORM_INPUT", "TRANSFORM_OUTPUT"]),
    "RANDOM_ABTEST built in": unit("ab", None, (unit("a"), unit("b")), implementation="RANDOM_ABTEST",
                                   parameters=[{"name": "ratioA", "value": "0.3", "type": "FLOAT"}]),
    "transformer, router, combiner (the fraud example)": unit("scaler", "TRANSFORMER", (
        unit("bandit", "ROUTER", (unit("xgb-a"), unit("avg", "COMBINER", (unit("lr-b"), unit("lgbm-b")))),
             parameters=[{"name": "n_branches", "type": "INT", "value": "2"},
                         {"name": "epsilon", "type": "FLOAT", "value": "0.2"}]),)),
}


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def containers_of(deploy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deploy["spec"]["template"]["spec"]["containers"]}


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def engine_predictor_of(objs: list[dict[str, Any]]) -> dict[str, Any]:
    engines = [c for d in by_kind(objs, "Deployment").values() for c in containers_of(d).values() if c["name"] == k8s.ENGINE]
    assert len(engines) == 1
    return json.loads(base64.b64decode(env_of(engines[0])["ENGINE_PREDICTOR"]))


def validate_all(objs: list[dict[str, Any]]) -> None:
    for obj in objs:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)


# --------------------------------------------------------------------------- schema


def test_the_schema_check_rejects_what_kubernetes_rejects():
    """Guard the guard: strict validation fails an unknown field and a wrong type in a rendered object."""
    objs = k8s.render(sdep(unit("m")))
    deploy = copy.deepcopy(by_kind(objs, "Deployment")["demo-main-0-m"])
    deploy["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deploy, KUBERNETES, strict=True)
    svc = copy.deepcopy(by_kind(objs, "Service")["demo-main"])
    svc["spec"]["ports"][0]["port"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(svc, KUBERNETES, strict=True)


@pytest.mark.parametrize("mode", k8s.MODES)
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_graph_shape_renders_valid_manifests(shape, mode):
    doc = sdep(copy.deepcopy(SHAPES[shape]), containers=None)
    if mode == "one-pod":
        for c in doc["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"]:
            c["image"] = "registry.example/all-units:1.0"
    objs = k8s.render(doc, mode=mode)
    validate_all(objs)
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["Deployment", "Service"]  # one componentSpec: the executor's pod, the predictor's Service
    assert k8s.dump(objs).count("\n---\n") == len(objs) - 1
    assert "&id" not in k8s.dump(objs)  # no YAML anchors: kubectl and kube play read plain documents


# --------------------------------------------------------------------------- per-component (Seldon's layout)


def fraud() -> dict[str, Any]:
    doc = sdep(copy.deepcopy(SHAPES["transformer, router, combiner (the fraud example)"]), containers=[
        [{"name": "scaler", "image": "registry.example/scaler:1.0"}, {"name": "bandit", "image": "seldonio/mab:1.18.2"}],
        [{"name": "xgb-a", "image": "registry.example/xgb:2.1", "resources": {"limits": {"nvidia.com/gpu": 1}}}],
        [{"name": "lr-b", "image": "registry.example/lr:0.4"}, {"name": "avg", "image": "registry.example/avg:1.0"},
         {"name": "lgbm-b", "image": "registry.example/lgbm:0.9"}],
    ])
    return doc


def test_a_deployment_per_component_spec_named_and_labelled_as_seldon_does():
    objs = k8s.render(fraud())
    validate_all(objs)
    deploys = by_kind(objs, "Deployment")
    assert list(deploys) == ["demo-main-0-scaler-bandit", "demo-main-1-xgb-a", "demo-main-2-lr-b-avg-lgbm-b"]
    first = deploys["demo-main-0-scaler-bandit"]
    for labels in (first["metadata"]["labels"], first["spec"]["template"]["metadata"]["labels"]):
        assert labels["seldon-deployment-id"] == "demo"
        assert labels["app.kubernetes.io/managed-by"] == "fastseldon"
        assert labels["version"] == "main"  # defaulted to the predictor's name
        assert labels["app"] == "demo-main-0-scaler-bandit"
        assert labels["seldon.io/transformer"] == "true" and labels["seldon-app"] == "demo-main"
    assert deploys["demo-main-1-xgb-a"]["spec"]["template"]["metadata"]["labels"]["seldon.io/model"] == "true"
    # the executor sits in the first componentSpec's pod, and only there
    assert list(containers_of(first)) == ["scaler", "bandit", k8s.ENGINE]
    assert all(k8s.ENGINE not in containers_of(d) for d in list(deploys.values())[1:])
    for d in deploys.values():  # a Deployment's selector picks its own pods, which its template labels
        selector = d["spec"]["selector"]["matchLabels"]
        assert selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        assert selector["app"] == d["metadata"]["name"]


def test_unit_containers_get_seldons_env_ports_and_probes():
    objs = k8s.render(fraud())
    deploys = by_kind(objs, "Deployment")
    bandit = containers_of(deploys["demo-main-0-scaler-bandit"])["bandit"]
    env = env_of(bandit)
    assert env["PREDICTIVE_UNIT_ID"] == "bandit"
    assert env["PREDICTIVE_UNIT_IMAGE"] == "seldonio/mab:1.18.2"
    assert (env["PREDICTIVE_UNIT_HTTP_SERVICE_PORT"], env["PREDICTIVE_UNIT_GRPC_SERVICE_PORT"]) == ("9001", "9501")
    assert env["PREDICTIVE_UNIT_METRICS_SERVICE_PORT"] == "6001" and env["PREDICTIVE_UNIT_METRICS_ENDPOINT"] == "/prometheus"
    assert json.loads(env["PREDICTIVE_UNIT_PARAMETERS"]) == [
        {"name": "n_branches", "value": "2", "type": "INT"}, {"name": "epsilon", "value": "0.2", "type": "FLOAT"}]
    assert (env["PREDICTOR_ID"], env["SELDON_DEPLOYMENT_ID"]) == ("main", "demo")
    assert json.loads(env["PREDICTOR_LABELS"]) == {"version": "main"}
    assert "PREDICTIVE_UNIT_PARAMETERS" not in env_of(containers_of(deploys["demo-main-0-scaler-bandit"])["scaler"])
    assert {p["name"]: p["containerPort"] for p in bandit["ports"]} == {"http": 9001, "grpc": 9501, "metrics": 6001}
    # ports are allocated per container name in spec order, as Seldon's webhook does
    lgbm = containers_of(deploys["demo-main-2-lr-b-avg-lgbm-b"])["lgbm-b"]
    assert {p["name"]: p["containerPort"] for p in lgbm["ports"]} == {"http": 9005, "grpc": 9505, "metrics": 6005}
    # ready means loaded (503 until load() has run), live answers while loading: two different routes
    assert bandit["readinessProbe"]["httpGet"] == {"path": "/health/status", "port": "http"}
    assert bandit["livenessProbe"]["httpGet"] == {"path": "/health/ping", "port": "http"}
    engine = containers_of(deploys["demo-main-0-scaler-bandit"])[k8s.ENGINE]
    assert engine["readinessProbe"]["httpGet"]["path"] == "/ready" and engine["livenessProbe"]["httpGet"]["path"] == "/live"
    assert {p["name"]: p["containerPort"] for p in engine["ports"]} == {"http": 8000, "grpc": 5001}
    template = deploys["demo-main-1-xgb-a"]["spec"]["template"]["metadata"]["annotations"]
    assert template["prometheus.io/scrape"] == "true" and template["prometheus.io/path"] == "/prometheus"


def test_the_users_pod_spec_is_kept_gpu_tolerations_volumes_and_own_probes():
    doc = fraud()
    spec = doc["spec"]["predictors"][0]["componentSpecs"][1]["spec"]
    spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    spec["nodeSelector"] = {"accelerator": "h100"}
    spec["volumes"] = [{"name": "models", "persistentVolumeClaim": {"claimName": "xgb"}}]
    xgb = spec["containers"][0]
    xgb["volumeMounts"] = [{"name": "models", "mountPath": "/mnt/models"}]
    xgb["readinessProbe"] = {"tcpSocket": {"port": 9999}}
    xgb["env"] = [{"name": "PREDICTIVE_UNIT_ID", "value": "mine"}, {"name": "MODEL_NAME", "value": "Xgb"}]
    objs = k8s.render(doc)
    validate_all(objs)
    pod = by_kind(objs, "Deployment")["demo-main-1-xgb-a"]["spec"]["template"]["spec"]
    assert pod["tolerations"] == spec["tolerations"] and pod["nodeSelector"] == {"accelerator": "h100"}
    assert {v["name"] for v in pod["volumes"]} == {"models", k8s.PODINFO}
    c = pod["containers"][0]
    assert c["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert c["readinessProbe"] == {"tcpSocket": {"port": 9999}}  # the user's probe stays
    assert {"name": "models", "mountPath": "/mnt/models"} in c["volumeMounts"]
    env = env_of(c)
    assert env["PREDICTIVE_UNIT_ID"] == "mine" and env["MODEL_NAME"] == "Xgb"  # the user's values win
    assert [e["name"] for e in c["env"]].count("PREDICTIVE_UNIT_ID") == 1


def test_engine_predictor_has_localhost_for_the_executors_pod_and_service_dns_for_the_others():
    objs = k8s.render(fraud())
    predictor = engine_predictor_of(objs)
    endpoints = {n["name"]: n.get("endpoint") for n in _walk(predictor["graph"])}
    assert endpoints["scaler"] == {"type": "REST", "service_host": "localhost", "service_port": 9000,
                                   "httpPort": 9000, "grpcPort": 9500}
    assert endpoints["bandit"]["service_host"] == "localhost"
    assert endpoints["xgb-a"]["service_host"] == "demo-main-xgb-a.models.svc.cluster.local"
    assert endpoints["lgbm-b"] == {"type": "REST", "service_host": "demo-main-lgbm-b.models.svc.cluster.local",
                                   "service_port": 9005, "httpPort": 9005, "grpcPort": 9505}
    assert predictor["graph"]["implementation"] == "UNKNOWN_IMPLEMENTATION"  # the webhook's defaults
    assert (predictor["traffic"], predictor["replicas"]) == (0, 0)
    # each endpoint has a Service of that name, on those ports, selecting that container's pods only
    services = by_kind(objs, "Service")
    assert sorted(services) == ["demo-main", "demo-main-avg", "demo-main-lgbm-b", "demo-main-lr-b", "demo-main-xgb-a"]
    svc = services["demo-main-lgbm-b"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [("http", 9005, 9005), ("grpc", 9505, 9505)]
    third = by_kind(objs, "Deployment")["demo-main-2-lr-b-avg-lgbm-b"]["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= third.items()
    entry = services["demo-main"]
    assert [(p["name"], p["port"]) for p in entry["spec"]["ports"]] == [("http", 8000), ("grpc", 5001)]
    assert entry["spec"]["selector"] == {"seldon-app": "demo-main"}
    # the executor parses it (fastseldon graph's own validation) and calls every node at its endpoint
    parsed = from_engine_predictor(base64.b64encode(json.dumps(predictor).encode()).decode(), "demo")
    assert _endpoint_remotes(parsed, {})["lgbm-b"] == "http://demo-main-lgbm-b.models.svc.cluster.local:9005"
    assert _endpoint_remotes(parsed, {})["scaler"] == "http://localhost:9000"


def test_the_executor_is_started_as_seldons_operator_starts_it():
    objs = k8s.render(fraud(), image="registry.example/fastseldon-executor:9")
    engine = containers_of(by_kind(objs, "Deployment")["demo-main-0-scaler-bandit"])[k8s.ENGINE]
    assert engine["image"] == "registry.example/fastseldon-executor:9"
    assert "command" not in engine  # the image's entrypoint, as with seldon-core-executor
    assert engine["args"] == ["--sdep", "demo", "--namespace", "models", "--predictor", "main", "--http_port", "8000",
                              "--grpc_port", "5001", "--protocol", "seldon", "--transport", "rest",
                              "--prometheus_path", "/prometheus", "--server_type", "rpc"]
    # and fastseldon graph takes exactly these arguments
    args, unknown = _parser().parse_known_args(engine["args"] + ["--log_work_buffer_size", "10000",
                                                                 "--full_health_checks=false"])
    assert unknown == [] and (args.http_port, args.grpc_port, args.predictor, args.sdep) == (8000, 5001, "main", "demo")
    _seldon_args(args)
    assert args.metrics_port == 0  # metrics on the REST port at /prometheus, as Seldon's executor serves them
    v2, _ = _parser().parse_known_args(["--protocol", "v2"])
    with pytest.raises(SpecError, match="seldon protocol"):
        _seldon_args(v2)
    assert k8s.default_image().startswith("fastseldon/executor:")


def test_svc_orch_spec_sets_the_executors_env_and_resources_and_a_separate_pod_when_annotated():
    doc = fraud()
    doc["spec"]["annotations"] = {"seldon.io/engine-separate-pod": "true"}
    doc["spec"]["predictors"][0]["svcOrchSpec"] = {"resources": {"requests": {"cpu": "1"}},
                                                    "env": [{"name": "SELDON_LOG_LEVEL", "value": "DEBUG"}]}
    objs = k8s.render(doc)
    validate_all(objs)
    deploys = by_kind(objs, "Deployment")
    orch = deploys["demo-main-svc-orch"]
    assert list(containers_of(orch)) == [k8s.ENGINE]
    engine = containers_of(orch)[k8s.ENGINE]
    assert engine["resources"] == {"requests": {"cpu": "1"}} and env_of(engine)["SELDON_LOG_LEVEL"] == "DEBUG"
    assert orch["spec"]["template"]["metadata"]["labels"]["seldon-app"] == "demo-main"
    predictor = engine_predictor_of(objs)
    assert all(n["endpoint"]["service_host"].endswith(".models.svc.cluster.local") for n in _walk(predictor["graph"]))
    assert "demo-main-scaler" in by_kind(objs, "Service")


# --------------------------------------------------------------------------- replicas, HPA, PDB


def test_hpa_pdb_and_replicas():
    doc = fraud()
    p = doc["spec"]["predictors"][0]
    p["replicas"] = 2
    p["componentSpecs"][0]["replicas"] = 3
    p["componentSpecs"][1]["hpaSpec"] = {"minReplicas": 1, "maxReplicas": 4, "metricsv2": [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}
    p["componentSpecs"][2]["hpaSpec"] = {"maxReplicas": 5, "metrics": [
        {"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "1Gi"}}]}
    p["componentSpecs"][1]["pdbSpec"] = {"minAvailable": 1}
    p["componentSpecs"][2]["pdbSpec"] = {"maxUnavailable": "50%"}
    objs = k8s.render(doc)
    validate_all(objs)
    deploys = by_kind(objs, "Deployment")
    assert deploys["demo-main-0-scaler-bandit"]["spec"]["replicas"] == 3  # componentSpec's over the predictor's
    assert "replicas" not in deploys["demo-main-1-xgb-a"]["spec"]  # the HPA owns it
    hpas = by_kind(objs, "HorizontalPodAutoscaler")
    assert sorted(hpas) == ["demo-main-1-xgb-a", "demo-main-2-lr-b-avg-lgbm-b"]
    h = hpas["demo-main-1-xgb-a"]
    assert h["apiVersion"] == "autoscaling/v2"
    assert h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo-main-1-xgb-a"}
    assert (h["spec"]["minReplicas"], h["spec"]["maxReplicas"]) == (1, 4)
    assert h["spec"]["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    converted = hpas["demo-main-2-lr-b-avg-lgbm-b"]["spec"]["metrics"]  # autoscaling/v2beta1's form, converted
    assert converted == [{"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue",
                                                                                         "averageValue": "1Gi"}}}]
    pdbs = by_kind(objs, "PodDisruptionBudget")
    assert pdbs["demo-main-1-xgb-a"]["spec"] == {"selector": {"matchLabels": {"seldon-deployment-id": "demo",
                                                                              "app": "demo-main-1-xgb-a"}},
                                                 "minAvailable": 1}
    assert pdbs["demo-main-2-lr-b-avg-lgbm-b"]["spec"]["maxUnavailable"] == "50%"
    doc["spec"]["predictors"][0]["componentSpecs"][1]["hpaSpec"] = {"maxReplicas": 2, "metrics": [{"type": "Pods"}]}
    with pytest.raises(SpecError, match="metricsv2"):
        k8s.render(doc)


# --------------------------------------------------------------------------- several predictors


def canary(traffic: tuple[int, int] = (90, 10), shadow: bool = False) -> dict[str, Any]:
    doc = fraud()
    main = doc["spec"]["predictors"][0]
    main["traffic"] = traffic[0]
    other = {"name": "canary", "traffic": traffic[1], "labels": {"version": "v2"}, "graph": unit("xgb-a"),
             "componentSpecs": [{"spec": {"containers": [{"name": "xgb-a", "image": "registry.example/xgb:2.2"}]}}]}
    if shadow:
        other["shadow"] = True
    doc["spec"]["predictors"].append(other)
    return doc


def test_several_predictors_get_their_own_executor_and_service():
    objs = k8s.render(canary())
    validate_all(objs)
    services = by_kind(objs, "Service")
    assert {"demo-main", "demo-canary"} <= set(services)
    deploy = by_kind(objs, "Deployment")["demo-canary-0-xgb-a"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert labels["version"] == "v2" and labels["seldon-app"] == "demo-canary"
    assert services["demo-canary"]["spec"]["selector"] == {"seldon-app": "demo-canary"}
    # the same container name keeps its ports across predictors (Seldon allocates per name)
    ports = {p["name"]: p["containerPort"] for p in containers_of(deploy)["xgb-a"]["ports"]}
    assert (ports["http"], ports["grpc"]) == (9002, 9502) and ports["metrics"] == 6006
    assert env_of(containers_of(deploy)[k8s.ENGINE])["ENGINE_PREDICTOR"]


def test_traffic_and_shadow_rules():
    with pytest.raises(SpecError, match="add up to 100"):
        k8s.render(canary((90, 20)))
    shadowed = k8s.render(canary((100, 50), shadow=True))
    validate_all(shadowed)
    d = by_kind(shadowed, "Deployment")["demo-canary-0-xgb-a"]
    assert d["metadata"]["labels"]["seldon.io/shadow"] == "true"
    assert by_kind(shadowed, "Service")["demo-canary"]["metadata"]["labels"]["seldon.io/shadow"] == "true"
    single = sdep(unit("m"))
    single["spec"]["predictors"][0]["traffic"] = 40
    with pytest.raises(SpecError, match="single predictor"):
        k8s.render(single)
    only_shadow = sdep(unit("m"))
    only_shadow["spec"]["predictors"][0]["shadow"] = True
    with pytest.raises(SpecError, match="only predictor"):
        k8s.render(only_shadow)


# --------------------------------------------------------------------------- names


def test_long_names_are_shortened_as_seldon_does():
    name = "a-very-long-seldon-deployment-name-for-fraud-detection"
    doc = sdep(unit("the-transformer-of-the-graph", "TRANSFORMER", (unit("xgboost-model-for-the-main-branch"),)),
               name=name)
    objs = k8s.render(doc)
    validate_all(objs)
    long_deploy = f"{name}-main-0-the-transformer-of-the-graph-xgboost-model-for-the-main-branch"
    assert len(long_deploy) > 63
    deploy = by_kind(objs, "Deployment")
    assert list(deploy) == ["seldon-" + hashlib.md5(long_deploy.encode()).hexdigest()]
    assert k8s.short_name("x" * 63) == "x" * 63 and k8s.short_name("x" * 64).startswith("seldon-")
    services = by_kind(objs, "Service")
    assert f"{name}-main" in services  # 59 characters: kept
    labels = next(iter(deploy.values()))["metadata"]["labels"]
    assert labels["seldon-deployment-id"] == name and all(len(v) <= 63 for v in labels.values())


def test_names_kubernetes_refuses_are_errors_naming_them():
    bad = sdep(unit("Model_A"))
    with pytest.raises(SpecError, match="'Model_A' is not a valid Kubernetes name"):
        k8s.render(bad)
    upper = sdep(unit("m"), name="Fraud")
    with pytest.raises(SpecError, match="Fraud"):
        k8s.render(upper)
    label = sdep(unit("m"))
    label["spec"]["predictors"][0]["labels"] = {"version": "v1 beta"}
    with pytest.raises(SpecError, match="label value"):
        k8s.render(label)


def test_graph_validation_is_fastseldon_graphs():
    with pytest.raises(SpecError, match="no container named 'ghost'"):
        k8s.render(sdep(unit("m", "MODEL", (unit("ghost"),)), containers=[[{"name": "m", "image": "x:1"}]]))
    with pytest.raises(SpecError, match="RANDOM_ABTEST needs exactly 2 children"):
        k8s.render(sdep(unit("ab", None, (unit("a"),), implementation="RANDOM_ABTEST")))
    with pytest.raises(SpecError, match="protocol 'v2'"):
        k8s.render(sdep(unit("m"), protocol="v2"))


# --------------------------------------------------------------------------- one pod


def test_one_pod_mode_runs_the_whole_graph_in_one_container():
    doc = fraud()
    for spec in doc["spec"]["predictors"][0]["componentSpecs"]:
        for c in spec["spec"]["containers"]:
            c["image"] = "registry.example/all-units:3"
            c["resources"] = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"nvidia.com/gpu": 1}}
    doc["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"][0]["env"] = [
        {"name": "MODEL_NAME", "value": "Scaler"}]
    objs = k8s.render(doc, mode="one-pod")
    validate_all(objs)
    assert [(o["kind"], o["metadata"]["name"]) for o in objs] == [("Deployment", "demo-main-graph"), ("Service", "demo-main")]
    pod = objs[0]["spec"]["template"]["spec"]
    [graph] = pod["containers"]
    assert graph["image"] == "registry.example/all-units:3" and graph["command"] == ["fastseldon", "graph"]
    assert graph["resources"] == {"requests": {"cpu": "1500m", "memory": "1610612736"}, "limits": {"nvidia.com/gpu": "6"}}
    predictor = engine_predictor_of(objs)
    assert all("endpoint" not in n for n in _walk(predictor["graph"]))  # every unit in-process
    models = {c["name"]: env_of(c)["MODEL_NAME"] for s in predictor["componentSpecs"] for c in s["spec"]["containers"]}
    assert models["scaler"] == "Scaler" and models["xgb-a"] == "MyModel"  # s2i's default interface name
    assert objs[1]["spec"]["selector"] == {"seldon-app": "demo-main"}
    assert objs[0]["spec"]["template"]["metadata"]["labels"]["seldon-app"] == "demo-main"


def test_one_pod_mode_needs_one_image_or_image():
    with pytest.raises(SpecError, match="--image"):
        k8s.render(fraud(), mode="one-pod")
    objs = k8s.render(fraud(), mode="one-pod", image="registry.example/everything:1")
    assert containers_of(objs[0])[k8s.ENGINE]["image"] == "registry.example/everything:1"


# --------------------------------------------------------------------------- command line


def test_command_line_writes_yaml_and_refuses_with_one_line(tmp_path, capsys):
    from fastseldon.cli import main

    spec = tmp_path / "sdep.yaml"
    spec.write_text(yaml.safe_dump(fraud()))
    out = tmp_path / "manifests.yaml"
    assert main(["k8s", str(spec), "--namespace", "prod", "-o", str(out)]) == 0
    objs = list(yaml.safe_load_all(out.read_text()))
    validate_all(objs)
    assert {o["metadata"]["namespace"] for o in objs} == {"prod"}
    assert "demo-main-xgb-a.prod.svc.cluster.local" in json.dumps(engine_predictor_of(objs))
    assert main(["k8s", str(spec), "--mode", "one-pod"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastseldon k8s: error: ") and err.count("\n") == 1
    assert main(["k8s", str(tmp_path / "absent.yaml")]) == 2


def test_no_engine_points_the_predictor_service_at_the_single_unit():
    doc = sdep(unit("m"))
    doc["spec"]["predictors"][0]["annotations"] = {"seldon.io/no-engine": "true"}
    objs = k8s.render(doc)
    validate_all(objs)
    [deploy] = by_kind(objs, "Deployment").values()
    assert list(containers_of(deploy)) == ["m"]  # no executor
    [svc] = by_kind(objs, "Service").values()
    assert svc["metadata"]["name"] == "demo-main"
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 9000), ("grpc", 9500)]
    assert svc["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    doc = sdep(unit("t", "TRANSFORMER", (unit("m"),)))
    doc["spec"]["predictors"][0]["annotations"] = {"seldon.io/no-engine": "true"}
    with pytest.raises(SpecError, match="one node"):
        k8s.render(doc)


def test_the_executor_image_runs_fastseldon_graph_on_this_versions_builder():
    """s2i/executor/Dockerfile: the rendered executor container has only arguments, so the image's
    entrypoint must be `fastseldon graph`; built on the CPU builder of this version."""
    from pathlib import Path

    from fastseldon import __version__

    text = (Path(__file__).resolve().parents[2] / "s2i" / "executor" / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    entry = [json.loads(line.split(None, 1)[1]) for line in lines if line.startswith("ENTRYPOINT")]
    assert entry == [["/opt/app-root/bin/fastseldon", "graph"]]
    assert f"ARG BUILDER_IMAGE=fastseldon/s2i-cpu:{__version__}" in lines
    assert k8s.default_image() == f"fastseldon/executor:{__version__}"


def test_a_graph_of_external_endpoints_gets_the_executor_in_its_own_deployment():
    doc = sdep(unit("m", endpoint={"type": "REST", "service_host": "models.example", "service_port": 9000}),
               containers=[])
    objs = k8s.render(doc)
    validate_all(objs)
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "Deployment"] == ["demo-main-svc-orch"]
    assert engine_predictor_of(objs)["graph"]["endpoint"]["service_host"] == "models.example"  # as given
