"""Closed-loop load with compiled tools: wrk for HTTP/1.1 keep-alive, h2load for gRPC.

Python clients top out far below a bare uvloop server, so throughput is measured with
Debian's wrk and h2load, pinned to the cores the server does not use. Each run returns a
`Measurement`; transport errors and non-2xx answers are counted, never dropped.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.payloads import GrpcRequest, HttpRequest

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


@dataclass
class Measurement:
    """One load run against one server."""

    tool: str
    concurrency: int
    duration_s: float
    requests: int  # completed requests, errors included
    rps: float  # completed 2xx requests per second
    errors: dict[str, int] = field(default_factory=dict)  # transport errors by kind, and non2xx
    latency_us: dict[str, float] = field(default_factory=dict)  # mean, p50, p90, p99, p99.9, max
    problem: str = ""  # why the tool gave no figure (then errors has "no_result")

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict:
        return asdict(self)


def _no_result(tool: str, concurrency: int, output: str) -> Measurement:
    """A run that produced no figure (server gone, refused connection): an error, never a zero to average."""
    return Measurement(tool, concurrency, 0.0, 0, 0.0, {"no_result": 1}, {}, output.strip()[-500:])


def require_tools() -> dict[str, str]:
    """Paths of wrk and h2load; a clear error naming the set-up script when one is missing."""
    found = {name: shutil.which(name) for name in ("wrk", "h2load")}
    missing = [n for n, p in found.items() if not p]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run `bash benchmarks/setup.sh tools`")
    return found  # type: ignore[return-value]


def tool_versions() -> dict[str, str]:
    out = {}
    for name, args in (("wrk", ["wrk", "-v"]), ("h2load", ["h2load", "--version"])):
        try:
            text = subprocess.run(args, capture_output=True, text=True, timeout=5).stdout
            out[name] = text.splitlines()[0].split(" Copyright")[0].strip() if text else "?"
        except (OSError, subprocess.TimeoutExpired):
            out[name] = "missing"
    return out


def _pin(cpus: set[int] | None):
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


# --- wrk -------------------------------------------------------------------------------------

_WRK_SCRIPT = """
wrk.method = "POST"
local f = assert(io.open({body_path}, "rb"))
wrk.body = f:read("*a")
f:close()
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,' ..
    '"timeout":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p99.9":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for these values


def run_wrk(port: int, req: HttpRequest, *, concurrency: int, duration_s: int, cpus: set[int] | None,
            timeout_s: int = 10) -> Measurement:
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        body_path = Path(tmp) / "body"
        body_path.write_bytes(req.body)
        headers = "\n".join(f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in req.headers)
        script = Path(tmp) / "post.lua"
        script.write_text(_WRK_SCRIPT.format(body_path=_lua_string(str(body_path)), headers=headers))
        cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, int(duration_s))}s", f"--timeout={timeout_s}s",
               "-s", str(script), f"http://127.0.0.1:{port}{req.path}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_pin(cpus),
                              timeout=duration_s + timeout_s + 30)
    return parse_wrk(proc.stdout + proc.stderr, concurrency)


def parse_wrk(output: str, concurrency: int) -> Measurement:
    """Read the WRK_RESULT line our Lua `done` hook prints."""
    match = re.search(r"^WRK_RESULT (\{.*\})$", output, re.M)
    if not match:
        return _no_result("wrk", concurrency, output)
    r = json.loads(match.group(1))
    if r["requests"] == 0:
        return _no_result("wrk", concurrency, "wrk completed no request\n" + output)
    duration = r["duration_us"] / 1e6
    errors = {k: r[k] for k in ("connect", "read", "write", "timeout") if r[k]}
    if r["status"]:
        errors["non2xx"] = r["status"]
    good = r["requests"] - r["status"]
    latency = {"mean": r["mean"], "max": float(r["max"])}
    latency.update({f"p{p:g}": float(r[f"p{p:g}"]) for p in PERCENTILES})
    return Measurement("wrk", concurrency, duration, r["requests"], good / duration if duration else 0.0,
                       errors, latency)


# --- h2load ----------------------------------------------------------------------------------


def h2_layout(concurrency: int, streams_per_connection: int) -> tuple[int, int]:
    """(connections, streams per connection) for a total of `concurrency` requests in flight."""
    streams = max(1, min(streams_per_connection, concurrency))
    return math.ceil(concurrency / streams), streams


def run_h2load(port: int, req: GrpcRequest, *, concurrency: int, duration_s: int, cpus: set[int] | None,
               streams_per_connection: int = 1, timeout_s: int = 10) -> Measurement:
    connections, streams = h2_layout(concurrency, streams_per_connection)
    with tempfile.TemporaryDirectory(prefix="bench-h2-") as tmp:
        data = Path(tmp) / "frame"
        data.write_bytes(req.framed)
        log = Path(tmp) / "requests.log"
        cmd = ["h2load", "-t1", f"-c{connections}", f"-m{streams}", f"-D{max(1, int(duration_s))}",
               f"-T{timeout_s}", f"--data={data}", f"--log-file={log}",
               "-H", "content-type: application/grpc", "-H", "te: trailers",
               f"http://127.0.0.1:{port}{req.method}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_pin(cpus),
                              timeout=duration_s + timeout_s + 30)
        per_request = log.read_text() if log.exists() else ""
    return parse_h2load(proc.stdout + proc.stderr, per_request, concurrency)


def parse_h2load(output: str, log_text: str, concurrency: int) -> Measurement:
    """Counts from h2load's summary; latency percentiles from its per-request log."""
    finished = re.search(r"finished in ([\d.]+)(m?s)", output)
    counts = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", output)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    if not (finished and counts and codes):
        return _no_result("h2load", concurrency, output)
    duration = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    _total, _started, done, succeeded, failed, errored, timed_out = map(int, counts.groups())
    two, three, four, five = map(int, codes.groups())
    errors = {"errored": errored, "timeout": timed_out, "non2xx": three + four + five}
    errors["failed"] = max(0, failed - errored - timed_out - errors["non2xx"])
    errors = {k: v for k, v in errors.items() if v}
    if done == 0:  # h2load reports a refused connection as nothing at all
        return _no_result("h2load", concurrency, "h2load completed no request (server not reachable?)\n" + output)
    latency: dict[str, float] = {}
    # h2load's log: start time (µs since epoch) \t HTTP status \t microseconds to the end of the answer
    lat = np.array([int(line.split("\t")[2]) for line in log_text.splitlines() if line.count("\t") >= 2],
                   dtype=np.float64)
    if lat.size:
        latency = {"mean": float(lat.mean()), "max": float(lat.max())}
        latency.update({f"p{p:g}": float(v) for p, v in zip(PERCENTILES, np.percentile(lat, PERCENTILES))})
    return Measurement("h2load", concurrency, duration, done, two / duration if duration else 0.0, errors, latency)
