"""The gRPC front: grpcio's threaded server with generic handlers on raw bytes.

Why threaded and not grpc.aio: measured on the 2-core box with h2load, one process, a
bare threaded grpcio server echoes ~7 900 req/s and a bare grpc.aio one ~3 800. The REST
front keeps the event loop; gRPC handlers run sync hooks right on their own thread and
reach the loop only for async hooks and the batcher (see runner.HookRunner.invoke_blocking).

Handlers receive the serialized request and return serialized bytes, so protocol adapters
(and the native codec) decide how to read them; protobuf classes are never built here.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import grpc

from fastseldon.errors import DeadlineExceeded, FastSeldonError
from fastseldon.settings import ServerSettings
from fastseldon.watchdog import activity

log = logging.getLogger(__name__)

BytesHandler = Callable[[bytes], bytes]


# a handler marked with_metadata: (request, metadata) -> reply, or (reply, initial metadata to send)
MetadataHandler = TypeVar("MetadataHandler", Callable[[bytes, dict[str, str]], bytes],
                          Callable[[bytes, dict[str, str]], tuple[bytes, Sequence[tuple[str, str]]]])


def with_metadata(fn: MetadataHandler) -> MetadataHandler:
    """Mark a handler that also takes the call's metadata (``{key: value}``, keys lower case).

    It may answer ``(reply, metadata)``: those pairs go back as the call's initial metadata
    (headers), as Seldon's executor returns ``seldon-puid``."""
    fn.wants_metadata = True  # type: ignore[attr-defined]
    return fn


class MethodTable(grpc.GenericRpcHandler):
    """The methods a server answers; ``replace`` swaps them while it serves (start-up table -> the app's).

    Every unary call is registered with the watchdog while it runs (a call stuck past
    --worker-timeout gets the worker replaced), is not started once the client's deadline has
    passed, and with ``request_timeout`` runs on ``pool`` so that its thread is freed with
    DEADLINE_EXCEEDED when it runs too long.
    """

    def __init__(self, methods: dict[str, Any], request_timeout: float = 0.0, pool: Executor | None = None):
        self.request_timeout = request_timeout
        self.pool = pool if request_timeout > 0 else None
        self.served = 0  # calls answered, for --max-requests (a count across threads: near enough)
        self._methods: dict[str, grpc.RpcMethodHandler] = {}
        self.replace(methods)

    def replace(self, methods: dict[str, Any]) -> None:
        self._methods = {
            name: fn if isinstance(fn, grpc.RpcMethodHandler) else self._unary(name, fn) for name, fn in methods.items()
        }

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._methods.get(handler_call_details.method)

    def _unary(self, name: str, fn: Any) -> grpc.RpcMethodHandler:
        if self.pool is None and not getattr(fn, "wants_metadata", False):
            return grpc.unary_unary_rpc_method_handler(self._direct(name, fn))
        return grpc.unary_unary_rpc_method_handler(self._general(name, fn))

    def _direct(self, name: str, fn: BytesHandler) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        """The common case (no --request-timeout, no metadata wanted), with nothing else per call:
        the handler runs on grpcio's thread, registered with the watchdog."""
        table, begin, end, fail = self, activity.begin, activity.end, _failure

        def behaviour(request: bytes, context: grpc.ServicerContext) -> bytes:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:  # it waited for a thread past its deadline: don't start it
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before the call started")
            token = begin(name)
            try:
                reply = fn(request)
            except Exception as exc:  # noqa: BLE001 - mapped to its status code, never a traceback to the client
                failure = fail(exc)
            else:
                table.served += 1
                return reply
            finally:
                end(token)
            table.served += 1
            context.abort(*failure)
            raise AssertionError("unreachable: ServicerContext.abort raises")

        return behaviour

    def _general(self, name: str, fn: Any) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        table = self
        wants_metadata = getattr(fn, "wants_metadata", False)

        def behaviour(request: bytes, context: grpc.ServicerContext) -> bytes:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:  # it waited for a thread past its deadline: don't start it
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded before the call started")
            token = activity.begin(name) if table.pool is None else -1
            call = fn
            if wants_metadata:
                metadata = {str(k).lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
                call = lambda body: fn(body, metadata)  # noqa: E731
            try:
                reply = call(request) if table.pool is None else table._bounded(name, call, request, remaining)
                table.served += 1
                if isinstance(reply, tuple):  # a with_metadata handler's (reply, initial metadata)
                    context.send_initial_metadata(reply[1])
                    return reply[0]
                return reply
            except Exception as exc:  # noqa: BLE001 - mapped to its status code, never a traceback to the client
                code, details = _failure(exc)
            finally:
                activity.end(token)
            table.served += 1
            context.abort(code, details)
            raise AssertionError("unreachable: ServicerContext.abort raises")

        return behaviour

    def _bounded(self, name: str, fn: BytesHandler, request: bytes, remaining: float | None) -> bytes:
        """Run ``fn`` on the pool and wait at most --request-timeout (or the client's deadline, if sooner)."""
        assert self.pool is not None
        limit = self.request_timeout if remaining is None else min(self.request_timeout, remaining)
        future = self.pool.submit(activity.tracked(name, lambda: fn(request)))
        try:
            return future.result(limit)
        except FutureTimeout:
            future.cancel()
            raise DeadlineExceeded(f"request timed out after {limit:g}s") from None


def _failure(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and details a handler's exception is answered with (ours carry their own code)."""
    if isinstance(exc, FastSeldonError):
        return getattr(grpc.StatusCode, exc.grpc_code, grpc.StatusCode.UNKNOWN), str(exc)
    log.exception("gRPC handler failed", exc_info=exc)
    return grpc.StatusCode.INTERNAL, str(exc) or type(exc).__name__


def stream_method(fn: Callable[[Iterator[bytes], Any], Iterator[bytes]]) -> grpc.RpcMethodHandler:
    """A bidirectional-streaming method on raw bytes (``fn(requests, context)`` yields replies)."""
    return grpc.stream_stream_rpc_method_handler(fn)


def server_options(settings: ServerSettings) -> list[tuple[str, Any]]:
    """Channel options derived from settings; SO_REUSEPORT lets every worker bind the port."""
    return [
        ("grpc.so_reuseport", 1),
        ("grpc.max_receive_message_length", settings.max_grpc_message_bytes),
        ("grpc.max_send_message_length", settings.max_grpc_message_bytes),
    ]


def start(settings: ServerSettings, methods: dict[str, Any] | MethodTable) -> grpc.Server:
    """Start a server for ``methods`` ({"/pkg.Service/Method": bytes handler or RpcMethodHandler}, or a
    MethodTable to swap them later). Messages over ``max_grpc_message_bytes`` (--max-body-bytes) either
    way are refused with RESOURCE_EXHAUSTED by grpcio itself."""
    table = methods if isinstance(methods, MethodTable) else MethodTable(methods)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=settings.grpc_threads, thread_name_prefix="grpc"),
        handlers=[table],
        options=server_options(settings),
        maximum_concurrent_rpcs=None,
    )
    address = f"{settings.host}:{settings.grpc_port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio >= 1.60 raises where older versions returned 0
        raise OSError(f"cannot bind gRPC port {address}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {address}")
    server.start()
    return server
