"""Start the real server as a subprocess on free ports, for tests.

Every server test goes through ``running()``: it launches ``python -m fastseldon serve``,
waits until the fronts answer, and stops it with SIGTERM (checking the exit status).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent.parent  # tests/
MODELS = HERE / "models"
EXAMPLES = HERE.parent / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def scrape(self, needle: str, timeout: float = 5.0) -> str:
        """The metrics text once it contains ``needle`` (workers flush about twice a second)."""
        deadline = time.monotonic() + timeout
        while True:
            text = requests.get(self.metrics_url, timeout=5).text
            if needle in text or time.monotonic() > deadline:
                return text
            time.sleep(0.1)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        self.stopped = True
        return code


def _grpc_ready(target: str) -> bool:
    """V2 ServerReady over gRPC (a server without it, UNIMPLEMENTED, has its app up: the start-up table has it)."""
    import grpc

    with grpc.insecure_channel(target) as channel:
        ready = channel.unary_unary("/inference.GRPCInferenceService/ServerReady",
                                    request_serializer=lambda b: b, response_deserializer=lambda b: b)
        try:
            return ready(b"", timeout=0.5) == b"\x08\x01"
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNIMPLEMENTED


def _all_workers_ready(server: Server) -> bool:
    """No worker still loading, by the supervisor's fastseldon_workers gauge (a server without it: yes)."""
    try:
        text = requests.get(server.metrics_url, timeout=0.5).text
    except requests.RequestException:
        return False
    if "fastseldon_workers{" not in text:
        return True
    return all(f'fastseldon_workers{{state="{state}"}} 0.0' in text for state in ("starting", "live"))


def wait_live(server: Server, timeout: float = 60) -> None:
    """Until /health/ping answers: the ports are open, the model may still be loading."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.output()}")
        try:
            if requests.get(server.url + "/health/ping", timeout=0.5).status_code == 200:
                return
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"server did not become live in {timeout}s:\n{server.output()}")


def wait_ready(server: Server, timeout: float = 60, grpc_only: bool = False) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.output()}")
        try:
            # ready, not just live: the ports open (and /health/ping answers) before the model has loaded
            if grpc_only:
                if _grpc_ready(server.grpc_target):
                    return
            elif requests.get(server.url + "/v2/health/ready", timeout=0.5).status_code == 200 and _all_workers_ready(server):
                return
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"server did not become ready in {timeout}s:\n{server.output()}")


@contextmanager
def running(args: list[str], cwd: Path = MODELS, env: dict[str, str] | None = None, log_dir: Path | None = None,
            grpc_only: bool = False, expect_exit: int | None = 0, command: str = "serve", wait: str = "ready",
            ) -> Iterator[Server]:
    """``fastseldon serve ARGS`` (or another ``command``, e.g. graph) in ``cwd``; yields once ready (``wait="live"``:
    once /health/ping answers; ``"none"``: at once), stops on exit."""
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    log_dir = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    log_path = log_dir / f"fastseldon-test-{http_port}.log"
    cmd = [sys.executable, "-m", "fastseldon", command, *args, "--http-port", str(http_port),
           "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]
    with open(log_path, "wb") as sink:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    server = Server(proc, http_port, grpc_port, metrics_port, log_path)
    try:
        if wait == "ready":
            wait_ready(server, grpc_only=grpc_only)
        elif wait == "live":
            wait_live(server)
        yield server
    finally:
        if not server.stopped:
            code = server.stop()
            if expect_exit is not None:
                assert code == expect_exit, f"server exit status {code}:\n{server.output()}"
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # no stray workers, whatever happened
        except ProcessLookupError:
            pass
