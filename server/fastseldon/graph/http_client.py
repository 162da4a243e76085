"""A small asyncio HTTP/1.1 client for the executor's calls to remote units: keep-alive, on the loop.

One ``HttpPool`` per remote unit holds its idle keep-alive connections (most recently used
first). A request takes an idle connection that is still open, or opens a new one; a
connection the server closed while it sat idle is dropped and never written to, so no
request is sent twice (a POST to /predict is not idempotent: a request already written is
never retried). Responses are parsed with httptools (Content-Length, chunked, or read to
the server's close); a connection goes back to the pool only when the response allowed
keep-alive and was read to its end.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import cast

import httptools

__all__ = ["ConnectFailed", "HttpError", "HttpPool", "HttpResponse", "NoResponse"]


class HttpError(Exception):
    """A call that got no usable answer."""


class ConnectFailed(HttpError):
    """The connection could not be opened (refused, unreachable, DNS)."""


class NoResponse(HttpError):
    """The request was written but no complete response came back (closed, reset, unparsable)."""


class HttpResponse:
    """A complete response: status, headers (names lower case) and the body as sent (de-chunked)."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses its response, then waits idle in the pool."""

    def __init__(self) -> None:
        # per connection
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.parser = httptools.HttpResponseParser(self)
        # per request
        self.waiter: asyncio.Future[HttpResponse] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.to_eof = False  # neither Content-Length nor chunked: the body ends when the server closes
        self.keep_alive = False

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio.Transport's

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # bytes while idle: not HTTP we can follow, never reuse this connection
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(NoResponse("the unit answered with a protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(NoResponse(f"the unit's response is not valid HTTP/1.1: {exc}"))

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.to_eof:
                self._complete()
            else:
                reason = f": {exc}" if exc else ""
                self._fail(NoResponse(f"the unit closed the connection before answering{reason}"))

    # -- parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        framed = any(k in (b"content-length", b"transfer-encoding") for k, _ in self.headers)
        self.to_eof = not framed and status not in (204, 304) and status >= 200

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        self._complete()

    # -- requests

    def send(self, request: bytes) -> asyncio.Future[HttpResponse]:
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.headers, self.body, self.to_eof, self.keep_alive = [], [], False, False
        self.transport.write(request)
        return self.waiter

    def reusable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(HttpResponse(self.parser.get_status_code(), self.headers, b"".join(self.body)))

    def time_out(self) -> None:
        self._fail(asyncio.TimeoutError())

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class HttpPool:
    """Keep-alive connections to one ``host:port``; ``request`` is safe to call concurrently.

    ``max_idle`` bounds the connections kept open between requests (the number open at once
    follows the concurrency). ``timeout`` (seconds, None: none) bounds a whole request,
    connecting included; ``asyncio.TimeoutError`` is raised when it runs out, and that
    connection is closed (its late answer must not be read as the next request's).
    """

    def __init__(self, host: str, port: int, timeout: float | None = None, max_idle: int = 16):
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_idle = max_idle
        self._idle: deque[_Connection] = deque()
        self._host_header = f"{host}:{port}".encode("latin-1")

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: Iterable[tuple[str, str]] = ()) -> HttpResponse:
        """Send one request and read its whole response."""
        head = [f"{method} {path} HTTP/1.1\r\n".encode("latin-1"), b"Host: ", self._host_header, b"\r\n"]
        for name, value in headers:
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
        head.append(b"Content-Length: %d\r\n\r\n" % len(body))
        wire = b"".join(head) + body
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        conn = await self._acquire(loop, deadline)
        waiter = conn.send(wire)
        timer = None if deadline is None else loop.call_at(deadline, conn.time_out)
        try:
            response = await waiter
        except BaseException:  # failed, timed out or cancelled mid-exchange: the connection's state is unknown
            conn.close()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        self._release(conn)
        return response

    async def _acquire(self, loop: asyncio.AbstractEventLoop, deadline: float | None) -> _Connection:
        while self._idle:
            conn = self._idle.popleft()
            if conn.reusable():  # closed by the server while idle: dropped before anything is written
                return conn
        connect = loop.create_connection(_Connection, self.host, self.port)
        try:
            if deadline is None:
                _transport, conn = await connect
            else:
                _transport, conn = await asyncio.wait_for(connect, max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:  # an OSError too since 3.11: not a refused connection
            raise
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.keep_alive and conn.reusable() and len(self._idle) < self.max_idle:
            self._idle.appendleft(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Close every idle connection (those in use close when their request ends)."""
        while self._idle:
            self._idle.popleft().close()
