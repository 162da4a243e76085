"""Open-loop load at a fixed rate, latency measured from each request's *scheduled* send time.

A closed-loop client (wrk, h2load) waits for an answer before sending again, so a server that
stalls also stalls the clock and hides the stall (coordinated omission). Here request i is due
at start + i/rate whatever happened before; its latency is (answer time - due time), so time
spent queued behind a slow answer counts. Sending is spread over several processes (asyncio in
each: uvloop + httptools for HTTP/1.1, grpc.aio for gRPC), each sending rate/P.

    python -m benchmarks.openloop --transport http --port 8000 --path /x --body-file F --rate 2000 ...

As a library: `run(...)` starts the worker processes and merges what they measured.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.loadgen import PERCENTILES


@dataclass
class OpenLoopResult:
    """What an open-loop run at one rate measured, all worker processes merged."""

    target_rps: float
    achieved_rps: float
    duration_s: float
    sent: int
    completed: int
    errors: dict[str, int] = field(default_factory=dict)
    latency_us: dict[str, float] = field(default_factory=dict)
    send_lag_p99_us: float = 0.0  # how late the generator itself sent: large means it was the bottleneck
    cdf_us: list[float] = field(default_factory=list)  # latency at 0.1 % steps, for the CDF plot

    @property
    def generator_limited(self) -> bool:
        return self.send_lag_p99_us > 5000 or self.sent < 0.95 * self.target_rps * self.duration_s

    def to_json(self) -> dict:
        out = asdict(self)
        out["generator_limited"] = self.generator_limited
        return out


# --- the worker: one process, one event loop ---------------------------------------------------


class _Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.lags: list[float] = []
        self.errors: dict[str, int] = {}
        self.sent = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def _schedule(queue: asyncio.Queue, start: float, rate: float, count: int) -> None:
    """Put each due time on the queue when it comes due (all overdue ones at once)."""
    interval = 1.0 / rate
    i = 0
    while i < count:
        now = time.monotonic()
        while i < count and start + i * interval <= now:
            queue.put_nowait(start + i * interval)
            i += 1
        if i < count:
            await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))
    queue.put_nowait(None)


class _HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that sends a fixed request and awaits each answer."""

    def __init__(self) -> None:
        import httptools

        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def connection_lost(self, exc) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection closed"))

    def on_message_complete(self) -> None:
        if not self._parser.should_keep_alive():
            self.transport.close()  # e.g. gunicorn's sync worker: one request per connection
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._parser.get_status_code())

    @property
    def usable(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    async def request(self, raw: bytes) -> int:
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return await self._waiter


async def _http_sender(queue, rec: _Recorder, host: str, port: int, raw: bytes) -> None:
    loop = asyncio.get_running_loop()
    conn: _HttpConnection | None = None
    while (due := await queue.get()) is not None:
        rec.sent += 1
        rec.lags.append(time.monotonic() - due)
        try:
            reused = conn is not None and conn.usable
            if not reused:
                _, conn = await loop.create_connection(_HttpConnection, host, port)
            try:
                status = await conn.request(raw)
            except ConnectionError:
                if not reused:
                    raise
                # The server closed an idle keep-alive connection as we sent: retry once on a
                # new one, as HTTP clients do; the time lost still counts from the due time.
                _, conn = await loop.create_connection(_HttpConnection, host, port)
                status = await conn.request(raw)
        except Exception as exc:  # noqa: BLE001 - a failed request is counted, never fatal
            rec.error(type(exc).__name__)
            conn = None
            continue
        if 200 <= status < 300:
            rec.latencies.append(time.monotonic() - due)
        else:
            rec.error("non2xx")
    queue.put_nowait(None)  # let the next sender see the end too


async def _worker(args: argparse.Namespace) -> dict:
    rec = _Recorder()
    body = Path(args.body_file).read_bytes()
    count = int(args.rate * args.duration)
    start = time.monotonic() + (args.start_at - time.time())
    queue: asyncio.Queue = asyncio.Queue()
    if args.transport == "http":
        headers = "".join(f"{h}\r\n" for h in args.header)
        raw = (f"POST {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n{headers}"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        senders = [_http_sender(queue, rec, args.host, args.port, raw) for _ in range(args.connections)]
        await asyncio.gather(_schedule(queue, start, args.rate, count), *senders)
    else:
        import grpc

        options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        async with grpc.aio.insecure_channel(f"{args.host}:{args.port}", options=options) as channel:
            call = channel.unary_unary(args.path)

            async def send() -> None:
                while (due := await queue.get()) is not None:
                    rec.sent += 1
                    rec.lags.append(time.monotonic() - due)
                    try:
                        await call(body, timeout=30)
                    except grpc.aio.AioRpcError as exc:
                        rec.error(exc.code().name)
                        continue
                    rec.latencies.append(time.monotonic() - due)
                queue.put_nowait(None)

            await asyncio.gather(_schedule(queue, start, args.rate, count), *[send() for _ in range(args.connections)])
    return {
        "sent": rec.sent,
        "errors": rec.errors,
        "latencies_us": [round(x * 1e6, 1) for x in rec.latencies],
        "lag_p99_us": float(np.percentile(rec.lags, 99) * 1e6) if rec.lags else 0.0,
    }


def _worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transport", choices=("http", "grpc"), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True, help="HTTP path, or the gRPC method /pkg.Service/Method")
    parser.add_argument("--header", action="append", default=[], help="'Name: value' (HTTP)")
    parser.add_argument("--body-file", required=True, help="request body, or the serialized gRPC message")
    parser.add_argument("--rate", type=float, required=True, help="requests per second from this process")
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--connections", type=int, default=64, help="HTTP connections / gRPC calls in flight")
    parser.add_argument("--start-at", type=float, default=0.0, help="wall-clock start (time.time())")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if not args.start_at:
        args.start_at = time.time() + 0.2
    if args.transport == "http":
        import uvloop

        result = uvloop.run(_worker(args))
    else:
        result = asyncio.run(_worker(args))
    Path(args.out).write_text(json.dumps(result))
    return 0


# --- the driver: several worker processes, merged --------------------------------------------


def run(*, transport: str, port: int, path: str, body: bytes, headers: tuple[tuple[str, str], ...] = (),
        rate: float, duration_s: float, connections: int, processes: int, cpus: set[int] | None) -> OpenLoopResult:
    """Send `rate` req/s for `duration_s` from `processes` pinned worker processes; merge their results."""
    processes = max(1, processes)
    with tempfile.TemporaryDirectory(prefix="bench-open-") as tmp:
        body_file = Path(tmp) / "body"
        body_file.write_bytes(body)
        start_at = time.time() + 1.0  # time for every worker to start and connect its loop
        procs = []
        for i in range(processes):
            cmd = [sys.executable, "-m", "benchmarks.openloop", "--transport", transport, "--port", str(port),
                   "--path", path, "--body-file", str(body_file), "--rate", str(rate / processes),
                   "--duration", str(duration_s), "--connections", str(max(1, connections // processes)),
                   "--start-at", repr(start_at), "--out", str(Path(tmp) / f"w{i}.json")]
            for name, value in headers:
                cmd += ["--header", f"{name}: {value}"]
            procs.append(subprocess.Popen(cmd, preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
                                          cwd=Path(__file__).resolve().parent.parent))
        for proc in procs:
            proc.wait(timeout=duration_s + 60)
        parts = [json.loads((Path(tmp) / f"w{i}.json").read_text()) for i in range(processes)
                 if (Path(tmp) / f"w{i}.json").exists()]
    return merge(parts, rate, duration_s, expected_parts=processes)


def merge(parts: list[dict], rate: float, duration_s: float, expected_parts: int = 0) -> OpenLoopResult:
    """Merge worker results: pooled latencies, summed counts."""
    lat = np.concatenate([np.asarray(p["latencies_us"], dtype=np.float64) for p in parts]) if parts else np.empty(0)
    errors: dict[str, int] = {}
    for p in parts:
        for kind, n in p["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    if len(parts) < expected_parts:
        errors["worker_failed"] = expected_parts - len(parts)
    latency: dict[str, float] = {}
    cdf: list[float] = []
    if lat.size:
        latency = {"mean": float(lat.mean()), "max": float(lat.max())}
        latency.update({f"p{p:g}": float(v) for p, v in zip(PERCENTILES, np.percentile(lat, PERCENTILES))})
        cdf = [round(float(v), 1) for v in np.percentile(lat, np.linspace(0, 100, 1001))]
    return OpenLoopResult(
        target_rps=rate,
        achieved_rps=lat.size / duration_s if duration_s else 0.0,
        duration_s=duration_s,
        sent=sum(p["sent"] for p in parts),
        completed=int(lat.size),
        errors=errors,
        latency_us=latency,
        send_lag_p99_us=max((p["lag_p99_us"] for p in parts), default=0.0),
        cdf_us=cdf,
    )


if __name__ == "__main__":
    raise SystemExit(_worker_main(sys.argv[1:]))
