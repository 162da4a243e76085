"""One worker's application: the loaded model, its service, and the routes both fronts serve.

This is where wire meets service: each REST handler and gRPC method decodes with the
protocol adapter, drives the service step generator, and encodes the reply. It also owns
how user hooks are invoked: on the event loop when they are measured to be cheap, on a
thread pool when they are not (so a slow sync predict never stalls other connections),
awaited when they are ``async def``, and through the adaptive batcher when it is on.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Callable
from urllib.parse import parse_qs

from fastseldon import codec
from fastseldon import seldon_protocol as sp
from fastseldon.errors import BadRequest, FastSeldonError, NotSupported
from fastseldon.http import JSON, TEXT, Request, Response, Router
from fastseldon.metrics import Metrics
from fastseldon.proto import prediction_pb2 as pb
from fastseldon.service import Call, SeldonService, Steps, run_async, run_sync, user_error
from fastseldon.settings import Settings
from fastseldon.user_model import UserModel

log = logging.getLogger(__name__)

# Warm-up calls that always go to the thread pool, so a slow first predict can't stall the loop.
_PROBE_CALLS = 3

# REST paths -> service endpoint (the first path is the metrics label)
SELDON_REST_ROUTES: dict[tuple[str, ...], str] = {
    ("/api/v1.0/predictions", "/api/v0.1/predictions", "/predict"): "predict",
    ("/transform-input",): "transform_input",
    ("/transform-output",): "transform_output",
    ("/route",): "route",
}

# gRPC full method -> service endpoint
SELDON_GRPC_METHODS: dict[str, str] = {
    "/seldon.protos.Model/Predict": "predict",
    "/seldon.protos.Seldon/Predict": "predict",
    "/seldon.protos.Generic/TransformInput": "transform_input",
    "/seldon.protos.Transformer/TransformInput": "transform_input",
    "/seldon.protos.Generic/TransformOutput": "transform_output",
    "/seldon.protos.OutputTransformer/TransformOutput": "transform_output",
    "/seldon.protos.Generic/Route": "route",
    "/seldon.protos.Router/Route": "route",
}
SELDON_GRPC_FEEDBACK = ("/seldon.protos.Model/SendFeedback", "/seldon.protos.Seldon/SendFeedback",
                        "/seldon.protos.Generic/SendFeedback", "/seldon.protos.Router/SendFeedback")
SELDON_GRPC_AGGREGATE = ("/seldon.protos.Generic/Aggregate", "/seldon.protos.Combiner/Aggregate")
SELDON_GRPC_METADATA = ("/seldon.protos.Model/Metadata", "/seldon.protos.Seldon/ModelMetadata")

GrpcHandler = Callable[[bytes], bytes]


class App:
    """Everything one worker serves. Built after fork, inside the worker's event loop."""

    def __init__(self, settings: Settings, model: UserModel, loop: asyncio.AbstractEventLoop):
        self.settings = settings
        self.model = model
        self.loop = loop
        self.metrics = Metrics(settings)
        self.service = SeldonService(model, settings, self.metrics)
        self.executor = ThreadPoolExecutor(max_workers=max(4, settings.grpc_threads), thread_name_prefix="hook")
        self.batcher: Any = None  # set by the batching module when --max-batch-size > 1
        self.router = Router()
        self.router.set_error_renderer("", self.render_seldon_error)
        self.router.set_error_renderer("/v2", self.render_v2_error)
        self.grpc_methods: dict[str, GrpcHandler] = {}
        self._add_seldon_routes()

    # -- hook invocation

    async def invoke(self, call: Call) -> Any:
        hook = call.hook
        if call.batchable and self.batcher is not None and self.batcher.wants(call):
            return await self.batcher.submit(call)  # sync and async predicts alike
        if hook.is_async:
            return await hook.fn(*call.args, **call.kwargs)
        if hook.calls >= _PROBE_CALLS and hook.cost < self.settings.inline_hook_seconds:
            return hook.timed_call(*call.args, **call.kwargs)
        return await self.loop.run_in_executor(self.executor, lambda: hook.timed_call(*call.args, **call.kwargs))

    def invoke_blocking(self, call: Call) -> Any:
        """From a gRPC handler thread: sync hooks run right here, the rest go via the loop."""
        hook = call.hook
        if call.batchable and self.batcher is not None and self.batcher.wants(call):
            return self.batcher.submit_blocking(call)  # the batch resolves this thread's future directly
        if hook.is_async:
            return asyncio.run_coroutine_threadsafe(self.invoke(call), self.loop).result()
        return hook.timed_call(*call.args, **call.kwargs)

    async def run(self, steps: Steps) -> Any:
        try:
            return await run_async(steps, self.invoke)
        except FastSeldonError:
            raise
        except Exception as exc:  # noqa: BLE001 - user code: 500 with its message, logged with the traceback
            log.error("user model error: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
            raise user_error(exc) from None

    def run_blocking(self, steps: Steps) -> Any:
        try:
            return run_sync(steps, self.invoke_blocking)
        except FastSeldonError:
            raise
        except Exception as exc:  # noqa: BLE001
            log.error("user model error: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
            raise user_error(exc) from None

    # -- error rendering (Seldon's status JSON; V2 routes render their own)

    def render_seldon_error(self, exc: FastSeldonError) -> Response:
        return Response(exc.http_status, sp.status_json(str(exc), exc.reason))

    def render_v2_error(self, exc: FastSeldonError) -> Response:
        return Response(exc.http_status, codec.dumps({"error": str(exc)}))

    # -- Seldon REST

    def _add_seldon_routes(self) -> None:
        r = self.router
        both = ("GET", "POST")
        for paths, endpoint in SELDON_REST_ROUTES.items():
            r.add(both, paths, self._rest_unit(endpoint, paths[0]))
        r.add(both, ("/aggregate",), self.timed_rest("/aggregate", self._rest_aggregate))
        r.add(both, ("/api/v1.0/feedback", "/api/v0.1/feedback", "/send-feedback"), self.timed_rest("/send-feedback", self._rest_feedback))
        r.add(("GET",), ("/health/ping",), self._rest_ping)
        r.add(("GET",), ("/health/status", "/api/v1.0/health/status"), self.timed_rest("/health/status", self._rest_health))
        r.add(("GET",), ("/metadata", "/api/v1.0/metadata"), self.timed_rest("/metadata", self._rest_metadata))
        for method, endpoint in SELDON_GRPC_METHODS.items():
            self.grpc_methods[method] = self._grpc_unit(endpoint, method)
        for method in SELDON_GRPC_FEEDBACK:
            self.grpc_methods[method] = self.timed_grpc(method, self._grpc_feedback)
        for method in SELDON_GRPC_AGGREGATE:
            self.grpc_methods[method] = self.timed_grpc(method, self._grpc_aggregate)
        for method in SELDON_GRPC_METADATA:
            self.grpc_methods[method] = self.timed_grpc(method, self._grpc_metadata)
        self.grpc_methods["/seldon.protos.Seldon/GraphMetadata"] = self._grpc_graph_metadata

    def timed_rest(self, label: str, fn: Callable[[Request], Any]) -> Callable[[Request], Any]:
        """Wrap a REST handler: FastSeldonError -> its error response, and a request metric."""
        metrics = self.metrics
        render = self.router.render_error

        async def handler(request: Request) -> Response:
            start = time.perf_counter()
            try:
                response = await fn(request)
            except FastSeldonError as exc:
                response = render(request.path, exc)
            metrics.observe(label, "rest", str(response.status), time.perf_counter() - start)
            return response

        return handler

    def _rest_unit(self, endpoint: str, label: str) -> Callable[[Request], Any]:
        service_fn = getattr(self.service, endpoint)
        raw = self.service.wants_raw(endpoint)
        passthrough = raw and endpoint == "predict" and self.settings.payload_passthrough

        async def handle(request: Request) -> Response:
            if passthrough:
                reply = await self.run(service_fn(sp.Message("raw", None, raw=request.body)))
                out = reply.payload
                body = out if isinstance(out, bytes) else out.encode() if isinstance(out, str) else codec.dumps(out)
                return Response(reply.status, body)
            obj = parse_rest_body(request, fast=not raw)
            msg = sp.message_from_json(obj, raw=obj)
            reply = await self.run(service_fn(msg))
            return Response(reply.status, sp.reply_to_json(reply))

        return self.timed_rest(label, handle)

    async def _rest_aggregate(self, request: Request) -> Response:
        raw = self.service.wants_raw("aggregate")
        obj = parse_rest_body(request, fast=not raw)
        items = obj.get("seldonMessages") if isinstance(obj, dict) else obj
        if not isinstance(items, list):
            raise BadRequest(f"Invalid request data type: {obj!r} (expected {{\"seldonMessages\": [...]}} or a list)")
        msgs = [sp.message_from_json(item, raw=item) for item in items]
        reply = await self.run(self.service.aggregate(msgs, obj))
        return Response(reply.status, sp.reply_to_json(reply))

    async def _rest_feedback(self, request: Request) -> Response:
        feedback = sp.feedback_from_json(parse_rest_body(request, fast=False))
        reply = await self.run(self.service.send_feedback(feedback))
        return Response(reply.status, sp.reply_to_proto_json(reply))

    async def _rest_ping(self, request: Request) -> Response:
        return Response(200, b"pong", TEXT)

    async def _rest_health(self, request: Request) -> Response:
        reply = await self.run(self.service.health_status())
        return Response(reply.status, sp.reply_to_json(reply))

    async def _rest_metadata(self, request: Request) -> Response:
        return Response(200, codec.dumps(self.service.get_metadata()), JSON)

    # -- Seldon gRPC (handlers take and return serialized bytes; they run on gRPC threads)

    def timed_grpc(self, label: str, fn: GrpcHandler) -> GrpcHandler:
        """Wrap a gRPC bytes handler with a request metric (errors still propagate to the front)."""
        metrics = self.metrics

        def handler(body: bytes) -> bytes:
            start = time.perf_counter()
            code = "OK"
            try:
                return fn(body)
            except FastSeldonError as exc:
                code = exc.grpc_code
                raise
            finally:
                metrics.observe(label, "grpc", code, time.perf_counter() - start)

        return handler

    def _grpc_unit(self, endpoint: str, label: str) -> GrpcHandler:
        service_fn = getattr(self.service, endpoint)

        def handle(body: bytes) -> bytes:
            msg = sp.message_from_proto_bytes(body)
            reply = self.run_blocking(service_fn(msg))
            return sp.reply_to_proto_bytes(reply)

        return self.timed_grpc(label, handle)

    def _grpc_feedback(self, body: bytes) -> bytes:
        reply = self.run_blocking(self.service.send_feedback(sp.parse_proto(pb.Feedback, body)))
        return sp.reply_to_proto_bytes(reply)

    def _grpc_aggregate(self, body: bytes) -> bytes:
        lst = sp.parse_proto(pb.SeldonMessageList, body)
        msgs = [sp.message_from_proto(m) for m in lst.seldonMessages]
        reply = self.run_blocking(self.service.aggregate(msgs, lst))
        return sp.reply_to_proto_bytes(reply)

    def _grpc_metadata(self, body: bytes) -> bytes:
        return sp.metadata_to_proto(self.service.get_metadata()).SerializeToString()

    def _grpc_graph_metadata(self, body: bytes) -> bytes:
        raise NotSupported("GraphMetadata not available on the Model level.")


# --------------------------------------------------------------------------- Seldon REST bodies


def parse_rest_body(request: Request, *, fast: bool) -> Any:
    """Seldon's body precedence: multipart fields, form/query ``json=``, then the JSON body.

    ``fast`` lets the codec turn numeric arrays into numpy while parsing; *_raw hooks get
    plain JSON values instead, as Seldon gives them.
    """
    ctype = request.headers.get(b"content-type", b"").lower()
    if ctype.startswith(b"multipart/form-data"):
        return _parse_multipart(request.body, request.headers[b"content-type"])
    if ctype.startswith(b"application/x-www-form-urlencoded"):
        form = parse_qs(request.body.decode("utf-8", "replace"))
        if "json" in form:
            return codec.loads(form["json"][0]) if not fast else codec.parse_seldon_json(form["json"][0])
    if request.query and "json=" in request.query:
        query = parse_qs(request.query)
        if "json" in query:
            return codec.loads(query["json"][0]) if not fast else codec.parse_seldon_json(query["json"][0])
    if not request.body:
        raise BadRequest("Can't find JSON in data: the request has no body")
    try:
        obj = codec.parse_seldon_json(request.body) if fast else codec.loads(request.body)
    except FastSeldonError as exc:
        raise BadRequest(f"Can't find JSON in data: {exc.message}") from None
    if obj is None:
        raise BadRequest("Can't find JSON in data")
    return obj


def _parse_multipart(body: bytes, content_type: bytes) -> dict[str, Any]:
    """Seldon's multipart rule: fields hold JSON (strData raw); file binData is base64'd, others text."""
    head = b"Content-Type: " + content_type + b"\r\nMIME-Version: 1.0\r\n\r\n"
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise BadRequest("malformed multipart/form-data body")
    out: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        data = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            out[name] = base64.b64encode(data).decode("ascii") if name == "binData" else data.decode("utf-8", "replace")
        elif name == "strData":
            out[name] = data.decode("utf-8", "replace")
        else:
            out[name] = codec.loads(data)
    return out
