"""How the executor calls one graph node: in this process, or over REST or gRPC.

Every kind answers the same five calls with in-memory types, so the executor never knows
where a node runs. In-process calls hand numpy arrays and meta straight to the unit's
service (no encoding); remote calls encode with the Seldon adapter and speak the unit's
ordinary Seldon routes, forwarding the request's puid.
"""
from __future__ import annotations

import asyncio
import http.client
from concurrent.futures import Executor
from typing import Any, Protocol

import numpy as np

from fastseldon import codec
from fastseldon import seldon_protocol as sp
from fastseldon.errors import BadRequest, FastSeldonError, InternalError, UpstreamError
from fastseldon.graph.http_client import HttpError, HttpPool
from fastseldon.proto import prediction_pb2 as pb
from fastseldon.runner import HookRunner
from fastseldon.service import SeldonService
from fastseldon.types import Feedback, Message, Reply

PUID_HEADER = "Seldon-Puid"

# REST path and gRPC method per call (the gRPC services are the python wrapper's)
REST_PATHS = {
    "predict": "/predict", "transform_input": "/transform-input", "transform_output": "/transform-output",
    "route": "/route", "aggregate": "/aggregate", "send_feedback": "/send-feedback",
}
GRPC_METHODS = {
    "predict": "/seldon.protos.Model/Predict", "transform_input": "/seldon.protos.Transformer/TransformInput",
    "transform_output": "/seldon.protos.OutputTransformer/TransformOutput", "route": "/seldon.protos.Router/Route",
    "aggregate": "/seldon.protos.Combiner/Aggregate", "send_feedback": "/seldon.protos.Model/SendFeedback",
}


class GraphUnit(Protocol):
    """One node's callable side, wherever it runs."""

    name: str

    async def call(self, method: str, msg: Message, puid: str) -> Message: ...

    def call_now(self, method: str, msg: Message, puid: str) -> Message | None:
        """The answer right away when it needs no waiting (a plain hook in this process), else None: use ``call``."""

    async def route(self, msg: Message, puid: str) -> int: ...

    async def aggregate(self, msgs: list[Message], puid: str) -> Message: ...

    async def send_feedback(self, feedback: Feedback, puid: str) -> Message: ...

    def metadata(self) -> dict[str, Any]: ...


def as_reply(msg: Message) -> Reply:
    """A message about to go on the wire (to a remote unit, or back to the client)."""
    return Reply(msg.payload, msg.kind, msg.names or None, msg.meta)


def wire_dict(msg: Message) -> Any:
    """The JSON-shaped form a *_raw hook receives over REST."""
    return codec.loads(sp.reply_to_json(as_reply(msg)))


def route_of(msg: Message, node: str) -> int:
    """A router's answer: the first value of its data, as an int."""
    values = np.asarray(msg.payload).ravel() if msg.payload is not None else np.array([])
    if values.size == 0:
        raise BadRequest(f"router {node!r} returned no routing value")
    first = values[0]
    try:
        return int(first)
    except (TypeError, ValueError):
        raise BadRequest(f"router {node!r} returned a routing value that is not an int: {first!r}") from None


# --------------------------------------------------------------------------- in this process


class LocalUnit:
    """A unit loaded in this process: messages go to its service as they are."""

    def __init__(self, name: str, service: SeldonService, runner: HookRunner):
        self.name = name
        self.service = service
        self.runner = runner

    async def _run(self, steps: Any) -> Message:
        reply = await self.runner.run(steps)
        return self._message(reply)

    def _message(self, reply: Reply) -> Message:
        if not reply.raw:
            return reply.to_message()
        if reply.status != 200:
            raise UpstreamError(f"unit {self.name!r} answered {reply.status}", reply.status,
                                body=sp.reply_to_json(reply))
        out = reply.payload
        if isinstance(out, dict):
            return sp.message_from_json(out, raw=out)
        if hasattr(out, "SerializeToString"):
            return sp.message_from_proto(out)
        raise InternalError(f"unit {self.name!r}: a raw hook returned {type(out).__name__}, not a SeldonMessage")

    def _prepared(self, endpoint: str, msg: Message) -> Message:
        if self.service.wants_raw(endpoint) and msg.raw is None:
            return Message(msg.kind, msg.payload, msg.names, msg.meta, wire_dict(msg))
        return msg

    def call_now(self, method: str, msg: Message, puid: str) -> Message | None:
        return self.runner.plain(self.service, method, msg, True)  # a plain hook, right here (runner.plain)

    async def call(self, method: str, msg: Message, puid: str) -> Message:
        out = self.call_now(method, msg, puid)
        if out is not None:
            return out
        fn = getattr(self.service, method)
        return await self._run(fn(self._prepared(method, msg)))

    async def route(self, msg: Message, puid: str) -> int:
        return route_of(await self.call("route", msg, puid), self.name)

    async def aggregate(self, msgs: list[Message], puid: str) -> Message:
        raw = [wire_dict(m) for m in msgs] if self.service.wants_raw("aggregate") else None
        return await self._run(self.service.aggregate(msgs, raw))

    async def send_feedback(self, feedback: Feedback, puid: str) -> Message:
        return await self._run(self.service.send_feedback(feedback))

    def metadata(self) -> dict[str, Any]:
        return self.service.get_metadata()


# --------------------------------------------------------------------------- over the network


class RemoteRestUnit:
    """A unit reached over REST at host:port (its Seldon routes), on keep-alive connections on the loop."""

    def __init__(self, name: str, host: str, port: int, executor: Executor, timeout: float | None):
        self.name = name
        self.host = host
        self.port = port
        self.executor = executor
        self.timeout = timeout
        self.pool = HttpPool(host, port, timeout)

    async def _post(self, method: str, body: bytes, puid: str) -> Any:
        path = REST_PATHS[method]
        headers = (("Content-Type", "application/json"), (PUID_HEADER, puid))
        try:
            resp = await self.pool.request("POST", path, body, headers)
        except asyncio.TimeoutError:
            raise UpstreamError(f"unit {self.name!r} did not answer {path} within {self.timeout} s", 504) from None
        except HttpError as exc:
            raise UpstreamError(f"unit {self.name!r} at {self.host}:{self.port} unreachable: {exc}", 500) from None
        if resp.status != 200:
            raise UpstreamError(f"unit {self.name!r} answered {resp.status} on {path}", resp.status, body=resp.body)
        try:
            return codec.parse_seldon_json(resp.body)
        except FastSeldonError:
            raise UpstreamError(f"unit {self.name!r} answered {method} with a body that is not JSON", 500) from None

    def call_now(self, method: str, msg: Message, puid: str) -> Message | None:
        return None  # over the network: always awaited

    async def call(self, method: str, msg: Message, puid: str) -> Message:
        obj = await self._post(method, sp.reply_to_json(as_reply(msg)), puid)
        return sp.message_from_json(obj, raw=obj)

    async def route(self, msg: Message, puid: str) -> int:
        return route_of(await self.call("route", msg, puid), self.name)

    async def aggregate(self, msgs: list[Message], puid: str) -> Message:
        body = b"[" + b",".join(sp.reply_to_json(as_reply(m)) for m in msgs) + b"]"  # Seldon's bare list
        obj = await self._post("aggregate", body, puid)
        return sp.message_from_json(obj, raw=obj)

    async def send_feedback(self, feedback: Feedback, puid: str) -> Message:
        from google.protobuf import json_format

        body = codec.dumps(json_format.MessageToDict(feedback.raw))
        obj = await self._post("send_feedback", body, puid)
        return sp.message_from_json(obj, raw=obj)

    def metadata(self) -> dict[str, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout or 10)
        try:
            conn.request("GET", "/metadata")
            resp = conn.getresponse()
            data = resp.read()
        except OSError as exc:
            raise UpstreamError(f"unit {self.name!r} unreachable for metadata: {exc}", 500) from None
        finally:
            conn.close()
        if resp.status != 200:
            raise UpstreamError(f"unit {self.name!r} answered {resp.status} on /metadata", resp.status, body=data)
        out = codec.loads(data)
        return out if isinstance(out, dict) else {}


class RemoteGrpcUnit:
    """A unit reached over gRPC (the python wrapper's Seldon services), on the thread pool."""

    def __init__(self, name: str, host: str, port: int, executor: Executor, timeout: float | None):
        import grpc

        self.name = name
        self.executor = executor
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"{host}:{port}")
        self._calls = {m: self._channel.unary_unary(path) for m, path in GRPC_METHODS.items()}
        self._metadata = self._channel.unary_unary("/seldon.protos.Model/Metadata")

    def _invoke_blocking(self, method: str, body: bytes, puid: str) -> bytes:
        import grpc

        try:
            return self._calls[method](body, timeout=self.timeout, metadata=(("seldon-puid", puid),))
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            status = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
                      grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
                      grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.RESOURCE_EXHAUSTED: 429}.get(code, 500)
            details = exc.details() if hasattr(exc, "details") else str(exc)
            raise UpstreamError(f"unit {self.name!r} failed {method}: {details}", status) from None

    async def _invoke(self, method: str, body: bytes, puid: str) -> Message:
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(self.executor, self._invoke_blocking, method, body, puid)
        return sp.message_from_proto_bytes(out)

    def call_now(self, method: str, msg: Message, puid: str) -> Message | None:
        return None  # over the network: always awaited

    async def call(self, method: str, msg: Message, puid: str) -> Message:
        return await self._invoke(method, sp.reply_to_proto_bytes(as_reply(msg)), puid)

    async def route(self, msg: Message, puid: str) -> int:
        return route_of(await self.call("route", msg, puid), self.name)

    async def aggregate(self, msgs: list[Message], puid: str) -> Message:
        lst = pb.SeldonMessageList()
        for m in msgs:
            lst.seldonMessages.add().ParseFromString(sp.reply_to_proto_bytes(as_reply(m)))
        return await self._invoke("aggregate", lst.SerializeToString(), puid)

    async def send_feedback(self, feedback: Feedback, puid: str) -> Message:
        return await self._invoke("send_feedback", feedback.raw.SerializeToString(), puid)

    def metadata(self) -> dict[str, Any]:
        from google.protobuf import json_format

        try:
            out = self._metadata(b"", timeout=self.timeout or 10)
        except Exception as exc:  # noqa: BLE001 - grpc.RpcError and friends
            raise UpstreamError(f"unit {self.name!r} failed metadata: {exc}", 500) from None
        return json_format.MessageToDict(pb.SeldonModelMetadata.FromString(out))


def timeout_from(annotations: dict[str, str], transport: str) -> float | None:
    """``seldon.io/rest-timeout`` / ``seldon.io/grpc-timeout`` (milliseconds) as seconds."""
    key = "seldon.io/grpc-timeout" if transport == "GRPC" else "seldon.io/rest-timeout"
    value = annotations.get(key)
    if not value:
        return None
    try:
        return max(0.001, float(value) / 1000.0)
    except ValueError:
        return None

