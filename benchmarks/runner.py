"""Run a benchmark: start the servers, verify, warm up, measure (interleaved repeats), stop.

Repeats are interleaved across servers (rep 1 of every server, then rep 2, ...), so a burst
of background load on a shared box lands on all of them rather than on one; the median of the
repeats is what the report shows.
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import graphs, loadgen, openloop, revisions, servers
from benchmarks.machine import machine_info
from benchmarks.payloads import grpc_request, http_request
from benchmarks.scenarios import BY_NAME, TARGETS, Scenario
from benchmarks.verify import verify_until_ready


@dataclass
class RunConfig:
    scenarios: list[Scenario]
    servers: list[str]
    concurrency: list[int]
    duration_s: int = 5
    warmup_s: int = 1
    repeats: int = 3
    workers: int = 1
    server_cpus: set[int] = field(default_factory=set)
    client_cpus: set[int] = field(default_factory=set)
    graph_unit_cpus: set[int] = field(default_factory=set)  # graph-remote's unit processes; empty: server_cpus
    open_loop: list[float] = field(default_factory=lambda: [0.5])  # fractions of the slowest server's peak
    open_loop_duration_s: float = 5.0
    open_loop_max_rps: float = 5000.0  # past this a Python generator on one core is the bottleneck
    h2_streams: int = 1  # gRPC streams per HTTP/2 connection in h2load
    out: Path = Path("bench-out")

    def to_json(self) -> dict:
        return {
            "scenarios": [s.name for s in self.scenarios],
            "servers": self.servers,
            "concurrency": self.concurrency,
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "repeats": self.repeats,
            "workers": self.workers,
            "server_cpus": sorted(self.server_cpus),
            "client_cpus": sorted(self.client_cpus),
            "graph_unit_cpus": sorted(self.graph_unit_cpus or self.server_cpus),
            "open_loop_fractions": self.open_loop,
            "open_loop_duration_s": self.open_loop_duration_s,
            "open_loop_max_rps": self.open_loop_max_rps,
            "h2load_streams_per_connection": self.h2_streams,
        }


def default_cpus(workers: int) -> tuple[set[int], set[int]]:
    """Server on the first `workers` usable cores, load generators on the rest (both share one if only one)."""
    import os

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return set(cores), set(cores)
    n = min(workers, len(cores) - 1)
    return set(cores[:n]), set(cores[n:])


class Progress:
    """One line per finished step, with a count and an estimate of the time left."""

    def __init__(self, total: int, stream=sys.stderr) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.started = time.monotonic()
        self.stream = stream

    def note(self, text: str) -> None:
        print(f"  {text}", file=self.stream, flush=True)

    def step(self, label: str, outcome: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done * (self.total - self.done)
        print(f"[{self.done:>4}/{self.total}] {100 * self.done / self.total:5.1f}%  {label:<70} {outcome}"
              f"   (elapsed {_clock(elapsed)}, left ~{_clock(eta)})", file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


def _plan(config: RunConfig) -> list[tuple[Scenario, list[str]]]:
    plan = []
    for sc in config.scenarios:
        names = [n for n in config.servers if servers.SERVERS[n].serves(sc)]
        if names:
            plan.append((sc, names))
    return plan


def run(config: RunConfig) -> dict:
    """Run everything the config asks for and return the results document (results.json)."""
    loadgen.require_tools()
    results: dict = {
        "machine": machine_info(config.server_cpus, config.client_cpus),
        "config": config.to_json(),
        "servers": {},
        "verification": [],
        "runs": [],
        "open_loop": [],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "working_tree": revisions.working_tree(),
    }
    plan = _plan(config)
    steps = sum(len(names) * (len(config.concurrency) * config.repeats + len(config.open_loop)) for _, names in plan)
    progress = Progress(steps)
    _prepare_revisions(config, results, progress)
    # servers start once per group; a graph server runs one chain, its remote units over the scenario's transport
    groups: dict[tuple[str, int, int, str], list[tuple[Scenario, list[str]]]] = {}
    for sc, names in plan:
        layout = (sc.chain, sc.transport) if sc.model == "graph" else (0, "")
        groups.setdefault((sc.model, sc.cost_us, *layout), []).append((sc, names))
    for (model, cost_us, chain, transport), items in groups.items():
        wanted = [n for n in config.servers if any(n in names for _, names in items)]
        running = _start_all(wanted, model, cost_us, config, results, progress, chain, transport)
        try:
            for sc, names in items:
                for name in [n for n in names if n in running and not running[n].alive()]:
                    # A server that died earlier is reported there; start a fresh one for what is left.
                    running[name].stop()
                    running.update(_start_all([name], model, cost_us, config, results, progress, chain, transport))
                _run_scenario(sc, [running[n] for n in names if n in running], config, results, progress,
                              failed=[n for n in names if n not in running])
        finally:
            for srv in running.values():
                srv.stop()
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["machine"]["loadavg_end"] = machine_info(set(), set())["loadavg"]
    summarize(results)
    return results


def _prepare_revisions(config: RunConfig, results: dict, progress: Progress) -> None:
    """Export and build every fastseldon@REV server before any server starts (so no build overlaps a run)."""
    specs = [servers.SERVERS[n] for n in config.servers if servers.SERVERS[n].revision is not None]
    if not specs:
        return
    results["revisions"] = {}
    for spec in specs:
        rev = spec.revision
        entry = {"sha": rev.sha, "short": rev.short, "subject": rev.subject, "tree": str(revisions.tree_dir(rev))}
        try:
            pythonpath, info = revisions.prepare(rev, log=progress.note)
            entry.update(pythonpath=str(pythonpath), probe=info)
            progress.note(f"{spec.name}: runs {info['file']} ({info['implementation']} codec)")
        except revisions.RevisionError as exc:
            entry["problem"] = str(exc)
            progress.note(f"{spec.name}: not prepared: {exc}")
        results["revisions"][spec.name] = entry
    try:
        results["working_tree"]["probe"] = revisions.current_probe()
    except revisions.RevisionError as exc:
        results["working_tree"]["probe"] = {"problem": str(exc)}
    stale = results["working_tree"]["probe"].get("stale_native")
    if stale:
        progress.note(f"fastseldon (working tree): its compiled codec is older than {', '.join(stale)}: "
                      f"the comparison uses the old build (python setup.py build_ext --inplace rebuilds it)")


def _loaded_from(srv: servers.RunningServer) -> tuple[list[str], str | None]:
    """The compiled codec modules fastseldon's processes mapped; for a revision, a problem if any is foreign."""
    if srv.spec.name != "fastseldon" and srv.spec.revision is None:
        return [], None
    deadline = time.monotonic() + 10
    while True:  # workers import the codec after the fork; their ports may open first
        mapped = sorted({p for pid in _group_pids(srv.process.pid) for p in revisions.mapped_native(pid)})
        if mapped or time.monotonic() > deadline or not srv.alive():
            break
        time.sleep(0.2)
    if srv.spec.revision is not None:
        tree = revisions.tree_dir(srv.spec.revision).resolve()
        foreign = [p for p in mapped if not Path(p).resolve().is_relative_to(tree)]
        if foreign:
            return mapped, f"runs compiled modules from outside {tree}: {foreign}"
    return mapped, None


def _group_pids(pgid: int) -> list[int]:
    """The processes of a server's process group (the supervisor and its forked workers); Linux /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def _start_all(names: list[str], model: str, cost_us: int, config: RunConfig, results: dict,
               progress: Progress, chain: int = 0, transport: str = "") -> dict[str, servers.RunningServer]:
    running: dict[str, servers.RunningServer] = {}
    for name in names:
        spec = servers.SERVERS[name]
        key = name if model == "identity" else f"{name} ({model} {cost_us} us)"
        if model == "graph":
            key = f"{name} ({chain}-unit chain, {transport})"
        if key in results["servers"]:
            key += f" (restart {sum(k.startswith(key) for k in results['servers'])})"
        try:
            srv = servers.start(spec, model=model, cost_us=cost_us, workers=config.workers,
                                cpus=config.server_cpus, log_dir=config.out / "logs",
                                unit_cpus=config.graph_unit_cpus or config.server_cpus,
                                **({"chain": chain or 3, "unit_transport": transport} if model == "graph" else {}))
        except (OSError, ValueError) as exc:
            results["servers"][key] = {"started": False, "problem": str(exc)}
            progress.note(f"{name}: not started: {exc}")
            continue
        problem = servers.wait_listening(srv)
        native: list[str] = []
        if problem is None:
            native, problem = _loaded_from(srv)
        results["servers"][key] = {"started": problem is None, "problem": problem, "command": srv.command,
                                   "notes": srv.notes, "log": str(srv.log_path)}
        if srv.companions:
            results["servers"][key]["units"] = {c.name: {"command": c.command, "log": str(c.log_path)}
                                                for c in srv.companions}
        if native:
            results["servers"][key]["native_modules"] = native
        if problem:
            progress.note(f"{name}: not serving: {problem[-300:]}")
            srv.stop()
            continue
        running[name] = srv
    return running


def _run_scenario(sc: Scenario, active: list[servers.RunningServer], config: RunConfig, results: dict,
                  progress: Progress, failed: list[str]) -> None:
    for name in failed:
        results["verification"].append({"server": name, "scenario": sc.name, "ok": False, "problem": "server did not start"})
        progress.total -= len(config.concurrency) * config.repeats + len(config.open_loop)
    verified = []
    for srv in active:
        problem = verify_until_ready(srv, sc)
        results["verification"].append({"server": srv.spec.name, "scenario": sc.name, "ok": problem is None,
                                        "problem": problem})
        if problem is None:
            verified.append(srv)
        else:
            progress.note(f"{srv.spec.name} {sc.name}: answer check failed, not loaded: {problem[:300]}")
            progress.total -= len(config.concurrency) * config.repeats + len(config.open_loop)
    for conc in config.concurrency:
        for rep in range(config.repeats):
            # Alternate the order (A B, B A, ...) so neither server always runs right after the other.
            for srv in verified if rep % 2 == 0 else verified[::-1]:
                if not srv.alive():
                    continue
                if rep == 0 and config.warmup_s:
                    _measure(srv, sc, conc, config.warmup_s, config)
                m = _measure(srv, sc, conc, config.duration_s, config)
                results["runs"].append({"server": srv.spec.name, "scenario": sc.name, "repeat": rep, **m.to_json()})
                outcome = f"{m.rps:>10,.0f} req/s  p99 {m.latency_us.get('p99', 0) / 1000:7.2f} ms"
                if m.error_count:
                    outcome += f"  ERRORS {m.errors}"
                progress.step(f"{sc.name} c={conc} rep {rep + 1}/{config.repeats} {srv.spec.name}", outcome)
    for srv in verified:
        if not srv.alive():
            results["verification"].append({"server": srv.spec.name, "scenario": sc.name, "ok": False,
                                            "problem": f"server died during the run (exit status "
                                                       f"{srv.process.returncode}): {srv.log_tail(500)}"})
            progress.note(f"{srv.spec.name} died during {sc.name} (exit status {srv.process.returncode})")
    _open_loop(sc, [s for s in verified if s.alive()], config, results, progress)


def _measure(srv: servers.RunningServer, sc: Scenario, conc: int, duration_s: int, config: RunConfig):
    if sc.transport == "http":
        return loadgen.run_wrk(srv.http_port, http_request(sc), concurrency=conc, duration_s=duration_s,
                               cpus=config.client_cpus)
    return loadgen.run_h2load(srv.grpc_port, grpc_request(sc), concurrency=conc, duration_s=duration_s,
                              cpus=config.client_cpus, streams_per_connection=config.h2_streams)


def _open_loop(sc: Scenario, verified: list[servers.RunningServer], config: RunConfig, results: dict,
               progress: Progress) -> None:
    """Every server at the same offered load: a fraction of the slowest server's peak throughput."""
    if not config.open_loop or not verified:
        return
    peaks = [max((r["rps"] for r in results["runs"] if r["server"] == s.spec.name and r["scenario"] == sc.name),
                 default=0.0) for s in verified]
    slowest = min(peaks)
    for fraction in config.open_loop:
        rate = min(fraction * slowest, config.open_loop_max_rps)
        for srv in verified:
            if rate < 1:
                progress.step(f"{sc.name} open-loop {srv.spec.name}", "skipped: no throughput to base a rate on")
                continue
            if sc.transport == "http":
                req = http_request(sc)
                res = openloop.run(transport="http", port=srv.http_port, path=req.path, body=req.body,
                                   headers=req.headers, rate=rate, duration_s=config.open_loop_duration_s,
                                   connections=max(config.concurrency), processes=len(config.client_cpus),
                                   cpus=config.client_cpus)
            else:
                req = grpc_request(sc)
                res = openloop.run(transport="grpc", port=srv.grpc_port, path=req.method, body=req.message,
                                   rate=rate, duration_s=config.open_loop_duration_s,
                                   connections=max(config.concurrency), processes=len(config.client_cpus),
                                   cpus=config.client_cpus)
            results["open_loop"].append({"server": srv.spec.name, "scenario": sc.name, "fraction": fraction,
                                         **res.to_json()})
            outcome = f"{res.achieved_rps:>8,.0f}/{rate:,.0f} req/s  p99 {res.latency_us.get('p99', 0) / 1000:7.2f} ms"
            if res.errors:
                outcome += f"  ERRORS {res.errors}"
            if res.generator_limited:
                outcome += "  (generator-limited)"
            progress.step(f"{sc.name} open-loop {fraction:g}x {srv.spec.name}", outcome)


# --- summary: medians, peaks, ratios ---------------------------------------------------------


def summarize(results: dict) -> None:
    """Add `summary` (median per server/scenario/concurrency), `peaks` and `ratios` to results."""
    cells: dict[tuple[str, str, int], list[dict]] = {}
    for r in results["runs"]:
        cells.setdefault((r["server"], r["scenario"], r["concurrency"]), []).append(r)
    summary = []
    for (server, scenario, conc), runs in cells.items():
        ordered = sorted(runs, key=lambda r: r["rps"])
        median_run = ordered[(len(ordered) - 1) // 2]
        summary.append({
            "server": server, "scenario": scenario, "concurrency": conc,
            "median_rps": statistics.median(r["rps"] for r in runs),
            "min_rps": ordered[0]["rps"], "max_rps": ordered[-1]["rps"], "repeats": len(runs),
            "errors": sum(sum(r["errors"].values()) for r in runs),
            "latency_us": median_run["latency_us"],
        })
    results["summary"] = summary
    peaks: dict[str, dict[str, dict]] = {}
    for row in summary:
        best = peaks.setdefault(row["scenario"], {}).get(row["server"])
        if best is None or row["median_rps"] > best["rps"]:
            peaks[row["scenario"]][row["server"]] = {"rps": row["median_rps"], "concurrency": row["concurrency"]}
    for row in summary:  # a peak is clean only if no run of that server on that scenario had errors
        peak = peaks[row["scenario"]][row["server"]]
        peak["errors"] = peak.get("errors", 0) + row["errors"]
    for v in results.get("verification", []):  # nor if the server failed a check or died on it
        peak = peaks.get(v["scenario"], {}).get(v["server"])
        if peak is not None and not v["ok"]:
            peak["errors"] += 1
    results["peaks"] = peaks
    failed = {(v["server"], v["scenario"]) for v in results.get("verification", []) if not v["ok"]}
    results["ratios"] = ratios(peaks, failed)
    results["revision_ratios"] = revision_ratios(summary, peaks, failed)
    results["graphs"] = graphs.summarize(results, {s.name for s in BY_NAME.values() if s.model == "graph"})


def revision_ratios(summary: list[dict], peaks: dict, failed: set[tuple[str, str]] = frozenset()) -> list[dict]:
    """The working tree's fastseldon over each fastseldon@REV, per scenario (> 1: the working tree is faster).

    `ratio` compares peaks, `best_ratio` the fastest single runs; `by_concurrency` compares the
    medians (`ratio`) and the fastest runs (`best_ratio`) at each concurrency both ran; `spread` is each side's min–max range of repeats
    over its median at its peak, the noise to read the ratio against.
    """
    revs = [n for n in dict.fromkeys(r["server"] for r in summary) if revisions.is_revision(n)]
    revs += [n for n in dict.fromkeys(s for s, _ in failed) if revisions.is_revision(n) and n not in revs]
    cells = {(r["server"], r["scenario"], r["concurrency"]): r for r in summary}
    scenarios = list(dict.fromkeys([*(r["scenario"] for r in summary), *(sc for _, sc in failed)]))
    rows = []
    for rev in revs:
        for scenario in scenarios:
            ours, theirs = peaks.get(scenario, {}).get("fastseldon"), peaks.get(scenario, {}).get(rev)
            broken = [s for s in ("fastseldon", rev) if (s, scenario) in failed]
            if not ours and not theirs and not broken:
                continue
            row = {"scenario": scenario, "baseline": rev, "current_rps": ours["rps"] if ours else None,
                   "baseline_rps": theirs["rps"] if theirs else None, "ratio": None, "by_concurrency": [],
                   "spread": {}}
            for (server, sc, conc), cell in sorted(cells.items(), key=lambda kv: kv[0][2]):
                if server == "fastseldon" and sc == scenario and (rev, sc, conc) in cells:
                    base = cells[(rev, sc, conc)]
                    row["by_concurrency"].append({
                        "concurrency": conc, "current_rps": cell["median_rps"], "baseline_rps": base["median_rps"],
                        "ratio": cell["median_rps"] / base["median_rps"] if base["median_rps"] else None,
                        # background load only ever slows a run: the best runs are the least disturbed
                        "best_ratio": cell["max_rps"] / base["max_rps"] if base["max_rps"] else None})
            for server, peak in (("fastseldon", ours), (rev, theirs)):
                cell = cells.get((server, scenario, peak["concurrency"])) if peak else None
                if cell and cell["median_rps"]:
                    row["spread"][server] = (cell["max_rps"] - cell["min_rps"]) / cell["median_rps"]
            best = {server: max((c["max_rps"] for (n, sc, _), c in cells.items() if n == server and sc == scenario),
                                default=0.0) for server in ("fastseldon", rev)}
            row["best_ratio"] = best["fastseldon"] / best[rev] if best[rev] and best["fastseldon"] else None
            if ours and theirs and theirs["rps"]:
                row["ratio"] = ours["rps"] / theirs["rps"]
                row["status"] = "errors in run" if ours["errors"] or theirs["errors"] else ""
            else:
                row["status"] = f"failed ({', '.join(broken)})" if broken else "not measured"
            rows.append(row)
    return rows


def _peak(peaks: dict, scenario: str, server: str) -> dict | None:
    if server == "grpc-echo-best":
        options = [p for p in (peaks.get(scenario, {}).get(n) for n in ("grpc-echo-threaded", "grpc-echo-aio")) if p]
        return max(options, key=lambda p: p["rps"]) if options else None
    return peaks.get(scenario, {}).get(server)


def ratios(peaks: dict, failed: set[tuple[str, str]] = frozenset()) -> list[dict]:
    """fastseldon's peak over every other server's, on each scenario; with the issue's target where one exists."""
    rows = []
    targeted = {(t.scenario, t.baseline, t.against): t for t in TARGETS}
    pairs = []
    for scenario, by_server in peaks.items():
        for server in by_server:
            # graph servers are compared with each other (graphs.summarize), not with fastseldon
            if server != "fastseldon" and not server.startswith("graph-"):
                pairs.append((scenario, server, scenario))
        if {"grpc-echo-threaded", "grpc-echo-aio"} & set(by_server):
            pairs.append((scenario, "grpc-echo-best", scenario))
    for t in TARGETS:
        if (t.scenario, t.baseline, t.against) not in pairs:
            pairs.append((t.scenario, t.baseline, t.against))
    for scenario, baseline, against in pairs:
        target = targeted.get((scenario, baseline, against))
        ours = _peak(peaks, scenario, "fastseldon")
        theirs = _peak(peaks, against, baseline)
        row = {"scenario": scenario, "baseline": baseline, "baseline_scenario": against,
               "label": target.label if target else "", "minimum": target.minimum if target else None,
               "fastseldon_rps": ours["rps"] if ours else None, "baseline_rps": theirs["rps"] if theirs else None}
        if not ours or not theirs or not theirs["rps"]:
            row["ratio"] = None
            broken = [s for s, sc in (("fastseldon", scenario), (baseline, against)) if (s, sc) in failed]
            row["status"] = f"failed ({', '.join(broken)})" if broken else "not measured"
        else:
            row["ratio"] = ours["rps"] / theirs["rps"]
            if ours["errors"] or theirs["errors"]:
                row["status"] = "errors in run"
            elif target is None:
                row["status"] = ""
            else:
                row["status"] = "met" if row["ratio"] >= target.minimum else "MISSED"
        rows.append(row)
    order = {(t.scenario, t.baseline, t.against): i for i, t in enumerate(TARGETS)}
    rows.sort(key=lambda r: order.get((r["scenario"], r["baseline"], r["baseline_scenario"]), len(order)))
    return rows
