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
import select
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import unquote

import httptools

from fastseldon.errors import (
    BadRequest,
    DeadlineExceeded,
    FastSeldonError,
    HeadersTooLarge,
    InternalError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    UriTooLong,
)
from fastseldon.watchdog import activity

log = logging.getLogger(__name__)
access_log = logging.getLogger("fastseldon.access")

HIGH_WATER = 64 * 1024
_REASONS = {
    100: "Continue", 200: "OK", 204: "No Content", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 413: "Payload Too Large", 414: "URI Too Long", 415: "Unsupported Media Type", 418: "I'm a teapot",
    422: "Unprocessable Entity", 431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    503: "Service Unavailable", 504: "Gateway Timeout",
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
    request_id: str | None = None  # the request's puid or V2 id, for the access log


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
    """What all connections of one worker share: live connections, the router, the shutdown flag, a request count."""

    def __init__(self, router: Router | None = None) -> None:
        self.connections: set[HttpProtocol] = set()
        self.router = router
        self.closing = False
        self.served = 0  # requests answered, for --max-requests

    def swap_router(self, router: Router) -> None:
        """Serve ``router`` from now on, on open connections too (the worker's start-up router -> its app's)."""
        self.router = router
        for conn in self.connections:
            conn.router = router


_HEAD_STARTS: dict[tuple[int, bytes], bytes] = {}


def _head_start(status: int, content_type: bytes) -> bytes:
    """The status line and content-type, up to the length's digits (built once per pair)."""
    line = STATUS_LINE.get(status) or f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n".encode()
    start = line + b"content-type: " + content_type + b"\r\ncontent-length: "
    if len(_HEAD_STARTS) < 256:  # statuses and content types are a handful; a handler's odd one isn't kept
        _HEAD_STARTS[(status, content_type)] = start
    return start


def _encode_head(resp: Response, keep_alive: bool, origin: bytes | None = None) -> bytes:
    start = _HEAD_STARTS.get((resp.status, resp.content_type)) or _head_start(resp.status, resp.content_type)
    # CORS as Seldon's flask-cors answers: the caller's Origin echoed back, else "*".
    extra = b"".join(b"\r\n%b: %b" % header for header in resp.headers) if resp.headers else b""
    return b"%b%d\r\naccess-control-allow-origin: %b%b%b" % (
        start, len(resp.body), origin or b"*", extra, b"\r\n\r\n" if keep_alive else b"\r\nconnection: close\r\n\r\n")


# What the parser is reading on a connection (``HttpProtocol.reading``); the idle sweep times each.
IDLE, HEAD, BODY = 0, 1, 2
# httptools accumulates a header split over reads by concatenation: bound what it may hold, so
# a never-ending header costs at most this much past the limits (one socket read) before 431.
_HEAD_SLACK = 256 * 1024


class HttpProtocol(asyncio.Protocol):
    def __init__(self, router: Router, state: ServerState, loop: asyncio.AbstractEventLoop, *, max_body: int,
                 keepalive_timeout: float, access: bool = False, max_request_line: int = 8192,
                 max_header_bytes: int = 32 * 1024, max_headers: int = 100, header_timeout: float = 60.0,
                 body_timeout: float = 60.0, request_timeout: float = 0.0):
        # shared by every connection
        self.router = router
        self.state = state
        self.loop = loop
        self.max_body = max_body
        self.keepalive_timeout = keepalive_timeout
        self.access = access
        self.max_request_line = max_request_line
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.head_guard = max_request_line + max_header_bytes + _HEAD_SLACK
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.request_timeout = request_timeout
        # per connection
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pipeline: deque[Request] = deque()
        self.busy = False
        self.reading = IDLE  # IDLE between requests, HEAD until the headers are in, BODY until the body is
        self.since = 0.0  # loop time: IDLE since, HEAD started, last BODY progress
        self.idle_since: float | None = None  # loop time the connection went idle; None while a request is on
        self.chunk = 0  # size of the read being parsed
        self.head_bytes = 0  # bytes of reads that carried the current request's head (an upper bound)
        self.reading_paused = False
        self.writing_paused = False
        self.closed = False
        self.closing = False  # a request without keep-alive was read: nothing after it is served
        self.client = ""
        # the request being handled: for --request-timeout and the watchdog
        self.current: Request | None = None
        self.started = 0.0
        self.task: asyncio.Task[None] | None = None
        self.waiting: Any = None  # the future a suspended handler waits for
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
        self.idle_since = self.since = self.loop.time()
        if self.access:
            peer = transport.get_extra_info("peername")
            self.client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer or "")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state.connections.discard(self)
        self.pipeline.clear()

    def data_received(self, data: bytes) -> None:
        if self.rejected or self.closing:
            return  # the stream is being closed: whatever follows is not read
        self.chunk = len(data)
        reading = self.reading
        if reading == HEAD:
            self.head_bytes += len(data)
        elif reading == BODY:
            self.since = self.loop.time()  # the body-read idle clock restarts with every read
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self.closing and not self.rejected:  # bytes after a "Connection: close" request are dropped
                self._reject(400, f"malformed HTTP request: {exc}")
        if self.reading == HEAD and self.head_bytes > self.head_guard and not self.rejected:
            self._reject(431, f"request header fields are over the limit of {self.max_header_bytes} bytes")

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
        self.reading = HEAD
        self.head_bytes = self.chunk
        self.since = self.loop.time()  # the header clock starts at the request's first byte; more bytes don't restart it
        self.idle_since = None

    def on_url(self, url: bytes) -> None:
        self.url += url  # llhttp hands a URL split over reads in pieces; bounded by the check below
        if len(self.url) > self.max_request_line:
            self._reject(414, f"request line is over the limit of {self.max_request_line} bytes")
            raise _Rejected

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.reading = BODY
        self.since = self.loop.time()
        if self.head_bytes > self.max_header_bytes or len(self.headers) > self.max_headers:
            problem = self._head_problem()
            if problem:
                self._reject(431, problem)
                raise _Rejected
        length = self.headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            self._reject(413, f"request body of {int(length)} bytes is over the limit of {self.max_body} bytes")
            return
        if self.headers.get(b"expect", b"").lower() == b"100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _head_problem(self) -> str:
        """The exact check, only when the cheap bound says the head might be over a limit."""
        if len(self.headers) > self.max_headers:
            return f"more than {self.max_headers} request header fields"
        size = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers.items())
        if size > self.max_header_bytes:
            return f"request header fields of {size} bytes are over the limit of {self.max_header_bytes} bytes"
        return ""

    def on_body(self, chunk: bytes) -> None:
        if self.rejected:
            return
        self.body_size += len(chunk)
        if self.body_size > self.max_body:
            self._reject(413, f"request body is over the limit of {self.max_body} bytes")
            return
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.reading = IDLE
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

    def _start(self, request: Request | None) -> None:
        """Run requests until one suspends: a handler that answers within its eager start is
        finished here and the next pipelined request started by this loop (no recursion)."""
        while request is not None:
            response = self._run(request)
            if response is None:
                return  # suspended: _resume finishes it
            request = self._finish(request, response, self.started)

    def _run(self, request: Request) -> Response | None:
        """Start ``request``'s handler: its response, or None when it suspended (a task carries it on)."""
        self.busy = True
        self.idle_since = None
        self.current = activity.request = request
        self.started = started = time.perf_counter()
        if request.method == "OPTIONS":  # CORS preflight, for every route
            return _preflight(request)
        try:
            coro = self.router.resolve(request.method, request.path)(request)
        except FastSeldonError as exc:
            return self.router.render_error(request.path, exc)
        try:
            waiting = coro.send(None)
        except StopIteration as done:
            return done.value
        except Exception as exc:  # noqa: BLE001 - handlers map their own errors; this is a bug
            log.exception("handler for %s %s failed", request.method, request.path)
            return self.router.render_error(request.path, InternalError(str(exc)))
        self.waiting = waiting
        self.task = self.loop.create_task(self._resume(request, coro, waiting, started))
        return None

    async def _resume(self, request: Request, coro: Any, waiting: Any, started: float) -> None:
        """Carry on a handler that suspended during its eager start (Python 3.12's eager tasks, by hand)."""
        try:
            while True:
                if waiting is None:
                    await asyncio.sleep(0)
                else:
                    # The handler's own await already flagged the future as blocking; hand it to
                    # this task the way Task.__step would, and wait until it is done *without*
                    # reading its outcome: the handler reads it when resumed, and an asyncio future
                    # read twice hands its exception over the second time without the traceback
                    # (the user's frames would be missing from the log).
                    waiting._asyncio_future_blocking = False
                    if not waiting.done():
                        done = self.loop.create_future()
                        waiting.add_done_callback(partial(_wake, done))
                        try:
                            await done
                        except asyncio.CancelledError:
                            waiting.cancel()  # a pool call not started yet never starts
                            if self.current is not request:  # timed out: answered already
                                coro.close()
                                return
                activity.request = request
                waiting = self.waiting = coro.send(None)
        except StopIteration as done:
            response = done.value
        except asyncio.CancelledError:
            if self.current is not request:
                coro.close()
                return
            raise
        except Exception as exc:  # noqa: BLE001
            log.exception("handler for %s %s failed", request.method, request.path)
            response = self.router.render_error(request.path, InternalError(str(exc)))
        if self.current is request:  # not answered already by the request timeout
            self._start(self._finish(request, response, started))

    def _finish(self, request: Request, response: Response, started: float) -> Request | None:
        """Send ``request``'s response; the pipelined request to start next, if any."""
        self.current = None
        self.task = self.waiting = None
        state = self.state
        state.served += 1
        headers = request.headers
        keep_alive = not state.closing and headers.get(b"connection", b"").lower() != b"close"
        if self.access:
            self._log_access(request, response, started)
        transport = self.transport
        if self.closed or transport is None:
            return None
        body = response.body
        head = _encode_head(response, keep_alive, headers.get(b"origin"))
        if len(body) < HIGH_WATER:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)
        if not keep_alive:
            self.pipeline.clear()
            transport.close()
            return None
        self.busy = False
        if self.pipeline:
            next_request = self.pipeline.popleft()
            if self.reading_paused and len(self.pipeline) <= 16 and not self.writing_paused:
                transport.resume_reading()
                self.reading_paused = False
            return next_request
        if self.reading == IDLE:
            self.idle_since = self.since = self.loop.time()
        return None

    def _log_access(self, request: Request, response: Response, started: float) -> None:
        ms = (time.perf_counter() - started) * 1000
        puid = response.request_id or (request.headers.get(b"seldon-puid") or request.headers.get(b"x-request-id") or b"").decode(
            "latin-1")
        access_log.info('%s "%s %s" %d %.3fms%s', self.client or "-", request.method, request.path, response.status, ms,
                        f" puid={puid}" if puid else "",
                        extra={"client": self.client, "method": request.method, "route": request.path,
                               "status": response.status, "latency_ms": round(ms, 3), "puid": puid or None})

    def expire(self) -> None:
        """--request-timeout: answer the running request 504 now; its handler is cancelled (a hook already
        running on a thread finishes there, unheard), and the connection carries on."""
        request, task = self.current, self.task
        if request is None or task is None:
            return
        seconds = time.perf_counter() - self.started
        log.warning("request %s %s timed out after %.1fs (--request-timeout %gs)", request.method, request.path, seconds,
                    self.request_timeout)
        exc = DeadlineExceeded(f"request timed out after {self.request_timeout:g}s")
        waiting = self.waiting
        next_request = self._finish(request, self.router.render_error(request.path, exc), self.started)
        task.cancel()
        if waiting is not None:  # also when the task had not started yet: a pool call not started never starts
            waiting.cancel()
        self._start(next_request)

    def _reject(self, status: int, message: str) -> None:
        """Answer an unreadable, oversized or too slow request and close: the stream can't be trusted after it."""
        if self.rejected:
            return  # one answer per broken stream
        self.rejected = True
        if self.transport is None or self.closed:
            return
        kind = _REJECTIONS.get(status, BadRequest)
        response = self.router.render_error(self.url.decode("latin-1") or None, kind(message))
        self.transport.write(_encode_head(response, False) + response.body)
        self.transport.close()

    # -- shutdown

    def shutdown(self) -> None:
        """Close now if idle; otherwise the in-flight response goes out with connection: close."""
        if not self.busy and not self.pipeline and self.transport is not None:
            self.transport.close()


def _wake(done: asyncio.Future[None], _: Any) -> None:
    if not done.done():
        done.set_result(None)


class _Rejected(Exception):
    """Raised from a parser callback after answering: httptools stops parsing this stream."""


_REJECTIONS: dict[int, type[FastSeldonError]] = {
    408: RequestTimeout, 413: PayloadTooLarge, 414: UriTooLong, 431: HeadersTooLarge,
}


def close_idle(state: ServerState, now: float) -> None:
    """Every clock of every connection, in one sweep per worker every half second instead of a
    timer armed and cancelled on every request:

    * keep-alive: an idle connection closes after ``keepalive_timeout``. Keep it above the idle
      timeout of any proxy in front (nginx, ingress), or the proxy will reuse a closed socket;
    * headers: a request whose headers are not all in ``header_timeout`` after its first byte
      gets 408 and the connection closes (slowloris: more bytes don't restart the clock);
    * body: a body that stalls for ``body_timeout`` between reads gets 408 and closes;
    * ``request_timeout``: a handler still running gets 504, and the connection carries on.
    """
    clock = 0.0
    for conn in list(state.connections):
        if conn.busy:
            if conn.request_timeout > 0 and conn.task is not None:
                clock = clock or time.perf_counter()
                if clock - conn.started > conn.request_timeout:
                    conn.expire()
            continue
        if conn.transport is None or conn.rejected:
            continue
        reading = conn.reading
        if reading == IDLE:
            if conn.idle_since is not None and now - conn.idle_since > conn.keepalive_timeout > 0:
                conn.transport.close()
        elif reading == HEAD:
            if now - conn.since > conn.header_timeout > 0:
                conn._reject(408, f"request headers not received within {conn.header_timeout:g}s")
        elif now - conn.since > conn.body_timeout > 0:
            conn._reject(408, f"request body stalled for more than {conn.body_timeout:g}s")


async def serve(router: Router, sock: Any, *, max_body: int, keepalive_timeout: float, access: bool = False,
                **limits: Any) -> tuple[asyncio.AbstractServer, ServerState]:
    """Start accepting on a bound socket; ``limits`` are HttpProtocol's keyword arguments (max_request_line, ...)."""
    loop = asyncio.get_running_loop()
    state = ServerState(router)

    def factory() -> HttpProtocol:
        assert state.router is not None
        return HttpProtocol(state.router, state, loop, max_body=max_body, keepalive_timeout=keepalive_timeout,
                            access=access, **limits)

    server = await loop.create_server(factory, sock=sock, backlog=2048)
    return server, state


async def _accept_pending(server: asyncio.AbstractServer, turns: int = 100) -> None:
    """Let the loop accept the connections already queued on our listening sockets before they
    close: with SO_REUSEPORT each worker has its own accept queue, and closing it resets what
    is still in it (Linux >= 5.14 can hand them to the other workers instead:
    net.ipv4.tcp_migrate_req=1). Accepted now, they are answered with connection: close."""
    fds = [sock.fileno() for sock in getattr(server, "sockets", ()) or ()]
    for _ in range(turns):
        try:
            pending, _, _ = select.select(fds, [], [], 0) if fds else ([], [], [])
        except (OSError, ValueError):
            return
        if not pending:
            return
        await asyncio.sleep(0)


async def drain(server: asyncio.AbstractServer, state: ServerState, timeout: float, idle_grace: float = 0.0) -> None:
    """Stop accepting, let in-flight requests finish (bounded), then close what is left.

    With ``idle_grace``, a keep-alive connection is closed only once it has been idle that long:
    a client sending request after request gets its next answer with ``connection: close``
    instead of racing our close with its next request (which it would see as a reset).
    """
    state.closing = True
    await _accept_pending(server)
    server.close()
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    while True:
        now = loop.time()
        for conn in list(state.connections):
            # only a connection between requests: one whose request is still arriving gets it answered
            # (with connection: close) rather than lost
            if conn.reading == IDLE and conn.idle_since is not None and now - conn.idle_since >= idle_grace:
                conn.shutdown()
        if not state.connections or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.02)
    for conn in list(state.connections):
        if conn.transport is None:
            continue
        if conn.busy or conn.pipeline:
            conn.transport.abort()
        else:
            conn.transport.close()
