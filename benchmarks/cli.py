"""`python -m benchmarks run|report|list`: the harness's command line.

    python -m benchmarks run [--scenario NAME ...] [--duration S] [--concurrency 1,16,64]
                             [--servers fastseldon,seldon-core,mlserver,kserve,bentoml,ceiling] [--out DIR]
    python -m benchmarks run --smoke      # a few seconds: fastseldon and the ceilings only
    python -m benchmarks run --baseline-rev da070a3   # the working tree against fastseldon at da070a3
    python -m benchmarks report DIR       # re-render report.md and the plots from DIR/results.json
    python -m benchmarks list             # scenarios, servers and targets
    python -m benchmarks profile SCENARIO # py-spy: where fastseldon spends its time under load

Exit status of `run`: 0 when the run is clean, 3 when any answer check failed or any request
errored (the report says which), 2 for bad arguments.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from benchmarks import graphs, plots, report, runner, scenarios, servers
from benchmarks.machine import describe


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="fastseldon benchmark harness")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start servers, verify, load them, write results, report and plots")
    run.add_argument("--scenario", nargs="+", metavar="NAME", help="scenario names or prefixes; 'all' adds the cost model")
    run.add_argument("--servers", type=_names, help="comma list; 'ceiling' = the ceilings and the Python floor, 'graph' = the three "
                     "graph servers, 'fastseldon@REV' = fastseldon at git revision REV (default "
                     "fastseldon,seldon-core,mlserver,kserve,bentoml,ceiling, plus graph when a graph scenario is chosen; smoke: "
                     "fastseldon,ceiling; with --baseline-rev: fastseldon)")
    run.add_argument("--baseline-rev", action="append", metavar="REV", default=[],
                     help="also run fastseldon@REV (any git revision: exported and built once under "
                          ".bench-cache/rev-<sha>/) and report the working tree's ratio to it; repeatable")
    run.add_argument("--duration", type=int, help="seconds per measured run (default 5; smoke 1)")
    run.add_argument("--concurrency", type=_ints, help="comma list of connections in flight (default 1,16,64)")
    run.add_argument("--repeats", type=int, help="runs per point, median reported (default 3; smoke 1)")
    run.add_argument("--warmup", type=int, help="warm-up seconds before each server's first run at a concurrency")
    run.add_argument("--workers", type=int, default=1, help="server worker processes, the same for every server")
    run.add_argument("--server-cpus", type=_ints, help="cores for the servers (default: the first core)")
    run.add_argument("--client-cpus", type=_ints, help="cores for the load generators (default: the others)")
    run.add_argument("--graph-unit-cpus", type=_ints, help="cores for graph-remote's unit processes (default: the "
                     "server cores, shared with the graph executor)")
    run.add_argument("--open-loop", type=_floats, help="open-loop rates as fractions of the slowest server's "
                     "peak, e.g. 0.5,0.9; empty string: none (default 0.5)")
    run.add_argument("--open-loop-duration", type=float, help="seconds per open-loop run (default: --duration)")
    run.add_argument("--h2-streams", type=int, default=1, help="gRPC streams per HTTP/2 connection in h2load")
    run.add_argument("--smoke", action="store_true", help="a few seconds end to end: fastseldon and the ceilings")
    run.add_argument("--out", type=Path, default=Path("bench-out"), help="output directory (default bench-out)")
    rep = sub.add_parser("report", help="re-render report.md and plots from an existing results.json")
    rep.add_argument("dir", type=Path)
    sub.add_parser("list", help="print the scenarios, servers and targets")
    prof = sub.add_parser("profile", help="py-spy profile of fastseldon under load on one scenario")
    prof.add_argument("scenario")
    prof.add_argument("--duration", type=int, default=10)
    prof.add_argument("--concurrency", type=int, default=64)
    prof.add_argument("--top", type=int, default=25)
    prof.add_argument("--native", action="store_true", help="include C frames (Cython, grpc core)")
    prof.add_argument("--gil", action="store_true", help="only samples that hold the GIL")
    prof.add_argument("--out", type=Path, default=Path("bench-out"))
    return parser


def _config(args: argparse.Namespace) -> runner.RunConfig:
    smoke = args.smoke
    chosen = scenarios.select(args.scenario, smoke=smoke)
    if args.servers:
        names = list(args.servers)
    elif args.baseline_rev:
        names = ["fastseldon"]
    else:
        names = ["fastseldon", "ceiling"] if smoke else ["fastseldon", "seldon-core", "mlserver", "kserve", "bentoml", "ceiling"]
        if any(s.model == "graph" for s in chosen):
            names = ["graph"] if all(s.model == "graph" for s in chosen) else [*names, "graph"]
    names += [rev if rev.startswith("fastseldon@") else f"fastseldon@{rev}" for rev in args.baseline_rev]
    server_cpus, client_cpus = runner.default_cpus(args.workers)
    duration = args.duration or (1 if smoke else 5)
    return runner.RunConfig(
        scenarios=chosen,
        servers=servers.expand(names),
        concurrency=args.concurrency or ([1, 16] if smoke else [1, 16, 64]),
        duration_s=duration,
        warmup_s=args.warmup if args.warmup is not None else (0 if smoke else 1),
        repeats=args.repeats or (1 if smoke else 3),
        workers=args.workers,
        server_cpus=set(args.server_cpus) if args.server_cpus else server_cpus,
        client_cpus=set(args.client_cpus) if args.client_cpus else client_cpus,
        graph_unit_cpus=set(args.graph_unit_cpus or []),
        open_loop=args.open_loop if args.open_loop is not None else [0.5],
        open_loop_duration_s=args.open_loop_duration or float(duration),
        h2_streams=args.h2_streams,
        out=args.out,
    )


def write_outputs(results: dict, out: Path, command: str) -> list[Path]:
    """results.json, report.md and the PNG plots into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    results["command"] = command
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "report.md").write_text(report.render(results, command))
    return [out / "results.json", out / "report.md", *plots.write_all(results, out)]


def _print_summary(results: dict) -> None:
    print(describe(results["machine"]))
    for r in results["ratios"]:
        if r["minimum"] is None or not report.covered(results, r):
            continue
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}"
        print(f"  {r['label']:<38} fastseldon {report._rps(r['fastseldon_rps']):>9} req/s  "
              f"{r['baseline']:<14} {report._rps(r['baseline_rps']):>9} req/s  ratio {ratio:>6} "
              f"(target {r['minimum']:g})  {r['status']}")
    for line in graphs.summary_lines(results):
        print(line)


def _print_revisions(results: dict) -> None:
    rows = results.get("revision_ratios") or []
    if not rows:
        return
    wt = results.get("working_tree") or {}
    print(f"working tree (HEAD {wt.get('short', '?')}, {len(wt.get('changed') or [])} uncommitted change(s)) "
          f"vs baseline revision, peak req/s, ratio current/baseline:")
    for r in rows:
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.3f}"
        spread = "/".join(f"{r['spread'][s]:.1%}" for s in ("fastseldon", r["baseline"]) if s in r["spread"])
        best_text = "" if r.get("best_ratio") is None else f"best runs {r['best_ratio']:.3f}"
        print(f"  {r['scenario']:<30} fastseldon {report._rps(r['current_rps']):>9}  {r['baseline']:<20} "
              f"{report._rps(r['baseline_rps']):>9}  ratio {ratio:>6}  {best_text}  (spread {spread or 'n/a'})  "
              f"{r['status']}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser().parse_args(argv)
    if args.command == "list":
        for s in scenarios.SCENARIOS:
            speakers = [n for n, spec in servers.SERVERS.items() if spec.serves(s)]
            print(f"{s.name:<36} {s.api:<12} {s.encoding:<8} {s.size_label:<8} {s.dtype:<8} {', '.join(speakers)}")
        print()
        for t in scenarios.TARGETS:
            print(f"target: {t.label:<38} {t.scenario} / {t.baseline} on {t.against} >= {t.minimum:g}")
        print("\nserver fastseldon@REV: fastseldon at any git revision REV (--servers fastseldon@REV or --baseline-rev REV)")
        return 0
    if args.command == "profile":
        from benchmarks.profiling import profile

        sc = scenarios.select([args.scenario])[0]
        path = profile(sc, duration_s=args.duration, concurrency=args.concurrency, top=args.top, out=args.out,
                       native=args.native, gil=args.gil)
        print(path.read_text())
        return 0
    if args.command == "report":
        results = json.loads((args.dir / "results.json").read_text())
        runner.summarize(results)
        for path in write_outputs(results, args.dir, results.get("command", "")):
            print(path)
        return 0
    config = _config(args)
    command = "python -m benchmarks " + shlex.join(argv)
    results = runner.run(config)
    for path in write_outputs(results, config.out, command):
        print(f"wrote {path}")
    _print_summary(results)
    _print_revisions(results)
    issues = report.problems(results)
    if issues:
        print(f"run WITH ERRORS ({len(issues)}):", *issues[:20], sep="\n  ")
        return 3
    return 0
