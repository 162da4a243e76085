"""The Open Inference Protocol (V2) routes: REST paths and ``inference.GRPCInferenceService`` methods.

V2 clients reach the same unit on the same ports as Seldon v1 clients. Handlers decode with
the V2 adapter (v2_protocol.py), drive the service's ``infer`` step through the unit's
runner, and encode the reply; errors on ``/v2`` paths are rendered as V2's ``{"error": ...}``.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from fastseldon import __version__, codec
from fastseldon import grpc as grpc_front
from fastseldon import v2_protocol as v2
from fastseldon.errors import BadMetadata, BadRequest, FastSeldonError, MethodNotAllowed, NotFound, NotSupported
from fastseldon.http import JSON, Request, Response, Router
from fastseldon.proto import grpc_service_pb2 as pb
from fastseldon.proto import parse as parse_proto
from fastseldon.v2_stats import InferStats

if TYPE_CHECKING:
    from fastseldon.app import App
    from fastseldon.registry import ModelRegistry

SERVER_NAME = "fastseldon"
GRPC_SERVICE = "/inference.GRPCInferenceService/"
# MLServer's own repository service: the same three calls, with messages wire-compatible with Triton's
MLSERVER_REPOSITORY = "/inference.model_repository.ModelRepositoryService/"

# Triton's extensions this server does not offer: gRPC method -> the extension's name
UNSUPPORTED_GRPC = {
    "ModelConfig": "model configuration",
    "SystemSharedMemoryStatus": "system shared memory", "SystemSharedMemoryRegister": "system shared memory",
    "SystemSharedMemoryUnregister": "system shared memory",
    "CudaSharedMemoryStatus": "CUDA shared memory", "CudaSharedMemoryRegister": "CUDA shared memory",
    "CudaSharedMemoryUnregister": "CUDA shared memory",
    "TraceSetting": "trace", "LogSettings": "logging",
}
# ... and their REST path prefixes (model-scoped ones are matched in V2Endpoints.match)
UNSUPPORTED_REST = {
    "/v2/systemsharedmemory": "system shared memory", "/v2/cudasharedmemory": "CUDA shared memory",
    "/v2/trace": "trace", "/v2/logging": "logging",
}


def unsupported(extension: str, what: str) -> NotSupported:
    """The answer to a Triton extension this server lacks: 501 / UNIMPLEMENTED, naming it."""
    return NotSupported(f"Triton's {extension} extension is not supported by {SERVER_NAME} ({what}); "
                        f"supported extensions: {', '.join(v2.EXTENSIONS)}")


def render_error(exc: FastSeldonError) -> Response:
    return Response(exc.http_status, v2.error_body(exc), JSON)



def add_server_grpc(methods: dict[str, Any]) -> None:
    """The server-level V2 gRPC answers (live, ready, metadata): fixed bytes, built once."""
    live = pb.ServerLiveResponse(live=True).SerializeToString()
    ready = pb.ServerReadyResponse(ready=True).SerializeToString()
    server_meta = pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=v2.EXTENSIONS).SerializeToString()
    methods[GRPC_SERVICE + "ServerLive"] = lambda body: live
    methods[GRPC_SERVICE + "ServerReady"] = lambda body: ready
    methods[GRPC_SERVICE + "ServerMetadata"] = lambda body: server_meta

class V2Endpoints:
    """The V2 REST handlers and gRPC methods of one worker, bound to its App and model."""

    def __init__(self, app: App):
        self.app = app
        self.service = app.service
        self.runner = app.runner
        self.model_name: str = app.unit.model_name
        self.max_body: int = app.server.max_body_bytes
        meta = self.service.metadata
        self.metadata_error: str | None = self.service.metadata_error
        self.metadata = v2.model_metadata(meta, self.model_name)
        self.versions: tuple[str, ...] = tuple(self.metadata.get("versions", ()))
        self.version = self.versions[0] if len(self.versions) == 1 else ""
        self._live = codec.dumps({"live": True})
        self._ready = codec.dumps({"ready": True})
        self._model_ready = codec.dumps({"name": self.model_name, "ready": True})
        self._server_meta = codec.dumps({"name": SERVER_NAME, "version": __version__, "extensions": list(v2.EXTENSIONS)})
        self._model_meta = codec.dumps(self.metadata)
        self.stats = InferStats(self.model_name, self.version)
        app.flush_hooks.append(self.stats.flush)

    # -- model and version checks

    def check(self, name: str, version: str) -> str:
        """The version to report, or NotFound for another model or an unknown version."""
        if name != self.model_name:
            raise NotFound(f"Model {name!r} is not served here; this server serves {self.model_name!r}")
        if version and version not in self.versions:
            known = f"versions {list(self.versions)}" if self.versions else "no versions"
            raise NotFound(f"Model {name!r} has no version {version!r} (it has {known})")
        return version or self.version

    def _meta_checked(self) -> None:
        if self.metadata_error:
            raise BadMetadata(self.metadata_error)

    # -- REST

    def add_routes(self) -> None:
        router = self.app.router
        timed = self.app.timed_rest
        router.add(("GET",), ("/v2", "/v2/"), timed("/v2", self.rest_server_metadata))
        router.add(("GET",), ("/v2/health/live",), self.rest_live)
        router.add(("GET",), ("/v2/health/ready",), self.rest_ready)
        router.add(("GET", "POST"), ("/v2/repository/index",), timed("/v2/repository/index", self.rest_repository_index))
        router.add(("GET",), ("/v2/models/stats",), timed("/v2/models/stats", self.rest_stats))
        self._model_routes = {
            "": ("GET", timed("/v2/models/metadata", self.rest_model_metadata)),
            "ready": ("GET", timed("/v2/models/ready", self.rest_model_ready)),
            "infer": ("POST", timed("/v2/models/infer", self.rest_infer)),
            "stats": ("GET", timed("/v2/models/stats", self.rest_stats)),
        }
        # The served model's own paths are exact routes: one dict lookup on the hot path.
        for version in ("", *self.versions):
            base = f"/v2/models/{self.model_name}" + (f"/versions/{version}" if version else "")
            for suffix, (method, handler) in self._model_routes.items():
                router.add((method,), (base + (f"/{suffix}" if suffix else ""),), handler)
        router.add_matcher(self.match)

    def match(self, method: str, path: str) -> Callable[[Request], Any] | None:
        """Other /v2/models/... and /v2/repository/models/... paths: 404/405 with a reason; Triton's
        extensions this server lacks: 501 naming the extension."""
        for prefix, extension in UNSUPPORTED_REST.items():
            if path == prefix or path.startswith(prefix + "/"):
                raise unsupported(extension, f"{method} {path}")
        if path.startswith("/v2/repository/"):
            parts = path[len("/v2/repository/models/"):].split("/") if path.startswith("/v2/repository/models/") else []
            if len(parts) == 2 and parts[1] in ("load", "unload"):
                if method != "POST":
                    raise MethodNotAllowed(f"Method {method} not allowed for {path}; use POST")
                return self.app.timed_rest("/v2/repository/models", self.rest_repository)
            raise unsupported("model repository", f"{method} {path}; this server has /v2/repository/index and "
                              f"/v2/repository/models/{self.model_name}/load")
        if not path.startswith("/v2/models/"):
            return None
        parts = path[len("/v2/models/"):].split("/")
        name, version = parts[0], ""
        if len(parts) >= 3 and parts[1] == "versions":
            version, parts = parts[2], [name, *parts[3:]]
        if parts[1:] in (["config"], ["trace", "setting"]):
            raise unsupported("model configuration" if parts[1] == "config" else "trace", f"{method} {path}")
        if len(parts) > 2 or not name:
            return None
        suffix = parts[1] if len(parts) == 2 else ""
        if suffix not in self._model_routes:
            return None
        self.check(name, version)
        allowed, handler = self._model_routes[suffix]
        if method != allowed:
            raise MethodNotAllowed(f"Method {method} not allowed for {path}; use {allowed}")
        return handler

    def _path_model(self, path: str) -> tuple[str, str]:
        """(name, version) from /v2/models/{name}[/versions/{v}][/...]."""
        parts = path[len("/v2/models/"):].split("/")
        if len(parts) >= 3 and parts[1] == "versions":
            return parts[0], parts[2]
        return parts[0], ""

    async def rest_live(self, request: Request) -> Response:
        return Response(200, self._live, JSON)

    async def rest_ready(self, request: Request) -> Response:
        return Response(200, self._ready, JSON)

    async def rest_server_metadata(self, request: Request) -> Response:
        return Response(200, self._server_meta, JSON)

    async def rest_model_metadata(self, request: Request) -> Response:
        self.check(*self._path_model(request.path))
        self._meta_checked()
        return Response(200, self._model_meta, JSON)

    async def rest_model_ready(self, request: Request) -> Response:
        self.check(*self._path_model(request.path))
        return Response(200, self._model_ready, JSON)

    async def rest_infer(self, request: Request) -> Response:
        name, version = self._path_model(request.path)
        version = self.check(name, version)
        start = time.perf_counter_ns()
        try:
            infer_request = v2.decode_rest_request(request.body, request.headers, name, version, self.max_body)
            decoded = time.perf_counter_ns()
            # a plain sync predict cheap enough for the loop: called here, no step generator to drive
            result = self.runner.plain_infer(self.service, infer_request)
            if result is None:
                result = await self.runner.run(self.service.infer(infer_request))
            inferred = time.perf_counter_ns()
            body, content_type, headers = v2.encode_rest_response(result, infer_request, self.model_name, version)
        except Exception:
            self.stats.fail(time.perf_counter_ns() - start)
            raise
        self.stats.success(decoded - start, inferred - decoded, time.perf_counter_ns() - inferred)
        return Response(200, body, content_type, headers)

    async def rest_stats(self, request: Request) -> Response:
        if request.path != "/v2/models/stats":
            self.check(*self._path_model(request.path))
        return Response(200, codec.dumps({"model_stats": [self.stats.statistics()]}), JSON)

    async def rest_repository_index(self, request: Request) -> Response:
        return Response(200, codec.dumps([self._index_entry()]), JSON)

    def _index_entry(self) -> dict[str, str]:
        entry = {"name": self.model_name, "state": "READY"}
        if self.version:
            entry["version"] = self.version
        return entry

    async def rest_repository(self, request: Request) -> Response:
        name, action = request.path[len("/v2/repository/models/"):].split("/")
        if action == "load" and name == self.model_name:
            return Response(200, b"{}", JSON)  # already loaded, and it stays so
        self._repository(action, name)
        return Response(200, b"{}", JSON)

    def _repository(self, action: str, name: str) -> None:
        """Triton's model repository extension over one fixed model: loading it is a no-op."""
        if action == "load" and name == self.model_name:
            return
        fixed = f"model repository extension: this server serves one fixed model, {self.model_name!r}, loaded at start-up"
        if action == "load":
            raise NotFound(f"Cannot load model {name!r}: {fixed}")
        if name != self.model_name:
            raise NotFound(f"Cannot unload model {name!r}: {fixed}")
        raise NotSupported(f"Cannot unload model {name!r}: {fixed}; stop the server instead")

    # -- gRPC (handlers take and return serialized messages; they run on gRPC threads)

    def add_grpc(self) -> None:
        timed = self.app.timed_grpc
        methods = self.app.grpc_methods
        add_server_grpc(methods)
        methods[GRPC_SERVICE + "ModelReady"] = timed(GRPC_SERVICE + "ModelReady", self.grpc_model_ready)
        methods[GRPC_SERVICE + "ModelMetadata"] = timed(GRPC_SERVICE + "ModelMetadata", self.grpc_model_metadata)
        methods[GRPC_SERVICE + "ModelInfer"] = timed(GRPC_SERVICE + "ModelInfer", self.grpc_infer)
        methods[GRPC_SERVICE + "ModelStreamInfer"] = self._stream_handler()
        methods[GRPC_SERVICE + "ModelStatistics"] = timed(GRPC_SERVICE + "ModelStatistics", self.grpc_stats)
        methods[GRPC_SERVICE + "RepositoryIndex"] = timed(GRPC_SERVICE + "RepositoryIndex", self.grpc_repository_index)
        methods[GRPC_SERVICE + "RepositoryModelLoad"] = timed(GRPC_SERVICE + "RepositoryModelLoad", self.grpc_repository_load)
        methods[GRPC_SERVICE + "RepositoryModelUnload"] = timed(GRPC_SERVICE + "RepositoryModelUnload",
                                                                self.grpc_repository_unload)
        for method, extension in UNSUPPORTED_GRPC.items():
            methods[GRPC_SERVICE + method] = self._unsupported_grpc(method, extension)

    @staticmethod
    def _unsupported_grpc(method: str, extension: str) -> Callable[[bytes], bytes]:
        def handle(body: bytes) -> bytes:
            raise unsupported(extension, method)

        return handle

    def grpc_stats(self, body: bytes) -> bytes:
        req = parse_proto(pb.ModelStatisticsRequest, body)
        if req.name or req.version:
            self.check(req.name, req.version)
        return json_format.ParseDict({"model_stats": [self.stats.statistics()]}, pb.ModelStatisticsResponse()).SerializeToString()

    def grpc_repository_index(self, body: bytes) -> bytes:
        parse_proto(pb.RepositoryIndexRequest, body)
        return pb.RepositoryIndexResponse(models=[self._index_entry()]).SerializeToString()

    def grpc_repository_load(self, body: bytes) -> bytes:
        self._repository("load", parse_proto(pb.RepositoryModelLoadRequest, body).model_name)
        return b""

    def grpc_repository_unload(self, body: bytes) -> bytes:
        self._repository("unload", parse_proto(pb.RepositoryModelUnloadRequest, body).model_name)
        return b""

    def grpc_model_ready(self, body: bytes) -> bytes:
        req = parse_proto(pb.ModelReadyRequest, body)
        self.check(req.name, req.version)
        return pb.ModelReadyResponse(ready=True).SerializeToString()

    def grpc_model_metadata(self, body: bytes) -> bytes:
        req = parse_proto(pb.ModelMetadataRequest, body)
        self.check(req.name, req.version)
        self._meta_checked()
        meta = self.metadata
        msg = pb.ModelMetadataResponse(name=meta["name"], versions=meta.get("versions", []), platform=meta["platform"])
        for key, target in (("inputs", msg.inputs), ("outputs", msg.outputs)):
            for t in meta[key]:
                target.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return msg.SerializeToString()

    def grpc_infer(self, body: bytes) -> bytes:
        start = time.perf_counter_ns()
        try:
            request = v2.decode_grpc_request(body)
            version = self.check(request.model_name, request.model_version)
            decoded = time.perf_counter_ns()
            # a plain sync predict: called right on this gRPC thread, no step generator to drive
            result = self.runner.plain_infer_blocking(self.service, request)
            if result is None:
                result = self.runner.run_blocking(self.service.infer(request))
            inferred = time.perf_counter_ns()
            out = v2.encode_grpc_response(result, request, self.model_name, version)
        except Exception:
            self.stats.fail(time.perf_counter_ns() - start)
            raise
        self.stats.success(decoded - start, inferred - decoded, time.perf_counter_ns() - inferred)
        return out

    def _stream_handler(self) -> Any:
        """ModelStreamInfer: one reply per request, errors in error_message (the stream goes on)."""
        metrics = self.app.metrics
        label = GRPC_SERVICE + "ModelStreamInfer"

        def behaviour(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
            for body in requests:
                start = time.perf_counter()
                code = "OK"
                try:
                    reply = v2.stream_reply(self.grpc_infer(body))
                except FastSeldonError as exc:
                    code = exc.grpc_code
                    reply = pb.ModelStreamInferResponse(error_message=str(exc)).SerializeToString()
                except Exception as exc:  # noqa: BLE001 - one bad message must not end the stream
                    code = "INTERNAL"
                    reply = pb.ModelStreamInferResponse(error_message=str(exc) or type(exc).__name__).SerializeToString()
                metrics.observe(label, "grpc", code, time.perf_counter() - start)
                yield reply

        return grpc_front.stream_method(behaviour)


class V2Models:
    """The V2 routes of a server holding several units by name (a repository, a graph's in-process
    units): each request's model is looked up in the registry per request and answered by that
    unit's own V2 handlers (the V2Endpoints of its App). With ``repository``, the model repository
    extension loads and unloads models for real."""

    def __init__(self, registry: ModelRegistry, router: Router, grpc_methods: dict[str, Any],
                 timed: Callable[[str, Any], Any], loop: asyncio.AbstractEventLoop):
        self.registry = registry
        self.router = router
        self.grpc_methods = grpc_methods
        self.timed = timed
        self.loop = loop
        self.repository = False

    # -- REST

    def add_server_routes(self) -> None:
        live, ready = codec.dumps({"live": True}), codec.dumps({"ready": True})
        server_meta = codec.dumps({"name": SERVER_NAME, "version": __version__, "extensions": list(v2.EXTENSIONS)})

        async def rest_live(request: Request) -> Response:
            return Response(200, live, JSON)

        async def rest_ready(request: Request) -> Response:
            return Response(200, ready, JSON)

        async def rest_server_metadata(request: Request) -> Response:
            return Response(200, server_meta, JSON)

        self.router.add(("GET",), ("/v2", "/v2/"), rest_server_metadata)
        self.router.add(("GET",), ("/v2/health/live",), rest_live)
        self.router.add(("GET",), ("/v2/health/ready",), rest_ready)

    def add_model_routes(self, repository: bool = False) -> None:
        self.repository = repository
        if repository:
            self.router.add(("GET", "POST"), ("/v2/repository/index",), self.timed("/v2/repository/index", self.rest_index))
            self.router.add(("GET",), ("/v2/models/stats",), self.timed("/v2/models/stats", self.rest_stats))
        self._load = self.timed("/v2/repository/models", self.rest_repository)
        self.router.add_matcher(self.match)

    def match(self, method: str, path: str) -> Callable[[Request], Any] | None:
        """/v2/models/{name}/...: that model's own route; /v2/repository/models/{name}/load|unload."""
        if path.startswith("/v2/models/"):
            name = path[len("/v2/models/"):].split("/", 1)[0]
            if not name:
                return None
            return self.registry.get(name).router.resolve(method, path)
        if not self.repository:
            return None
        for prefix, extension in UNSUPPORTED_REST.items():
            if path == prefix or path.startswith(prefix + "/"):
                raise unsupported(extension, f"{method} {path}")
        if path.startswith("/v2/repository/"):
            parts = path[len("/v2/repository/models/"):].split("/") if path.startswith("/v2/repository/models/") else []
            if len(parts) == 2 and parts[0] and parts[1] in ("load", "unload"):
                if method != "POST":
                    raise MethodNotAllowed(f"Method {method} not allowed for {path}; use POST")
                return self._load
            raise unsupported("model repository", f"{method} {path}; this server has /v2/repository/index and "
                              "/v2/repository/models/{name}/load|unload")
        return None

    async def rest_index(self, request: Request) -> Response:
        ready_only = False
        if request.body.strip():
            try:
                doc = codec.loads(request.body)
            except ValueError:
                raise BadRequest("the repository index request body is not JSON") from None
            if not isinstance(doc, dict):
                raise BadRequest("the repository index request body must be a JSON object")
            ready_only = doc.get("ready") is True
        return Response(200, codec.dumps(self.registry.index(ready_only)), JSON)

    async def rest_stats(self, request: Request) -> Response:
        return Response(200, codec.dumps({"model_stats": [app.v2.stats.statistics() for app in self.registry.loaded()]}), JSON)

    async def rest_repository(self, request: Request) -> Response:
        name, action = request.path[len("/v2/repository/models/"):].split("/")
        await (self.registry.load(name) if action == "load" else self.registry.unload(name))
        return Response(200, b"{}", JSON)

    # -- gRPC (on gRPC threads; loads and unloads run on the loop)

    def add_grpc(self, repository: bool = False) -> None:
        methods = self.grpc_methods
        add_server_grpc(methods)
        for method in ("ModelMetadata", "ModelInfer"):
            methods[GRPC_SERVICE + method] = self._dispatch(GRPC_SERVICE + method)
        methods[GRPC_SERVICE + "ModelReady"] = self.grpc_model_ready
        methods[GRPC_SERVICE + "ModelStreamInfer"] = grpc_front.stream_method(self._stream)
        if not repository:
            return
        methods[GRPC_SERVICE + "ModelStatistics"] = self.grpc_stats
        for service in (GRPC_SERVICE, MLSERVER_REPOSITORY):
            methods[service + "RepositoryIndex"] = self.grpc_index
            methods[service + "RepositoryModelLoad"] = self.grpc_load
            methods[service + "RepositoryModelUnload"] = self.grpc_unload
        for method, extension in UNSUPPORTED_GRPC.items():
            methods[GRPC_SERVICE + method] = V2Endpoints._unsupported_grpc(method, extension)

    def _dispatch(self, method: str) -> Callable[[bytes], bytes]:
        registry = self.registry

        def handle(body: bytes) -> bytes:
            return registry.get(v2.grpc_model_name(body)).grpc_methods[method](body)

        return handle

    def grpc_model_ready(self, body: bytes) -> bytes:
        name = v2.grpc_model_name(body)
        if self.registry.known(name) and not self.registry.is_loaded(name):
            return pb.ModelReadyResponse(ready=False).SerializeToString()  # unloaded: not ready, as Triton answers
        return self.registry.get(name).grpc_methods[GRPC_SERVICE + "ModelReady"](body)

    def _stream(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        """ModelStreamInfer: each request goes to its own model; errors in error_message (the stream goes on)."""
        infer = self._dispatch(GRPC_SERVICE + "ModelInfer")
        for body in requests:
            try:
                reply = v2.stream_reply(infer(body))
            except FastSeldonError as exc:
                reply = pb.ModelStreamInferResponse(error_message=str(exc)).SerializeToString()
            except Exception as exc:  # noqa: BLE001 - one bad message must not end the stream
                reply = pb.ModelStreamInferResponse(error_message=str(exc) or type(exc).__name__).SerializeToString()
            yield reply

    def grpc_stats(self, body: bytes) -> bytes:
        req = parse_proto(pb.ModelStatisticsRequest, body)
        if req.name:
            return self.registry.get(req.name).grpc_methods[GRPC_SERVICE + "ModelStatistics"](body)
        stats = [app.v2.stats.statistics() for app in self.registry.loaded()]
        return json_format.ParseDict({"model_stats": stats}, pb.ModelStatisticsResponse()).SerializeToString()

    def grpc_index(self, body: bytes) -> bytes:
        req = parse_proto(pb.RepositoryIndexRequest, body)
        return pb.RepositoryIndexResponse(models=self.registry.index(req.ready)).SerializeToString()

    def _on_loop(self, coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def grpc_load(self, body: bytes) -> bytes:
        self._on_loop(self.registry.load(parse_proto(pb.RepositoryModelLoadRequest, body).model_name))
        return b""

    def grpc_unload(self, body: bytes) -> bytes:
        self._on_loop(self.registry.unload(parse_proto(pb.RepositoryModelUnloadRequest, body).model_name))
        return b""


def register(app: App) -> V2Endpoints:
    """Add the V2 REST routes, gRPC methods and error rendering to a worker's App."""
    endpoints = V2Endpoints(app)
    endpoints.add_routes()
    endpoints.add_grpc()
    app.router.set_error_renderer("/v2", render_error)
    return endpoints
