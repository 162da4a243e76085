"""Process model: a supervisor that forks N workers sharing the HTTP and gRPC ports.

The supervisor binds the HTTP socket once (workers inherit it) and never creates gRPC
objects: forking after gRPC exists is unsafe (grpc/grpc#16001), so each worker builds its
own gRPC server on an SO_REUSEPORT port after the fork. The supervisor restarts a worker
that dies, serves the merged Prometheus metrics, and on SIGTERM/SIGINT asks every worker
to drain, waits (bounded), and exits 0.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fastseldon import metrics as metrics_mod
from fastseldon.settings import ServerSettings

log = logging.getLogger("fastseldon")

EXIT_STARTUP_FAILED = 3


class StartupError(Exception):
    """A worker could not start (bad model, port in use...): the message is one line for the user."""


# --------------------------------------------------------------------------- worker side


class Served(Protocol):
    """What a worker serves: an App (one unit) or a graph's app (many); built after the fork."""

    router: Any
    grpc_methods: dict[str, Any]
    flush_interval: float

    def flush(self) -> None: ...

    def close(self) -> None: ...


AppFactory = Callable[[asyncio.AbstractEventLoop], Awaitable[Served]]


def _worker_main(server: ServerSettings, build: AppFactory, ready_fd: int) -> int:
    """Body of a forked worker; returns its exit status."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_worker(server, build, ready_fd))
    finally:
        loop.close()


def _report(fd: int, message: bytes) -> None:
    try:
        os.write(fd, message)
        os.close(fd)
    except OSError:
        pass


async def _worker(settings: ServerSettings, build: AppFactory, ready_fd: int) -> int:
    from fastseldon import http
    from fastseldon.user_model import ModelLoadError

    loop = asyncio.get_running_loop()
    try:
        app = await build(loop)
        http_server = state = None
        if settings.http_enabled:
            http_server, state = await http.serve(app.router, worker_http_socket(settings), max_body=settings.max_body_bytes,
                                                  keepalive_timeout=settings.keepalive_timeout, access=settings.access_log)
        grpc_server = None
        if settings.grpc_enabled:
            from fastseldon import grpc as grpc_front

            grpc_server = grpc_front.start(settings, app.grpc_methods)
    except (ModelLoadError, OSError, ValueError) as exc:
        _report(ready_fd, b"E" + str(exc).encode("utf-8", "replace"))
        return EXIT_STARTUP_FAILED
    except Exception as exc:  # noqa: BLE001 - anything else in user code at start-up
        _report(ready_fd, b"E" + f"{type(exc).__name__}: {exc}".encode("utf-8", "replace"))
        return EXIT_STARTUP_FAILED
    _report(ready_fd, b"R")

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    parent = os.getppid()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), app.flush_interval)
        except TimeoutError:
            if os.getppid() != parent:  # the supervisor was killed: don't linger as an orphan
                break
        app.flush()
        if state is not None:
            http.close_idle(state, loop.time())
    grace = settings.graceful_timeout
    grpc_done = grpc_server.stop(grace) if grpc_server is not None else None
    if http_server is not None and state is not None:
        await http.drain(http_server, state, grace)
    if grpc_done is not None:
        await loop.run_in_executor(None, grpc_done.wait, grace + 1)
    app.close()
    return 0


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


def reserve_port(settings: ServerSettings, port: int, what: str) -> socket.socket:
    """Bound, never listening: holds the port for the workers and fails fast when it is taken."""
    try:
        return _reuseport_socket(settings, port)
    except OSError as exc:
        raise StartupError(f"cannot bind {what} port {settings.host}:{port}: {exc.strerror}") from None


class Supervisor:
    """Forks, watches and restarts workers; turns SIGTERM into a bounded, clean drain."""

    def __init__(self, settings: ServerSettings, build: AppFactory, label: str):
        self.settings = settings
        self.build = build
        self.label = label  # what is served, for the start-up line
        self.workers: dict[int, int] = {}  # pid -> slot
        self.reserved: list[socket.socket] = []
        self.stopping = False
        self.metrics_dir = ""

    def _spawn(self, slot: int) -> tuple[int, int]:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # worker
            os.close(read_fd)
            code = 1
            try:
                for sock in self.reserved:
                    sock.close()
                code = _worker_main(self.settings, self.build, write_fd)
            except BaseException:  # noqa: BLE001
                logging.getLogger("fastseldon").exception("worker crashed")
            finally:
                logging.shutdown()
                os._exit(code)
        os.close(write_fd)
        self.workers[pid] = slot
        return pid, read_fd

    def _await_ready(self, pid: int, fd: int, timeout: float = 600.0) -> None:
        """Block until a new worker says it is serving, or raise its start-up error."""
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            import select

            readable, _, _ = select.select([fd], [], [], 0.5)
            if readable:
                data = os.read(fd, 65536)
                if not data:
                    break
                chunks.append(data)
            elif os.waitpid(pid, os.WNOHANG)[0] == pid:
                self.workers.pop(pid, None)
                break
        os.close(fd)
        message = b"".join(chunks)
        if message.startswith(b"R"):
            return
        if message.startswith(b"E"):
            raise StartupError(message[1:].decode("utf-8", "replace"))
        raise StartupError("worker exited during start-up (see the log above)")

    def run(self) -> int:
        s = self.settings
        self.metrics_dir = metrics_mod.prepare_multiprocess_dir()
        try:
            if s.http_enabled:
                self.reserved.append(reserve_port(s, s.http_port, "HTTP"))
            if s.grpc_enabled:
                self.reserved.append(reserve_port(s, s.grpc_port, "gRPC"))
            metrics_server = metrics_mod.start_metrics_server(s) if s.metrics_port > 0 else None
        except OSError as exc:
            raise StartupError(f"cannot bind metrics port {s.host}:{s.metrics_port}: {exc.strerror}") from None
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        try:
            started = [self._spawn(slot) for slot in range(s.workers)]  # load models in parallel
            try:
                for pid, fd in started:
                    self._await_ready(pid, fd)
            except StartupError:
                self._terminate_all(5.0)
                raise
            log.info(
                "fastseldon serving %s with %d worker(s): http=%s grpc=%s metrics=%s",
                self.label, s.workers,
                s.http_port if s.http_enabled else "off", s.grpc_port if s.grpc_enabled else "off",
                s.metrics_port if s.metrics_port > 0 else "off",
            )
            self._watch()
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
            for sock in self.reserved:
                sock.close()
            if "fastseldon-metrics-" in self.metrics_dir:  # ours, not a directory the user chose
                metrics_mod.remove_multiprocess_dir(self.metrics_dir)
        return 0

    def _on_stop(self, signum: int, frame: Any) -> None:
        self.stopping = True  # only a flag: the watch loop does the work

    def _watch(self) -> None:
        failures: list[float] = []
        while not self.stopping:
            time.sleep(0.05)
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    pid = 0
                if pid == 0:
                    break
                slot = self.workers.pop(pid, None)
                if slot is None or self.stopping:
                    continue
                metrics_mod.mark_worker_dead(pid)
                log.warning("worker %d exited (%s); starting a new one", pid, _describe(status))
                now = time.monotonic()
                failures = [t for t in failures if now - t < 30] + [now]
                if len(failures) > 10:
                    log.error("workers keep dying; giving up")
                    self.stopping = True
                    break
                new_pid, fd = self._spawn(slot)
                try:
                    self._await_ready(new_pid, fd)
                except StartupError as exc:
                    log.error("replacement worker failed to start: %s", exc)
        self._terminate_all(self.settings.graceful_timeout + 5.0)

    def _terminate_all(self, timeout: float) -> None:
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                self.workers.pop(pid, None)
        deadline = time.monotonic() + timeout
        while self.workers and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                self.workers.pop(pid, None)
            else:
                time.sleep(0.02)
        for pid in list(self.workers):
            log.warning("worker %d did not stop in time; killing it", pid)
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        self.workers.clear()


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"


def serve(settings: ServerSettings, build: AppFactory, label: str) -> int:
    """Run the server until SIGTERM/SIGINT; the process's exit status."""
    try:
        return Supervisor(settings, build, label).run()
    except StartupError as exc:
        print(f"fastseldon: error: {exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
