"""Triton's statistics extension: cumulative inference counts and durations for the served model.

Each worker counts its own V2 inferences (REST, gRPC and streamed alike) and, on every metrics
flush, writes its totals to a small file beside the Prometheus files; a statistics request is
answered from the asking worker's live totals plus every other worker's latest file, so with
``--workers N`` the figures are the server's, at most one flush interval (0.5 s) behind for the
other workers. Files of workers that died stay: the totals are cumulative, as Triton's are.

Durations are nanoseconds, as Triton reports them: ``compute_input`` decoding the request,
``compute_infer`` the model (hooks, and the batch queue when batching is on), ``compute_output``
encoding the reply, ``success``/``fail`` the whole request. ``queue`` counts every successful
request with 0 ns: time waiting for a batch is inside ``compute_infer``. ``inference_count`` and
``execution_count`` both count successful requests.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

STAGES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


def _directory(model_name: str) -> Path | None:
    """Where the workers of this server leave their totals for one model (None: no supervisor, this
    process only). One folder per model: a repository's models each count their own."""
    base = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not base:
        return None
    return Path(base) / f"v2-stats-{os.getppid()}" / quote(model_name, safe="")


class InferStats:
    """One worker's totals for one model; thread-safe (gRPC threads and the event loop both count)."""

    def __init__(self, model_name: str, version: str):
        self.model_name = model_name
        self.version = version
        self._lock = threading.Lock()
        self._totals: dict[str, int] = {f"{stage}_{part}": 0 for stage in STAGES for part in ("count", "ns")}
        self._totals["last_inference"] = 0
        self._dir = _directory(model_name)
        self._path = self._dir / f"{os.getpid()}.json" if self._dir is not None else None
        self._written = -1

    def success(self, decode_ns: int, infer_ns: int, encode_ns: int) -> None:
        now = int(time.time() * 1000)
        with self._lock:  # spelled out: this runs on every inference
            t = self._totals
            t["compute_input_count"] += 1
            t["compute_input_ns"] += decode_ns
            t["compute_infer_count"] += 1
            t["compute_infer_ns"] += infer_ns
            t["compute_output_count"] += 1
            t["compute_output_ns"] += encode_ns
            t["success_count"] += 1
            t["success_ns"] += decode_ns + infer_ns + encode_ns
            t["queue_count"] += 1
            t["last_inference"] = now

    def fail(self, ns: int) -> None:
        with self._lock:
            self._totals["fail_count"] += 1
            self._totals["fail_ns"] += ns

    def flush(self) -> None:
        """Write this worker's totals for the others (only when they changed)."""
        if self._path is None:
            return
        with self._lock:
            totals = dict(self._totals)
        stamp = totals["success_count"] + totals["fail_count"]
        if stamp == self._written:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(json.dumps(totals))
            tmp.replace(self._path)  # atomic: a reader never sees half a file
            self._written = stamp
        except OSError:
            pass  # statistics are best effort; serving goes on

    def _merged(self) -> dict[str, int]:
        with self._lock:
            merged = dict(self._totals)
        if self._dir is not None and self._dir.is_dir():
            for path in self._dir.glob("*.json"):
                if path == self._path:
                    continue
                try:
                    other = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue
                for key, value in other.items():
                    if key == "last_inference":
                        merged[key] = max(merged[key], int(value))
                    elif key in merged:
                        merged[key] += int(value)
        return merged

    def statistics(self) -> dict[str, Any]:
        """One ``ModelStatistics`` entry in Triton's JSON form."""
        t = self._merged()
        return {
            "name": self.model_name,
            "version": self.version,
            "last_inference": t["last_inference"],
            "inference_count": t["success_count"],
            "execution_count": t["success_count"],
            "inference_stats": {stage: {"count": t[f"{stage}_count"], "ns": t[f"{stage}_ns"]} for stage in STAGES},
            "batch_stats": [],
            "memory_usage": [],
        }
