"""graph/http_client.py and RemoteRestUnit against a real asyncio server in this process.

The server (``_Unit``) reads HTTP/1.1 requests by hand and answers as each test tells it:
keep-alive, closing idle connections, slow, chunked, to the close, or not at all; it counts
connections and requests so reuse and (no) retries are seen, not guessed.
"""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from fastseldon.errors import UpstreamError
from fastseldon.graph.http_client import ConnectFailed, HttpPool, NoResponse
from fastseldon.graph.units import RemoteRestUnit
from fastseldon.types import Message

Request = tuple[str, dict[str, str], bytes]  # path, headers (lower case), body
Answer = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]  # False: close the connection


def reply(status: int, body: bytes, *, extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


async def echo(req: Request, writer: asyncio.StreamWriter) -> bool:
    writer.write(reply(200, req[2]))
    return True


class _Unit:
    """A tiny HTTP/1.1 server: ``answer`` decides each reply; ``idle_close`` closes a connection that
    waited that long for its next request (as a unit behind a proxy with a short keep-alive would)."""

    def __init__(self, answer: Answer = echo, idle_close: float | None = None):
        self.answer = answer
        self.idle_close = idle_close
        self.connections = 0
        self.requests: list[Request] = []
        self.server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> _Unit:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.server is not None
        self.server.close()
        for task in self._tasks:  # connections still open end with the server, before the loop closes
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_close)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                    break
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                req = (path, headers, body)
                self.requests.append(req)
                if not await self.answer(req, writer):
                    break
                await writer.drain()
        finally:
            writer.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def impl(request: pytest.FixtureRequest) -> str:
    """Every test runs on uvloop (what fastseldon serves on) and on stdlib asyncio (the reference)."""
    return request.param


def run(coro: Awaitable[Any], impl: str) -> Any:
    async def main() -> Any:
        return await coro
    if impl == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


# --------------------------------------------------------------------------- the pool


def test_sequential_requests_reuse_one_keep_alive_connection(impl):
    async def main():
        async with _Unit() as unit:
            pool = HttpPool("127.0.0.1", unit.port)
            bodies = [(await pool.request("POST", "/predict", b'{"n": %d}' % i)).body for i in range(20)]
            pool.close()
        assert bodies == [b'{"n": %d}' % i for i in range(20)]
        assert unit.connections == 1
        assert len(unit.requests) == 20
    run(main(), impl)


def test_concurrent_requests_each_get_their_own_answer_and_connections_are_pooled(impl):
    async def slow_echo(req: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.01)
        return await echo(req, writer)

    async def main():
        async with _Unit(slow_echo) as unit:
            pool = HttpPool("127.0.0.1", unit.port, max_idle=4)
            for _round in range(3):
                out = await asyncio.gather(*(pool.request("POST", "/predict", b"%d" % i) for i in range(8)))
                assert [r.body for r in out] == [b"%d" % i for i in range(8)]
            pool.close()
        assert 8 <= unit.connections <= 8 + 2 * 4  # 8 at once, then up to 4 kept for each next round
        assert len(unit.requests) == 24
    run(main(), impl)


def test_a_connection_the_server_closed_while_idle_is_replaced_without_resending(impl):
    async def main():
        async with _Unit(idle_close=0.05) as unit:
            pool = HttpPool("127.0.0.1", unit.port)
            assert (await pool.request("POST", "/predict", b"1")).body == b"1"
            await asyncio.sleep(0.2)  # the unit closes the idle connection
            assert (await pool.request("POST", "/predict", b"2")).body == b"2"
            assert (await pool.request("POST", "/predict", b"3")).body == b"3"
            pool.close()
        assert unit.connections == 2
        assert [r[2] for r in unit.requests] == [b"1", b"2", b"3"]  # each sent exactly once
    run(main(), impl)


def test_connection_close_in_the_answer_is_honoured(impl):
    async def closing(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(200, req[2], extra="Connection: close\r\n"))
        return False

    async def main():
        async with _Unit(closing) as unit:
            pool = HttpPool("127.0.0.1", unit.port)
            for i in range(3):
                assert (await pool.request("POST", "/predict", b"%d" % i)).body == b"%d" % i
        assert unit.connections == 3
    run(main(), impl)


def test_a_request_the_server_drops_unanswered_is_not_retried(impl):
    async def drop(req: Request, writer: asyncio.StreamWriter) -> bool:
        return False

    async def main():
        async with _Unit(drop) as unit:
            pool = HttpPool("127.0.0.1", unit.port)
            with pytest.raises(NoResponse, match="closed the connection before answering"):
                await pool.request("POST", "/predict", b"once")
        assert [r[2] for r in unit.requests] == [b"once"]
    run(main(), impl)


def test_the_timeout_bounds_a_slow_answer_and_the_late_answer_is_not_read_as_the_next(impl):
    async def slow_first(req: Request, writer: asyncio.StreamWriter) -> bool:
        if req[2] == b"slow":
            await asyncio.sleep(0.3)
        return await echo(req, writer)

    async def main():
        async with _Unit(slow_first) as unit:
            pool = HttpPool("127.0.0.1", unit.port, timeout=0.1)
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(asyncio.TimeoutError):
                await pool.request("POST", "/predict", b"slow")
            assert loop.time() - start < 0.25
            assert (await pool.request("POST", "/predict", b"fast")).body == b"fast"
        assert unit.connections == 2
    run(main(), impl)


def test_chunked_answers_are_joined(impl):
    async def chunked(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b'{"data":', b' {"ndarray": ', b"[[1, 2]]}}"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.005)
        writer.write(b"0\r\n\r\n")
        return True

    async def main():
        async with _Unit(chunked) as unit:
            pool = HttpPool("127.0.0.1", unit.port)
            for _ in range(2):
                resp = await pool.request("POST", "/predict", b"{}")
                assert resp.status == 200
                assert json.loads(resp.body) == {"data": {"ndarray": [[1, 2]]}}
        assert unit.connections == 1  # chunked keeps the connection
    run(main(), impl)


def test_an_answer_without_length_ends_at_the_close(impl):
    async def to_close(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + req[2])
        return False

    async def main():
        async with _Unit(to_close) as unit:
            pool = HttpPool("127.0.0.1", unit.port)
            assert (await pool.request("POST", "/predict", b'{"a": 1}')).body == b'{"a": 1}'
            assert (await pool.request("POST", "/predict", b'{"a": 2}')).body == b'{"a": 2}'
        assert unit.connections == 2
    run(main(), impl)


@pytest.mark.parametrize("size", [0, 1, 65_535, 65_536, 3_000_001])
def test_large_bodies_both_ways(size, impl):
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)

    async def main():
        async with _Unit() as unit:
            pool = HttpPool("127.0.0.1", unit.port)
            resp = await pool.request("POST", "/predict", body)
            assert resp.body == body
            assert resp.header(b"Content-Length") == str(size).encode()
    run(main(), impl)


def test_a_refused_connection_is_connect_failed(impl):
    async def main():
        async with _Unit() as unit:
            port = unit.port
        with pytest.raises(ConnectFailed):
            await HttpPool("127.0.0.1", port).request("POST", "/predict", b"{}")
    run(main(), impl)


def test_garbage_is_no_response_and_the_connection_is_dropped(impl):
    async def garbage(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"SMTP ready\r\n\r\n")
        return True

    async def main():
        async with _Unit(garbage) as unit:
            with pytest.raises(NoResponse, match="not valid HTTP"):
                await HttpPool("127.0.0.1", unit.port).request("POST", "/predict", b"{}")
    run(main(), impl)


# --------------------------------------------------------------------------- RemoteRestUnit over it


def _unit(port: int, timeout: float | None = None) -> RemoteRestUnit:
    return RemoteRestUnit("m", "127.0.0.1", port, executor=None, timeout=timeout)  # type: ignore[arg-type]


def _msg() -> Message:
    return Message("ndarray", np.array([[1.0, 2.0]]), [], {})


def test_remote_unit_posts_its_route_with_the_puid_and_reads_the_answer(impl):
    async def model(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(200, b'{"data": {"names": ["y"], "ndarray": [[3.0]]}, "meta": {"tags": {"a": 1}}}'))
        return True

    async def main():
        async with _Unit(model) as server:
            unit = _unit(server.port)
            out = await unit.call("transform_input", _msg(), "puid-1")
            out2 = await unit.call("predict", _msg(), "puid-2")
        assert np.asarray(out.payload).tolist() == [[3.0]] and out.meta["tags"] == {"a": 1}
        assert np.asarray(out2.payload).tolist() == [[3.0]]
        assert [(r[0], r[1]["seldon-puid"], r[1]["content-type"]) for r in server.requests] == [
            ("/transform-input", "puid-1", "application/json"), ("/predict", "puid-2", "application/json")]
        assert json.loads(server.requests[0][2])["data"]["ndarray"] == [[1.0, 2.0]]
        assert server.connections == 1
    run(main(), impl)


def test_remote_unit_passes_an_error_status_and_body_through_exactly(impl):
    body = b'{"status": {"code": -1, "info": "bad \\u00e9 input", "reason": "MICROSERVICE_BAD_DATA", "status": 1}}'

    async def failing(req: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(400, body))
        return True

    async def main():
        async with _Unit(failing) as server:
            with pytest.raises(UpstreamError) as info:
                await _unit(server.port).call("predict", _msg(), "p")
        assert info.value.http_status == 400
        assert info.value.body == body
    run(main(), impl)


def test_remote_unit_timeout_is_504(impl):
    async def slow(req: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.5)
        return await echo(req, writer)

    async def main():
        async with _Unit(slow) as server:
            with pytest.raises(UpstreamError) as info:
                await _unit(server.port, timeout=0.05).call("predict", _msg(), "p")
        assert info.value.http_status == 504
        assert "within 0.05 s" in str(info.value)
    run(main(), impl)


def test_remote_unit_unreachable_is_500(impl):
    async def main():
        async with _Unit() as server:
            port = server.port
        with pytest.raises(UpstreamError) as info:
            await _unit(port).call("predict", _msg(), "p")
        assert info.value.http_status == 500
        assert "unreachable" in str(info.value)
    run(main(), impl)


def test_remote_unit_aggregate_sends_a_bare_list(impl):
    async def combiner(req: Request, writer: asyncio.StreamWriter) -> bool:
        got = json.loads(req[2])
        writer.write(reply(200, json.dumps({"data": {"ndarray": [[len(got)]]}}).encode()))
        return True

    async def main():
        async with _Unit(combiner) as server:
            out = await _unit(server.port).aggregate([_msg(), _msg(), _msg()], "p")
        assert np.asarray(out.payload).tolist() == [[3]]
        assert server.requests[0][0] == "/aggregate"
    run(main(), impl)
