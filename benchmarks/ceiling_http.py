"""Ceiling: the fastest a Python HTTP/1.1 front can answer on this box (uvloop + httptools).

It parses each request with httptools and answers a POST with its own body (the identity's
answer, same size as a real one) and anything else with a fixed body. No routing, no JSON,
no limits: the number it reaches bounds what any Python REST server here can do.

    python -m benchmarks.ceiling_http --port 8000 [--workers N]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
from collections.abc import Callable

import httptools
import uvloop

_FIXED = b'{"status":"ok"}'


class ParsingProtocol(asyncio.Protocol):
    """What every reference server does with its bytes: httptools parses them, a parse error closes."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self._transport.close()


class _EchoProtocol(ParsingProtocol):
    def __init__(self) -> None:
        super().__init__()
        self._content_type = b"application/json"

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self._content_type = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self._body) if self._body else _FIXED
        self._body = []
        head = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (self._content_type, len(body))
        if len(body) < 65536:
            self._transport.write(head + body)
        else:  # skip copying a large body just to prepend the head
            self._transport.write(head)
            self._transport.write(body)
        if not self._parser.should_keep_alive():
            self._transport.close()


async def serve_protocol(sock: socket.socket, factory: Callable[[], asyncio.Protocol]) -> None:
    """Serve ``factory``'s protocol on ``sock`` until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(factory, sock=sock)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def run_workers(workers: int, serve: Callable[[], object]) -> None:
    """``serve()`` in this process and in ``workers - 1`` forked ones; the forks are stopped when it returns."""
    children = []
    for _ in range(workers - 1):
        pid = os.fork()
        if pid == 0:
            serve()
            os._exit(0)
        children.append(pid)
    serve()
    for pid in children:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)


def serve_http(argv: list[str] | None, factory: Callable[[], asyncio.Protocol], description: str) -> int:
    """The command line of an HTTP reference server: --port, --workers; one listening socket for all."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    sock = _listen(args.port)  # bound once in the parent, shared by forked workers
    run_workers(args.workers, lambda: uvloop.run(serve_protocol(sock, factory)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return serve_http(argv, _EchoProtocol, __doc__.splitlines()[0])


if __name__ == "__main__":
    raise SystemExit(main())
