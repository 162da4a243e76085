"""The worker's side of the watchdog: heartbeats from its event loop, and what it is busy with.

A worker reports to its supervisor over one pipe, one short line per message (``Report``):

* ``L`` its ports are open (it is live), ``R`` its app is built (it is ready), ``E<reason>``
  it could not start;
* ``B`` a heartbeat, sent *by the event loop* about every second, so a loop stuck in a sync
  hook stops beating and the supervisor (workers.py) kills the worker after --worker-timeout,
  as gunicorn's arbiter does;
* ``S<route>`` sent by a monitor thread when the loop has missed its beats: the request the
  loop last started, for the supervisor's log line (the thread still runs while the loop is
  stuck in Python code or in C code that released the GIL);
* ``H<seconds> <route>`` a call on a thread (the hook pool, a gRPC handler) has run past
  --worker-timeout: the loop is fine, but that thread is lost, so the worker is replaced
  gracefully;
* ``Q<reason>`` the worker asks to be replaced gracefully (--max-requests reached).

The hot path pays one attribute store per request (``activity.request``); calls on threads,
which already pay a thread hop, register themselves in ``activity.calls``.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

LIVE, READY, ERROR, BEAT, STUCK, HUNG, RECYCLE = b"L", b"R", b"E", b"B", b"S", b"H", b"Q"


class Activity:
    """What this worker is doing, for the watchdog's log lines (one per process: ``activity``)."""

    __slots__ = ("request", "calls", "_tokens")

    def __init__(self) -> None:
        self.request: Any = None  # the request the event loop started or resumed last (http.Request)
        self.calls: dict[int, tuple[float, str]] = {}  # token -> (monotonic start, route): calls running on threads
        self._tokens = itertools.count()

    def loop_route(self) -> str:
        request = self.request
        return f"{request.method} {request.path}" if request is not None else "no request"

    def begin(self, route: str) -> int:
        token = next(self._tokens)  # atomic under the GIL, as are the dict operations
        self.calls[token] = (time.monotonic(), route)
        return token

    def end(self, token: int) -> None:
        self.calls.pop(token, None)

    @contextmanager
    def on_thread(self, route: str) -> Iterator[None]:
        token = self.begin(route)
        try:
            yield
        finally:
            self.end(token)

    def tracked(self, route: str, fn: Callable[[], Any]) -> Callable[[], Any]:
        """``fn`` wrapped so that its run on a pool thread is registered (for run_in_executor)."""

        def run() -> Any:
            token = self.begin(route)
            try:
                return fn()
            finally:
                self.end(token)

        return run

    def oldest_call(self) -> tuple[float, str] | None:
        calls = list(self.calls.values())
        return min(calls) if calls else None


activity = Activity()


class RunDelay:
    """How long the event loop's thread waited for a CPU (Linux schedstat), to tell a hook that
    was slow from a machine that was busy. Read on the loop thread only: at a slow call, and
    once a second by the heartbeat, so a reading covers at most about a second."""

    PATH = "/proc/thread-self/schedstat"  # "<ns on a CPU> <ns waiting for one> <timeslices>"

    def __init__(self) -> None:
        self.mark = self._read()

    def _read(self) -> int | None:
        try:
            with open(self.PATH, "rb") as f:
                return int(f.read().split()[1])
        except (OSError, ValueError, IndexError):
            return None

    def refresh(self) -> None:
        self.mark = self._read()

    def since_mark(self) -> float:
        """Seconds waited since the last reading (0 where schedstat is unavailable), and a new mark."""
        now, before = self._read(), self.mark
        self.mark = now
        return (now - before) / 1e9 if now is not None and before is not None else 0.0


loop_run_delay = RunDelay()


class Report:
    """The worker's end of its report pipe (non-blocking: a full pipe drops a message, never stalls the loop)."""

    def __init__(self, fd: int):
        self.fd = fd
        os.set_blocking(fd, False)
        self._lock = threading.Lock()

    def send(self, kind: bytes, text: str = "") -> None:
        line = kind + text.replace("\n", " ").encode("utf-8", "replace")[:2000] + b"\n"
        with self._lock:  # the loop and the monitor thread both write
            try:
                os.write(self.fd, line)
            except (BlockingIOError, BrokenPipeError, OSError):
                pass

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class Heartbeat:
    """Beats from the event loop; a monitor thread names what the loop is stuck on and finds hung calls."""

    def __init__(self, report: Report, timeout: float):
        self.report = report
        self.timeout = timeout
        self.interval = min(1.0, timeout / 5) if timeout > 0 else 1.0
        self.last = time.monotonic()
        self._handle: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, loop: Any) -> None:
        self._beat(loop)
        if self.timeout > 0:
            self._thread = threading.Thread(target=self._monitor, name="watchdog", daemon=True)
            self._thread.start()

    def _beat(self, loop: Any) -> None:
        self.last = time.monotonic()
        self.report.send(BEAT)
        loop_run_delay.refresh()
        self._handle = loop.call_later(self.interval, self._beat, loop)

    def stop(self) -> None:
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()

    def _monitor(self) -> None:
        stuck_reported = False
        hung_reported: set[tuple[float, str]] = set()
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            if now - self.last > 2 * self.interval:
                if not stuck_reported:
                    self.report.send(STUCK, activity.loop_route())
                    stuck_reported = True
            else:
                stuck_reported = False
            oldest = activity.oldest_call()
            if oldest is not None and now - oldest[0] > self.timeout and oldest not in hung_reported:
                hung_reported.add(oldest)
                self.report.send(HUNG, f"{now - oldest[0]:.1f} {oldest[1]}")
