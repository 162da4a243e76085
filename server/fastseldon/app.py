"""One worker's application: its unit (model, service, runner, metrics) and the routes both fronts serve.

The protocols add their own routes (seldon_routes.py, v2_routes.py); this module only
assembles them and gives them the two wrappers every handler shares: a request metric per
route, and a FastSeldonError turned into the protocol's error response.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastseldon import codec, seldon_routes, v2_routes
from fastseldon.errors import FastSeldonError, Loading
from fastseldon.http import JSON, TEXT, Request, Response, Router
from fastseldon.metrics import Metrics
from fastseldon.runner import HookRunner
from fastseldon.service import SeldonService
from fastseldon.settings import ServerSettings, UnitSettings
from fastseldon.user_model import UserModel, call_load, construct, parse_parameters

GrpcHandler = Callable[[bytes], bytes]
RestHandler = Callable[[Request], Coroutine[Any, Any, Response]]


def timed_rest(metrics: Metrics, router: Router, label: str, fn: RestHandler) -> RestHandler:
    """Wrap a REST handler: FastSeldonError -> its protocol's error response, and a request metric."""
    render = router.render_error

    async def handler(request: Request) -> Response:
        start = time.perf_counter()
        try:
            response = await fn(request)
        except FastSeldonError as exc:
            response = render(request.path, exc)
        except (GeneratorExit, asyncio.CancelledError):  # the front answered 504 (--request-timeout) and let go
            metrics.observe(label, "rest", "504", time.perf_counter() - start)
            raise
        metrics.observe(label, "rest", str(response.status), time.perf_counter() - start)
        return response

    return handler


class App:
    """Everything one worker serves. Built after fork, inside the worker's event loop."""

    def __init__(self, server: ServerSettings, unit: UnitSettings, model: UserModel, loop: asyncio.AbstractEventLoop,
                 *, service: SeldonService | None = None, runner: HookRunner | None = None):
        """``service`` and ``runner``: a unit someone else already runs (a graph's in-process node),
        given routes of its own; its metrics and thread pool stay that owner's."""
        self.server = server
        self.unit = unit
        self.model = model
        self.loop = loop
        self.metrics = service.metrics if service is not None else Metrics(unit)
        self.service = service or SeldonService(model, unit, self.metrics)
        self.executor = ThreadPoolExecutor(max_workers=max(4, server.grpc_threads), thread_name_prefix="hook")
        self.runner = runner or HookRunner.for_unit(loop, self.executor, server.inline_hook_seconds, unit, model)
        self.router = Router()
        self.grpc_methods: dict[str, Any] = {}
        self.flush_hooks: list[Callable[[], None]] = []  # run with every metrics flush (V2 statistics files)
        seldon_routes.register(self)
        self.v2 = v2_routes.register(self)  # V2 routes beside Seldon's, on the same ports

    def timed_rest(self, label: str, fn: RestHandler) -> RestHandler:
        return timed_rest(self.metrics, self.router, label, fn)

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

    flush_interval = Metrics.flush_interval

    def flush(self) -> None:
        self.metrics.flush()
        for hook in self.flush_hooks:
            hook()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.flush()

    def release(self) -> None:
        """An unloaded model's app: calls already running on its threads finish, then the threads go."""
        self.executor.shutdown(wait=False)
        self.flush()


async def load_unit_app(server: ServerSettings, unit: UnitSettings, loop: asyncio.AbstractEventLoop,
                        source_dir: str | None = None) -> App:
    """Import, construct and ``load()`` the unit's class, then build the worker's App around it.

    Importing, the constructor and a sync ``load()`` run on a thread (with the worker's loop as
    its current loop), so the start-up router keeps answering /health/ping meanwhile; an
    ``async def load`` is awaited on the loop. ``source_dir``: the folder the class is imported
    from (a repository's model folder), ahead of any same-named module loaded from elsewhere.
    """
    def construct_here() -> Any:
        asyncio.set_event_loop(loop)  # for user code that asks for "the" loop while it is built
        return construct(unit.interface_name, parse_parameters(unit.parameters), source_dir)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load") as loader:
        obj = await loop.run_in_executor(loader, construct_here)
        await call_load(obj, lambda fn: loop.run_in_executor(loader, fn))
    return App(server, unit, UserModel.from_object(obj), loop)


LIVE_PATHS = ("/health/ping", "/v2/health/live", "/live")


def starting_router() -> Router:
    """What a worker answers while its app is being built: live, not ready (Kubernetes' readiness)."""
    router = Router()
    router.set_error_renderer("", seldon_routes.render_error)
    router.set_error_renderer("/v2", v2_routes.render_error)
    live_v2 = codec.dumps({"live": True})

    async def live(request: Request) -> Response:
        return Response(200, live_v2 if request.path.startswith("/v2") else b"pong", JSON if request.path.startswith("/v2") else TEXT)

    def loading(method: str, path: str) -> Any:
        raise Loading("the model is loading: not ready yet")

    router.add(("GET",), LIVE_PATHS, live)
    router.add_matcher(loading)
    return router


def starting_methods() -> dict[str, Any]:
    """The gRPC side of ``starting_router``: V2 ServerLive answers, everything else is UNAVAILABLE."""
    from fastseldon.proto import grpc_service_pb2 as pb

    live = pb.ServerLiveResponse(live=True).SerializeToString()
    not_ready = pb.ServerReadyResponse(ready=False).SerializeToString()
    model_not_ready = pb.ModelReadyResponse(ready=False).SerializeToString()

    def loading(body: bytes) -> bytes:
        raise Loading("the model is loading: not ready yet")

    methods: dict[str, Any] = {name: loading for name in (*seldon_routes.GRPC_UNIT_METHODS, *seldon_routes.GRPC_FEEDBACK,
                                                          *seldon_routes.GRPC_AGGREGATE, *seldon_routes.GRPC_METADATA)}
    for name in ("ModelInfer", "ModelMetadata", "ServerMetadata"):
        methods[v2_routes.GRPC_SERVICE + name] = loading
    methods[v2_routes.GRPC_SERVICE + "ServerLive"] = lambda body: live
    methods[v2_routes.GRPC_SERVICE + "ServerReady"] = lambda body: not_ready
    methods[v2_routes.GRPC_SERVICE + "ModelReady"] = lambda body: model_not_ready
    return methods
