"""The gRPC front in-process: ``fastseldon.grpc.start`` on a free port with bytes handlers, called
through a grpcio channel with identity serializers. Errors map to status codes by kind, an
unexpected exception is INTERNAL without a traceback, and the message limit comes from settings."""
from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from fastseldon import grpc as front
from fastseldon.errors import BadRequest, ClientError, NotFound, NotImplementedHook, NotSupported, QueueFull, UserModelError
from fastseldon.settings import ServerSettings
from support.serving import free_port

LIMIT = 64 * 1024  # max_grpc_message_bytes for the server under test
SERVICE = "/fastseldon.test.Probe/"


def grpc_settings(port: int, **overrides: Any) -> ServerSettings:
    """The one place these tests build settings: only what ``start`` reads."""
    return ServerSettings(host="127.0.0.1", grpc_port=port, **{"grpc_threads": 4, "max_grpc_message_bytes": LIMIT,
                                                                  **overrides})


def _raiser(exc: BaseException) -> Callable[[bytes], bytes]:
    def handler(request: bytes) -> bytes:
        raise exc

    return handler


def _bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    for request in requests:
        yield request.upper()


ERRORS: dict[str, tuple[BaseException, grpc.StatusCode, str]] = {
    "BadRequest": (BadRequest("row 3 has 2 columns, expected 4"), grpc.StatusCode.INVALID_ARGUMENT,
                   "row 3 has 2 columns, expected 4"),
    "NotFound": (NotFound("model m not found"), grpc.StatusCode.NOT_FOUND, "model m not found"),
    "NotSupported": (NotSupported("no streaming here"), grpc.StatusCode.UNIMPLEMENTED, "no streaming here"),
    "NotImplementedHook": (NotImplementedHook("no route hook"), grpc.StatusCode.UNIMPLEMENTED, "no route hook"),
    "QueueFull": (QueueFull("1024 requests wait already"), grpc.StatusCode.RESOURCE_EXHAUSTED,
                  "1024 requests wait already"),
    "ClientError-429": (ClientError("slow down", 429), grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down"),
    "ClientError-403": (ClientError("go away", 403), grpc.StatusCode.PERMISSION_DENIED, "go away"),
    "UserModelError": (UserModelError("the model broke"), grpc.StatusCode.INTERNAL, "the model broke"),
    "unexpected": (ValueError("secret state 42"), grpc.StatusCode.INTERNAL, "secret state 42"),
    "unexpected-no-message": (ZeroDivisionError(), grpc.StatusCode.INTERNAL, "ZeroDivisionError"),
}


@pytest.fixture(scope="module")
def channel():
    methods: dict[str, Any] = {
        SERVICE + "Echo": lambda request: b"echo:" + request,
        SERVICE + "Size": lambda request: str(len(request)).encode(),
        SERVICE + "Big": lambda request: b"x" * int(request),
        SERVICE + "Raw": grpc.unary_unary_rpc_method_handler(lambda request, context: b"raw:" + request),
        SERVICE + "Stream": front.stream_method(_bidi),
        **{SERVICE + "Raise" + name: _raiser(exc) for name, (exc, _, _) in ERRORS.items()},
    }
    port = free_port()
    server = front.start(grpc_settings(port), methods)
    with grpc.insecure_channel(f"127.0.0.1:{port}",
                               options=[("grpc.max_receive_message_length", 4 * LIMIT)]) as ch:
        yield ch
    server.stop(None)


def call(channel: grpc.Channel, method: str, request: bytes = b"", timeout: float = 10) -> bytes:
    identity = (lambda b: b)  # noqa: E731 - the front speaks raw bytes
    return channel.unary_unary(SERVICE + method, request_serializer=identity,
                               response_deserializer=identity)(request, timeout=timeout)


def test_bytes_round_trip(channel):
    payload = bytes(range(256)) * 3 + b"\x00"
    assert call(channel, "Echo", payload) == b"echo:" + payload
    assert call(channel, "Echo", b"") == b"echo:"


def test_an_rpc_method_handler_is_served_as_given(channel):
    assert call(channel, "Raw", b"abc") == b"raw:abc"
    stream = channel.stream_stream(SERVICE + "Stream", request_serializer=lambda b: b,
                                   response_deserializer=lambda b: b)
    assert list(stream(iter([b"a", b"bc", b""]), timeout=10)) == [b"A", b"BC", b""]


@pytest.mark.parametrize("name", list(ERRORS))
def test_errors_map_to_their_status_code_with_the_message(channel, name):
    _, code, details = ERRORS[name]
    with pytest.raises(grpc.RpcError) as info:
        call(channel, "Raise" + name, b"x")
    assert info.value.code() == code
    assert info.value.details() == details
    assert "Traceback" not in info.value.details() and ".py" not in info.value.details()


def test_an_unexpected_exception_is_logged_with_its_traceback(channel, caplog):
    with pytest.raises(grpc.RpcError):
        call(channel, "Raiseunexpected")
    (record,) = [r for r in caplog.records if r.name == "fastseldon.grpc"]
    assert record.getMessage() == "gRPC handler failed" and record.exc_info[0] is ValueError


def test_unknown_method_is_unimplemented(channel):
    for method in ("Nope", "echo"):  # method names are exact
        with pytest.raises(grpc.RpcError) as info:
            call(channel, method, b"x")
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary("/other.Service/Echo")(b"x", timeout=10)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_max_message_length_from_settings_is_enforced_both_ways(channel):
    # a serialized request of exactly the limit passes; one byte more is refused before the handler
    assert call(channel, "Size", b"r" * LIMIT) == str(LIMIT).encode()
    with pytest.raises(grpc.RpcError) as info:
        call(channel, "Size", b"r" * (LIMIT + 1))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # so is a reply over the limit (the client here accepts up to 4x the limit)
    assert len(call(channel, "Big", str(LIMIT).encode())) == LIMIT
    with pytest.raises(grpc.RpcError) as info:
        call(channel, "Big", str(LIMIT + 1).encode())
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_port_that_cannot_be_bound_is_an_error():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(OSError, match=f"127.0.0.1:{port}"):
            front.start(grpc_settings(port), {SERVICE + "Echo": lambda request: request})
