"""The Seldon v1 routes: REST paths and ``seldon.protos.*`` gRPC methods of one unit.

Each handler decodes with the Seldon adapter (seldon_protocol.py), drives a service step
through the unit's runner, and encodes the reply. Errors on Seldon paths (and on any path
no other protocol claims) render as Seldon's status JSON.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastseldon import codec, openapi
from fastseldon import grpc as grpc_front
from fastseldon import seldon_protocol as sp
from fastseldon.errors import BadRequest, FastSeldonError, NotSupported
from fastseldon.http import JSON, TEXT, Request, Response, Router
from fastseldon.types import Message

if TYPE_CHECKING:
    from fastseldon.app import App, GrpcHandler
    from fastseldon.registry import ModelRegistry

# REST paths -> service endpoint (the first path is the metrics label)
REST_UNIT_ROUTES: dict[tuple[str, ...], str] = {
    ("/api/v1.0/predictions", "/api/v0.1/predictions", "/predict"): "predict",
    ("/transform-input",): "transform_input",
    ("/transform-output",): "transform_output",
    ("/route",): "route",
}

# gRPC full method -> service endpoint
GRPC_UNIT_METHODS: dict[str, str] = {
    "/seldon.protos.Model/Predict": "predict",
    "/seldon.protos.Seldon/Predict": "predict",
    "/seldon.protos.Generic/TransformInput": "transform_input",
    "/seldon.protos.Transformer/TransformInput": "transform_input",
    "/seldon.protos.Generic/TransformOutput": "transform_output",
    "/seldon.protos.OutputTransformer/TransformOutput": "transform_output",
    "/seldon.protos.Generic/Route": "route",
    "/seldon.protos.Router/Route": "route",
}
GRPC_FEEDBACK = ("/seldon.protos.Model/SendFeedback", "/seldon.protos.Seldon/SendFeedback",
                 "/seldon.protos.Generic/SendFeedback", "/seldon.protos.Router/SendFeedback")
GRPC_AGGREGATE = ("/seldon.protos.Generic/Aggregate", "/seldon.protos.Combiner/Aggregate")
GRPC_METADATA = ("/seldon.protos.Model/Metadata", "/seldon.protos.Seldon/ModelMetadata")
GRPC_GRAPH_METADATA = "/seldon.protos.Seldon/GraphMetadata"


def render_error(exc: FastSeldonError) -> Response:
    return Response(exc.http_status, sp.error_body(exc), JSON)


class SeldonEndpoints:
    """The Seldon REST handlers and gRPC methods of one worker, bound to its App and unit."""

    def __init__(self, app: App):
        self.app = app
        self.service = app.service
        self.runner = app.runner
        self.passthrough = app.unit.payload_passthrough
        self._openapi: bytes | None = None

    # -- REST

    def add_routes(self) -> None:
        router, timed = self.app.router, self.app.timed_rest
        both = ("GET", "POST")
        for paths, endpoint in REST_UNIT_ROUTES.items():
            router.add(both, paths, timed(paths[0], self._rest_unit(endpoint)))
        router.add(both, ("/aggregate",), timed("/aggregate", self.rest_aggregate))
        router.add(both, ("/api/v1.0/feedback", "/api/v0.1/feedback", "/send-feedback"),
                   timed("/send-feedback", self.rest_feedback))
        router.add(("GET",), ("/health/ping",), self.rest_ping)
        router.add(("GET",), ("/health/status", "/api/v1.0/health/status"), timed("/health/status", self.rest_health))
        router.add(("GET",), ("/metadata", "/api/v1.0/metadata"), timed("/metadata", self.rest_metadata))
        router.add(("GET",), ("/seldon.json",), self.rest_openapi)

    def _body(self, request: Request, *, fast: bool) -> Any:
        return sp.parse_rest_body(request.body, request.headers.get(b"content-type", b""), request.query, fast=fast)

    def _rest_unit(self, endpoint: str) -> Callable[[Request], Any]:
        service_fn = getattr(self.service, endpoint)
        raw = self.service.wants_raw(endpoint)
        passthrough = raw and endpoint == "predict" and self.passthrough
        run, plain, service = self.runner.run, self.runner.plain, self.service
        parse_body, message_from_json, reply_to_json = sp.parse_rest_body, sp.message_from_json, sp.reply_to_json

        async def handle(request: Request) -> Response:
            if passthrough:
                reply = await run(service_fn(Message("raw", None, raw=request.body)))
                out = reply.payload
                body = out if isinstance(out, bytes) else out.encode() if isinstance(out, str) else codec.dumps(out)
                return Response(reply.status, body)
            obj = parse_body(request.body, request.headers.get(b"content-type", b""), request.query, fast=not raw)
            msg = message_from_json(obj, raw=obj)
            # a plain sync hook cheap enough for the loop: called here, no step generator to drive
            reply = plain(service, endpoint, msg)
            if reply is None:
                reply = await run(service_fn(msg))
            return Response(reply.status, reply_to_json(reply))

        return handle

    async def rest_aggregate(self, request: Request) -> Response:
        obj = self._body(request, fast=not self.service.wants_raw("aggregate"))
        reply = await self.runner.run(self.service.aggregate(sp.messages_from_json(obj), obj))
        return Response(reply.status, sp.reply_to_json(reply))

    async def rest_feedback(self, request: Request) -> Response:
        feedback = sp.feedback_from_json(self._body(request, fast=False))
        reply = await self.runner.run(self.service.send_feedback(feedback, "rest"))
        return Response(reply.status, sp.reply_to_proto_json(reply))

    async def rest_ping(self, request: Request) -> Response:
        return Response(200, b"pong", TEXT)

    async def rest_health(self, request: Request) -> Response:
        reply = await self.runner.run(self.service.health_status())
        return Response(reply.status, sp.reply_to_json(reply))

    async def rest_openapi(self, request: Request) -> Response:
        if self._openapi is None:
            self._openapi = codec.dumps(openapi.document())
        return Response(200, self._openapi, JSON)

    async def rest_metadata(self, request: Request) -> Response:
        return Response(200, codec.dumps(self.service.get_metadata()), JSON)

    # -- gRPC (handlers take and return serialized bytes; they run on gRPC threads)

    def add_grpc(self) -> None:
        methods, timed = self.app.grpc_methods, self.app.timed_grpc
        for method, endpoint in GRPC_UNIT_METHODS.items():
            methods[method] = timed(method, self._grpc_unit(endpoint))
        for method in GRPC_FEEDBACK:
            methods[method] = timed(method, self.grpc_feedback)
        for method in GRPC_AGGREGATE:
            methods[method] = timed(method, self.grpc_aggregate)
        for method in GRPC_METADATA:
            methods[method] = timed(method, self.grpc_metadata)
        methods[GRPC_GRAPH_METADATA] = self.grpc_graph_metadata

    def _raw_class(self, endpoint: str, name: str) -> Any:
        """The proto class a raw or legacy gRPC hook of ``endpoint`` gets its request as, or None."""
        return sp.user_proto_class(name) if self.service.wants_raw(endpoint, "grpc") else None

    def _grpc_unit(self, endpoint: str) -> GrpcHandler:
        service_fn, service = getattr(self.service, endpoint), self.service
        run, plain = self.runner.run_blocking, self.runner.plain_blocking
        raw_class = self._raw_class(endpoint, "SeldonMessage")
        decode, encode = sp.message_from_proto_bytes, sp.reply_to_proto_bytes

        def handle(body: bytes) -> bytes:
            msg = decode(body, full_raw=False)  # a raw hook gets its own parse below
            if raw_class is not None:
                msg.raw = raw_class.FromString(body)
            # a plain sync hook: called right on this gRPC thread, no step generator to drive
            reply = plain(service, endpoint, msg)
            if reply is None:
                reply = run(service_fn(msg))
            return encode(reply)

        return handle

    def grpc_feedback(self, body: bytes) -> bytes:
        feedback = sp.feedback_from_proto_bytes(body, self._raw_class("send_feedback", "Feedback"))
        reply = self.runner.run_blocking(self.service.send_feedback(feedback, "grpc"))
        return sp.reply_to_proto_bytes(reply)

    def grpc_aggregate(self, body: bytes) -> bytes:
        msgs, raw = sp.messages_from_proto_bytes(body, self._raw_class("aggregate", "SeldonMessageList"))
        return sp.reply_to_proto_bytes(self.runner.run_blocking(self.service.aggregate(msgs, raw)))

    def grpc_metadata(self, body: bytes) -> bytes:
        return sp.metadata_to_proto(self.service.get_metadata()).SerializeToString()

    def grpc_graph_metadata(self, body: bytes) -> bytes:
        raise NotSupported("GraphMetadata not available on the Model level.")


MODEL_HEADER = b"seldon-model"
MODEL_PREFIX = "/models/"
# the Seldon REST paths a server of several models answers for the model a request names
REST_MODEL_PATHS = (*(p for paths in REST_UNIT_ROUTES for p in paths), "/aggregate", "/api/v1.0/feedback", "/api/v0.1/feedback",
                    "/send-feedback", "/health/status", "/api/v1.0/health/status", "/metadata", "/api/v1.0/metadata")


class SeldonModels:
    """Seldon's routes in a server of several models (``--repository``): a REST request names its
    model with a ``Seldon-Model`` header (Seldon Core 2's) on the usual path, or with a
    ``/models/{name}`` prefix before it, a gRPC call with ``seldon-model`` call metadata; that
    model's own handlers answer."""

    def __init__(self, registry: ModelRegistry, router: Router, grpc_methods: dict[str, Any]):
        self.registry = registry
        self.router = router
        self.grpc_methods = grpc_methods

    def register(self) -> None:
        self.router.add(("GET", "POST"), REST_MODEL_PATHS, self.by_header)
        self.router.add(("GET",), ("/health/ping",), self.rest_ping)
        self.router.add_matcher(self.by_prefix)
        for method in (*GRPC_UNIT_METHODS, *GRPC_FEEDBACK, *GRPC_AGGREGATE, *GRPC_METADATA, GRPC_GRAPH_METADATA):
            self.grpc_methods[method] = self._grpc_by_metadata(method)

    def _grpc_by_metadata(self, method: str) -> Callable[[bytes, dict[str, str]], bytes]:
        registry = self.registry

        @grpc_front.with_metadata
        def handle(body: bytes, metadata: dict[str, str]) -> bytes:
            name = metadata.get(MODEL_HEADER.decode())
            if not name:
                raise BadRequest(f"this server serves several models: name one with seldon-model call metadata; "
                                 f"models: {sorted(registry.entries)}")
            return registry.get(name).grpc_methods[method](body)

        return handle

    async def rest_ping(self, request: Request) -> Response:
        return Response(200, b"pong", TEXT)

    async def by_header(self, request: Request) -> Response:
        try:
            name = request.headers.get(MODEL_HEADER)
            if not name:
                raise BadRequest(f"this server serves several models: name one with a Seldon-Model header or a "
                                 f"/models/{{name}}{request.path} path; models: {sorted(self.registry.entries)}")
            handler = self.registry.get(name.decode("utf-8", "replace")).router.resolve(request.method, request.path)
        except FastSeldonError as exc:
            return self.router.render_error(request.path, exc)
        return await handler(request)

    def by_prefix(self, method: str, path: str) -> Callable[[Request], Any] | None:
        if not path.startswith(MODEL_PREFIX):
            return None
        name, _, rest = path[len(MODEL_PREFIX):].partition("/")
        if not name or ("/" + rest) not in (*REST_MODEL_PATHS, "/health/ping"):
            return None
        return self.registry.get(name).router.resolve(method, "/" + rest)


def register(app: App) -> SeldonEndpoints:
    """Add the Seldon REST routes, gRPC methods and (default) error rendering to a worker's App."""
    endpoints = SeldonEndpoints(app)
    endpoints.add_routes()
    endpoints.add_grpc()
    app.router.set_error_renderer("", render_error)
    return endpoints
