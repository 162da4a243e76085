"""Prometheus metrics: per-endpoint request counts and latencies, plus the user's own metrics.

Workers write through prometheus_client's multiprocess mode (one mmap file per process in
PROMETHEUS_MULTIPROC_DIR, also set as prometheus_multiproc_dir for prometheus_client < 0.10); the
supervisor serves the merged view on the metrics port. The environment variable must be set before
prometheus_client is first imported, which ``prepare_multiprocess_dir`` does in the supervisor
before any worker is forked.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import threading
from bisect import bisect_left
from typing import Any

import numpy as np

from fastseldon.settings import ServerSettings, UnitSettings

# Seldon's TIMER buckets: 50 log-spaced edges from 1 ms to 30 s (values are seconds).
SELDON_TIMER_BUCKETS = tuple(float(x) for x in np.logspace(-3, np.log10(30), 50)) + (float("inf"),)
REQUEST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf"))


def prepare_multiprocess_dir() -> str:
    """Create (or reuse, when set by the user) the directory workers write their metrics to.

    Both spellings of the variable are set: prometheus_client before 0.10 (seldon-core 1.17 pins
    0.8) reads only the lower-case ``prometheus_multiproc_dir``, later ones prefer the upper case
    (and warn when only the lower case is set)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")
    if not path:
        path = tempfile.mkdtemp(prefix="fastseldon-metrics-")
    else:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):  # stale files from an earlier run would be merged in
            if name.endswith(".db"):
                os.unlink(os.path.join(path, name))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["prometheus_multiproc_dir"] = path
    return path


def remove_multiprocess_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def mark_worker_dead(pid: int) -> None:
    from prometheus_client import multiprocess

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        multiprocess.mark_process_dead(pid, path)


# Every family the workers write, so a scrape shows them (HELP and TYPE) before the first request.
WORKER_FAMILIES = (
    ("fastseldon_requests", "counter", "Requests handled, by endpoint, protocol and status"),
    ("fastseldon_request_duration_seconds", "histogram", "Request handling time from parsed request to encoded reply"),
    ("seldon_api_model_feedback", "counter", "Feedback calls with a non-zero reward"),
    ("seldon_api_model_feedback_reward", "counter", "Sum of feedback rewards"),
)


class _Merged:
    """The workers' metrics merged from their files, plus the families nobody has written yet."""

    def __init__(self, path: str | None):
        from prometheus_client import multiprocess

        self._collector = multiprocess.MultiProcessCollector(None, path)

    def collect(self) -> Any:
        from prometheus_client.metrics_core import Metric

        seen = set()
        for family in self._collector.collect():
            seen.add(family.name)
            yield family
        for name, kind, documentation in WORKER_FAMILIES:
            if name not in seen:
                yield Metric(name, documentation, kind)


class WorkerProcesses:
    """``fastseldon_worker_*``: each worker's memory, CPU, open files and start time, from /proc, by slot.

    (prometheus_client's own ``process_*`` describe the process serving the scrape: the supervisor.)
    """

    def __init__(self, workers: Any):
        self._workers = workers  # () -> {slot: pid} of the workers serving now

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        rss = GaugeMetricFamily("fastseldon_worker_resident_memory_bytes", "Resident memory of each worker", labels=["worker"])
        cpu = CounterMetricFamily("fastseldon_worker_cpu_seconds", "CPU time of each worker (user and system)", labels=["worker"])
        fds = GaugeMetricFamily("fastseldon_worker_open_fds", "Open file descriptors of each worker", labels=["worker"])
        start = GaugeMetricFamily("fastseldon_worker_start_time_seconds", "When each worker started, in seconds since the epoch",
                                  labels=["worker"])
        for slot, pid in sorted(self._workers().items()):
            stat = process_stat(pid)
            if stat is None:
                continue
            label = [str(slot)]
            rss.add_metric(label, stat["rss"])
            cpu.add_metric(label, stat["cpu"])
            start.add_metric(label, stat["start"])
            try:
                fds.add_metric(label, len(os.listdir(f"/proc/{pid}/fd")))
            except OSError:
                pass
        yield from (rss, cpu, fds, start)


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _boot_time() -> float:
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


_BOOT = _boot_time()


def process_stat(pid: int) -> dict[str, float] | None:
    """Resident bytes, CPU seconds and start time (epoch seconds) of a process, from /proc; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    # fields[0] is field 3 of proc(5): utime 14, stime 15, starttime 22, rss 24
    return {"cpu": (int(fields[11]) + int(fields[12])) / _TICKS, "start": _BOOT + int(fields[19]) / _TICKS,
            "rss": int(fields[21]) * _PAGE}


def start_metrics_server(settings: ServerSettings, collectors: tuple[Any, ...] = ()) -> Any:
    """Serve the merged metrics of all workers on the metrics port (a thread in the supervisor), with
    every family present from the start, the supervisor's ``process_*``/``python_*`` and ``collectors``."""
    from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(_Merged(os.environ.get("PROMETHEUS_MULTIPROC_DIR")))
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR, *collectors):
        registry.register(collector)
    started = start_http_server(settings.metrics_port, addr=settings.host, registry=registry)
    return started[0] if started else None  # prometheus_client < 0.16 (seldon-core 1.17 pins 0.8) returns nothing


class LatencyTally:
    """Request counts and latency buckets kept locally, moved into a Histogram in bulk by ``drain_into``.

    Each multiprocess metric write costs a lock and a pid check, so the hot path only counts here.
    """

    def __init__(self, buckets: tuple[float, ...] = REQUEST_BUCKETS):
        self.buckets = buckets
        # bisect over the bounds behind a -inf sentinel gives an observation's slot in a tally
        # directly: [sum, count in bucket 0, bucket 1, ..., above the last bound]
        self._slots = (-math.inf, *buckets)
        self._lock = threading.Lock()  # gRPC threads and the event loop both count
        self._pending: dict[tuple[str, ...], list[Any]] = {}

    def add(self, key: tuple[str, ...], seconds: float) -> None:
        with self._lock:
            tally = self._pending.get(key) or self._start(key)
            tally[0] += seconds
            tally[bisect_left(self._slots, seconds)] += 1  # the first bucket whose bound is >= seconds

    def _start(self, key: tuple[str, ...]) -> list[Any]:
        tally = self._pending[key] = [0.0] * (len(self.buckets) + 2)
        return tally

    def add_all(self, key: tuple[str, ...], values: list[float]) -> None:
        """``add`` for each of ``values``, under one lock."""
        slots = self._slots
        with self._lock:
            tally = self._pending.get(key) or self._start(key)
            tally[0] += sum(values)
            for seconds in values:
                tally[bisect_left(slots, seconds)] += 1

    def drain(self) -> dict[tuple[str, ...], tuple[int, float, list[int]]]:
        """What was counted since the last drain: key -> (count, sum, per-bucket counts)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        n = len(self.buckets)
        return {key: (int(sum(t[1:])), t[0], [int(c) for c in t[1:n + 1]]) for key, t in pending.items()}


def add_observations(hist: Any, total: float, counts: list[int]) -> None:
    """Bulk-observe into one Histogram child: prometheus_client has no such call; these are its own values."""
    hist._sum.inc(total)
    for i, n in enumerate(counts):
        if n:
            hist._buckets[i].inc(n)


class Metrics:
    """The metrics one worker records. Label children are cached: ``labels()`` is the slow part."""

    flush_interval = 0.5  # seconds between flushes of the local tallies into the shared files

    def __init__(self, settings: UnitSettings):
        from prometheus_client import Counter, Histogram

        self._settings = settings
        self._lock = threading.Lock()
        # Seldon's labels exactly (seldon_core/metrics.py): unset values are NOT_IMPLEMENTED, the
        # image splits at its last ":" (no ":" at all: the whole of it is the version)
        na = "NOT_IMPLEMENTED"
        image = settings.predictive_unit_image or f"{na}:{na}"
        *name_parts, image_version = image.split(":")
        image_name = ":".join(name_parts)
        self._default_labels = {
            "deployment_name": settings.deployment_name or na,
            "model_name": settings.predictive_unit_id or na,
            "model_image": image_name,
            "model_version": image_version,
            "predictor_name": settings.predictor_name or na,
            "predictor_version": settings.predictor_version or na,
            "seldon_deployment_name": settings.deployment_name or na,
            "image_name": image_name,
            "image_version": image_version,
            "worker_id": str(os.getpid()),
        }
        self._requests = Counter(
            "fastseldon_requests", "Requests handled, by endpoint, protocol and status",
            ["model", "endpoint", "protocol", "code"], registry=None,
        )
        self._latency = Histogram(
            "fastseldon_request_duration_seconds",
            "Request handling time from parsed request to encoded reply",
            ["model", "endpoint", "protocol"],
            buckets=REQUEST_BUCKETS,
            registry=None,
        )
        # Seldon's feedback counters carry method="feedback" beside the default labels
        labels = ["method", *self._default_labels]
        self._feedback = Counter("seldon_api_model_feedback", "Feedback calls with a non-zero reward", labels, registry=None)
        self._reward = Counter("seldon_api_model_feedback_reward", "Sum of feedback rewards", labels, registry=None)
        self._tally = LatencyTally()
        self._custom: dict[tuple[str, str, tuple[str, ...]], Any] = {}

    def observe(self, endpoint: str, protocol: str, code: str, seconds: float) -> None:
        """Count one request. Cheap on purpose: it only updates a local tally that ``flush``
        writes to the shared metric files (each multiprocess write costs a lock and a pid check)."""
        self._tally.add((endpoint, protocol, code), seconds)

    def flush(self) -> None:
        """Move local tallies into the Prometheus metrics; the worker calls it about once a second."""
        model = self._settings.model_name
        for (endpoint, protocol, code), (count, total, buckets) in self._tally.drain().items():
            self._requests.labels(model, endpoint, protocol, code).inc(count)
            add_observations(self._latency.labels(model, endpoint, protocol), total, buckets)

    def feedback(self, reward: float) -> None:
        if reward and self._settings.feedback_metrics:
            self._feedback.labels(method="feedback", **self._default_labels).inc()
            self._reward.labels(method="feedback", **self._default_labels).inc(reward)

    def record_custom(self, metrics: list[dict[str, Any]], method: str) -> None:
        """Seldon's COUNTER / GAUGE / TIMER (milliseconds) custom metrics, with its labels."""
        from prometheus_client import Counter, Histogram

        for m in metrics:
            labels = {**(m.get("tags") or {}), "method": method, **self._default_labels}
            names = tuple(sorted(labels))
            key = (m["type"], m["key"], names)
            with self._lock:
                metric = self._custom.get(key)
                if metric is None:
                    if m["type"] == "COUNTER":
                        metric = Counter(m["key"], "", names, registry=None)
                    elif m["type"] == "GAUGE":
                        metric = _gauge(m["key"], names)
                    else:
                        metric = Histogram(m["key"], "", names, buckets=SELDON_TIMER_BUCKETS, registry=None)
                    self._custom[key] = metric
            child: Any = metric.labels(**{k: str(v) for k, v in labels.items()})
            if m["type"] == "COUNTER":
                child.inc(m["value"])
            elif m["type"] == "GAUGE":
                child.set(m["value"])
            else:
                child.observe(m["value"] / 1000.0)


def _gauge(name: str, labels: tuple[str, ...]) -> Any:
    """Seldon's GAUGE: the latest value set. prometheus_client before 0.16 (seldon-core 1.17 pins
    0.8) has no "mostrecent" multiprocess mode: the largest value over the workers, there."""
    from prometheus_client import Gauge

    try:
        return Gauge(name, "", labels, registry=None, multiprocess_mode="mostrecent")
    except ValueError:
        return Gauge(name, "", labels, registry=None, multiprocess_mode="max")
