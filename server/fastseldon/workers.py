"""Process model: a supervisor that forks N workers sharing the HTTP and gRPC ports.

The supervisor checks that nobody serves the ports yet, holds them (bound, not listening), and
never creates gRPC objects: forking after gRPC exists is unsafe (grpc/grpc#16001), so each
worker opens its own SO_REUSEPORT sockets after the fork.

A worker opens its ports first, answering live (200) and not ready (503) through a start-up
router, then builds its app with the factory and swaps it in: Kubernetes' liveness and
readiness. It reports to the supervisor over a pipe (watchdog.py): live, ready, heartbeats
from its event loop, a stuck loop's route, a call hung on a thread, a wish to be recycled.

The supervisor (gunicorn's arbiter, in one loop that signal handlers only flag):

* kills a worker whose loop has not beaten for --worker-timeout (SIGUSR1 first: faulthandler
  writes every thread's stack to the log), and replaces it;
* replaces a worker gracefully — the new one first, then SIGTERM to the old, which drains —
  when a call on one of its threads hung, when it served --max-requests, or when its memory
  is over --max-worker-memory;
* restarts a worker that died, after an exponential backoff (capped) that grows while the
  slot keeps failing; the other workers keep serving. It gives up, exiting non-zero with a
  one-line reason, only when no worker serves and every slot failed to start many times in
  a row;
* on SIGTERM/SIGINT has every worker stop accepting and finish in-flight requests within
  --graceful-timeout, and exits 0.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import select
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fastseldon import metrics as metrics_mod
from fastseldon import watchdog
from fastseldon.settings import ServerSettings

log = logging.getLogger("fastseldon")

EXIT_STARTUP_FAILED = 3
EXIT_WORKERS_FAILED = 4  # the supervisor gave up: no worker could be kept running

BACKOFF_FIRST = 0.1  # seconds before restarting a slot's first failure; doubles with each failure in a row
BACKOFF_CAP = 10.0
BACKOFF_RESET = 30.0  # a worker ready this long clears its slot's failure count
GIVE_UP_AFTER = 5  # start-up failures in a row, in every slot, with no worker serving
KILL_GRACE = 0.5  # seconds between the stack dump (SIGUSR1) and SIGKILL of a timed-out worker
DRAIN_IDLE = 0.25  # seconds a keep-alive connection must sit idle before a draining worker closes it


class StartupError(Exception):
    """A worker could not start (bad model, port in use...): the message is one line for the user."""


class GaveUp(Exception):
    """Workers keep failing and none serves: the message is one line for the user."""


# --------------------------------------------------------------------------- worker side


class Served(Protocol):
    """What a worker serves: an App (one unit) or a graph's app (many); built after the fork."""

    router: Any
    grpc_methods: dict[str, Any]
    flush_interval: float

    def flush(self) -> None: ...

    def close(self) -> None: ...


# ``build(loop)`` runs in the worker, on its event loop, after its ports are open: blocking work
# (imports, constructors, a sync load()) belongs on a thread (loop.run_in_executor) so that the
# start-up router keeps answering /health/ping meanwhile.
AppFactory = Callable[[asyncio.AbstractEventLoop], Awaitable[Served]]


def _worker_main(server: ServerSettings, build: AppFactory, report_fd: int, early: bool = True) -> int:
    """Body of a forked worker; returns its exit status."""
    import faulthandler

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    faulthandler.enable()  # a crash in native code (or os.abort()) leaves the Python stack in the log
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the supervisor's "why are you stuck?"
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    report = watchdog.Report(report_fd)
    try:
        return loop.run_until_complete(_worker(server, build, report, early))
    finally:
        report.close()
        loop.close()


def http_options(settings: ServerSettings) -> dict[str, Any]:
    """The REST front's limits and timeouts, from settings (http.serve's keyword arguments)."""
    return {
        "max_body": settings.max_body_bytes, "keepalive_timeout": settings.keepalive_timeout, "access": settings.access_log,
        "max_request_line": settings.max_request_line, "max_header_bytes": settings.max_header_bytes,
        "max_headers": settings.max_headers, "header_timeout": settings.header_timeout, "body_timeout": settings.body_timeout,
        "request_timeout": settings.request_timeout,
    }


async def _worker(settings: ServerSettings, build: AppFactory, report: watchdog.Report, early: bool = True) -> int:
    """One worker's life. ``early``: open the ports before building the app (answering live, not
    ready, meanwhile); otherwise (a restart or replacement while other workers serve) only
    after, so connections the kernel hands it are never answered "loading"."""
    from concurrent.futures import ThreadPoolExecutor

    from fastseldon import app as app_mod
    from fastseldon import grpc as grpc_front
    from fastseldon import http
    from fastseldon.user_model import ModelLoadError

    loop = asyncio.get_running_loop()
    heartbeat = watchdog.Heartbeat(report, settings.worker_timeout)
    heartbeat.start(loop)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    http_server: Any = None
    state: Any = None
    grpc_server: Any = None
    call_pool = ThreadPoolExecutor(settings.grpc_threads * 2, "grpc-call") if settings.request_timeout > 0 else None
    table = grpc_front.MethodTable(app_mod.starting_methods(), settings.request_timeout, call_pool)

    async def open_fronts(router: Any) -> bool:
        nonlocal http_server, state, grpc_server
        try:
            if settings.http_enabled:
                http_server, state = await http.serve(router, worker_http_socket(settings), **http_options(settings))
            if settings.grpc_enabled:
                grpc_server = grpc_front.start(settings, table)
        except (OSError, ValueError) as exc:
            report.send(watchdog.ERROR, str(exc))
            return False
        return True

    if early:  # live (ports open, the start-up router answering) while the app is built
        if not await open_fronts(app_mod.starting_router()):
            return EXIT_STARTUP_FAILED
        report.send(watchdog.LIVE)

    building: asyncio.Future[Served] = asyncio.ensure_future(build(loop))
    stopping = loop.create_task(stop.wait())
    await asyncio.wait((building, stopping), return_when=asyncio.FIRST_COMPLETED)
    app: Served | None = None
    if building.done():
        try:
            app = building.result()
        except ModelLoadError as exc:
            report.send(watchdog.ERROR, str(exc))
        except Exception as exc:  # noqa: BLE001 - anything else in user code at start-up
            report.send(watchdog.ERROR, f"{type(exc).__name__}: {exc}")
        if app is None:
            stopping.cancel()
            heartbeat.stop()
            await _stop_fronts(settings, http_server, state, grpc_server, 0.0)
            return EXIT_STARTUP_FAILED
        table.replace(app.grpc_methods)
        if not early:  # other workers serve meanwhile: this one takes connections only once it can answer them
            if not await open_fronts(app.router):
                stopping.cancel()
                heartbeat.stop()
                return EXIT_STARTUP_FAILED
            report.send(watchdog.LIVE)
        elif state is not None:
            state.swap_router(app.router)
        report.send(watchdog.READY)
    else:
        building.cancel()

    limit = settings.max_requests + random.randint(0, max(0, settings.max_requests_jitter)) if settings.max_requests > 0 else 0
    asked = False
    parent = os.getppid()
    interval = app.flush_interval if app is not None else 0.5
    while not stop.is_set():
        await asyncio.wait((stopping,), timeout=interval)
        if os.getppid() != parent:  # the supervisor was killed: don't linger as an orphan
            break
        if app is not None:
            app.flush()
        if state is not None:
            http.close_idle(state, loop.time())
        if limit and not asked and (state.served if state is not None else 0) + table.served >= limit:
            report.send(watchdog.RECYCLE, f"served {limit} requests (--max-requests)")
            asked = True
    open_connections = len(state.connections) if state is not None else 0
    log.info("worker %d draining: %d open connection(s), up to %gs", os.getpid(), open_connections, settings.graceful_timeout,
             extra={"worker": os.getpid()})
    heartbeat.stop()
    stopping.cancel()
    await _stop_fronts(settings, http_server, state, grpc_server, settings.graceful_timeout)
    if app is not None:
        app.close()
    if call_pool is not None:
        call_pool.shutdown(wait=False, cancel_futures=True)
    log.info("worker %d stopped", os.getpid(), extra={"worker": os.getpid()})
    return 0


async def _stop_fronts(settings: ServerSettings, http_server: Any, state: Any, grpc_server: Any, grace: float) -> None:
    from fastseldon import http

    grpc_done = grpc_server.stop(grace) if grpc_server is not None else None
    if http_server is not None and state is not None:
        await http.drain(http_server, state, grace, idle_grace=DRAIN_IDLE if grace > 0 else 0.0)
    if grpc_done is not None:
        await asyncio.get_running_loop().run_in_executor(None, grpc_done.wait, grace + 1)


# --------------------------------------------------------------------------- supervisor side


def _reuseport_socket(settings: ServerSettings, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((settings.host, port))
    except OSError:
        sock.close()
        raise
    return sock


def worker_http_socket(settings: ServerSettings) -> socket.socket:
    """Each worker listens on its own SO_REUSEPORT socket: the kernel spreads connections
    evenly, where one inherited socket lets whichever worker wakes first take them all."""
    sock = _reuseport_socket(settings, settings.http_port)
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def check_port_free(settings: ServerSettings, port: int, what: str) -> None:
    """Refuse a port someone already serves. SO_REUSEPORT would let us join their listeners and
    silently share their traffic, so probe with a socket that can't: it fails on any listener."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers of a restart are fine
        try:
            probe.bind((settings.host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(f"{what} port {settings.host}:{port} is already in use (is another server running?)") from None
            raise StartupError(f"cannot bind {what} port {settings.host}:{port}: {exc.strerror}") from None


def reserve_port(settings: ServerSettings, port: int, what: str) -> socket.socket:
    """Bound, never listening: holds the port for the workers and fails fast when it is taken."""
    check_port_free(settings, port, what)
    try:
        return _reuseport_socket(settings, port)
    except OSError as exc:
        raise StartupError(f"cannot bind {what} port {settings.host}:{port}: {exc.strerror}") from None


STARTING, LIVE, READY, STOPPING = "starting", "live", "ready", "stopping"


@dataclass(eq=False)
class _Worker:
    """The supervisor's view of one worker process."""

    pid: int
    slot: int
    fd: int  # read end of its report pipe
    started: float
    beat: float
    state: str = STARTING
    ready_at: float = 0.0
    buffer: bytes = b""
    error: str = ""  # its start-up error, as it reported it
    stuck: str = ""  # the route its loop was stuck on, as its monitor thread reported it
    kill_at: float = 0.0  # SIGKILL due (after the stack dump of a timed-out worker)
    stop_by: float = 0.0  # SIGTERMed: SIGKILL if not gone by then
    killed_for: str = ""  # why we killed it: "timeout"
    replacing: int = 0  # pid of the worker this one replaces once ready
    retiring: bool = False  # a replacement for it is on its way


@dataclass
class _Slot:
    failures: int = 0  # in a row, for the backoff
    start_failures: int = 0  # in a row, exits before ready, for giving up
    restart_at: float = 0.0  # a restart is due then (0: none pending)
    replacing: int = 0  # the pending restart replaces this pid (a graceful replacement that failed)


class Supervisor:
    """Forks, watches and restarts workers; turns SIGTERM into a bounded, clean drain."""

    def __init__(self, settings: ServerSettings, build: AppFactory, label: str):
        self.settings = settings
        self.build = build
        self.label = label  # what is served, for the start-up line
        self.workers: dict[int, _Worker] = {}  # pid -> worker
        self.slots = [_Slot() for _ in range(settings.workers)]
        self.reserved: list[socket.socket] = []
        self.stopping = False
        self.signal_name = ""
        self.serving = False  # every first worker became ready
        self.restarts: dict[str, int] = dict.fromkeys(("crash", "timeout", "hung", "max-requests", "memory"), 0)
        self.metrics_dir = ""
        self._memory_checked = 0.0

    # -- processes

    def _spawn(self, slot: int, replacing: int = 0) -> _Worker:
        early = not any(w.state == READY for w in self.workers.values())  # nobody serves: be live at once
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # worker
            os.close(read_fd)
            code = 1
            try:
                for sock in self.reserved:
                    sock.close()
                for other in self.workers.values():
                    os.close(other.fd)
                code = _worker_main(self.settings, self.build, write_fd, early)
            except BaseException:  # noqa: BLE001
                logging.getLogger("fastseldon").exception("worker crashed")
            finally:
                logging.shutdown()
                os._exit(code)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        now = time.monotonic()
        worker = _Worker(pid, slot, read_fd, now, now, replacing=replacing)
        self.workers[pid] = worker
        return worker

    def _kill(self, worker: _Worker, sig: int) -> None:
        try:
            os.kill(worker.pid, sig)
        except ProcessLookupError:
            pass

    # -- the main loop

    def run(self) -> int:
        s = self.settings
        self.metrics_dir = metrics_mod.prepare_multiprocess_dir()
        metrics_server = None
        try:
            if s.http_enabled:
                self.reserved.append(reserve_port(s, s.http_port, "HTTP"))
            if s.grpc_enabled:
                self.reserved.append(reserve_port(s, s.grpc_port, "gRPC"))
            if s.metrics_port > 0:
                try:
                    collectors = (self._collector(), metrics_mod.WorkerProcesses(self.serving_pids))
                    metrics_server = metrics_mod.start_metrics_server(s, collectors)
                except OSError as exc:
                    raise StartupError(f"cannot bind metrics port {s.host}:{s.metrics_port}: {exc.strerror}") from None
            signal.signal(signal.SIGTERM, self._on_stop)
            signal.signal(signal.SIGINT, self._on_stop)
            for slot in range(s.workers):  # load models in parallel
                self._spawn(slot)
            try:
                while not self.stopping:
                    self._tick()
            except (StartupError, GaveUp):
                self._terminate_all(5.0)
                raise
            log.info("received %s: stopping %d worker(s), finishing in-flight requests within %gs", self.signal_name or "a signal",
                     len(self.workers), s.graceful_timeout)
            self._terminate_all(s.graceful_timeout + 5.0)
            log.info("fastseldon stopped")
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
            for sock in self.reserved:
                sock.close()
            for worker in self.workers.values():
                os.close(worker.fd)
            if "fastseldon-metrics-" in self.metrics_dir:  # ours, not a directory the user chose
                metrics_mod.remove_multiprocess_dir(self.metrics_dir)
        return 0

    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stopping = True  # only flags: the main loop does the work
        self.signal_name = signal.Signals(signum).name

    def _tick(self, timeout: float = 0.05) -> None:
        fds = [w.fd for w in self.workers.values()]
        try:
            readable, _, _ = select.select(fds, [], [], timeout) if fds else ([], [], [])
        except InterruptedError:
            readable = []
        if not fds:
            time.sleep(timeout)
        now = time.monotonic()
        for worker in list(self.workers.values()):
            if worker.fd in readable:
                self._read(worker, now)
        self._reap(now)
        self._check(now)

    def _read(self, worker: _Worker, now: float) -> None:
        try:
            data = os.read(worker.fd, 65536)
        except (BlockingIOError, OSError):
            return
        *lines, worker.buffer = (worker.buffer + data).split(b"\n")
        for line in lines:
            kind, text = line[:1], line[1:].decode("utf-8", "replace")
            if kind in (watchdog.BEAT, watchdog.LIVE, watchdog.READY):
                worker.beat = now
                worker.stuck = ""
            if kind == watchdog.LIVE and worker.state == STARTING:
                worker.state = LIVE
            elif kind == watchdog.READY:
                self._ready(worker, now)
            elif kind == watchdog.ERROR:
                worker.error = text
            elif kind == watchdog.STUCK:
                worker.stuck = text
                log.warning("worker %d: its event loop is blocked, serving %s", worker.pid, text, extra={"worker": worker.pid})
            elif kind == watchdog.HUNG:
                seconds, _, route = text.partition(" ")
                log.error("worker %d: a call to %s has run for %ss on a thread (over --worker-timeout %gs); replacing the worker",
                          worker.pid, route, seconds, self.settings.worker_timeout, extra={"worker": worker.pid, "route": route})
                self._replace(worker, "hung", now)
            elif kind == watchdog.RECYCLE:
                log.info("worker %d %s; replacing it", worker.pid, text, extra={"worker": worker.pid})
                self._replace(worker, "max-requests", now)

    def _ready(self, worker: _Worker, now: float) -> None:
        worker.state = READY
        worker.ready_at = now
        self.slots[worker.slot].start_failures = 0
        old = self.workers.get(worker.replacing)
        if old is not None:
            log.info("worker %d ready; stopping worker %d, which it replaces", worker.pid, old.pid)
            self._stop(old, now)
        else:
            log.info("worker %d ready", worker.pid, extra={"worker": worker.pid})
        worker.replacing = 0
        if not self.serving and all(w.state == READY for w in self.workers.values()) and len(self.workers) == len(self.slots):
            self.serving = True
            s = self.settings
            log.info(
                "fastseldon serving %s with %d worker(s): http=%s grpc=%s metrics=%s",
                self.label, s.workers,
                s.http_port if s.http_enabled else "off", s.grpc_port if s.grpc_enabled else "off",
                s.metrics_port if s.metrics_port > 0 else "off",
            )

    def _stop(self, worker: _Worker, now: float) -> None:
        if worker.state != STOPPING:
            worker.state = STOPPING
            worker.stop_by = now + self.settings.graceful_timeout + 5.0
            self._kill(worker, signal.SIGTERM)

    def _replace(self, worker: _Worker, reason: str, now: float) -> None:
        """A new worker in the slot first; once it is ready the old one drains (_ready)."""
        if worker.state != READY or worker.retiring or self.stopping:
            return
        worker.retiring = True
        self.restarts[reason] += 1
        self._spawn(worker.slot, replacing=worker.pid)

    def _reap(self, now: float) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            try:
                self._read(worker, now)  # its last words (a start-up error) may still be in the pipe
            finally:
                os.close(worker.fd)
            metrics_mod.mark_worker_dead(pid)
            if self.stopping:
                continue
            if worker.state == STOPPING:
                log.info("worker %d exited (%s) after draining", pid, _describe(status), extra={"worker": pid})
                continue
            self._failed(worker, status, now)

    def _failed(self, worker: _Worker, status: int, now: float) -> None:
        """A worker we did not ask to stop is gone: restart its slot after a backoff, or give up."""
        reason = worker.error or _describe(status)
        if not self.serving and worker.replacing == 0:
            raise StartupError(worker.error or f"worker exited during start-up ({_describe(status)}; see the log above)")
        slot = self.slots[worker.slot]
        before_ready = worker.state != READY
        slot.failures += 1
        if before_ready:
            slot.start_failures += 1
        kind = worker.killed_for or "crash"
        self.restarts[kind] += 1
        if worker.replacing and worker.replacing in self.workers:
            # a replacement failed to start: the old worker keeps serving, the replacement is retried
            slot.replacing = worker.replacing
        elif any(w.slot == worker.slot for w in self.workers.values()):
            slot.restart_at = 0.0  # its replacement is already on its way
            self._maybe_give_up(reason)
            return
        self._maybe_give_up(reason)
        delay = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** (slot.failures - 1))
        slot.restart_at = now + delay
        what = "failed to start" if before_ready else "exited"
        log.warning("worker %d %s (%s); restarting it in %.1fs (failure %d in a row in slot %d)", worker.pid, what, reason, delay,
                    slot.failures, worker.slot, extra={"worker": worker.pid, "reason": reason})

    def _maybe_give_up(self, reason: str) -> None:
        if any(w.state == READY for w in self.workers.values()):
            return
        if all(slot.start_failures >= GIVE_UP_AFTER for slot in self.slots):
            raise GaveUp(f"workers failed to start {GIVE_UP_AFTER} times in a row and none is serving (last: {reason}); giving up")

    def _check(self, now: float) -> None:
        s = self.settings
        for worker in list(self.workers.values()):
            if worker.kill_at and now >= worker.kill_at:
                worker.kill_at = 0.0
                self._kill(worker, signal.SIGKILL)
            elif worker.state == STOPPING and worker.stop_by and now >= worker.stop_by:
                log.warning("worker %d did not stop in time; killing it", worker.pid)
                worker.stop_by = 0.0
                self._kill(worker, signal.SIGKILL)
            elif (worker.state == READY and s.worker_timeout > 0 and not worker.killed_for
                  and now - worker.beat > s.worker_timeout):
                where = f", serving {worker.stuck}" if worker.stuck else ""
                log.error("worker %d timed out: its event loop has been blocked for %.1fs (--worker-timeout %gs)%s; killing it",
                          worker.pid, now - worker.beat, s.worker_timeout, where,
                          extra={"worker": worker.pid, "route": worker.stuck or None})
                worker.killed_for = "timeout"
                worker.kill_at = now + KILL_GRACE
                self._kill(worker, signal.SIGUSR1)  # faulthandler: every thread's stack to the log first
            elif worker.state == READY and worker.ready_at and now - worker.ready_at > BACKOFF_RESET:
                self.slots[worker.slot].failures = 0
                worker.ready_at = 0.0
        if s.max_worker_memory > 0 and now - self._memory_checked >= 1.0:
            self._memory_checked = now
            for worker in list(self.workers.values()):
                if worker.state != READY or worker.retiring:
                    continue
                stat = metrics_mod.process_stat(worker.pid)
                if stat is not None and stat["rss"] > s.max_worker_memory:
                    log.warning("worker %d uses %.0f MiB, over --max-worker-memory %.0f MiB; replacing it", worker.pid,
                                stat["rss"] / 2**20, s.max_worker_memory / 2**20, extra={"worker": worker.pid})
                    self._replace(worker, "memory", now)
        for index, slot in enumerate(self.slots):
            if slot.restart_at and now >= slot.restart_at:
                slot.restart_at = 0.0
                replacing = slot.replacing if slot.replacing in self.workers else 0
                slot.replacing = 0
                self._spawn(index, replacing=replacing)

    def _terminate_all(self, timeout: float) -> None:
        for worker in self.workers.values():
            self._kill(worker, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.workers and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                gone = self.workers.pop(pid, None)
                if gone is not None:
                    os.close(gone.fd)
            else:
                time.sleep(0.02)
        for worker in list(self.workers.values()):
            log.warning("worker %d did not stop in time; killing it", worker.pid)
            try:
                os.kill(worker.pid, signal.SIGKILL)
                os.waitpid(worker.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            os.close(worker.fd)
        self.workers.clear()

    # -- metrics

    def serving_pids(self) -> dict[int, int]:
        """{slot: pid} of the ready workers (the newest per slot)."""
        return {w.slot: w.pid for w in sorted(self.workers.values(), key=lambda w: w.started) if w.state == READY}

    def _collector(self) -> Any:
        supervisor = self

        class Collector:
            def collect(self) -> Any:
                from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

                restarts = CounterMetricFamily("fastseldon_worker_restarts", "Workers replaced or restarted, by reason",
                                               labels=["reason"])
                for reason, count in list(supervisor.restarts.items()):
                    restarts.add_metric([reason], count)
                workers = GaugeMetricFamily("fastseldon_workers", "Worker processes by state", labels=["state"])
                states = [w.state for w in list(supervisor.workers.values())]
                for state in (STARTING, LIVE, READY, STOPPING):
                    workers.add_metric([state], states.count(state))
                backoff = GaugeMetricFamily("fastseldon_worker_restart_backoff_seconds",
                                            "Seconds until a failed slot's worker is restarted (0: none pending)", labels=["worker"])
                now = time.monotonic()
                for index, slot in enumerate(supervisor.slots):
                    backoff.add_metric([str(index)], max(0.0, slot.restart_at - now) if slot.restart_at else 0.0)
                yield from (restarts, workers, backoff)

        return Collector()


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by signal {sig} ({signal.Signals(sig).name})"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit status {os.WEXITSTATUS(status)}"


def serve(settings: ServerSettings, build: AppFactory, label: str) -> int:
    """Run the server until SIGTERM/SIGINT; the process's exit status."""
    try:
        return Supervisor(settings, build, label).run()
    except StartupError as exc:
        print(f"fastseldon: error: {exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    except GaveUp as exc:
        print(f"fastseldon: error: {exc}", file=sys.stderr)
        return EXIT_WORKERS_FAILED
