"""The REST front: HTTP/1.1 on uvloop with httptools' parser.

One ``HttpProtocol`` per connection (the uvicorn layout: asyncio callbacks, then parser
callbacks). Handlers are coroutines taking a ``Request`` and returning a ``Response``; they
are started *eagerly*, so a handler that never awaits anything (the usual case: a cheap
sync predict) answers within ``data_received`` without creating a Task. Pipelined requests
queue behind a running one and are answered in order.

The front knows routes, status codes, keep-alive and limits; it never looks inside a body.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httptools

from fastseldon.errors import BadRequest, FastSeldonError, InternalError, MethodNotAllowed, NotFound, PayloadTooLarge

log = logging.getLogger(__name__)
access_log = logging.getLogger("fastseldon.access")

HIGH_WATER = 64 * 1024
_REASONS = {
    100: "Continue", 200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 413: "Payload Too Large", 415: "Unsupported Media Type", 418: "I'm a teapot",
    422: "Unprocessable Entity", 500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
}
STATUS_LINE = {code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in _REASONS.items()}
JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[bytes, bytes]
    body: bytes


@dataclass(slots=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: bytes = JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Handler = Callable[[Request], Coroutine[Any, Any, Response]]
ErrorRenderer = Callable[[FastSeldonError], Response]


def plain_error(exc: FastSeldonError) -> Response:
    """The renderer of last resort: the message as text (protocols register their own)."""
    return Response(exc.http_status, str(exc).encode("utf-8", "replace"), TEXT)


class Router:
    """Exact paths first, then prefix matchers (for routes with names in them, like V2's).

    Each protocol registers the error renderer for its paths (longest prefix wins), so an
    unknown route or a malformed request is answered in the body format its client reads.
    """

    def __init__(self) -> None:
        self.exact: dict[str, dict[str, Handler]] = {}
        self.matchers: list[Callable[[str, str], Handler | None]] = []
        self._renderers: list[tuple[str, ErrorRenderer]] = [("", plain_error)]

    def add(self, methods: tuple[str, ...], paths: tuple[str, ...], handler: Handler) -> None:
        for path in paths:
            table = self.exact.setdefault(path, {})
            for method in methods:
                table[method] = handler

    def add_matcher(self, matcher: Callable[[str, str], Handler | None]) -> None:
        self.matchers.append(matcher)

    def set_error_renderer(self, prefix: str, renderer: ErrorRenderer) -> None:
        """Errors on paths starting with ``prefix`` ("" for every path) render with ``renderer``."""
        self._renderers = [(p, r) for p, r in self._renderers if p != prefix] + [(prefix, renderer)]
        self._renderers.sort(key=lambda entry: len(entry[0]), reverse=True)

    def render_error(self, path: str | None, exc: FastSeldonError) -> Response:
        path = path or ""
        for prefix, renderer in self._renderers:
            if path.startswith(prefix):
                return renderer(exc)
        return plain_error(exc)

    def resolve(self, method: str, path: str) -> Handler:
        table = self.exact.get(path)
        if table is not None:
            handler = table.get(method)
            if handler is None:
                raise MethodNotAllowed(f"Method {method} not allowed for {path}; use {', '.join(sorted(table))}")
            return handler
        for matcher in self.matchers:
            handler = matcher(method, path)
            if handler is not None:
                return handler
        raise NotFound(f"Not Found: no route for {method} {path}")


def _preflight(request: Request) -> Response:
    headers = [(b"access-control-allow-methods", b"GET, POST, OPTIONS")]
    wanted = request.headers.get(b"access-control-request-headers")
    if wanted:
        headers.append((b"access-control-allow-headers", wanted))
    return Response(200, b"", TEXT, headers)


class ServerState:
    """What all connections of one worker share: live connections and the shutdown flag."""

    def __init__(self) -> None:
        self.connections: set[HttpProtocol] = set()
        self.closing = False


def _encode_head(resp: Response, keep_alive: bool, origin: bytes | None = None) -> bytes:
    line = STATUS_LINE.get(resp.status) or f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Status')}\r\n".encode()
    # CORS as Seldon's flask-cors answers: the caller's Origin echoed back, else "*".
    parts = [line, b"content-type: ", resp.content_type, b"\r\ncontent-length: ", str(len(resp.body)).encode(),
             b"\r\naccess-control-allow-origin: ", origin or b"*"]
    for name, value in resp.headers:
        parts += (b"\r\n", name, b": ", value)
    parts.append(b"\r\n\r\n" if keep_alive else b"\r\nconnection: close\r\n\r\n")
    return b"".join(parts)


class HttpProtocol(asyncio.Protocol):
    def __init__(self, router: Router, state: ServerState, loop: asyncio.AbstractEventLoop, *, max_body: int,
                 keepalive_timeout: float, access: bool = False):
        # shared by every connection
        self.router = router
        self.state = state
        self.loop = loop
        self.max_body = max_body
        self.keepalive_timeout = keepalive_timeout
        self.access = access
        # per connection
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pipeline: deque[Request] = deque()
        self.busy = False
        self.idle_since: float | None = None  # loop time the connection went idle; None while busy
        self.reading_paused = False
        self.writing_paused = False
        self.closed = False
        self.closing = False  # a request without keep-alive was read: nothing after it is served
        # per request
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.body_size = 0
        self.rejected = False

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.state.connections.add(self)
        self.idle_since = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.connections.discard(self)
        self.pipeline.clear()

    def data_received(self, data: bytes) -> None:
        if self.idle_since is not None:
            self.idle_since = self.loop.time()  # a request is arriving: its clock restarts
        if self.rejected or self.closing:
            return  # the stream is being closed: whatever follows is not read
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self.closing:  # bytes after a "Connection: close" request are dropped, not answered
                self._reject(400, f"malformed HTTP request: {exc}")

    def pause_writing(self) -> None:
        self.writing_paused = True
        if not self.reading_paused and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.reading_paused and self.transport is not None:
            self.transport.resume_reading()
            self.reading_paused = False

    # -- parser callbacks

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = []
        self.body_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        length = self.headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            self._reject(413, f"request body of {int(length)} bytes is over the limit of {self.max_body} bytes")
            return
        if self.headers.get(b"expect", b"").lower() == b"100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        if self.rejected:
            return
        self.body_size += len(chunk)
        if self.body_size > self.max_body:
            self._reject(413, f"request body is over the limit of {self.max_body} bytes")
            return
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        if self.rejected or self.parser.should_upgrade():
            return  # an upgrade is refused in data_received; its handler never runs
        url = self.url
        qpos = url.find(b"?")
        if qpos >= 0:
            path, query = url[:qpos].decode("latin-1"), url[qpos + 1:].decode("latin-1")
        else:
            path, query = url.decode("latin-1"), ""
        if "%" in path:
            path = unquote(path)
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        if not self.parser.should_keep_alive():
            self.headers[b"connection"] = b"close"
            self.closing = True
        request = Request(self.parser.get_method().decode("latin-1"), path, query, self.headers, body)
        if self.busy:
            self.pipeline.append(request)
            if len(self.pipeline) > 64 and not self.reading_paused and self.transport is not None:
                self.transport.pause_reading()  # a client racing far ahead waits for its answers
                self.reading_paused = True
        else:
            self._start(request)

    # -- request cycle

    def _start(self, request: Request) -> None:
        self.busy = True
        self.idle_since = None
        started = time.perf_counter()
        if request.method == "OPTIONS":  # CORS preflight, for every route
            self._finish(request, _preflight(request), started)
            return
        try:
            handler = self.router.resolve(request.method, request.path)
            coro = handler(request)
        except FastSeldonError as exc:
            self._finish(request, self.router.render_error(request.path, exc), started)
            return
        try:
            waiting = coro.send(None)
        except StopIteration as done:
            self._finish(request, done.value, started)
            return
        except Exception as exc:  # noqa: BLE001 - handlers map their own errors; this is a bug
            log.exception("handler for %s %s failed", request.method, request.path)
            self._finish(request, self.router.render_error(request.path, InternalError(str(exc))), started)
            return
        self.loop.create_task(self._resume(request, coro, waiting, started))

    async def _resume(self, request: Request, coro: Any, waiting: Any, started: float) -> None:
        """Carry on a handler that suspended during its eager start (Python 3.12's eager tasks, by hand)."""
        try:
            while True:
                if waiting is None:
                    await asyncio.sleep(0)
                else:
                    # The handler's own await already flagged the future as blocking; hand it to
                    # this task the way Task.__step would, then wait for it here.
                    waiting._asyncio_future_blocking = False
                    try:
                        await waiting
                    except BaseException:  # noqa: BLE001 - the handler reads the outcome itself
                        pass
                waiting = coro.send(None)
        except StopIteration as done:
            response = done.value
        except Exception as exc:  # noqa: BLE001
            log.exception("handler for %s %s failed", request.method, request.path)
            response = self.router.render_error(request.path, InternalError(str(exc)))
        self._finish(request, response, started)

    def _finish(self, request: Request, response: Response, started: float) -> None:
        keep_alive = request.headers.get(b"connection", b"").lower() != b"close" and not self.state.closing
        if self.access:
            access_log.info('"%s %s" %d %.3fms', request.method, request.path, response.status,
                            (time.perf_counter() - started) * 1000)
        if self.closed or self.transport is None:
            return
        head = _encode_head(response, keep_alive, request.headers.get(b"origin"))
        self.transport.write(head + response.body if len(response.body) < HIGH_WATER else head)
        if len(response.body) >= HIGH_WATER:
            self.transport.write(response.body)
        if not keep_alive:
            self.pipeline.clear()
            self.transport.close()
            return
        self.busy = False
        if self.pipeline:
            next_request = self.pipeline.popleft()
            if self.reading_paused and len(self.pipeline) <= 16 and not self.writing_paused:
                self.transport.resume_reading()
                self.reading_paused = False
            self._start(next_request)
        else:
            self.idle_since = self.loop.time()

    def _reject(self, status: int, message: str) -> None:
        """Answer an unreadable or oversized request and close: the stream can't be trusted after it."""
        if self.rejected:
            return  # one answer per broken stream
        self.rejected = True
        if self.transport is None or self.closed:
            return
        exc = PayloadTooLarge(message) if status == 413 else BadRequest(message)
        response = self.router.render_error(self.url.decode("latin-1") or None, exc)
        self.transport.write(_encode_head(response, False) + response.body)
        self.transport.close()

    # -- shutdown

    def shutdown(self) -> None:
        """Close now if idle; otherwise the in-flight response goes out with connection: close."""
        if not self.busy and not self.pipeline and self.transport is not None:
            self.transport.close()


def close_idle(state: ServerState, now: float) -> None:
    """The keep-alive timeout, for all connections at once: one sweep per worker every half
    second instead of a timer armed and cancelled on every request. Keep it above the idle
    timeout of any proxy in front (nginx, ingress), or the proxy will reuse a closed socket."""
    for conn in list(state.connections):
        if conn.idle_since is not None and not conn.busy and now - conn.idle_since > conn.keepalive_timeout > 0:
            if conn.transport is not None:
                conn.transport.close()


async def serve(router: Router, sock: Any, *, max_body: int, keepalive_timeout: float, access: bool = False
                ) -> tuple[asyncio.AbstractServer, ServerState]:
    """Start accepting on an already bound socket (shared by all workers)."""
    loop = asyncio.get_running_loop()
    state = ServerState()

    def factory() -> HttpProtocol:
        return HttpProtocol(router, state, loop, max_body=max_body, keepalive_timeout=keepalive_timeout, access=access)

    server = await loop.create_server(factory, sock=sock, backlog=2048)
    return server, state


async def drain(server: asyncio.AbstractServer, state: ServerState, timeout: float) -> None:
    """Stop accepting, let in-flight requests finish (bounded), then close what is left."""
    state.closing = True
    server.close()
    for conn in list(state.connections):
        conn.shutdown()
    deadline = time.monotonic() + timeout
    while state.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    for conn in list(state.connections):
        if conn.transport is not None:
            conn.transport.abort()
