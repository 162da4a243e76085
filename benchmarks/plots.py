"""PNG plots from results.json: throughput vs concurrency, latency percentiles, open-loop CDF, targets.

matplotlib is a benchmark-only dependency (benchmarks/requirements.txt); fastseldon never imports it.
"""
from __future__ import annotations

import math
from pathlib import Path

from benchmarks.report import _order

COLOURS = {
    "fastseldon": "#d62728", "seldon-core": "#1f77b4", "mlserver": "#2ca02c",
    "ceiling-http": "#7f7f7f", "grpc-echo-threaded": "#8c564b", "grpc-echo-aio": "#bcbd22",
    "kserve": "#ff7f0e", "bentoml": "#9edae5", "python-floor": "#c7c7c7",
}


REVISION_COLOURS = ["#ff9896", "#9467bd", "#e377c2", "#17becf"]  # fastseldon@REV servers, in order of appearance


def _colour(server: str, results: dict) -> str | None:
    if server.startswith("fastseldon@"):
        revs = sorted({r["server"] for r in results.get("summary", []) if r["server"].startswith("fastseldon@")})
        return REVISION_COLOURS[revs.index(server) % len(REVISION_COLOURS)] if server in revs else REVISION_COLOURS[0]
    return COLOURS.get(server)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def matplotlib_ticker():
    import matplotlib.ticker

    return matplotlib.ticker


def _grid(plt, count: int, width: float = 4.2, height: float = 3.2):
    cols = min(4, max(1, count))
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.axis("off")
    return fig, flat[:count]


def _servers(rows: list[dict]) -> list[str]:
    names = {r["server"] for r in rows}
    return sorted(names, key=_order)


def write_all(results: dict, out_dir: Path) -> list[Path]:
    """Write every plot; returns the files written."""
    plt = _pyplot()
    written = []
    for name, fn in (("throughput.png", _throughput), ("latency.png", _latency),
                     ("latency-cdf.png", _cdf), ("targets.png", _targets)):
        fig = fn(plt, results)
        path = out_dir / name
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def _scenarios_with(results: dict, key: str) -> list[str]:
    present = {r["scenario"] for r in results[key]}
    return [s for s in results["config"]["scenarios"] if s in present]


def _empty(plt, text: str):
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center")
    return fig


def _throughput(plt, results: dict):
    scenarios = _scenarios_with(results, "summary")
    if not scenarios:
        return _empty(plt, "no throughput measured")
    fig, axes = _grid(plt, len(scenarios))
    for ax, scenario in zip(axes, scenarios):
        rows = [r for r in results["summary"] if r["scenario"] == scenario]
        for server in _servers(rows):
            pts = sorted((r["concurrency"], r["median_rps"], r["min_rps"], r["max_rps"])
                         for r in rows if r["server"] == server)
            xs = [p[0] for p in pts]
            ax.plot(xs, [p[1] for p in pts], marker="o", label=server, color=_colour(server, results),
                    linestyle="--" if server.startswith(("ceiling", "grpc-echo")) else
                    ":" if server.startswith("fastseldon@") else "-")
            ax.fill_between(xs, [p[2] for p in pts], [p[3] for p in pts], alpha=0.15, color=_colour(server, results))
        ax.set_xscale("log", base=2)
        concs = results["config"]["concurrency"]
        ax.set_xticks(concs, [str(c) for c in concs])
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_title(scenario, fontsize=9)
        ax.set_xlabel("concurrency")
        ax.set_ylabel("req/s (median, min–max band)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Throughput vs concurrency (closed loop)")
    fig.tight_layout()
    return fig


def _latency(plt, results: dict):
    scenarios = _scenarios_with(results, "summary")
    if not scenarios:
        return _empty(plt, "no latency measured")
    top = max(results["config"]["concurrency"])
    keys = ("p50", "p90", "p99", "p99.9")
    fig, axes = _grid(plt, len(scenarios))
    for ax, scenario in zip(axes, scenarios):
        rows = [r for r in results["summary"] if r["scenario"] == scenario and r["concurrency"] == top]
        servers = _servers(rows)
        width = 0.8 / max(1, len(servers))
        for i, server in enumerate(servers):
            lat = next(r["latency_us"] for r in rows if r["server"] == server)
            ax.bar([k + i * width for k in range(len(keys))], [lat.get(k, 0) / 1000 for k in keys], width,
                   label=server, color=_colour(server, results))
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))], keys)
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(f"{scenario} (c={top})", fontsize=9)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Latency percentiles at the highest concurrency (closed loop)")
    fig.tight_layout()
    return fig


def _cdf(plt, results: dict):
    scenarios = _scenarios_with(results, "open_loop")
    if not scenarios:
        return _empty(plt, "no open-loop run")
    fig, axes = _grid(plt, len(scenarios))
    for ax, scenario in zip(axes, scenarios):
        for o in results["open_loop"]:
            if o["scenario"] != scenario or not o["cdf_us"]:
                continue
            steps = len(o["cdf_us"])
            ax.plot([v / 1000 for v in o["cdf_us"]], [i / (steps - 1) for i in range(steps)],
                    label=f"{o['server']} @ {o['target_rps']:,.0f}/s", color=_colour(o["server"], results))
        ax.set_xscale("log")
        ax.set_xlabel("latency from scheduled send (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(scenario, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Latency CDF at a fixed offered rate (open loop)")
    fig.tight_layout()
    return fig


def _targets(plt, results: dict):
    rows = [r for r in results["ratios"] if r["minimum"] is not None and r["ratio"] is not None]
    if not rows:
        return _empty(plt, "no target could be computed (fastseldon or its baseline not measured)")
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.2))
    values = [r["ratio"] / r["minimum"] for r in rows]
    colours = ["#2ca02c" if r["status"] == "met" else "#d62728" for r in rows]
    ax.barh(range(len(rows)), values, color=colours)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(rows)), [f"{r['label']} ({r['ratio']:.2f} vs ≥{r['minimum']:g})" for r in rows],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib_ticker().FixedLocator([0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10]))
    ax.xaxis.set_major_formatter(matplotlib_ticker().FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib_ticker().NullFormatter())
    ax.set_xlabel("measured ratio / target ratio (≥ 1 meets the target)")
    ax.set_title("fastseldon against the issue's targets")
    fig.tight_layout()
    return fig
