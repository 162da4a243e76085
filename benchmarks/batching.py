"""Adaptive batching: batched vs unbatched throughput and latency for a model with a fixed per-call cost.

    python benchmarks/batching.py [--duration 10] [--concurrency 64] [--fronts rest,grpc] [--costs sleep,serial,cpu]

The model's predict costs ``--fixed-ms`` per call plus ``--per-row-us`` per row, spent one of three ways:
  sleep   time.sleep: holds no CPU and overlaps freely across threads (the kindest case for no batching);
  serial  time.sleep under a lock: one call at a time, like a single accelerator;
  cpu     a busy loop holding the GIL: per-call Python overhead, or CPU inference on one core.
Each configuration is a fresh `fastseldon serve` on free ports, pinned to its own core;
load comes from compiled clients on the other core: wrk (REST, HTTP/1.1 keep-alive, one request
in flight per connection) and h2load (gRPC, one stream per connection). Both runs use the
server's defaults apart from ``--max-batch-size`` / ``--max-batch-time-ms``. Prints one table
and the batched/unbatched throughput ratio per front (target >= 5x at concurrency 64).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODEL = '''
import threading, time
import numpy as np


class BenchModel:
    def __init__(self, fixed_ms=2.0, per_row_us=20.0, cost="sleep"):
        self.fixed = fixed_ms / 1000.0
        self.per_row = per_row_us / 1e6
        self.cost = cost
        self.lock = threading.Lock()

    def predict(self, X, feature_names):
        seconds = self.fixed + self.per_row * X.shape[0]
        if self.cost == "sleep":
            time.sleep(seconds)
        elif self.cost == "serial":
            with self.lock:
                time.sleep(seconds)
        else:
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass
        return X * 2.0
'''

WRK_LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  io.write(string.format('RESULT {{"requests":%d,"duration_us":%d,"non2xx":%d,"errors":%d,' ..
    '"p50":%d,"p99":%d,"mean":%.1f}}\\n', summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""

ROW = [0.5 * i for i in range(10)]  # one 1x10 float row per request


@dataclass
class Result:
    cost: str
    front: str
    mode: str
    tool: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us_per_request: float = 0.0  # server CPU (all its processes) per answered request
    calls_per_s: float | None = None  # predict calls/s (batched runs, from the batch metrics)
    mean_rows: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin(cpus: set[int] | None):
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


class Server:
    def __init__(self, workdir: Path, args: argparse.Namespace, cost: str, batched: bool, cpus: set[int] | None):
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        params = [{"name": "fixed_ms", "value": str(args.fixed_ms), "type": "FLOAT"},
                  {"name": "per_row_us", "value": str(args.per_row_us), "type": "FLOAT"},
                  {"name": "cost", "value": cost, "type": "STRING"}]
        cmd = [sys.executable, "-m", "fastseldon", "serve", "BenchModel", "--parameters", json.dumps(params),
               "--http-port", str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics),
               "--workers", str(args.workers), "--log-level", "WARNING"]
        if batched:
            cmd += ["--max-batch-size", str(args.max_batch_size), "--max-batch-time-ms", str(args.max_batch_time_ms)]
        self.log = open(workdir / f"server-{self.http}.log", "wb")
        # Same session as this script: with the kernel's autogroup scheduling a new session is a
        # separate CPU group, which on a shared machine changes the server's share run to run.
        self.proc = subprocess.Popen(cmd, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=pin(cpus))
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}; log: {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/health/ping", timeout=1):
                    pass
                with socket.create_connection(("127.0.0.1", self.grpc), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"server not ready after {timeout}s; log: {self.log.name}")

    def batch_totals(self) -> tuple[float, float]:
        """(predict calls, rows) so far, from the batch-size histogram on the metrics port."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=5) as r:
            text = r.read().decode()
        calls = sum(float(v) for v in re.findall(r"^fastseldon_batch_size_rows_count\{[^}]*\} (\S+)$", text, re.M))
        rows = sum(float(v) for v in re.findall(r"^fastseldon_batch_size_rows_sum\{[^}]*\} (\S+)$", text, re.M))
        return calls, rows

    def _tree(self) -> dict[int, list[str]]:
        """/proc stat fields of the supervisor and every process below it."""
        stats: dict[int, list[str]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stats[int(entry)] = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    pass
        tree, frontier = {}, {self.proc.pid}
        while frontier:
            tree.update({pid: stats[pid] for pid in frontier if pid in stats})
            frontier = {pid for pid, f in stats.items() if int(f[1]) in frontier and pid not in tree}
        return tree

    def cpu_seconds(self) -> float:
        """User+system CPU time of the supervisor and its workers so far (Linux /proc)."""
        return sum(int(f[11]) + int(f[12]) for f in self._tree().values()) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        processes = list(self._tree())
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        for pid in processes:  # anything the supervisor left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.log.close()


def run_wrk(port: int, concurrency: int, duration: float, cpus: set[int] | None, workdir: Path) -> dict[str, Any]:
    body = json.dumps({"data": {"ndarray": [ROW]}})
    script = workdir / "post.lua"
    script.write_text(WRK_LUA.format(body=json.dumps(body)))
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{int(duration)}s", "--timeout=10s", "-s", str(script),
           f"http://127.0.0.1:{port}/api/v1.0/predictions"]
    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=pin(cpus), timeout=duration + 60)
    match = re.search(r"^RESULT (\{.*\})$", out.stdout, re.M)
    if not match:
        raise SystemExit(f"wrk gave no result:\n{out.stdout}\n{out.stderr}")
    r = json.loads(match.group(1))
    seconds = r["duration_us"] / 1e6
    return {"rps": (r["requests"] - r["non2xx"]) / seconds, "p50_ms": r["p50"] / 1000, "p99_ms": r["p99"] / 1000,
            "errors": r["non2xx"] + r["errors"]}


def grpc_frame() -> bytes:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from fastseldon.proto import prediction_pb2 as pb

    m = pb.SeldonMessage()
    m.data.tensor.shape.extend([1, len(ROW)])
    m.data.tensor.values.extend(ROW)
    payload = m.SerializeToString()
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def run_h2load(port: int, concurrency: int, duration: float, cpus: set[int] | None, workdir: Path) -> dict[str, Any]:
    frame = workdir / "frame"
    frame.write_bytes(grpc_frame())
    log = workdir / "h2load.log"
    log.unlink(missing_ok=True)
    cmd = ["h2load", "-t1", f"-c{concurrency}", "-m1", f"-D{int(duration)}", "-T10", f"--data={frame}",
           f"--log-file={log}", "-H", "content-type: application/grpc", "-H", "te: trailers",
           f"http://127.0.0.1:{port}/seldon.protos.Model/Predict"]
    out = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=pin(cpus), timeout=duration + 60)
    finished = re.search(r"finished in ([\d.]+)(m?s)", out.stdout)
    counts = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out.stdout)
    if not (finished and counts):
        raise SystemExit(f"h2load gave no result:\n{out.stdout}\n{out.stderr}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    done, ok = int(counts.group(1)), int(counts.group(2))
    lat = sorted(int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.count("\t") >= 2)
    pct = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000) if lat else (lambda q: float("nan"))
    # gRPC errors travel in trailers with HTTP 200: h2load counts them as succeeded, so the
    # server's own error log is checked by the caller (a clean run logs none).
    return {"rps": ok / seconds, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "errors": done - ok}


def measure(cost: str, front: str, batched: bool, args: argparse.Namespace, workdir: Path, cpus: tuple) -> Result:
    server_cpus, client_cpus = cpus
    server = Server(workdir, args, cost, batched, server_cpus)
    try:
        run = run_wrk if front == "rest" else run_h2load
        port = server.http if front == "rest" else server.grpc
        run(port, args.concurrency, args.warmup, client_cpus, workdir)
        before = server.batch_totals() if batched else (0.0, 0.0)
        cpu_before = server.cpu_seconds()
        figures = run(port, args.concurrency, args.duration, client_cpus, workdir)
        cpu = server.cpu_seconds() - cpu_before
        after = server.batch_totals() if batched else (0.0, 0.0)
    finally:
        server.stop()
    errors_logged = sum(1 for line in open(server.log.name, errors="replace") if "ERROR" in line or "Traceback" in line)
    result = Result(cost, front, "batched" if batched else "unbatched", "wrk" if front == "rest" else "h2load",
                    args.concurrency, figures["rps"], figures["p50_ms"], figures["p99_ms"],
                    figures["errors"] + errors_logged)
    result.cpu_us_per_request = cpu / max(1.0, figures["rps"] * args.duration) * 1e6
    if batched and after[0] > before[0]:
        calls = after[0] - before[0]
        result.calls_per_s = calls / args.duration
        result.mean_rows = (after[1] - before[1]) / calls
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds measured per run (after a warm-up)")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--fronts", default="rest,grpc", help="comma-separated: rest (wrk), grpc (h2load)")
    p.add_argument("--fixed-ms", type=float, default=2.0, help="predict's fixed cost per call")
    p.add_argument("--per-row-us", type=float, default=20.0, help="predict's cost per row")
    p.add_argument("--costs", default="sleep,serial,cpu", help="comma-separated: sleep, serial, cpu (see above)")
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--max-batch-time-ms", type=float, default=5.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--server-cpus", default=None, help="e.g. 0 (default: core 0 when there are two or more)")
    p.add_argument("--client-cpus", default=None, help="e.g. 1 (default: the other cores)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)

    fronts = [f.strip() for f in args.fronts.split(",") if f.strip()]
    for tool, front in (("wrk", "rest"), ("h2load", "grpc")):
        if front in fronts and not shutil.which(tool):
            raise SystemExit(f"{tool} not found (apt-get install -y {'wrk' if tool == 'wrk' else 'nghttp2-client'})")
    available = sorted(os.sched_getaffinity(0))
    parse = lambda text: {int(c) for c in text.split(",")} if text else None  # noqa: E731
    server_cpus = parse(args.server_cpus) or ({available[0]} if len(available) > 1 else None)
    client_cpus = parse(args.client_cpus) or (set(available[1:]) if len(available) > 1 else None)

    costs = [c.strip() for c in args.costs.split(",") if c.strip()]
    unknown = set(costs) - {"sleep", "serial", "cpu"}
    if unknown:
        raise SystemExit(f"unknown cost(s) {sorted(unknown)}")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="fastseldon-batching-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "BenchModel.py").write_text(MODEL)
        for cost in costs:
            for front in fronts:
                for batched in (False, True):
                    r = measure(cost, front, batched, args, workdir, (server_cpus, client_cpus))
                    results.append(r)
                    print(f"  {r.cost:6} {r.front:4} {r.mode:9} {r.rps:9.0f} req/s  p50 {r.p50_ms:7.2f} ms  "
                          f"p99 {r.p99_ms:7.2f} ms  errors {r.errors}"
                          + (f"  mean batch {r.mean_rows:.1f} rows" if r.mean_rows else ""), flush=True)

    print()
    print(f"predict: {args.fixed_ms:g} ms per call + {args.per_row_us:g} us per row; 1x10 float64 per request; "
          f"concurrency {args.concurrency}; {args.duration:g} s per run after {args.warmup:g} s warm-up; "
          f"server cpus {sorted(server_cpus) if server_cpus else 'any'}, load generator cpus "
          f"{sorted(client_cpus) if client_cpus else 'any'}; batched = --max-batch-size {args.max_batch_size} "
          f"--max-batch-time-ms {args.max_batch_time_ms:g}, unbatched = defaults")
    print(f"{'cost':6} {'front':5} {'mode':9} {'tool':6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/req':>10} "
          f"{'calls/s':>8} {'rows/call':>9} {'errors':>6}")
    for r in results:
        print(f"{r.cost:6} {r.front:5} {r.mode:9} {r.tool:6} {r.rps:9.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} "
              f"{r.cpu_us_per_request:10.0f} {(f'{r.calls_per_s:.0f}' if r.calls_per_s else '-'):>8} "
              f"{(f'{r.mean_rows:.1f}' if r.mean_rows else '-'):>9} {r.errors:6d}")
    ratios: dict[str, float] = {}
    for cost in costs:
        for front in fronts:
            base = next(r for r in results if (r.cost, r.front, r.mode) == (cost, front, "unbatched"))
            best = next(r for r in results if (r.cost, r.front, r.mode) == (cost, front, "batched"))
            ratio = best.rps / base.rps if base.rps else float("inf")
            ratios[f"{cost}/{front}"] = ratio
            print(f"{cost}/{front}: batched/unbatched throughput = {ratio:.1f}x "
                  f"({'meets' if ratio >= 5 else 'BELOW'} the 5x target)")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: v for k, v in vars(args).items() if k != "json"},
                                         "results": [asdict(r) for r in results], "ratios": ratios}, indent=2))
    return 0 if all(r.errors == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
