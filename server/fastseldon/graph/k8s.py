"""``fastseldon k8s SDEP.yaml``: a SeldonDeployment as plain Kubernetes manifests, no operator needed.

Pure functions from the parsed SeldonDeployment to a list of manifest dicts; YAML only at the
edge (``dump``). Every predictor is validated by ``spec.from_document`` (the same rules as
``fastseldon graph``), plus the rules that span predictors (traffic, shadows) and Kubernetes'
name rules. Two layouts:

* ``per-component`` (Seldon's): a Deployment per componentSpec with the user's PodSpec kept,
  the executor (``seldon-container-engine``) added to the first one, Services for the
  predictor and for every unit outside the executor's pod, HPA and PDB where asked for;
* ``one-pod``: one Deployment whose single pod runs the whole graph in-process
  (``fastseldon graph``), for graphs whose units' code is in one image.

Names, labels, ports and environment follow Seldon Core v1's operator (v1.18): deployment
``S-P-<idx>-<containers>``, Services ``S-P`` and ``S-P-<container>``, unit ports 9000+ (REST),
9500+ (gRPC), 6000+ (metrics) allocated per container name across the SeldonDeployment, and a
name over 63 characters becomes ``seldon-<md5 of it>``.
"""
from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import re
import sys
from fractions import Fraction
from typing import Any

from fastseldon.graph.spec import SpecError, from_document, parse_document

MODES = ("per-component", "one-pod")
ENGINE = "seldon-container-engine"
EXECUTOR_HTTP_PORT = 8000
EXECUTOR_GRPC_PORT = 5001
FIRST_HTTP_PORT, FIRST_GRPC_PORT, FIRST_METRICS_PORT = 9000, 9500, 6000
PROMETHEUS_PATH = "/prometheus"
MANAGED_BY = "fastseldon"
PODINFO = "seldon-podinfo"
PODINFO_PATH = "/etc/podinfo"
SEPARATE_ENGINE = "seldon.io/engine-separate-pod"
CUSTOM_SVC_NAME = "seldon.io/svc-name"
HEADLESS_SVC = "seldon.io/headless-svc"
NO_ENGINE = "seldon.io/no-engine"
TYPE_LABELS = {
    "MODEL": "seldon.io/model", "TRANSFORMER": "seldon.io/transformer", "ROUTER": "seldon.io/router",
    "OUTPUT_TRANSFORMER": "seldon.io/output-transformer", "COMBINER": "seldon.io/combiner",
}
# the executor's resources when svcOrchSpec gives none: Seldon's requests, and a memory limit;
# no CPU limit (CFS throttling adds latency to every request a busy executor forwards)
EXECUTOR_RESOURCES = {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "512Mi"}}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def default_image() -> str:
    from fastseldon import __version__

    return f"fastseldon/executor:{__version__}"


# --------------------------------------------------------------------------- names


def short_name(name: str) -> str:
    """Seldon's rule for every derived name: over 63 characters, ``seldon-<md5 hex of it>``."""
    return name if len(name) <= 63 else "seldon-" + hashlib.md5(name.encode()).hexdigest()


def _check_name(kind: str, name: str, pattern: re.Pattern[str] = _DNS_LABEL) -> str:
    if len(name) > 63 or not pattern.match(name):
        rule = ("lower-case letters, digits and '-', starting with a letter"
                if pattern is _DNS_1035 else "lower-case letters, digits and '-'")
        raise SpecError(f"{kind} {name!r} is not a valid Kubernetes name ({rule}, at most 63 characters)")
    return name


def _check_label_value(where: str, value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise SpecError(f"{where}: {value!r} is not a valid Kubernetes label value (at most 63 characters of "
                        "letters, digits, '-', '_', '.', starting and ending with a letter or digit)")
    return value


def deployment_name(sdep: str, predictor: str, index: int, component: dict[str, Any]) -> str:
    given = str((component.get("metadata") or {}).get("name") or "")
    tail = given or "-".join(str(c.get("name")) for c in _containers(component))
    return short_name(f"{sdep}-{predictor}-{index}-{tail}")


def predictor_service_name(sdep: str, predictor: dict[str, Any]) -> str:
    custom = (predictor.get("annotations") or {}).get(CUSTOM_SVC_NAME)
    return str(custom) if custom else short_name(f"{sdep}-{predictor['name']}")


def container_service_name(sdep: str, predictor: str, container: str) -> str:
    return short_name(f"{sdep}-{predictor}-{container}")


def _svc_label_key(container: str) -> str:
    """``seldon-app-svc-<container>``; a label key's name part has at most 63 characters."""
    key = f"seldon-app-svc-{container}"
    return key if len(key) <= 63 else "seldon-app-svc-" + hashlib.md5(container.encode()).hexdigest()


# --------------------------------------------------------------------------- quantities


_DECIMAL = {"": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_SUFFIX: dict[str, Fraction] = {"m": Fraction(1, 1000), **{k: Fraction(10) ** e for k, e in _DECIMAL.items()},
                                **{k: Fraction(2) ** e for k, e in _BINARY.items()}}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE]([-+]?[0-9]+))?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


def parse_quantity(value: Any) -> Fraction:
    """A Kubernetes resource quantity (``500m``, ``1.5``, ``2Gi``, ``1e3``) as an exact number."""
    m = _QUANTITY.match(str(value).strip())
    if not m:
        raise SpecError(f"{value!r} is not a Kubernetes resource quantity")
    number = Fraction(m.group(1)) * Fraction(10) ** int(m.group(2) or 0)
    return number * _SUFFIX[m.group(3) or ""]


def format_quantity(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    milli = value * 1000
    if milli.denominator == 1:
        return f"{milli.numerator}m"
    return str(-(-value.numerator // value.denominator))  # round up: never ask for less


def sum_resources(resources: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests and limits added up per resource (a pod running several units' work in one container)."""
    out: dict[str, Any] = {}
    for section in ("requests", "limits"):
        total: dict[str, Fraction] = {}
        for r in resources:
            for name, value in ((r or {}).get(section) or {}).items():
                total[name] = total.get(name, Fraction(0)) + parse_quantity(value)
        if total:
            out[section] = {name: format_quantity(v) for name, v in sorted(total.items())}
    return out


# --------------------------------------------------------------------------- the SeldonDeployment


def _containers(component: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in ((component.get("spec") or {}).get("containers") or []) if isinstance(c, dict)]


def _port(container: dict[str, Any], name: str) -> int | None:
    for p in container.get("ports") or []:
        if isinstance(p, dict) and p.get("name") == name and p.get("containerPort"):
            return int(p["containerPort"])
    return None


def _graph_nodes(graph: dict[str, Any]) -> list[dict[str, Any]]:
    out = [graph]
    for child in graph.get("children") or []:
        out.extend(_graph_nodes(child))
    return out


def _default_graph(graph: dict[str, Any]) -> None:
    """Seldon's defaulting webhook: MODEL when nothing says otherwise, UNKNOWN_IMPLEMENTATION."""
    if graph.get("type") is None and graph.get("methods") is None and graph.get("implementation") is None:
        graph["type"] = "MODEL"
    graph.setdefault("implementation", "UNKNOWN_IMPLEMENTATION")
    for child in graph.get("children") or []:
        _default_graph(child)


def validate_predictors(doc: dict[str, Any]) -> None:
    """The webhook's rules across predictors: traffic, shadows, custom Service names."""
    predictors = doc["spec"]["predictors"]
    live = [p for p in predictors if not p.get("shadow")]
    shadows = [p for p in predictors if p.get("shadow")]
    if not live:
        raise SpecError("a shadow predictor cannot be the only predictor")
    if len(shadows) > 1:
        raise SpecError(f"at most one shadow predictor, got {len(shadows)}")
    for p in predictors:
        traffic = p.get("traffic", 0) or 0
        if not isinstance(traffic, int) or not 0 <= traffic <= 100:
            raise SpecError(f"predictor {p['name']!r}: traffic must be a whole percentage 0..100, got {traffic!r}")
    if len(live) > 1:
        total = sum(p.get("traffic", 0) or 0 for p in live)
        if total != 100:
            raise SpecError(f"the traffic of the predictors that are not shadows must add up to 100, got {total}")
    elif 0 < (live[0].get("traffic", 0) or 0) < 100:
        raise SpecError(f"predictor {live[0]['name']!r}: a single predictor cannot take {live[0]['traffic']}% of "
                        "the traffic (0 or 100)")
    custom = [p["annotations"][CUSTOM_SVC_NAME] for p in predictors if CUSTOM_SVC_NAME in (p.get("annotations") or {})]
    if len(set(custom)) != len(custom):
        raise SpecError(f"duplicate {CUSTOM_SVC_NAME} annotations: {custom}")


class _Ports:
    """Seldon's port allocation: per container name, across every predictor of the SeldonDeployment."""

    def __init__(self) -> None:
        self.http: dict[str, int] = {}
        self.grpc: dict[str, int] = {}
        self.next_metrics = FIRST_METRICS_PORT

    def of(self, name: str) -> tuple[int, int]:
        if name not in self.http:
            self.http[name] = FIRST_HTTP_PORT + len(self.http)
            self.grpc[name] = FIRST_GRPC_PORT + len(self.grpc)
        return self.http[name], self.grpc[name]

    def metrics(self) -> int:
        self.next_metrics += 1
        return self.next_metrics - 1


class _Predictor:
    """One predictor while it is rendered: the raw spec, the validated graph, the derived names."""

    def __init__(self, doc: dict[str, Any], raw: dict[str, Any], namespace: str):
        self.sdep = str(doc["metadata"]["name"])
        self.sdep_id = short_name(self.sdep)
        self.namespace = namespace
        self.raw = copy.deepcopy(raw)
        self.parsed = from_document(doc, str(raw["name"]))  # fastseldon graph's parsing and validation
        self.name = self.parsed.name
        spec = doc["spec"]
        self.protocol = str(spec.get("protocol") or "seldon")
        self.transport = str(spec.get("transport") or "rest").lower()
        self.annotations = {**_str_map(spec.get("annotations")), **_str_map(raw.get("annotations"))}
        self.sdep_annotations = _str_map(spec.get("annotations"))
        self.labels = {"version": self.name, **_str_map(raw.get("labels"))}
        self.raw["labels"] = self.labels
        self.separate = self.sdep_annotations.get(SEPARATE_ENGINE, "").lower() == "true"
        self.no_engine = self.annotations.get(NO_ENGINE, "").lower() == "true"
        self.shadow = bool(raw.get("shadow"))
        self.service = predictor_service_name(self.sdep, raw)
        self.replicas = raw.get("replicas", spec.get("replicas"))
        self.components = [c for c in (self.raw.get("componentSpecs") or []) if isinstance(c, dict)]
        self.nodes = {n["name"]: n for n in _graph_nodes(self.raw["graph"])}
        _default_graph(self.raw["graph"])
        for key, value in self.labels.items():
            _check_label_value(f"predictor {self.name!r} label {key}", value)
        if self.protocol not in ("seldon",):
            raise SpecError(f"protocol {self.protocol!r}: fastseldon's executor calls its units with the seldon protocol "
                            "(V2 requests are answered for the whole graph); use protocol: seldon")
        if self.no_engine and len(self.nodes) != 1:
            raise SpecError(f"predictor {self.name!r}: {NO_ENGINE} is only for a graph of one node")
        _check_name("Service", self.service, _DNS_1035)

    def node_type(self, name: str) -> str:
        node = self.parsed.node(name)
        return node.type if node is not None else ""

    def common_labels(self) -> dict[str, str]:
        labels = {"seldon-deployment-id": self.sdep_id, "app.kubernetes.io/managed-by": MANAGED_BY, **self.labels}
        if self.shadow:
            labels["seldon.io/shadow"] = "true"
        return labels


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _set_env(container: dict[str, Any], name: str, value: str) -> None:
    """Add an env var unless the user set it (the user's value wins, as with Seldon's port variables)."""
    env = container.setdefault("env", [])
    if not any(isinstance(e, dict) and e.get("name") == name for e in env):
        env.append({"name": name, "value": value})


def _add_port(container: dict[str, Any], name: str, number: int) -> None:
    if _port(container, name) is None:
        container.setdefault("ports", []).append({"name": name, "containerPort": number, "protocol": "TCP"})


def _add_podinfo(pod: dict[str, Any], container: dict[str, Any]) -> None:
    mounts = container.setdefault("volumeMounts", [])
    if not any(m.get("name") == PODINFO for m in mounts):
        mounts.append({"name": PODINFO, "mountPath": PODINFO_PATH})
    volumes = pod.setdefault("volumes", [])
    if not any(v.get("name") == PODINFO for v in volumes):
        volumes.append({"name": PODINFO, "downwardAPI": {"items": [
            {"path": "annotations", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.annotations"}},
            {"path": "labels", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels"}},
        ]}})


def _http_probe(path: str, port: int | str, delay: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "initialDelaySeconds": delay, "periodSeconds": 5,
            "timeoutSeconds": 5, "successThreshold": 1, "failureThreshold": failures}


# --------------------------------------------------------------------------- units


def _unit_container(p: _Predictor, container: dict[str, Any], pod: dict[str, Any], http: int, grpc: int,
                    metrics: int) -> None:
    """What Seldon's operator gives every unit container: ports, env, probes, podinfo."""
    name = str(container["name"])
    node = p.nodes[name]
    _add_port(container, "http", http)
    _add_port(container, "grpc", grpc)
    _add_port(container, "metrics", metrics)
    service_port = grpc if p.transport == "grpc" or str((node.get("endpoint") or {}).get("type", "")).upper() == "GRPC" else http
    env = [
        ("PREDICTIVE_UNIT_SERVICE_PORT", str(service_port)),
        ("PREDICTIVE_UNIT_HTTP_SERVICE_PORT", str(http)),
        ("PREDICTIVE_UNIT_GRPC_SERVICE_PORT", str(grpc)),
        ("PREDICTIVE_UNIT_METRICS_SERVICE_PORT", str(metrics)),
        ("PREDICTIVE_UNIT_METRICS_ENDPOINT", PROMETHEUS_PATH),
        ("PREDICTIVE_UNIT_ID", name),
        ("PREDICTIVE_UNIT_IMAGE", str(container.get("image") or "")),
        ("PREDICTOR_ID", p.name),
        ("PREDICTOR_LABELS", json.dumps(p.labels, separators=(",", ":"), sort_keys=True)),
        ("SELDON_DEPLOYMENT_ID", p.sdep),
        ("SELDON_EXECUTOR_ENABLED", "true"),
        ("MLSERVER_HTTP_PORT", str(http)),
        ("MLSERVER_GRPC_PORT", str(grpc)),
        ("MLSERVER_METRICS_PORT", str(metrics)),
        ("MLSERVER_METRICS_ENDPOINT", PROMETHEUS_PATH),
        ("MLSERVER_MODEL_NAME", name),
    ]
    if node.get("parameters"):
        params = [{"name": str(x["name"]), "value": str(x["value"]), "type": str(x["type"])} for x in node["parameters"]]
        env.insert(0, ("PREDICTIVE_UNIT_PARAMETERS", json.dumps(params, separators=(",", ":"))))
    for key, value in env:
        _set_env(container, key, value)
    # ready means loaded: /health/status answers 503 until the model's load() has finished;
    # live is /health/ping, which answers while loading (a slow load is not a dead process)
    container.setdefault("readinessProbe", _http_probe("/health/status", "http", 5, 3))
    container.setdefault("livenessProbe", _http_probe("/health/ping", "http", 30, 6))
    container.setdefault("lifecycle", {"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 5"]}}})
    container.setdefault("imagePullPolicy", "IfNotPresent")
    _add_podinfo(pod, container)


def _endpoint(p: _Predictor, name: str, local: bool, http: int, grpc: int) -> dict[str, Any]:
    kind = str((p.nodes[name].get("endpoint") or {}).get("type") or ("GRPC" if p.transport == "grpc" else "REST")).upper()
    host = "localhost" if local else f"{container_service_name(p.sdep, p.name, name)}.{p.namespace}.svc.cluster.local"
    return {"type": kind, "service_host": host, "service_port": grpc if kind == "GRPC" else http,
            "httpPort": http, "grpcPort": grpc}


def engine_predictor(raw: dict[str, Any]) -> str:
    """``ENGINE_PREDICTOR``: the defaulted PredictorSpec as base64 JSON (traffic and replicas zeroed, as Seldon does)."""
    doc = copy.deepcopy(raw)
    doc["traffic"] = 0
    doc["replicas"] = 0
    return base64.b64encode(json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()).decode()


def _executor_args(p: _Predictor, http: int = EXECUTOR_HTTP_PORT, grpc: int = EXECUTOR_GRPC_PORT) -> list[str]:
    """The arguments Seldon's operator starts ``seldon-container-engine`` with."""
    return ["--sdep", p.sdep, "--namespace", p.namespace, "--predictor", p.name, "--http_port", str(http),
            "--grpc_port", str(grpc), "--protocol", p.protocol, "--transport", p.transport,
            "--prometheus_path", PROMETHEUS_PATH, "--server_type", "rpc"]


def _executor_container(p: _Predictor, image: str, predictor_b64: str, command: list[str] | None) -> dict[str, Any]:
    orch = p.raw.get("svcOrchSpec") or {}
    env = [{"name": "ENGINE_PREDICTOR", "value": predictor_b64},
           {"name": "REQUEST_LOGGER_DEFAULT_ENDPOINT", "value": "http://default-broker"}]
    env.extend(copy.deepcopy(e) for e in orch.get("env") or [] if isinstance(e, dict))
    container: dict[str, Any] = {"name": ENGINE, "image": image}
    if command:
        container["command"] = command
    container.update({
        "args": _executor_args(p),
        "env": env,
        "ports": [{"name": "http", "containerPort": EXECUTOR_HTTP_PORT, "protocol": "TCP"},
                  {"name": "grpc", "containerPort": EXECUTOR_GRPC_PORT, "protocol": "TCP"}],
        # /ready: every in-process unit has loaded and every remote one accepts connections; /live meanwhile
        "readinessProbe": _http_probe("/ready", "http", 5, 3),
        "livenessProbe": _http_probe("/live", "http", 30, 6),
        "resources": copy.deepcopy(orch.get("resources") or p.raw.get("engineResources") or EXECUTOR_RESOURCES),
        "imagePullPolicy": "IfNotPresent",
        "volumeMounts": [{"name": PODINFO, "mountPath": PODINFO_PATH}],
    })
    return container


# --------------------------------------------------------------------------- objects


def _meta(name: str, p: _Predictor, labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": p.namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _deployment(p: _Predictor, name: str, component: dict[str, Any], pod: dict[str, Any],
                extra_labels: dict[str, str], hpa: bool) -> dict[str, Any]:
    labels = {**p.common_labels(), "app": name, "fluentd": "true", **extra_labels,
              **_str_map((component.get("metadata") or {}).get("labels"))}
    for key, value in labels.items():
        _check_label_value(f"Deployment {name!r} label {key}", value)
    annotations = {**p.sdep_annotations, **_str_map(p.raw.get("annotations")),
                   **_str_map((component.get("metadata") or {}).get("annotations"))}
    template_annotations = {"prometheus.io/scrape": "true", "prometheus.io/path": PROMETHEUS_PATH, **annotations}
    pod.setdefault("terminationGracePeriodSeconds", 30)
    selector = {"seldon-deployment-id": p.sdep_id, "app": name}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
        "template": {"metadata": {"labels": labels, "annotations": template_annotations}, "spec": pod},
    }
    replicas = component.get("replicas", p.replicas)
    if not hpa and replicas is not None:
        spec["replicas"] = int(replicas)
    if p.raw.get("progressDeadlineSeconds") is not None:
        spec["progressDeadlineSeconds"] = int(p.raw["progressDeadlineSeconds"])
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(name, p, labels, annotations or None),
            "spec": spec}


def _service(p: _Predictor, name: str, selector: dict[str, str], http: int, grpc: int,
             labels: dict[str, str]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "selector": selector,
        "ports": [{"name": "http", "port": http, "targetPort": http, "protocol": "TCP"},
                  {"name": "grpc", "port": grpc, "targetPort": grpc, "protocol": "TCP"}],
        "sessionAffinity": "None",
    }
    if p.sdep_annotations.get(HEADLESS_SVC, "false").lower() != "false":
        spec["clusterIP"] = "None"
    annotations = _str_map(p.raw.get("annotations"))
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, p, labels, annotations or None), "spec": spec}


def _hpa(p: _Predictor, name: str, hpa: dict[str, Any]) -> dict[str, Any]:
    if "maxReplicas" not in hpa:
        raise SpecError(f"Deployment {name!r}: hpaSpec needs maxReplicas")
    metrics = copy.deepcopy(hpa.get("metricsv2")) or [_metric_v2(name, m) for m in hpa.get("metrics") or []]
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "maxReplicas": int(hpa["maxReplicas"]),
    }
    if hpa.get("minReplicas") is not None:
        spec["minReplicas"] = int(hpa["minReplicas"])
    if metrics:
        spec["metrics"] = metrics
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": _meta(name, p, {"seldon-deployment-id": p.sdep_id, "app.kubernetes.io/managed-by": MANAGED_BY}),
            "spec": spec}


def _metric_v2(name: str, metric: dict[str, Any]) -> dict[str, Any]:
    """An autoscaling/v2beta1 Resource metric (hpaSpec.metrics) in autoscaling/v2's form."""
    resource = metric.get("resource") if metric.get("type") == "Resource" else None
    if not isinstance(resource, dict):
        raise SpecError(f"Deployment {name!r}: hpaSpec.metrics of type {metric.get('type')!r} (autoscaling/v2beta1) "
                        "cannot be converted; give it as hpaSpec.metricsv2 (autoscaling/v2)")
    if "targetAverageUtilization" in resource:
        target = {"type": "Utilization", "averageUtilization": int(resource["targetAverageUtilization"])}
    elif "targetAverageValue" in resource:
        target = {"type": "AverageValue", "averageValue": str(resource["targetAverageValue"])}
    else:
        raise SpecError(f"Deployment {name!r}: hpaSpec.metrics resource needs targetAverageUtilization or "
                        "targetAverageValue")
    return {"type": "Resource", "resource": {"name": str(resource["name"]), "target": target}}


def _pdb(p: _Predictor, name: str, pdb: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": {"seldon-deployment-id": p.sdep_id, "app": name}}}
    for key in ("minAvailable", "maxUnavailable"):
        if pdb.get(key) is not None:
            spec[key] = pdb[key]
    if len(spec) == 1:
        raise SpecError(f"Deployment {name!r}: pdbSpec needs minAvailable or maxUnavailable")
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": _meta(name, p, {"seldon-deployment-id": p.sdep_id, "app.kubernetes.io/managed-by": MANAGED_BY}),
            "spec": spec}


def _scaling(p: _Predictor, name: str, component: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    if component.get("kedaSpec"):
        raise SpecError(f"Deployment {name!r}: kedaSpec is not rendered (KEDA's ScaledObject is not a built-in kind); "
                        "use hpaSpec")
    if component.get("hpaSpec"):
        out.append(_hpa(p, name, component["hpaSpec"]))
    if component.get("pdbSpec"):
        out.append(_pdb(p, name, component["pdbSpec"]))
    return out


def _predictor_service(p: _Predictor, selector_value: str, http: int, grpc: int) -> dict[str, Any]:
    labels = {"seldon-app": p.service, "seldon-deployment-id": p.sdep_id, "app.kubernetes.io/managed-by": MANAGED_BY}
    if p.shadow:
        labels["seldon.io/shadow"] = "true"
    return _service(p, p.service, {"seldon-app": selector_value}, http, grpc, labels)


def render_per_component(p: _Predictor, ports: _Ports, image: str) -> list[dict[str, Any]]:
    """Seldon's layout: a Deployment per componentSpec, the executor in the first (or its own)."""
    user_components = copy.deepcopy(p.raw.get("componentSpecs"))  # ENGINE_PREDICTOR carries them as given
    objects: list[dict[str, Any]] = []
    deployments: list[dict[str, Any]] = []
    services: list[dict[str, Any]] = []
    for index, component in enumerate(p.components):
        containers = _containers(component)
        if not containers:
            continue
        for container in containers:
            _check_name("container", str(container.get("name") or ""))
        name = _check_name("Deployment", deployment_name(p.sdep, p.name, index, component))
        pod = component.setdefault("spec", {})
        local = index == 0 and not p.separate and not p.no_engine
        extra: dict[str, str] = {}
        for container in containers:
            cname = str(container["name"])
            http, grpc = ports.of(cname)
            if cname not in p.nodes:
                continue  # a sidecar: kept as given
            http = _port(container, "http") or http
            grpc = _port(container, "grpc") or grpc
            _unit_container(p, container, pod, http, grpc, _port(container, "metrics") or ports.metrics())
            node_type = p.node_type(cname)
            if node_type in TYPE_LABELS:
                extra.setdefault(TYPE_LABELS[node_type], "true")
            p.nodes[cname]["endpoint"] = _endpoint(p, cname, local, http, grpc)
            if p.no_engine:
                extra["seldon-app"] = p.service
                services.append(_predictor_service(p, p.service, http, grpc))
            elif not local:
                svc = container_service_name(p.sdep, p.name, cname)
                _check_name("Service", svc, _DNS_1035)
                key = _svc_label_key(cname)
                extra[key] = svc
                labels = {key: svc, "seldon-deployment-id": p.sdep_id, "seldon-app": p.service,
                          "app.kubernetes.io/managed-by": MANAGED_BY}
                if node_type in TYPE_LABELS:
                    labels[TYPE_LABELS[node_type]] = "true"
                services.append(_service(p, svc, {key: svc}, http, grpc, labels))
        if local:
            extra["seldon-app"] = p.service
            extra["seldon-deployment-contains-svcorch"] = "true"
        deploy = _deployment(p, name, component, pod, extra, bool(component.get("hpaSpec")))
        deployments.append(deploy)
        objects.extend(_scaling(p, name, component))
    if not p.no_engine:
        encoded = engine_predictor({**p.raw, "componentSpecs": user_components})  # with the endpoints filled in
        engine = _executor_container(p, image, encoded, None)
        if p.separate or not deployments:  # (no componentSpec: every node has an endpoint of its own)
            orch = short_name(f"{p.sdep}-{p.name}-svc-orch")
            _check_name("Deployment", orch)
            orch_pod: dict[str, Any] = {"containers": [engine]}
            _add_podinfo(orch_pod, engine)
            component = {"replicas": (p.raw.get("svcOrchSpec") or {}).get("replicas", p.replicas)}
            deployments.insert(0, _deployment(p, orch, component, orch_pod, {
                "seldon-app": p.service, "seldon-deployment-contains-svcorch": "true"}, False))
        else:
            first = deployments[0]["spec"]["template"]["spec"]
            first["containers"].append(engine)
        services.insert(0, _predictor_service(p, p.service, EXECUTOR_HTTP_PORT, EXECUTOR_GRPC_PORT))
    for deploy in deployments:  # the selector holds the Service labels too (a Deployment's pods only)
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        for key in list(labels):
            if key == "seldon-app" or key.startswith("seldon-app-svc-"):
                deploy["spec"]["selector"]["matchLabels"][key] = labels[key]
    return deployments + services + objects


def render_one_pod(p: _Predictor, image: str | None) -> list[dict[str, Any]]:
    """The whole graph in-process in one pod: ``fastseldon graph`` with every unit loaded in it."""
    if not p.components:
        raise SpecError(f"predictor {p.name!r} has no componentSpecs to run")
    units = [(c, comp) for comp in p.components for c in _containers(comp) if c.get("name") in p.nodes]
    images = sorted({str(c.get("image") or "") for c, _ in units})
    if image is None:
        if len(images) != 1:
            raise SpecError(f"predictor {p.name!r}: one-pod mode runs every unit in one container, but the units "
                            f"use {len(images)} images {images}; build one image holding every unit's code "
                            "(<node>/ folders or one module) and pass --image")
        image = images[0]
    pod = copy.deepcopy(p.components[0].get("spec") or {})
    sidecars = [copy.deepcopy(c) for comp in p.components for c in _containers(comp) if c.get("name") not in p.nodes]
    volumes = {v["name"]: v for comp in p.components for v in ((comp.get("spec") or {}).get("volumes") or [])}
    env: dict[str, dict[str, Any]] = {}
    mounts: dict[str, dict[str, Any]] = {}
    for container, _comp in units:
        container.setdefault("env", [])
        if not any(e.get("name") == "MODEL_NAME" for e in container["env"]):
            container["env"].append({"name": "MODEL_NAME", "value": "MyModel"})  # s2i's run script's default
        for e in container["env"]:
            if not str(e.get("name", "")).startswith("PREDICTIVE_UNIT_"):
                env.setdefault(e["name"], copy.deepcopy(e))
        for m in container.get("volumeMounts") or []:
            mounts.setdefault(m["mountPath"], copy.deepcopy(m))
    for name in ("MODEL_NAME", "SERVICE_TYPE", "MAX_BATCH_SIZE", "MAX_BATCH_TIME_MS"):
        env.pop(name, None)  # per unit: read from ENGINE_PREDICTOR, not by the graph process
    engine = _executor_container(p, image, engine_predictor(p.raw), ["fastseldon", "graph"])
    engine["env"] = engine["env"] + [e for name, e in env.items() if name not in {x["name"] for x in engine["env"]}]
    engine["resources"] = sum_resources([c.get("resources") or {} for c, _ in units]) or engine["resources"]
    engine["volumeMounts"] = engine["volumeMounts"] + [m for m in mounts.values() if m.get("name") != PODINFO]
    pod["containers"] = [engine, *sidecars]
    pod["volumes"] = [v for v in volumes.values()]
    if not pod["volumes"]:
        del pod["volumes"]
    _add_podinfo(pod, engine)
    name = short_name(f"{p.sdep}-{p.name}-graph")
    _check_name("Deployment", name)
    extra = {"seldon-app": p.service, "seldon-deployment-contains-svcorch": "true"}
    component = {**p.components[0], "replicas": p.components[0].get("replicas", p.replicas)}
    deploy = _deployment(p, name, component, pod, extra, bool(component.get("hpaSpec")))
    deploy["spec"]["selector"]["matchLabels"]["seldon-app"] = p.service
    return [deploy, _predictor_service(p, p.service, EXECUTOR_HTTP_PORT, EXECUTOR_GRPC_PORT),
            *_scaling(p, name, component)]


def render(doc: dict[str, Any], image: str | None = None, mode: str = "per-component",
           namespace: str | None = None) -> list[dict[str, Any]]:
    """Every predictor of a SeldonDeployment document as Kubernetes manifests (dicts)."""
    if mode not in MODES:
        raise SpecError(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    from_document(doc)  # apiVersion, metadata.name, predictors, unique names
    meta = doc.get("metadata") or {}
    ns = namespace or str(meta.get("namespace") or "default")
    _check_name("namespace", ns)
    validate_predictors(doc)
    _check_name("SeldonDeployment", short_name(str(meta["name"])))
    ports = _Ports()
    out: list[dict[str, Any]] = []
    for raw in doc["spec"]["predictors"]:
        p = _Predictor(doc, raw, ns)
        if mode == "one-pod":
            out.extend(render_one_pod(p, image))
        else:
            out.extend(render_per_component(p, ports, image or default_image()))
    return copy.deepcopy(out)  # no dict shared between objects (YAML would write anchors)


def dump(manifests: list[dict[str, Any]]) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump_all(manifests, Dumper=Dumper, sort_keys=False, default_flow_style=False)


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastseldon k8s", description=(
        "Write plain Kubernetes manifests (Deployments, Services, HPA, PDB) for a SeldonDeployment, to apply with "
        "`kubectl apply -f -` on a cluster without Seldon's operator."))
    p.add_argument("sdep", metavar="SDEP.yaml", help="the SeldonDeployment (YAML or JSON)")
    p.add_argument("--image", help="the executor image, started as Seldon's operator starts seldon-container-engine "
                                   f"(default {default_image()}); in one-pod mode, the image holding every unit "
                                   "(default: the units' image, when they share one)")
    p.add_argument("--mode", choices=MODES, default="per-component",
                   help="per-component: Seldon's layout, a Deployment per componentSpec plus the executor (default); "
                        "one-pod: the whole graph in-process in one pod")
    p.add_argument("--namespace", help="namespace of every object and of the units' Service DNS names "
                                       "(default: the SeldonDeployment's, else 'default')")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        with open(args.sdep, encoding="utf-8") as f:
            doc = parse_document(f.read(), args.sdep)
        text = dump(render(doc, args.image, args.mode, args.namespace))
    except OSError as exc:
        print(f"fastseldon k8s: error: {args.sdep}: {exc.strerror}", file=sys.stderr)
        return 2
    except SpecError as exc:
        print(f"fastseldon k8s: error: {exc}", file=sys.stderr)
        return 2
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0
