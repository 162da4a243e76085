"""What the figures were measured on: cores, CPU model, memory, load, software versions."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _fastseldon_version() -> str:
    try:
        import fastseldon

        return fastseldon.__version__
    except ImportError:
        return "not installed"


def machine_info(server_cpus: set[int], client_cpus: set[int]) -> dict:
    """A dict for results.json and the report's header."""
    from benchmarks.loadgen import tool_versions
    from benchmarks.servers import baseline_version

    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": sorted(os.sched_getaffinity(0)),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "server_cpus": sorted(server_cpus),
        "client_cpus": sorted(client_cpus),
        "versions": {
            "fastseldon": _fastseldon_version(),
            "seldon-core": baseline_version("seldon-core", "seldon-core") or "not installed",
            "mlserver": baseline_version("mlserver", "mlserver") or "not installed",
            "mlserver-uvloop": baseline_version("mlserver", "uvloop") or "-",
            "kserve": baseline_version("kserve", "kserve") or "not installed",
            "bentoml": baseline_version("bentoml", "bentoml") or "not installed",
            **tool_versions(),
        },
    }


def describe(info: dict) -> str:
    """One paragraph for the terminal and the report."""
    v = info["versions"]
    return (
        f"{info['cpu_model']}, {info['cores']} cores ({len(info['usable_cores'])} usable), "
        f"{info['memory_gib']} GiB, Linux {info['kernel']}, Python {info['python']}; "
        f"server pinned to CPU {info['server_cpus']}, load generators to CPU {info['client_cpus']}; "
        f"load average at start {info['loadavg']}. fastseldon {v['fastseldon']}, seldon-core {v['seldon-core']}, "
        f"MLServer {v['mlserver']} (uvloop {v['mlserver-uvloop']}), KServe {v.get('kserve', '-')}, "
        f"BentoML {v.get('bentoml', '-')}, {v['wrk']}, {v['h2load']}."
    )
