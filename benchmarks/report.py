"""The markdown report: targets, ratios, throughput and latency tables, from results.json."""
from __future__ import annotations

from benchmarks import graphs
from benchmarks.machine import describe
from benchmarks.scenarios import BY_NAME

ORDER = ["fastseldon", "seldon-core", "mlserver", "kserve", "bentoml", "ceiling-http", "python-floor",
         "grpc-echo-threaded", "grpc-echo-aio",
         *graphs.SERVER_NAMES.values()]


def _rps(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}"


def _ms(us: float | None) -> str:
    return "–" if us is None else f"{us / 1000:.2f}"


def _ratio(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.0%}" if x < 1 else f"{x:.1f}×"


def _order(name: str) -> float:
    if name.startswith("fastseldon@"):  # a revision of fastseldon: right after the working tree's
        return 0.5
    return ORDER.index(name) if name in ORDER else len(ORDER)


def problems(results: dict) -> list[str]:
    """Everything that makes the run not clean: failed checks, errors, non-2xx, dead servers."""
    out = [f"{v['server']} on {v['scenario']}: {(v['problem'] or '')[:200]}"
           for v in results["verification"] if not v["ok"]]
    for r in results["runs"]:
        if r["errors"]:
            out.append(f"{r['server']} on {r['scenario']} c={r['concurrency']} rep {r['repeat'] + 1}: {r['errors']}")
    for o in results["open_loop"]:
        if o["errors"]:
            out.append(f"{o['server']} on {o['scenario']} open loop: {o['errors']}")
    return out


def render(results: dict, command: str) -> str:
    cfg = results["config"]
    lines = ["# fastseldon benchmark", ""]
    lines += [f"Command: `{command}`", "",
              f"Machine: {describe(results['machine'])} Load average at the end {results['machine'].get('loadavg_end')}.",
              "",
              f"Method: closed loop with wrk (HTTP/1.1 keep-alive, 1 thread) and h2load (gRPC, "
              f"{cfg['h2load_streams_per_connection']} stream(s) per connection), concurrency {cfg['concurrency']} "
              f"connections; {cfg['workers']} server worker(s) each; {cfg['warmup_s']} s warm-up, then "
              f"{cfg['repeats']} × {cfg['duration_s']} s runs interleaved across servers; figures are the median "
              f"run. A server's *peak* is its best median over the concurrency levels; ratios compare peaks. "
              f"Every scenario's answer was checked with a real client (requests / grpcio) before loading it.",
              ""]
    issues = problems(results)
    if issues:
        lines += [f"**Run status: WITH ERRORS ({len(issues)})** — see *Errors and failed checks* below.", ""]
    else:
        lines += ["Run status: clean (no failed answer checks, no transport errors, no non-2xx answers).", ""]
    lines += _revisions(results) + _targets(results) + graphs.render(results)
    lines += _per_scenario(results) + _open_loop(results) + _errors(issues) + _plots()
    return "\n".join(lines) + "\n"


def covered(results: dict, row: dict) -> bool:
    """Whether this run measured (or tried to measure) both sides of a ratio row."""
    cfg = results["config"]
    baselines = {"grpc-echo-best": {"grpc-echo-threaded", "grpc-echo-aio"}}.get(row["baseline"], {row["baseline"]})
    return (row["scenario"] in cfg["scenarios"] and row["baseline_scenario"] in cfg["scenarios"]
            and "fastseldon" in cfg["servers"] and bool(baselines & set(cfg["servers"])))


def _targets(results: dict) -> list[str]:
    all_rows = [r for r in results["ratios"] if r["minimum"] is not None]
    rows = [r for r in all_rows if covered(results, r)]
    if not rows:
        return ["## Targets (issues 5 and 18)", "", "This run's scenarios and servers cover none of the targets.", ""]
    out = ["## Targets (issues 5 and 18)", "",
           "| target | fastseldon scenario | fastseldon req/s | baseline (scenario) | baseline req/s | ratio | target | status |",
           "|---|---|---:|---|---:|---:|---:|---|"]
    for r in rows:
        base = r["baseline"] + ("" if r["baseline_scenario"] == r["scenario"] else f" ({r['baseline_scenario']})")
        out.append(f"| {r['label']} | {r['scenario']} | {_rps(r['fastseldon_rps'])} | {base} | "
                   f"{_rps(r['baseline_rps'])} | {_ratio(r['ratio'])} | {_ratio(r['minimum'])} | {r['status']} |")
    if len(rows) < len(all_rows):
        out += ["", f"{len(all_rows) - len(rows)} more target(s) need scenarios or servers this run did not include."]
    return out + [""]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _revisions(results: dict) -> list[str]:
    """The working tree's fastseldon against each fastseldon@REV of the same run."""
    revs = results.get("revisions") or {}
    rows = results.get("revision_ratios") or []
    if not revs and not rows:
        return []
    wt = results.get("working_tree") or {}
    out = ["## Working tree vs baseline revision", ""]
    head = f"`{wt['short']}` ({wt['subject']})" if wt.get("short") else "(not a git checkout)"
    changed = wt.get("changed") or []
    out.append(f"*current* = `fastseldon`: the working tree at HEAD {head}"
               + (f" with {len(changed)} uncommitted change(s): {', '.join(changed[:12])}"
                  + (" …" if len(changed) > 12 else "") if changed else ", no uncommitted changes") + ".")
    probe = wt.get("probe") or {}
    if probe.get("stale_native"):
        out.append(f"**Its compiled codec is older than {', '.join(probe['stale_native'])}**: the working tree ran "
                   f"its previous build (rebuild: `python setup.py build_ext --inplace`).")
    for name, rev in revs.items():
        if rev.get("problem"):
            out.append(f"`{name}`: commit {rev['sha'][:12]} ({rev['subject']}): **not prepared**: {rev['problem'][:300]}")
        else:
            impl = (rev.get("probe") or {}).get("implementation")
            out.append(f"`{name}`: commit {rev['sha'][:12]} ({rev['subject']}), exported and built in "
                       f"`{rev['tree']}`, {impl} codec (the working tree: {probe.get('implementation', '?')}).")
    out += ["", "Both ran in this run, interleaved, same core, same settings. Ratio = current / baseline "
            "(> 1: the working tree is faster); *peak* compares each side's best median over the concurrency "
            "levels, *best runs* each side's fastest single run; per concurrency, *median* compares the median runs "
            "and *best* the fastest runs (background load only slows a run, so on a busy machine the best runs are "
            "the least disturbed); *spread* is the min–max range of a side's repeats at its peak over its median "
            "— ratios within the spread are noise.", ""]
    concs = results["config"]["concurrency"]
    out += ["| scenario | baseline | current req/s | baseline req/s | current / baseline (peak) | best runs | "
            + " | ".join(f"c={c} median / best" for c in concs) + " | spread current / baseline | status |",
            "|---|---|---:|---:|---:|---:|" + "---:|" * len(concs) + "---|---|"]
    for r in rows:
        by = {c["concurrency"]: c for c in r["by_concurrency"]}
        spread = r["spread"]
        cells = [f"{_x(by[c]['ratio'])} / {_x(by[c].get('best_ratio'))}" if c in by else "–" for c in concs]
        out.append(f"| {r['scenario']} | {r['baseline']} | {_rps(r['current_rps'])} | {_rps(r['baseline_rps'])} | "
                   f"**{_x(r['ratio'])}** | {_x(r.get('best_ratio'))} | " + " | ".join(cells) +
                   f" | {_pct(spread.get('fastseldon'))} / {_pct(spread.get(r['baseline']))} | {r['status']} |")
    return out + [""]


def _x(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def _per_scenario(results: dict) -> list[str]:
    out = ["## Scenarios", ""]
    concs = results["config"]["concurrency"]
    by_scenario: dict[str, list[dict]] = {}
    for row in results["summary"]:
        by_scenario.setdefault(row["scenario"], []).append(row)
    for name in results["config"]["scenarios"]:
        rows = by_scenario.get(name)
        sc = BY_NAME.get(name)
        if not rows:
            continue
        out += [f"### {name}", ""]
        if sc is not None:
            model = {"identity": "identity", "graph": "graph units (see *Graphs*)"}.get(
                sc.model, f"{sc.model} model ({sc.cost_us} µs per call)")
            out += [f"{sc.api}, {sc.encoding}, {sc.size_label} {sc.dtype}, {model}.", ""]
        head = "| server | " + " | ".join(f"c={c} req/s" for c in concs) + f" | p50 ms @c={concs[-1]} | p99 ms @c={concs[-1]} | errors |"
        out += [head, "|---|" + "---:|" * (len(concs) + 3)]
        servers = sorted({r["server"] for r in rows}, key=_order)
        peaks = results["peaks"].get(name, {})
        for server in servers:
            cells = {r["concurrency"]: r for r in rows if r["server"] == server}
            vals = []
            for c in concs:
                r = cells.get(c)
                text = _rps(r["median_rps"]) if r else "–"
                if r and peaks.get(server, {}).get("concurrency") == c:
                    text = f"**{text}**"
                vals.append(text)
            last = cells.get(concs[-1])
            lat = last["latency_us"] if last else {}
            errs = sum(r["errors"] for r in cells.values())
            out.append(f"| {server} | " + " | ".join(vals) +
                       f" | {_ms(lat.get('p50'))} | {_ms(lat.get('p99'))} | {errs or ''} |")
        ratios = [r for r in results["ratios"] if r["scenario"] == name and r["ratio"] is not None]
        if ratios:
            out += ["", "fastseldon's peak against: " + "; ".join(
                f"{r['baseline']}{'' if r['baseline_scenario'] == name else ' on ' + r['baseline_scenario']} "
                f"**{_x(r['ratio']) if r['baseline'].startswith('fastseldon@') else _ratio(r['ratio'])}**"
                + (f" (target ≥ {_ratio(r['minimum'])}: {r['status']})" if r["minimum"] is not None else "")
                for r in ratios)]
        out.append("")
    return out


def _open_loop(results: dict) -> list[str]:
    if not results["open_loop"]:
        return []
    out = ["## Open loop: latency at a fixed offered rate", "",
           "Every server of a scenario gets the same rate (a fraction of the slowest one's peak); latency is "
           "measured from each request's scheduled send time, so queueing is counted (no coordinated omission).",
           "",
           "| scenario | server | rate req/s | achieved | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | note |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for o in results["open_loop"]:
        lat = o["latency_us"]
        note = []
        if o["errors"]:
            note.append(f"errors {o['errors']}")
        if o["generator_limited"]:
            note.append("generator-limited")
        out.append(f"| {o['scenario']} | {o['server']} | {o['target_rps']:,.0f} | {o['achieved_rps']:,.0f} | "
                   f"{_ms(lat.get('p50'))} | {_ms(lat.get('p90'))} | {_ms(lat.get('p99'))} | {_ms(lat.get('p99.9'))} | "
                   f"{_ms(lat.get('max'))} | {', '.join(note)} |")
    return out + [""]


def _errors(issues: list[str]) -> list[str]:
    if not issues:
        return []
    return ["## Errors and failed checks", ""] + [f"- {i}" for i in issues] + [""]


def _plots() -> list[str]:
    return ["## Plots", "",
            "![throughput vs concurrency](throughput.png)", "",
            "![latency percentiles at the highest concurrency](latency.png)", "",
            "![latency CDF, open loop](latency-cdf.png)", "",
            "![ratio to target](targets.png)", ""]
