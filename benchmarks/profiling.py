"""Where fastseldon spends its time under load: py-spy samples of the loaded worker, summarised.

    python -m benchmarks profile SCENARIO [--duration 10] [--concurrency 64] [--top 25] [--out DIR]

Starts fastseldon (one worker, pinned like a benchmark run), loads it with wrk or h2load, and
samples every process of the server with `py-spy record --subprocesses` (installed by
`bash benchmarks/setup.sh profile`, in its own venv). Writes the raw collapsed stacks and
`profile-SCENARIO.md` with the functions that cost most, by own time and by inclusive time.
"""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks import loadgen, servers
from benchmarks.payloads import grpc_request, http_request
from benchmarks.runner import default_cpus
from benchmarks.scenarios import Scenario
from benchmarks.verify import verify_until_ready


def py_spy() -> str:
    local = servers.cache_dir() / "tools" / "bin" / "py-spy"
    found = str(local) if local.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy is missing: run `bash benchmarks/setup.sh profile`")
    return found


def summarize(collapsed: str, top: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, top own-time frames, top inclusive frames) from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f]
        # py-spy prefixes each stack with the process and thread; those are not code
        code = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not code:
            continue
        own[code[-1]] += n
        for frame in set(code):
            inclusive[frame] += n
    return total, own.most_common(top), inclusive.most_common(top)


def profile(sc: Scenario, *, duration_s: int, concurrency: int, top: int, out: Path, native: bool = False,
            gil: bool = False) -> Path:
    spy = py_spy()
    out.mkdir(parents=True, exist_ok=True)
    server_cpus, client_cpus = default_cpus(1)
    srv = servers.start(servers.SERVERS["fastseldon"], model=sc.model, cost_us=sc.cost_us, workers=1,
                        cpus=server_cpus, log_dir=out / "logs")
    raw = out / f"profile-{sc.name}.txt"
    try:
        problem = servers.wait_listening(srv) or verify_until_ready(srv, sc)
        if problem:
            raise SystemExit(f"fastseldon does not serve {sc.name}: {problem}")
        result: dict = {}

        def load() -> None:
            if sc.transport == "http":
                result["m"] = loadgen.run_wrk(srv.http_port, http_request(sc), concurrency=concurrency,
                                              duration_s=duration_s + 2, cpus=client_cpus)
            else:
                result["m"] = loadgen.run_h2load(srv.grpc_port, grpc_request(sc), concurrency=concurrency,
                                                 duration_s=duration_s + 2, cpus=client_cpus)

        loader = threading.Thread(target=load)
        loader.start()
        time.sleep(1.0)  # sample the steady state, not the first connections
        cmd = [spy, "record", "--pid", str(srv.process.pid), "--subprocesses", "--duration", str(duration_s),
               "--rate", "200", "--function", "--format", "raw", "--output", str(raw), "--nonblocking"]
        if native:
            cmd.append("--native")
        if gil:  # only samples holding the GIL: threads parked in grpc's queues drop out
            cmd.append("--gil")
        spied = subprocess.run(cmd, capture_output=True, text=True)
        loader.join()
        if spied.returncode != 0 or not raw.exists():
            raise SystemExit(f"py-spy failed: {spied.stderr[-1000:]}")
    finally:
        srv.stop()
    total, own, inclusive = summarize(raw.read_text(), top)
    m = result.get("m")
    lines = [f"# Profile of fastseldon on {sc.name}", "",
             f"Load: {m.tool if m else '?'} c={concurrency}, {m.rps if m else 0:,.0f} req/s while sampled "
             f"({total} samples at 200 Hz over {duration_s} s, idle time excluded"
             f"{', GIL holders only' if gil else ''}).", "",
             "## Own time (the frame on top of the stack)", "", "| share | samples | function (file:line) |",
             "|---:|---:|---|"]
    lines += [f"| {n / total:.1%} | {n} | `{frame}` |" for frame, n in own]
    lines += ["", "## Inclusive time (the frame anywhere on the stack)", "",
              "py-spy samples without pausing the server (--nonblocking), so some stacks are cut short: "
              "inclusive shares are lower bounds.", "", "| share | samples | function |",
              "|---:|---:|---|"]
    lines += [f"| {n / total:.1%} | {n} | `{frame}` |" for frame, n in inclusive]
    path = out / f"profile-{sc.name}.md"
    path.write_text("\n".join(lines) + "\n")
    return path
