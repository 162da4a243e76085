"""SeldonDeployment -> the graph of one predictor, validated as Seldon's admission webhook does.

Reads YAML or JSON (``machinelearning.seldon.io/v1``, ``v1alpha2``, ``v1alpha3``), or the
``ENGINE_PREDICTOR`` environment variable Seldon's operator hands its executor (base64 JSON of
one PredictorSpec). Everything here is pure: parsing, defaulting, validation; nothing runs.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

API_GROUP = "machinelearning.seldon.io"
API_VERSIONS = ("v1", "v1alpha2", "v1alpha3")
NODE_TYPES = ("MODEL", "TRANSFORMER", "OUTPUT_TRANSFORMER", "ROUTER", "COMBINER", "UNKNOWN_TYPE")
METHODS = ("TRANSFORM_INPUT", "TRANSFORM_OUTPUT", "ROUTE", "AGGREGATE", "SEND_FEEDBACK")
BUILT_INS = ("RANDOM_ABTEST", "AVERAGE_COMBINER")
PARAMETER_TYPES = ("INT", "FLOAT", "DOUBLE", "STRING", "BOOL")


class SpecError(ValueError):
    """The spec can't be served; the message is one line naming the node or field."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    type: str = "REST"  # REST | GRPC
    host: str = ""
    port: int = 0


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str = ""
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Node:
    """One PredictiveUnit of the graph, with the container that runs it (if any)."""

    name: str
    type: str = "UNKNOWN_TYPE"
    implementation: str = ""
    methods: tuple[str, ...] = ()
    children: tuple[Node, ...] = ()
    parameters: tuple[dict[str, Any], ...] = ()
    endpoint: Endpoint | None = None
    container: Container | None = None

    def does(self, method: str) -> bool:
        """Whether the executor calls this node for ``method`` (its type or its ``methods``)."""
        implied = {
            "TRANSFORM_INPUT": self.type in ("MODEL", "TRANSFORMER"),
            "TRANSFORM_OUTPUT": self.type == "OUTPUT_TRANSFORMER",
            "ROUTE": self.type == "ROUTER",
            "AGGREGATE": self.type == "COMBINER",
            "SEND_FEEDBACK": self.type in ("MODEL", "ROUTER"),
        }
        return implied[method] or method in self.methods

    def walk(self) -> list[Node]:
        """This node and every node below it, parents first."""
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out

    @property
    def image(self) -> str:
        return self.container.image if self.container is not None else ""


@dataclass(frozen=True, slots=True)
class Predictor:
    name: str
    graph: Node
    deployment: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    transport: str = "rest"

    def node(self, name: str) -> Node | None:
        return next((n for n in self.graph.walk() if n.name == name), None)


# --------------------------------------------------------------------------- loading


def load_file(path: str | Path, predictor: str | None = None) -> Predictor:
    """Parse a SeldonDeployment file (YAML or JSON) and pick one predictor (the first by default)."""
    text = Path(path).read_text(encoding="utf-8")
    return from_document(parse_document(text, str(path)), predictor)


def parse_document(text: str, where: str = "spec") -> dict[str, Any]:
    import yaml  # JSON is YAML too

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SpecError(f"{where}: not valid YAML or JSON: {str(exc).splitlines()[0]}") from None
    sdeps = [d for d in docs if isinstance(d, dict) and d.get("kind") == "SeldonDeployment"]
    if len(sdeps) != 1:
        raise SpecError(f"{where}: expected exactly one SeldonDeployment document, found {len(sdeps)}")
    return sdeps[0]


def from_document(doc: dict[str, Any], predictor: str | None = None) -> Predictor:
    api = str(doc.get("apiVersion", ""))
    group, _, version = api.partition("/")
    if group != API_GROUP or version not in API_VERSIONS:
        raise SpecError(f"apiVersion {api!r} is not {API_GROUP}/{{{','.join(API_VERSIONS)}}}")
    meta = doc.get("metadata") or {}
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise SpecError("SeldonDeployment has no spec")
    name = str(meta.get("name") or spec.get("name") or "")
    if not name:
        raise SpecError("SeldonDeployment needs metadata.name")
    predictors = spec.get("predictors")
    if not isinstance(predictors, list) or not predictors:
        raise SpecError("spec.predictors must be a non-empty list")
    names = [p.get("name") if isinstance(p, dict) else None for p in predictors]
    if len(set(names)) != len(names):
        raise SpecError(f"predictor names must be unique, got {names}")
    if predictor is None:
        chosen = predictors[0]
    else:
        matches = [p for p in predictors if isinstance(p, dict) and p.get("name") == predictor]
        if not matches:
            raise SpecError(f"no predictor named {predictor!r}; the spec has {names}")
        chosen = matches[0]
    annotations = {**_str_map(spec.get("annotations")), **_str_map(chosen.get("annotations"))}
    return _predictor(chosen, name, annotations, str(spec.get("transport") or "rest").lower())


def from_engine_predictor(encoded: str, deployment: str = "", transport: str = "rest") -> Predictor:
    """Seldon's operator passes its executor the defaulted PredictorSpec as base64 JSON."""
    try:
        doc = json.loads(base64.b64decode(encoded, validate=False))
    except (binascii.Error, ValueError) as exc:
        raise SpecError(f"ENGINE_PREDICTOR is not base64 JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise SpecError("ENGINE_PREDICTOR must hold one PredictorSpec object")
    return _predictor(doc, deployment, _str_map(doc.get("annotations")), transport)


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _predictor(doc: Any, deployment: str, annotations: dict[str, str], transport: str) -> Predictor:
    if not isinstance(doc, dict) or not doc.get("name"):
        raise SpecError("every predictor needs a name")
    containers: dict[str, Container] = {}
    for spec in doc.get("componentSpecs") or []:
        pod = (spec or {}).get("spec") or {}
        for c in pod.get("containers") or []:
            if isinstance(c, dict) and c.get("name"):
                env = {str(e["name"]): str(e.get("value", "")) for e in c.get("env") or []
                       if isinstance(e, dict) and "name" in e}
                containers[str(c["name"])] = Container(str(c["name"]), str(c.get("image") or ""), env)
    graph = doc.get("graph")
    if not isinstance(graph, dict):
        raise SpecError(f"predictor {doc['name']!r} has no graph")
    predictor = Predictor(str(doc["name"]), _node(graph, containers, transport, "graph"), deployment,
                          _str_map(doc.get("labels")), annotations, transport)
    validate(predictor)
    return predictor


def _node(doc: Any, containers: dict[str, Container], transport: str, where: str) -> Node:
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str) or not doc["name"]:
        raise SpecError(f"{where}: every graph node needs a name")
    name = doc["name"]
    methods = doc.get("methods") or []
    if not isinstance(methods, list):
        raise SpecError(f"node {name!r}: methods must be a list")
    implementation = str(doc.get("implementation") or "")
    if implementation == "UNKNOWN_IMPLEMENTATION":
        implementation = ""
    node_type = doc.get("type")
    if node_type is None:
        # the webhook's default: MODEL when nothing says otherwise, or for a prepackaged server
        node_type = "MODEL" if not methods and implementation not in BUILT_INS else "UNKNOWN_TYPE"
        if implementation == "RANDOM_ABTEST":
            node_type = "ROUTER"
        elif implementation == "AVERAGE_COMBINER":
            node_type = "COMBINER"
    parameters = doc.get("parameters") or []
    if not isinstance(parameters, list):
        raise SpecError(f"node {name!r}: parameters must be a list")
    endpoint = None
    ep = doc.get("endpoint")
    if isinstance(ep, dict) and (ep.get("service_host") or ep.get("service_port")):
        kind = str(ep.get("type") or ("GRPC" if transport == "grpc" else "REST")).upper()
        try:
            port = int(ep.get("service_port") or (ep.get("grpcPort") if kind == "GRPC" else ep.get("httpPort")) or 0)
        except (TypeError, ValueError):
            raise SpecError(f"node {name!r}: endpoint.service_port must be a number") from None
        endpoint = Endpoint(kind, str(ep.get("service_host") or "localhost"), port)
    children = doc.get("children") or []
    if not isinstance(children, list):
        raise SpecError(f"node {name!r}: children must be a list")
    return Node(
        name=name,
        type=str(node_type).upper(),
        implementation=implementation,
        methods=tuple(str(m).upper() for m in methods),
        children=tuple(_node(c, containers, transport, f"{where}.children[{i}]") for i, c in enumerate(children)),
        parameters=tuple(p for p in parameters),
        endpoint=endpoint,
        container=containers.get(name),
    )


# --------------------------------------------------------------------------- validation


def validate(predictor: Predictor) -> None:
    """Seldon's webhook rules, plus what this executor needs to run each node."""
    seen: set[str] = set()
    for node in predictor.graph.walk():
        where = f"node {node.name!r}"
        if node.name in seen:
            raise SpecError(f"{where}: graph node names must be unique")
        seen.add(node.name)
        if node.type not in NODE_TYPES:
            raise SpecError(f"{where}: unknown type {node.type!r}; valid are {', '.join(NODE_TYPES)}")
        unknown = [m for m in node.methods if m not in METHODS]
        if unknown:
            raise SpecError(f"{where}: unknown methods {unknown}; valid are {', '.join(METHODS)}")
        if node.type == "UNKNOWN_TYPE" and not node.methods and node.implementation not in BUILT_INS:
            raise SpecError(f"{where}: a node of UNKNOWN_TYPE needs methods")
        for p in node.parameters:
            if not isinstance(p, dict) or "name" not in p or "value" not in p:
                raise SpecError(f"{where}: every parameter needs name, value and type, got {p!r}")
            if str(p.get("type", "")).upper() not in PARAMETER_TYPES:
                raise SpecError(f"{where}: parameter {p['name']!r} has type {p.get('type')!r}; "
                                f"valid are {', '.join(PARAMETER_TYPES)}")
        if node.implementation == "RANDOM_ABTEST":
            if len(node.children) != 2:
                raise SpecError(f"{where}: RANDOM_ABTEST needs exactly 2 children, has {len(node.children)}")
            ratio = [p for p in node.parameters if p.get("name") == "ratioA"]
            if ratio:
                try:
                    value = float(ratio[0]["value"])
                except (TypeError, ValueError):
                    raise SpecError(f"{where}: ratioA must be a number, got {ratio[0]['value']!r}") from None
                if not 0.0 <= value <= 1.0:
                    raise SpecError(f"{where}: ratioA must be between 0 and 1, got {value}")
        elif node.implementation == "AVERAGE_COMBINER":
            if not node.children:
                raise SpecError(f"{where}: AVERAGE_COMBINER needs children")
        elif node.implementation:
            if node.container is None and node.endpoint is None:
                raise SpecError(f"{where}: implementation {node.implementation!r} (a prepackaged server) is not "
                                "built into fastseldon; give the node a container with MODEL_NAME or an endpoint")
        elif node.container is None and node.endpoint is None:
            raise SpecError(f"{where}: no container named {node.name!r} in componentSpecs and no endpoint")
        if node.does("ROUTE") and not node.children:
            raise SpecError(f"{where}: a router needs children")
        if node.does("AGGREGATE") and not node.children:
            raise SpecError(f"{where}: a combiner needs children")
