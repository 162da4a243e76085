"""The REST front's ``HttpProtocol`` in-process, through a mock transport (uvicorn's way), on a
real event loop: stdlib asyncio and uvloop. Exact bytes, keep-alive, pipelining, fragmented
and chunked input, limits, errors, disconnects, flow control, idle and shutdown closing."""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

import pytest
import uvloop

from fastseldon.errors import FastSeldonError, NotFound
from fastseldon.http import TEXT, HttpProtocol, Request, Response, Router, ServerState, close_idle, drain
from support.waiting import until

MAX_BODY = 64


# --------------------------------------------------------------------------- the harness


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Run a coroutine on a fresh loop of the given flavour; fail on any error the loop saw."""
    factory = asyncio.new_event_loop if request.param == "asyncio" else uvloop.new_event_loop

    def runner(coro):
        loop = factory()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        try:
            result = loop.run_until_complete(coro)
            loop.run_until_complete(asyncio.sleep(0))  # let closes deliver connection_lost
        finally:
            loop.close()
        assert errors == [], errors
        return result

    return runner


class MockTransport:
    """What the protocol sees of a socket: records writes, close/abort and reading pauses.

    Like asyncio's transports, close() delivers connection_lost on a later loop iteration.
    A write after close is recorded apart (a real transport drops it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.protocol: HttpProtocol | None = None
        self.written = bytearray()
        self.late_writes: list[bytes] = []
        self.closing = False
        self.aborted = False
        self.reading = True
        self.pauses = 0
        self.resumes = 0

    def write(self, data: bytes) -> None:
        if self.closing:
            self.late_writes.append(bytes(data))
        else:
            self.written += data

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True
        self.resumes += 1

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50123), "sockname": ("127.0.0.1", 9000)}.get(name, default)

    def peer_reset(self) -> None:
        """The client went away: the transport closes and tells the protocol at once."""
        self.closing = True
        self.protocol.connection_lost(ConnectionResetError("connection reset by peer"))


class FakeClock:
    """The protocol's loop with ``time()`` set by the test; everything else is the real loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, now: float = 1000.0):
        self._loop = loop
        self.now = now

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


@dataclass
class Reply:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


def parse_replies(data: bytes) -> list[Reply]:
    """Split a response stream into replies (each header must appear once)."""
    replies = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {data!r}"
        status_line, *lines = head.split(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 "), status_line
        headers: dict[bytes, bytes] = {}
        for line in lines:
            name, _, value = line.partition(b": ")
            assert name.lower() not in headers, f"header {name!r} twice in {head!r}"
            headers[name.lower()] = value
        length = int(headers.get(b"content-length", b"0"))
        assert len(rest) >= length, f"body shorter than content-length: {data!r}"
        replies.append(Reply(int(status_line.split()[1]), headers, rest[:length]))
        data = rest[length:]
    return replies


class Client:
    """One connection: a protocol on a mock transport, fed bytes by the test."""

    def __init__(self, app: App, state: ServerState | None = None, max_body: int = MAX_BODY,
                 keepalive_timeout: float = 5.0, loop: Any = None, **limits: Any):
        loop = loop or asyncio.get_running_loop()
        self.state = state or ServerState()
        self.transport = MockTransport(asyncio.get_running_loop())
        self.protocol = HttpProtocol(app.router, self.state, loop, max_body=max_body,
                                     keepalive_timeout=keepalive_timeout, **limits)
        self.transport.protocol = self.protocol
        self.protocol.connection_made(self.transport)

    def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.protocol.data_received(chunk)

    @property
    def raw(self) -> bytes:
        return bytes(self.transport.written)

    def replies(self) -> list[Reply]:
        return parse_replies(self.raw)


class Gate:
    """A handler that parks each call on a future until the test releases it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Request, asyncio.Future]] = []
        self.returned = 0

    async def __call__(self, request: Request) -> Response:
        future = asyncio.get_running_loop().create_future()
        self.calls.append((request, future))
        body = await future
        self.returned += 1
        return Response(200, body, TEXT)

    def release(self, index: int = 0, body: bytes = b"released") -> None:
        self.calls[index][1].set_result(body)


def seldon_error(exc: FastSeldonError) -> Response:
    return Response(exc.http_status, json.dumps({"status": {"code": exc.http_status, "info": str(exc),
                                                            "reason": exc.reason}}).encode())


def v2_error(exc: FastSeldonError) -> Response:
    return Response(exc.http_status, json.dumps({"error": str(exc)}).encode())


class App:
    """The routes under test, and what their handlers saw."""

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.gate = Gate()
        self.router = Router()
        self.router.add(("GET",), ("/ping",), self.ping)
        self.router.add(("GET", "POST"), ("/echo",), self.echo)
        self.router.add(("POST",), ("/api/v1.0/predictions",), self.echo)
        self.router.add(("GET", "POST"), ("/slow",), self.gate)
        self.router.add(("GET",), ("/boom",), self.boom)
        self.router.set_error_renderer("/api", seldon_error)
        self.router.set_error_renderer("/v2", v2_error)

    async def ping(self, request: Request) -> Response:
        self.seen.append(request)
        return Response(200, b'{"ok":true}')

    async def echo(self, request: Request) -> Response:
        self.seen.append(request)
        return Response(200, request.body, TEXT, [(b"x-query", request.query.encode())])

    async def boom(self, request: Request) -> Response:
        self.seen.append(request)
        raise RuntimeError("kaput")


@pytest.fixture
def app() -> App:
    return App()


def get(path: str, *headers: str, version: str = "1.1") -> bytes:
    return "".join([f"GET {path} HTTP/{version}\r\n", *(h + "\r\n" for h in headers), "\r\n"]).encode()


def post(path: str, body: bytes, *headers: str) -> bytes:
    head = "".join([f"POST {path} HTTP/1.1\r\n", f"Content-Length: {len(body)}\r\n", *(h + "\r\n" for h in headers),
                    "\r\n"])
    return head.encode() + body


# --------------------------------------------------------------------------- simple requests, exact bytes


def test_get_answers_exact_bytes_with_cors_echoing_the_origin(run, app):
    async def main():
        c = Client(app)
        c.send(get("/ping", "Host: x", "Origin: https://ui.example"))
        assert c.raw == (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n"
                         b"access-control-allow-origin: https://ui.example\r\n\r\n{\"ok\":true}")
        assert not c.transport.closing
        c.transport.written.clear()
        c.send(get("/p%69ng"))  # percent-decoded before routing; no Origin: "*"
        assert c.raw == (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n"
                         b"access-control-allow-origin: *\r\n\r\n{\"ok\":true}")

    run(main())
    assert [r.method for r in app.seen] == ["GET", "GET"] and app.seen[1].path == "/ping"


def test_post_passes_body_query_and_headers_and_answers_exact_bytes(run, app):
    async def main():
        c = Client(app)
        c.send(post("/echo?x=1&y=%20", b"hello", "Content-Type: text/plain", "X-Custom: Yes"))
        assert c.raw == (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 5\r\n"
                         b"access-control-allow-origin: *\r\nx-query: x=1&y=%20\r\n\r\nhello")

    run(main())
    (request,) = app.seen
    assert (request.method, request.path, request.query, request.body) == ("POST", "/echo", "x=1&y=%20", b"hello")
    assert request.headers[b"x-custom"] == b"Yes"  # names lower-cased, values as sent
    assert request.headers[b"content-type"] == b"text/plain"


def test_a_large_response_body_arrives_whole(run, app):
    body = bytes(range(256)) * 400  # over the 64 KiB high-water mark: written separately

    async def main():
        c = Client(app, max_body=len(body))
        c.send(post("/echo", body))
        return c.replies()

    (reply,) = run(main())
    assert reply.status == 200 and reply.body == body and reply.headers[b"content-length"] == str(len(body)).encode()


# --------------------------------------------------------------------------- keep-alive


CLOSING = [get("/ping", "Connection: close"), get("/ping", "Connection: Close"), get("/ping", version="1.0")]
KEEPING = [get("/ping"), get("/ping", "Connection: keep-alive", version="1.0")]


@pytest.mark.parametrize("request_bytes", KEEPING, ids=["http/1.1", "http/1.0-keep-alive"])
def test_keep_alive_keeps_the_connection_for_the_next_request(run, app, request_bytes):
    async def main():
        c = Client(app)
        c.send(request_bytes)
        c.send(get("/ping"))
        await asyncio.sleep(0)
        return c

    c = run(main())
    replies = c.replies()
    assert [r.status for r in replies] == [200, 200]
    assert all(b"connection" not in r.headers for r in replies)
    assert not c.transport.closing and c.protocol in c.state.connections


@pytest.mark.parametrize("request_bytes", CLOSING, ids=["close", "Close", "http/1.0"])
def test_connection_close_and_http_1_0_close_after_the_response(run, app, request_bytes):
    async def main():
        c = Client(app)
        c.send(request_bytes)
        await asyncio.sleep(0)
        return c

    c = run(main())
    (reply,) = c.replies()
    assert reply.status == 200 and reply.headers[b"connection"] == b"close"
    assert c.transport.closing and c.protocol.closed and c.protocol not in c.state.connections
    assert c.transport.late_writes == []


@pytest.mark.parametrize("request_bytes", CLOSING, ids=["close", "Close", "http/1.0"])
def test_a_request_pipelined_behind_a_closing_one_gets_nothing(run, app, request_bytes):
    async def main():
        c = Client(app)
        c.send(request_bytes + get("/ping"))
        await asyncio.sleep(0)
        return c

    c = run(main())
    (reply,) = c.replies()
    assert reply.status == 200 and c.transport.closing
    assert c.transport.late_writes == []


# --------------------------------------------------------------------------- pipelining


def test_pipelined_requests_are_answered_in_order(run, app):
    async def main():
        c = Client(app)
        c.send(b"".join(post(f"/echo?i={i}", str(i).encode()) for i in range(5)) + get("/ping"))
        return c.replies()

    replies = run(main())
    assert [r.headers.get(b"x-query") for r in replies] == [b"i=0", b"i=1", b"i=2", b"i=3", b"i=4", None]
    assert [r.body for r in replies[:5]] == [b"0", b"1", b"2", b"3", b"4"]


def test_a_request_behind_a_suspended_handler_waits_its_turn(run, app):
    async def main():
        c = Client(app)
        c.send(get("/slow") + post("/echo?i=1", b"one") + get("/ping"))
        await until(lambda: app.gate.calls)
        for _ in range(3):
            await asyncio.sleep(0)  # a few loop turns: nothing may overtake the parked handler
        assert c.raw == b"" and app.seen == [] and len(c.protocol.pipeline) == 2
        app.gate.release(body=b"first")
        await until(lambda: len(c.replies()) == 3)
        return c.replies()

    replies = run(main())
    assert [r.body for r in replies] == [b"first", b"one", b'{"ok":true}']


def test_a_deep_pipeline_behind_a_suspended_handler_drains_in_a_loop_not_by_recursion(run, app):
    # the transport ignores pause_reading here in effect (the client keeps sending): requests that
    # answer within their eager start are run one after the other, the stack stays flat
    async def main():
        c = Client(app)
        c.send(get("/slow") + b"".join(post(f"/echo?i={i}", b"x") for i in range(3000)))
        await until(lambda: app.gate.calls)
        app.gate.release(body=b"first")
        await until(lambda: len(c.replies()) == 3001)
        return c.replies()

    replies = run(main())
    assert replies[0].body == b"first"
    assert [r.headers[b"x-query"] for r in replies[1:]] == [f"i={i}".encode() for i in range(3000)]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_fragmented_input_gives_the_same_answers_at_every_split(run, app, chunked):
    if chunked:
        first = (b"POST /echo?q=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    else:
        first = post("/echo?q=1", b"hello world", "Host: x", "Origin: https://o.example")
    stream = first + get("/ping", "Accept: */*")

    async def main():
        whole = Client(app)
        whole.send(stream)
        expected = whole.raw
        assert [r.body for r in parse_replies(expected)] == [b"hello world", b'{"ok":true}']
        for cut in range(1, len(stream)):
            c = Client(app)
            c.send(stream[:cut], stream[cut:])
            assert c.raw == expected, f"split at byte {cut}"
        c = Client(app)
        c.send(*(stream[i:i + 1] for i in range(len(stream))))  # one byte at a time
        assert c.raw == expected

    run(main())


def test_chunked_request_body_is_joined(run, app):
    async def main():
        c = Client(app)
        c.send(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n",
               b"E\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n")
        return c.replies()

    (reply,) = run(main())
    assert reply.status == 200 and reply.body == b"Wikipedia in\r\n\r\nchunks."


# --------------------------------------------------------------------------- Expect and limits


def test_expect_100_continue_is_answered_before_the_body(run, app):
    async def main():
        c = Client(app)
        c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert c.raw == b"HTTP/1.1 100 Continue\r\n\r\n" and app.seen == []
        c.send(b"hello")
        return c.replies()

    interim, final = run(main())
    assert interim.status == 100 and final.status == 200 and final.body == b"hello"


def test_a_body_of_exactly_max_body_is_accepted(run, app):
    async def main():
        a, b = Client(app), Client(app)
        a.send(post("/echo", b"x" * MAX_BODY))
        b.send(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n" + b"y" * 32 + b"\r\n20\r\n"
               + b"y" * 32 + b"\r\n0\r\n\r\n")
        return a.replies(), b.replies()

    (a,), (b,) = run(main())
    assert a.status == b.status == 200 and a.body == b"x" * MAX_BODY and b.body == b"y" * MAX_BODY


def _assert_rejected(c: Client, app: App, status: int, message: str) -> Reply:
    (reply,) = c.replies()
    assert reply.status == status and message in reply.body.decode()
    assert reply.headers[b"connection"] == b"close"
    assert c.transport.closing and app.seen == []
    return reply


@pytest.mark.parametrize("body_follows", [
    False,
    pytest.param(True),
], ids=["headers-only", "body-in-same-read"])
def test_a_content_length_over_max_body_is_413_and_closes(run, app, body_follows):
    async def main():
        c = Client(app)
        c.send(b"POST /echo HTTP/1.1\r\nContent-Length: 65\r\nExpect: 100-continue\r\n\r\n"
               + (b"z" * 65 if body_follows else b""))
        await asyncio.sleep(0)
        return c

    c = run(main())
    reply = _assert_rejected(c, app, 413, f"request body of 65 bytes is over the limit of {MAX_BODY} bytes")
    assert reply.headers[b"content-type"] == TEXT
    assert not c.raw.startswith(b"HTTP/1.1 100"), "no 100 Continue for a body that will be refused"
    assert c.transport.late_writes == []


@pytest.mark.parametrize("extra_chunks", [
    0,
    pytest.param(2),
], ids=["limit-crossed-by-the-last-chunk", "more-chunks-follow"])
def test_a_chunked_body_over_max_body_is_413_and_closes(run, app, extra_chunks):
    async def main():
        c = Client(app)
        c.send(b"POST /api/v1.0/predictions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"20\r\n" + b"a" * 32 + b"\r\n" + b"21\r\n" + b"b" * 33 + b"\r\n"
               + b"3\r\nccc\r\n" * extra_chunks + b"0\r\n\r\n" + get("/ping"))
        await asyncio.sleep(0)
        return c

    c = run(main())
    reply = _assert_rejected(c, app, 413, f"request body is over the limit of {MAX_BODY} bytes")
    # rendered for the request's path: Seldon's status JSON under /api
    assert json.loads(reply.body)["status"] == {
        "code": 413, "info": f"request body is over the limit of {MAX_BODY} bytes", "reason": "MICROSERVICE_BAD_DATA"}
    assert c.transport.late_writes == []


@pytest.mark.parametrize("garbage, message", [
    (b"GARBAGE\r\n\r\n", "Invalid method"),
    (b"GET /ping HTTP/1.1\r\nHost x\r\n\r\n", "Invalid header token"),
    (b"POST /echo HTTP/1.1\r\nContent-Length: abc\r\n\r\n", "Content-Length"),
    (b"GET /ping HTTP/9.9\r\n\r\n", "malformed HTTP request"),
])
def test_a_malformed_request_is_400_and_closes(run, app, garbage, message):
    async def main():
        c = Client(app)
        c.send(garbage)
        await asyncio.sleep(0)
        return c

    c = run(main())
    reply = _assert_rejected(c, app, 400, "malformed HTTP request")
    assert message in reply.body.decode()
    assert c.protocol.closed and c.transport.late_writes == []


def test_a_good_request_before_garbage_is_still_answered(run, app):
    async def main():
        c = Client(app)
        c.send(get("/ping") + b"\x00\x01 nonsense\r\n\r\n" + get("/ping"))
        return c

    c = run(main())
    assert [r.status for r in c.replies()] == [200, 400]
    assert c.transport.closing and len(app.seen) == 1


UPGRADE = get("/echo", "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13")


def test_a_protocol_upgrade_is_refused_and_closes(run, app):
    async def main():
        c = Client(app)
        c.send(UPGRADE + get("/ping"))
        await asyncio.sleep(0)
        return c

    c = run(main())
    last = c.replies()[-1]
    assert last.status == 400 and last.body == b"protocol upgrades are not supported"
    assert last.headers[b"connection"] == b"close" and c.transport.closing
    assert all(r.path == "/echo" for r in app.seen), "nothing after the upgrade request is served"
    assert c.transport.late_writes == []


def test_a_refused_upgrade_never_reaches_the_handler(run, app):
    async def main():
        c = Client(app)
        c.send(UPGRADE)
        return c

    c = run(main())
    assert [r.status for r in c.replies()] == [400] and app.seen == []


# --------------------------------------------------------------------------- routing errors and CORS


def test_unknown_route_and_wrong_method_render_with_the_prefix_renderer(run, app):
    async def main():
        c = Client(app)
        c.send(get("/v2/models/m/nothing"), get("/api/v1.0/predictions"), get("/elsewhere"), get("/ping"))
        return c

    c = run(main())
    v2, seldon, plain, ok = c.replies()
    assert v2.status == 404 and v2.headers[b"content-type"] == b"application/json"
    assert json.loads(v2.body) == {"error": "Not Found: no route for GET /v2/models/m/nothing"}
    assert seldon.status == 405 and json.loads(seldon.body)["status"] == {
        "code": 405, "info": "Method GET not allowed for /api/v1.0/predictions; use POST",
        "reason": "MICROSERVICE_BAD_DATA"}
    assert plain.status == 404 and plain.headers[b"content-type"] == TEXT
    assert plain.body == b"Not Found: no route for GET /elsewhere"
    assert ok.status == 200 and not c.transport.closing, "a routing error keeps the connection"


def test_renderers_longest_prefix_wins_and_can_be_replaced():
    router = Router()
    router.set_error_renderer("/v2", lambda exc: Response(exc.http_status, b"v2"))
    router.set_error_renderer("/v2/models/special", lambda exc: Response(exc.http_status, b"special"))
    router.set_error_renderer("", lambda exc: Response(exc.http_status, b"root"))
    assert router.render_error("/v2/models/special/infer", NotFound()).body == b"special"
    assert router.render_error("/v2/models/other", NotFound()).body == b"v2"
    assert router.render_error("/x", NotFound()).body == b"root"
    assert router.render_error(None, NotFound()).body == b"root"
    router.set_error_renderer("/v2", lambda exc: Response(exc.http_status, b"v2-again"))
    assert router.render_error("/v2/models/other", NotFound()).body == b"v2-again"


def test_options_preflight_answers_for_any_path_without_a_handler(run, app):
    async def main():
        c = Client(app)
        c.send(b"OPTIONS /v2/models/m/infer HTTP/1.1\r\nOrigin: https://ui.example\r\n"
               b"Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type, x-id\r\n\r\n")
        first = c.raw
        c.transport.written.clear()
        c.send(b"OPTIONS /ping HTTP/1.1\r\n\r\n")
        return first, c.raw

    first, second = run(main())
    assert first == (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 0\r\n"
                     b"access-control-allow-origin: https://ui.example\r\n"
                     b"access-control-allow-methods: GET, POST, OPTIONS\r\n"
                     b"access-control-allow-headers: content-type, x-id\r\n\r\n")
    assert second == (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 0\r\n"
                      b"access-control-allow-origin: *\r\naccess-control-allow-methods: GET, POST, OPTIONS\r\n\r\n")
    assert app.seen == []


# --------------------------------------------------------------------------- handler failures


def test_an_unexpected_exception_is_500_and_the_connection_keeps_working(run, app, caplog):
    async def main():
        c = Client(app)
        c.send(get("/boom"), get("/ping"))
        c.send(get("/slow"))
        await until(lambda: app.gate.calls)
        app.gate.calls[0][1].set_exception(ValueError("late kaput"))  # raised after the handler suspended
        await until(lambda: len(c.replies()) == 3)
        c.send(get("/ping"))
        return c

    with caplog.at_level(logging.ERROR, logger="fastseldon.http"):
        c = run(main())
    boom, ok, late, ok_again = c.replies()
    assert (boom.status, boom.body) == (500, b"kaput") and b"connection" not in boom.headers
    assert (late.status, late.body) == (500, b"late kaput")
    assert ok.status == ok_again.status == 200 and not c.transport.closing
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert [r.getMessage() for r in failures] == ["handler for GET /boom failed", "handler for GET /slow failed"]
    assert all(r.exc_info for r in failures), "the traceback goes to the log"


def test_early_disconnect_while_a_handler_is_suspended(run, app):
    async def main():
        c = Client(app)
        c.send(get("/slow") + get("/ping"))
        await until(lambda: app.gate.calls)
        c.transport.peer_reset()
        assert c.protocol not in c.state.connections and not c.protocol.pipeline
        app.gate.release()
        await until(lambda: app.gate.returned == 1)
        return c

    c = run(main())  # the harness fails on any error the loop saw
    assert c.raw == b"" and c.transport.late_writes == []
    assert app.seen == [], "the request queued behind it is dropped with the connection"


# --------------------------------------------------------------------------- flow control


def _pipelined_behind_a_parked_handler(c: Client, app: App, queued: int) -> None:
    c.send(get("/slow") + b"".join(get(f"/echo?i={i}") for i in range(queued)))


def test_reading_pauses_when_more_than_64_requests_queue_and_resumes_as_they_drain(run, app):
    async def main():
        c = Client(app)
        _pipelined_behind_a_parked_handler(c, app, 64)
        assert len(c.protocol.pipeline) == 64 and c.transport.pauses == 0
        c.send(get("/echo?i=64"))
        assert c.transport.pauses == 1 and not c.transport.reading
        c.send(get("/echo?i=65"))
        assert c.transport.pauses == 1, "pausing is idempotent"
        await until(lambda: app.gate.calls)
        app.gate.release()
        await until(lambda: len(c.replies()) == 67)
        return c

    c = run(main())
    replies = c.replies()
    assert replies[0].body == b"released"
    assert [r.headers[b"x-query"] for r in replies[1:]] == [f"i={i}".encode() for i in range(66)]
    assert c.transport.reading and c.transport.resumes == 1


def test_pause_writing_pauses_reading_until_resume_writing(run, app):
    async def main():
        c = Client(app)
        c.protocol.pause_writing()
        c.protocol.pause_writing()
        assert (c.transport.pauses, c.transport.reading) == (1, False)
        c.protocol.resume_writing()
        assert (c.transport.resumes, c.transport.reading) == (1, True)

        # paused for the pipeline, then for writing: draining the pipeline must not resume reading
        _pipelined_behind_a_parked_handler(c, app, 70)
        assert c.transport.pauses == 2
        c.protocol.pause_writing()
        assert c.transport.pauses == 2
        await until(lambda: app.gate.calls)
        app.gate.release()
        await until(lambda: len(c.replies()) == 71)
        assert not c.transport.reading, "still paused: the transport's buffer is full"
        c.protocol.resume_writing()
        assert c.transport.reading and c.transport.resumes == 2

    run(main())


# --------------------------------------------------------------------------- idle timeout and shutdown


def test_close_idle_closes_after_the_keepalive_timeout_but_never_a_busy_connection(run, app):
    async def main():
        loop = asyncio.get_running_loop()
        clock = FakeClock(loop, now=1000.0)
        state = ServerState()
        idle, busy = Client(app, state, loop=clock), Client(app, state, loop=clock)
        never = Client(app, state, keepalive_timeout=0, loop=clock)  # 0: no idle timeout
        clock.now = 1001.0
        idle.send(get("/ping"))
        busy.send(get("/slow"))
        await until(lambda: app.gate.calls)
        close_idle(state, 1005.9)
        assert not idle.transport.closing
        close_idle(state, 1006.1)
        assert idle.transport.closing and not busy.transport.closing and not never.transport.closing
        close_idle(state, 1e9)
        assert not busy.transport.closing and not never.transport.closing
        clock.now = 2000.0
        app.gate.release()
        await until(lambda: busy.replies())
        close_idle(state, 2004.9)
        assert not busy.transport.closing
        close_idle(state, 2005.1)
        assert busy.transport.closing and not never.transport.closing
        await asyncio.sleep(0)
        assert state.connections == {never.protocol}

    run(main())


def test_shutdown_closes_idle_connections_and_ends_the_in_flight_one_with_connection_close(run, app):
    async def main():
        state = ServerState()
        idle, busy = Client(app, state), Client(app, state)
        idle.send(get("/ping"))
        busy.send(get("/slow") + get("/ping"))
        await until(lambda: app.gate.calls)
        state.closing = True  # as drain() does before asking each connection
        for conn in list(state.connections):
            conn.shutdown()
        assert idle.transport.closing and not busy.transport.closing
        app.gate.release()
        await until(lambda: busy.transport.closing)
        return idle, busy

    idle, busy = run(main())
    assert [r.status for r in idle.replies()] == [200] and b"connection" not in idle.replies()[0].headers
    (reply,) = busy.replies()  # the queued request is not started once shutdown began
    assert reply.body == b"released" and reply.headers[b"connection"] == b"close"
    assert len(app.seen) == 1 and busy.transport.late_writes == []


def test_drain_waits_for_in_flight_requests_then_aborts_what_is_left(run, app):
    class Listener:
        closed = False

        def close(self) -> None:
            self.closed = True

    async def main():
        state = ServerState()
        idle, finishing, stuck = Client(app, state), Client(app, state), Client(app, state)
        finishing.send(get("/slow"))
        stuck.send(get("/slow"))
        await until(lambda: len(app.gate.calls) == 2)
        listener = Listener()
        draining = asyncio.ensure_future(drain(listener, state, timeout=0.15))
        await until(lambda: idle.transport.closing)
        assert listener.closed and not finishing.transport.closing
        app.gate.release(0, b"finished")
        await draining
        app.gate.release(1, b"too late")  # the stuck handler ends after its connection was aborted
        await until(lambda: app.gate.returned == 2)
        return idle, finishing, stuck, state

    idle, finishing, stuck, state = run(main())
    assert not idle.transport.aborted and not finishing.transport.aborted
    (reply,) = finishing.replies()
    assert reply.body == b"finished" and reply.headers[b"connection"] == b"close"
    assert stuck.transport.aborted and stuck.raw == b"" and stuck.transport.late_writes == []
    assert state.connections == set()


# --------------------------------------------------------------------------- request line and header limits (issue 17)


LIMITS = {"max_request_line": 64, "max_header_bytes": 256, "max_headers": 5}


@pytest.mark.parametrize("split", [False, True], ids=["one-read", "byte-by-byte"])
def test_a_request_line_over_the_limit_is_414_and_closes(run, app, split):
    request = get("/v2/" + "a" * 80)

    async def main():
        c = Client(app, **LIMITS)
        c.send(*((request[i:i + 1] for i in range(len(request))) if split else (request,)))
        await asyncio.sleep(0)
        return c

    c = run(main())
    reply = _assert_rejected(c, app, 414, "request line is over the limit of 64 bytes")
    assert json.loads(reply.body) == {"error": "request line is over the limit of 64 bytes"}  # rendered for its /v2 path
    assert c.raw.startswith(b"HTTP/1.1 414 URI Too Long\r\n")


def test_a_request_line_at_the_limit_is_served(run, app):
    async def main():
        c = Client(app, **LIMITS)
        c.send(get("/echo?" + "q" * (64 - len("/echo?"))))
        return c.replies()

    (reply,) = run(main())
    assert reply.status == 200


@pytest.mark.parametrize("headers, message", [
    ([f"X-H{i}: v" for i in range(6)], "more than 5 request header fields"),
    (["Cookie: " + "c" * 300], "request header fields of"),
    (["A: " + "a" * 100, "B: " + "b" * 100, "C: " + "c" * 100], "over the limit of 256 bytes"),
], ids=["count", "one-big", "total"])
@pytest.mark.parametrize("split", [False, True], ids=["one-read", "byte-by-byte"])
def test_headers_over_the_limits_are_431_and_close(run, app, headers, message, split):
    request = get("/ping", *headers)

    async def main():
        c = Client(app, **LIMITS)
        c.send(*((request[i:i + 1] for i in range(len(request))) if split else (request,)))
        await asyncio.sleep(0)
        return c

    c = run(main())
    _assert_rejected(c, app, 431, message)
    assert c.raw.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


def test_headers_at_the_limits_are_served(run, app):
    async def main():
        c = Client(app, **LIMITS)
        c.send(get("/ping", *(f"X-H{i}: v" for i in range(5))), get("/ping", "Cookie: " + "c" * 200))
        return c.replies()

    assert [r.status for r in run(main())] == [200, 200]


def test_a_never_ending_header_is_cut_off_after_a_bounded_amount(run, app):
    """httptools joins a header split over reads by concatenation (quadratic): what it may hold is bounded."""
    chunk = b"f" * 4096

    async def main():
        c = Client(app, **LIMITS)
        c.send(b"GET /ping HTTP/1.1\r\nX-Flood: ")
        fed = 0
        while not c.transport.closing and fed < 64 * 2**20:
            c.send(chunk)
            fed += len(chunk)
        await asyncio.sleep(0)
        return c, fed

    c, fed = run(main())
    _assert_rejected(c, app, 431, "request header fields are over the limit of 256 bytes")
    assert fed <= 64 + 256 + 256 * 1024 + len(chunk)


def test_large_bodies_do_not_count_as_header_bytes(run, app):
    """A read that carries a small request's head with a large body, or a body's end with the next
    head, is not mistaken for a large head."""
    big = b"x" * 60

    async def main():
        c = Client(app, max_body=4096, **LIMITS)
        body = big * 60
        c.send(post("/echo", body)[:-10])
        c.send(post("/echo", body)[-10:] + post("/echo", b"1")[:20])  # the end of one, the start of the next
        c.send(post("/echo", b"1")[20:])
        return c.replies()

    assert [r.status for r in run(main())] == [200, 200]


# --------------------------------------------------------------------------- slow clients and request timeout (issue 17)


def test_headers_not_finished_in_time_get_408_and_more_bytes_do_not_restart_the_clock(run, app):
    async def main():
        loop = asyncio.get_running_loop()
        clock = FakeClock(loop, now=1000.0)
        state = ServerState()
        c = Client(app, state, loop=clock, header_timeout=5.0)
        clock.now = 1001.0
        c.send(b"GET /ping HTTP/1.1\r\nHost")
        for second in range(1002, 1006):
            clock.now = float(second)
            c.send(b"x")  # slowloris: a byte now and then
            close_idle(state, clock.now)
            assert not c.transport.closing
        close_idle(state, 1006.1)
        await asyncio.sleep(0)
        return c

    c = run(main())
    reply = _assert_rejected(c, app, 408, "request headers not received within 5s")
    assert reply.body == b"request headers not received within 5s"


def test_a_body_that_stalls_gets_408_but_a_slow_steady_one_does_not(run, app):
    async def main():
        loop = asyncio.get_running_loop()
        clock = FakeClock(loop, now=1000.0)
        state = ServerState()
        steady = Client(app, state, loop=clock, body_timeout=5.0)
        stalled = Client(app, state, loop=clock, body_timeout=5.0)
        head = b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\n"
        steady.send(head)
        stalled.send(head + b"ab")
        for second in range(1001, 1010):
            clock.now = float(second)
            if second < 1009:
                steady.send(b"s")  # a byte a second: slow, never idle for 5 s
            close_idle(state, clock.now)
        steady.send(b"ss")
        await asyncio.sleep(0)
        return steady, stalled

    steady, stalled = run(main())
    assert [r.status for r in steady.replies()] == [200] and steady.replies()[0].body == b"s" * 10
    assert not steady.transport.closing
    (reply,) = stalled.replies()
    assert reply.status == 408 and b"request body stalled for more than 5s" in reply.body and stalled.transport.closing


def test_request_timeout_answers_504_cancels_the_handler_and_the_connection_carries_on(run, app):
    async def main():
        state = ServerState()
        c = Client(app, state, request_timeout=1.0)
        c.send(get("/slow") + get("/ping"))
        await until(lambda: app.gate.calls)
        close_idle(state, 0.0)
        assert c.raw == b"", "not yet"
        c.protocol.started -= 2.0  # as if it had been running for 2 s
        close_idle(state, 0.0)
        await until(lambda: len(c.replies()) == 2)
        parked = app.gate.calls[0][1]
        await asyncio.sleep(0)
        return c, parked

    c, parked = run(main())
    timed_out, ping = c.replies()
    assert timed_out.status == 504 and timed_out.body == b"request timed out after 1s"
    assert b"connection" not in timed_out.headers and ping.status == 200 and not c.transport.closing
    assert parked.cancelled(), "what the handler waited for is cancelled: a pool call not started never starts"
    assert app.gate.returned == 0


def test_an_eager_handler_is_never_timed_out(run, app):
    async def main():
        state = ServerState()
        c = Client(app, state, request_timeout=0.001)
        c.send(get("/ping"))
        close_idle(state, 0.0)
        return c.replies()

    assert [r.status for r in run(main())] == [200]


# --------------------------------------------------------------------------- draining and the start-up router (issue 17)


def test_drain_with_idle_grace_answers_a_busy_client_with_close_instead_of_racing_it(run, app):
    class Listener:
        def close(self) -> None:
            pass

    async def main():
        state = ServerState()
        chatty, quiet, arriving = Client(app, state), Client(app, state), Client(app, state)
        chatty.send(get("/ping"))
        quiet.send(get("/ping"))
        arriving.send(b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\n\r\nab")  # the body's second half is on its way
        draining = asyncio.ensure_future(drain(Listener(), state, timeout=5.0, idle_grace=0.2))
        await asyncio.sleep(0.05)
        assert not chatty.transport.closing and not quiet.transport.closing
        chatty.send(get("/ping"))  # the client's next request, sent as the drain began
        arriving.send(b"cd")
        await until(lambda: quiet.transport.closing, timeout=2)
        await draining
        return chatty, quiet, arriving

    chatty, quiet, arriving = run(main())
    first, second = chatty.replies()
    assert first.status == second.status == 200 and second.headers[b"connection"] == b"close"
    assert [r.status for r in quiet.replies()] == [200]
    (echoed,) = arriving.replies()
    assert echoed.body == b"abcd" and echoed.headers[b"connection"] == b"close"


def test_swap_router_serves_the_new_routes_on_open_connections(run, app):
    async def main():
        starting = Router()

        async def loading(request: Request) -> Response:
            return Response(503, b"loading", TEXT)

        starting.add(("GET",), ("/ping",), loading)
        state = ServerState(starting)
        c = Client(App(), state)
        c.protocol.router = starting
        c.send(get("/ping"))
        state.swap_router(app.router)
        c.send(get("/ping"))
        return c.replies()

    loading_reply, ready_reply = run(main())
    assert (loading_reply.status, loading_reply.body) == (503, b"loading") and ready_reply.status == 200
