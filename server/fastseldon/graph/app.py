"""A worker serving one predictor's graph: loads its units, and answers the executor's external API.

Routes are Seldon's executor's (port 8000 / 5001 by default): ``/api/v1.0/predictions``,
``/api/v1.0/feedback``, ``/api/v1.0/metadata[/{node}]``, ``/ready``, ``/live``, gRPC
``seldon.protos.Seldon/{Predict,SendFeedback,GraphMetadata}``, V2 infer of the whole graph
under the deployment name, and V2 (REST and gRPC) of each in-process unit under its node name.
Where each node runs is decided here (``place_units``).
"""
from __future__ import annotations

import asyncio
import os
from collections import defaultdict, deque
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from fastseldon import codec
from fastseldon import seldon_protocol as sp
from fastseldon import v2_protocol as v2
from fastseldon.app import App, timed_rest
from fastseldon.codec.datatypes import datatype_for
from fastseldon.errors import BadRequest, FastSeldonError, NotFound, UpstreamError
from fastseldon.graph.executor import GraphExecutor
from fastseldon.graph.spec import Node, Predictor, SpecError
from fastseldon.graph.units import GraphUnit, LocalUnit, RemoteGrpcUnit, RemoteRestUnit, as_reply, timeout_from
from fastseldon.grpc import with_metadata
from fastseldon.http import JSON, TEXT, Request, Response, Router
from fastseldon.metrics import REQUEST_BUCKETS, LatencyTally, Metrics, add_observations
from fastseldon.proto import prediction_pb2 as pb
from fastseldon.registry import Entry, ModelRegistry
from fastseldon.runner import HookRunner
from fastseldon.service import SeldonService
from fastseldon.settings import ServerSettings, UnitSettings, unit_env_fields
from fastseldon.types import InferResult, Message, Tensor
from fastseldon.user_model import UserModel, call_load, construct, parse_parameters
from fastseldon.v2_routes import V2Models

PUID = b"seldon-puid"
GRPC_PUID = "seldon-puid"  # call metadata key (gRPC keys are lower case)
RestHandler = Callable[[Request], Coroutine[Any, Any, Response]]


def unit_settings(node: Node, predictor: Predictor) -> UnitSettings:
    """An in-process node's unit settings: MODEL_NAME and the container's other env, as s2i reads them."""
    assert node.container is not None
    env = node.container.env
    try:
        fields = unit_env_fields(env)
    except ValueError as exc:
        raise SpecError(f"node {node.name!r}: env {exc}") from None
    parameters = [{"name": p["name"], "value": str(p["value"]), "type": str(p.get("type", "")).upper()}
                  for p in node.parameters]
    return UnitSettings(
        interface_name=env["MODEL_NAME"],
        model_name=node.name,
        parameters=codec.dumps(parameters).decode(),
        predictive_unit_id=node.name,
        predictive_unit_image=node.image,
        deployment_name=predictor.deployment,
        predictor_name=predictor.name,
        predictor_version=predictor.labels.get("version", ""),
        **fields,
    )


class GraphMetrics:
    """Per node call counts and latency, labelled as Seldon's executor labels its client metrics."""

    def __init__(self, predictor: Predictor):
        from prometheus_client import Histogram

        self.predictor = predictor
        self._hist = Histogram(
            "seldon_api_executor_client_requests_seconds", "Time the graph executor spent calling each node",
            ["deployment_name", "predictor_name", "predictor_version", "model_name", "model_image", "method", "code"],
            buckets=REQUEST_BUCKETS, registry=None,
        )
        self._images = {n.name: n.image or "NOT_IMPLEMENTED" for n in predictor.graph.walk()}
        self._tally = LatencyTally()
        self._ok: defaultdict[tuple[str, str], list[float]] = defaultdict(list)

    def observe(self, node: Node, method: str, seconds: float, error: BaseException | None) -> None:
        if error is None:
            self._ok[node.name, method].append(seconds)
        else:
            self._tally.add((node.name, method, str(getattr(error, "http_status", 500))), seconds)

    def record(self, node: Node, method: str) -> Callable[[float], None]:
        """Every walk runs on the event loop (REST and gRPC alike) and so does ``flush``: a node's
        successful call is only appended to its list (a graph makes one per node per request), and
        the lists are bucketed at flush."""
        return self._ok[node.name, method].append

    def flush(self) -> None:
        for (node, method), values in self._ok.items():
            if values:
                done = values[:]
                values.clear()  # (the list stays: the executor appends to it)
                self._tally.add_all((node, method, "OK"), done)
        p = self.predictor
        for (node, method, code), (_count, total, counts) in self._tally.drain().items():
            child = self._hist.labels(p.deployment or "NOT_IMPLEMENTED", p.name, p.labels.get("version", p.name), node,
                                      self._images.get(node, "NOT_IMPLEMENTED"), method, code)
            add_observations(child, total, counts)


class GraphApp:
    """One worker's graph: its units, the executor over them, and the external routes."""

    flush_interval = Metrics.flush_interval

    def __init__(self, server: ServerSettings, predictor: Predictor, units: dict[str, GraphUnit],
                 local: list[tuple[UnitSettings, Metrics]], executor: ThreadPoolExecutor,
                 loop: asyncio.AbstractEventLoop, seed: int | None = None, node_apps: dict[str, App] | None = None):
        self.server = server
        self.node_apps = node_apps or {}  # in-process units, each answering V2 under its node name
        self.predictor = predictor
        self.units = units
        self.loop = loop
        self.pool = executor
        self._local_metrics = [m for _, m in local]
        self.metrics = Metrics(UnitSettings(interface_name="graph", model_name=predictor.deployment or predictor.name,
                                            deployment_name=predictor.deployment, predictor_name=predictor.name))
        self.node_metrics = GraphMetrics(predictor)
        injection = bool(os.environ.get("SELDON_ENABLE_ROUTING_INJECTION"))
        self.executor = GraphExecutor(predictor, units, routing_injection=injection, seed=seed,
                                      observe=self.node_metrics.observe, record=self.node_metrics.record)
        self.name = predictor.deployment or predictor.name
        self.puids = Puids()
        self.router = Router()
        self.router.set_error_renderer("", render_error)
        self.router.set_error_renderer("/v2", lambda exc: Response(exc.http_status, v2.error_body(exc), JSON))
        self.grpc_methods: dict[str, Any] = {}
        self._add_routes()

    # -- wiring

    def _timed(self, label: str, fn: RestHandler) -> RestHandler:
        return timed_rest(self.metrics, self.router, label, fn)

    def _add_routes(self) -> None:
        r, t = self.router, self._timed
        r.add(("POST",), ("/api/v1.0/predictions", "/api/v0.1/predictions"), t("/api/v1.0/predictions", self.rest_predict))
        r.add(("POST",), ("/api/v1.0/feedback", "/api/v0.1/feedback"), t("/api/v1.0/feedback", self.rest_feedback))
        r.add(("GET",), ("/api/v1.0/metadata",), t("/api/v1.0/metadata", self.rest_graph_metadata))
        r.add(("GET",), ("/ready",), self.rest_ready)
        r.add(("GET",), ("/live", "/health/ping"), self.rest_live)
        r.add(("GET",), ("/v2/health/live", "/v2/health/ready"), self.rest_v2_health)
        r.add(("POST",), (f"/v2/models/{self.name}/infer",), t("/v2/models/infer", self.rest_v2_infer))
        r.add(("GET",), (f"/v2/models/{self.name}/ready",), self.rest_v2_ready)
        r.add_matcher(self._match_node_metadata)
        nodes = ModelRegistry([Entry(name, app=app) for name, app in self.node_apps.items()],
                              fixed="a graph's units are fixed for the life of the server")
        models = V2Models(nodes, r, self.grpc_methods, t, self.loop)  # /v2/models/{node}/...
        models.add_model_routes()
        models.add_grpc()
        self.grpc_methods["/seldon.protos.Seldon/Predict"] = with_metadata(partial(self.grpc_predict))
        self.grpc_methods["/seldon.protos.Seldon/SendFeedback"] = with_metadata(partial(self.grpc_feedback))
        self.grpc_methods["/seldon.protos.Seldon/GraphMetadata"] = self.grpc_graph_metadata

    def _match_node_metadata(self, method: str, path: str) -> RestHandler | None:
        prefix = "/api/v1.0/metadata/"
        if method != "GET" or not path.startswith(prefix):
            return None
        name = path[len(prefix):]
        if name not in self.units:
            raise NotFound(f"no graph node {name!r} answers metadata; nodes: {sorted(self.units)}")
        unit = self.units[name]

        async def handler(request: Request) -> Response:
            return Response(200, codec.dumps(await self.loop.run_in_executor(self.pool, unit.metadata)), JSON)

        return self._timed("/api/v1.0/metadata/node", handler)

    # -- REST

    async def rest_predict(self, request: Request) -> Response:
        puid = self.puids.of(request.headers.get(PUID))
        obj = sp.parse_rest_body(request.body, request.headers.get(b"content-type", b""), request.query, fast=True)
        out, _routing = await self.executor.predict(sp.message_from_json(obj, raw=obj), puid)
        return Response(200, sp.reply_to_json(as_reply(out)), JSON, [(PUID, puid.encode())])

    async def rest_feedback(self, request: Request) -> Response:
        puid = self.puids.of(request.headers.get(PUID))
        obj = sp.parse_rest_body(request.body, request.headers.get(b"content-type", b""), request.query, fast=False)
        out = await self.executor.feedback(sp.feedback_from_json(obj), puid)
        return Response(200, sp.reply_to_proto_json(as_reply(out)), JSON, [(PUID, puid.encode())])

    async def rest_graph_metadata(self, request: Request) -> Response:
        return Response(200, codec.dumps(await self.loop.run_in_executor(self.pool, self.graph_metadata)), JSON)

    async def rest_ready(self, request: Request) -> Response:
        return Response(200, b"ready", TEXT)

    async def rest_live(self, request: Request) -> Response:
        return Response(200, b"live" if request.path == "/live" else b"pong", TEXT)

    async def rest_v2_health(self, request: Request) -> Response:
        key = "live" if request.path.endswith("live") else "ready"
        return Response(200, codec.dumps({key: True}), JSON)

    async def rest_v2_ready(self, request: Request) -> Response:
        return Response(200, codec.dumps({"name": self.name, "ready": True}), JSON)

    async def rest_v2_infer(self, request: Request) -> Response:
        """The whole graph over V2: one input tensor in, the graph's result out as ``output-0``."""
        infer = v2.decode_rest_request(request.body, request.headers, self.name, "", self.server.max_body_bytes)
        if len(infer.inputs) != 1:
            raise BadRequest(f"a graph's V2 infer takes exactly one input tensor, got {len(infer.inputs)}")
        x = infer.inputs[0].data
        out, _ = await self.executor.predict(Message("tensor" if x.dtype.kind in "biuf" else "ndarray", x, []),
                                             self.puids.of(request.headers.get(PUID)))
        arr = np.asarray(out.payload)
        result = InferResult([Tensor("output-0", datatype_for(arr.dtype), arr)])
        body, ctype, headers = v2.encode_rest_response(result, infer, self.name, "")
        return Response(200, body, ctype, headers)

    # -- gRPC (on gRPC threads: the walk runs on the loop)

    def _on_loop(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    # The puid comes from seldon-puid call metadata (generated when absent) and goes back as
    # initial metadata, as Seldon's executor sends it (SendHeader / SetHeader).

    def grpc_predict(self, body: bytes, metadata: dict[str, str]) -> tuple[bytes, list[tuple[str, str]]]:
        puid = metadata.get(GRPC_PUID) or self.puids()
        out, _ = self._on_loop(self.executor.predict(sp.message_from_proto_bytes(body), puid))
        return sp.reply_to_proto_bytes(as_reply(out)), [(GRPC_PUID, puid)]

    def grpc_feedback(self, body: bytes, metadata: dict[str, str]) -> tuple[bytes, list[tuple[str, str]]]:
        puid = metadata.get(GRPC_PUID) or self.puids()
        out = self._on_loop(self.executor.feedback(sp.feedback_from_proto_bytes(body), puid))
        return sp.reply_to_proto_bytes(as_reply(out)), [(GRPC_PUID, puid)]

    def grpc_graph_metadata(self, body: bytes) -> bytes:
        from google.protobuf import json_format

        return json_format.ParseDict(self.graph_metadata(), pb.SeldonGraphMetadata(),
                                     ignore_unknown_fields=True).SerializeToString()

    # -- metadata

    def graph_metadata(self) -> dict[str, Any]:
        """Seldon's graph metadata: every node's metadata, the root's inputs and the leaf's outputs."""
        models = {name: unit.metadata() for name, unit in self.units.items()}
        root = self.predictor.graph
        leaf = root
        while leaf.children:
            leaf = leaf.children[0]
        return {
            "name": self.predictor.name,
            "models": models,
            "graphinputs": (models.get(root.name) or {}).get("inputs", []),
            "graphoutputs": (models.get(leaf.name) or {}).get("outputs", []),
        }

    def flush(self) -> None:
        self.metrics.flush()
        self.node_metrics.flush()
        for m in self._local_metrics:
            m.flush()
        for app in self.node_apps.values():
            app.flush()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.flush()


def render_error(exc: FastSeldonError) -> Response:
    """Seldon's status JSON; a failing unit's own answer goes back as it came."""
    if isinstance(exc, UpstreamError) and exc.body:
        return Response(exc.http_status, exc.body, JSON)
    return Response(exc.http_status, sp.error_body(exc), JSON)


class Puids:
    """Random (version 4) UUID strings, one per request that came without a puid, as Seldon's
    executor generates: the same text uuid.uuid4() gives, without a UUID object, and with the
    random bytes read for 64 puids at a time (one getrandom call, not one per request).
    Safe from any thread (gRPC handlers draw too): ``deque.popleft`` is atomic, and threads
    that find it empty at once each refill it. Each worker makes its own, after the fork (no two
    workers share a batch)."""

    def __init__(self, batch: int = 64):
        self.batch = batch
        self._ready: deque[str] = deque()

    def __call__(self) -> str:
        while True:
            try:
                return self._ready.popleft()
            except IndexError:
                h = os.urandom(16 * self.batch).hex()
                self._ready.extend(f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-{_VARIANT[int(h[i + 16], 16) & 3]}"
                                   f"{h[i + 17:i + 20]}-{h[i + 20:i + 32]}" for i in range(0, 32 * self.batch, 32))

    def of(self, header: bytes | None) -> str:
        """The request's puid header, or a new one."""
        return header.decode("latin-1") if header else self()


_VARIANT = "89ab"


# --------------------------------------------------------------------------- loading


def parse_remotes(items: list[str]) -> dict[str, str]:
    """``--remote NODE=URL`` flags (http://host:port or grpc://host:port)."""
    out: dict[str, str] = {}
    for item in items:
        node, sep, url = item.partition("=")
        parts = urlsplit(url)
        if not sep or not node or parts.scheme not in ("http", "grpc") or not parts.hostname or not parts.port:
            raise SpecError(f"--remote {item!r}: use NODE=http://host:port or NODE=grpc://host:port")
        out[node] = url
    return out


async def load_graph_app(server: ServerSettings, predictor: Predictor, source: Path, remotes: dict[str, str],
                         loop: asyncio.AbstractEventLoop, seed: int | None = None) -> GraphApp:
    """Place every node (in-process, remote, built in), load the in-process ones, build the app."""
    unknown = sorted(set(remotes) - {n.name for n in predictor.graph.walk()})
    if unknown:
        raise SpecError(f"--remote names nodes the graph does not have: {unknown}")
    pool = ThreadPoolExecutor(max_workers=max(8, server.grpc_threads), thread_name_prefix="hook")
    units: dict[str, GraphUnit] = {}
    local: list[tuple[UnitSettings, Metrics]] = []
    node_apps: dict[str, App] = {}
    for node in predictor.graph.walk():
        timeout = timeout_from(predictor.annotations, node.endpoint.type if node.endpoint else "REST")
        if node.name in remotes:
            parts = urlsplit(remotes[node.name])
            remote_cls = RemoteGrpcUnit if parts.scheme == "grpc" else RemoteRestUnit
            timeout = timeout_from(predictor.annotations, "GRPC" if parts.scheme == "grpc" else "REST")
            units[node.name] = remote_cls(node.name, parts.hostname or "", parts.port or 0, pool, timeout)
        elif node.container is not None and node.container.env.get("MODEL_NAME"):
            unit = unit_settings(node, predictor)
            folder = source / node.name if (source / node.name).is_dir() else source
            # import and construct off the loop: the start-up router keeps answering live meanwhile
            obj = await loop.run_in_executor(pool, construct, unit.interface_name, parse_parameters(unit.parameters),
                                             str(folder))
            await call_load(obj)
            model = UserModel.from_object(obj)
            metrics = Metrics(unit)
            service = SeldonService(model, unit, metrics)
            runner = HookRunner.for_unit(loop, pool, server.inline_hook_seconds, unit, model)
            units[node.name] = LocalUnit(node.name, service, runner)
            local.append((unit, metrics))
            node_apps[node.name] = App(server, unit, model, loop, service=service, runner=runner)
        elif node.endpoint is not None:
            remote_cls = RemoteGrpcUnit if node.endpoint.type == "GRPC" else RemoteRestUnit
            units[node.name] = remote_cls(node.name, node.endpoint.host, node.endpoint.port, pool, timeout)
        elif node.implementation in ("RANDOM_ABTEST", "AVERAGE_COMBINER"):
            continue  # built into the executor
        else:
            raise SpecError(f"node {node.name!r}: its container has no MODEL_NAME env (to load it here) and the node "
                            f"has no endpoint; set MODEL_NAME or pass --remote {node.name}=http://host:port")
    return GraphApp(server, predictor, units, local, pool, loop, seed, node_apps)
