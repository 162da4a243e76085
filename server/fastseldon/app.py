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

from fastseldon import seldon_routes, v2_routes
from fastseldon.errors import FastSeldonError
from fastseldon.http import Request, Response, Router
from fastseldon.metrics import Metrics
from fastseldon.runner import HookRunner
from fastseldon.service import SeldonService
from fastseldon.settings import ServerSettings, UnitSettings
from fastseldon.user_model import UserModel, call_load, construct, parse_parameters

GrpcHandler = Callable[[bytes], bytes]
RestHandler = Callable[[Request], Coroutine[Any, Any, Response]]


class App:
    """Everything one worker serves. Built after fork, inside the worker's event loop."""

    def __init__(self, server: ServerSettings, unit: UnitSettings, model: UserModel, loop: asyncio.AbstractEventLoop):
        self.server = server
        self.unit = unit
        self.model = model
        self.loop = loop
        self.metrics = Metrics(unit)
        self.service = SeldonService(model, unit, self.metrics)
        self.executor = ThreadPoolExecutor(max_workers=max(4, server.grpc_threads), thread_name_prefix="hook")
        self.runner = HookRunner.for_unit(loop, self.executor, server.inline_hook_seconds, unit, model)
        self.router = Router()
        self.grpc_methods: dict[str, Any] = {}
        seldon_routes.register(self)
        v2_routes.register(self)  # V2 routes beside Seldon's, on the same ports

    def timed_rest(self, label: str, fn: RestHandler) -> RestHandler:
        """Wrap a REST handler: FastSeldonError -> its protocol's error response, and a request metric."""
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

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.metrics.flush()


async def load_unit_app(server: ServerSettings, unit: UnitSettings, loop: asyncio.AbstractEventLoop) -> App:
    """Import, construct and ``load()`` the unit's class, then build the worker's App around it."""
    obj = construct(unit.interface_name, parse_parameters(unit.parameters))
    await call_load(obj)
    return App(server, unit, UserModel.from_object(obj), loop)
