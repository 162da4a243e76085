"""seldon_core for the tests: the real package where it is installed, else a stand-in; and a
Python 3.12 virtual environment with seldon-core 1.19.0, for the differential tests.

The test environment itself cannot hold seldon-core (grpcio-tools, which the proto staleness
test runs, needs protobuf 6; seldon-core pins 3.20 or 5.29). Models that import seldon_core run
there against ``tests/models/seldon_stub``; the seldon-core CI environments (.ci/run) run the
same tests with the real package. ``reference_env`` makes (once, then reuses) the venv the
differential test serves the same model file from, with seldon-core-microservice and with
fastseldon (this working tree's, on PYTHONPATH, pure-Python codec).
"""
from __future__ import annotations

import fcntl
import glob
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

from support.serving import HERE

REPO = HERE.parent
STUB = HERE / "models" / "seldon_stub"
SELDON_VERSION = "1.19.0"
# what fastseldon needs beyond seldon-core's own dependencies (grpcio, numpy, protobuf, pyyaml come with it)
FASTSELDON_RUNTIME = ["uvloop>=0.19", "httptools>=0.6", "orjson>=3.10", "prometheus-client>=0.8", "requests"]


def seldon_core_env() -> dict[str, str]:
    """Environment for a server whose model imports seldon_core: the stand-in when it is not installed."""
    if importlib.util.find_spec("seldon_core") is not None:
        return {}
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(STUB), os.environ.get("PYTHONPATH")]))}


def real_seldon_core() -> bool:
    return importlib.util.find_spec("seldon_core") is not None


def _python312() -> str:
    """pyenv's 3.12 first (its root, not a fixed path), then python3.12 on PATH (seldon-core 1.19 needs >= 3.12)."""
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        found = sorted(glob.glob(f"{root}/versions/3.12*/bin/python3.12"))
        if found:
            return found[-1]
    found_on_path = shutil.which("python3.12")
    if found_on_path:
        return found_on_path
    raise AssertionError("the differential test needs Python 3.12 for seldon-core 1.19 (pyenv or python3.12 on PATH)")


def reference_env() -> Path:
    """The venv with seldon-core 1.19.0 and fastseldon's runtime dependencies (benchmarks/setup.sh's
    .bench-cache/seldon-core when present, completed here; made here otherwise)."""
    cache = Path(os.environ.get("FASTSELDON_BENCH_CACHE", REPO / ".bench-cache"))
    venv = cache / "seldon-core"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "seldon-core.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one maker at a time
        python = venv / "bin" / "python"
        if not python.exists():
            subprocess.run([_python312(), "-m", "venv", str(venv)], check=True)
        probe = "import seldon_core.version as v, uvloop, httptools, orjson, prometheus_client, requests; print(v.__version__)"
        done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        if done.returncode != 0 or done.stdout.strip() != SELDON_VERSION:
            subprocess.run([str(python), "-m", "pip", "install", "-q", f"seldon-core=={SELDON_VERSION}", *FASTSELDON_RUNTIME],
                           check=True)
    return venv
