"""The servers under test: how each is started (pinned, in its own process group) and stopped.

Every server gets the same worker count and the same model (models/), and runs on the cores
given to it; the load generators run on the others.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import graphs, revisions
from benchmarks.scenarios import MODEL_NAME, SELDON_GRPC, SELDON_REST, V2_GRPC, V2_REST, Scenario

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = HERE / "models"


def cache_dir() -> Path:
    """Where setup.sh puts the baselines' virtualenvs."""
    return Path(os.environ.get("FASTSELDON_BENCH_CACHE", ROOT / ".bench-cache"))


@dataclass(frozen=True)
class ServerSpec:
    """A server the harness can run: what it speaks and what kind of figure it gives."""

    name: str
    role: str  # product | revision (fastseldon at another commit) | baseline | ceiling | graph
    apis: frozenset[str]
    unsupported: frozenset[str] = frozenset()  # scenario encodings it does not implement
    echo: bool = False  # answers with the request bytes (ceilings), not a decoded tensor
    revision: revisions.Revision | None = None  # role "revision": the commit it runs
    graph: str = ""  # role "graph": single | inprocess | remote (graphs.py)

    def serves(self, scenario: Scenario) -> bool:
        if (scenario.model == "graph") != (self.role == "graph"):  # graph scenarios only on graph servers
            return False
        return scenario.api in self.apis and scenario.encoding not in self.unsupported and (
            scenario.model == "identity" or self.role != "ceiling"
        )


SERVERS: dict[str, ServerSpec] = {
    s.name: s
    for s in (
        ServerSpec("fastseldon", "product", frozenset({SELDON_REST, SELDON_GRPC, V2_REST, V2_GRPC})),
        ServerSpec("seldon-core", "baseline", frozenset({SELDON_REST, SELDON_GRPC})),
        # MLServer 1.7.1's REST front has no binary-data extension (only its batch client does).
        ServerSpec("mlserver", "baseline", frozenset({V2_REST, V2_GRPC}), unsupported=frozenset({"binary"})),
        # KServe 0.21's python model server: V2 only (REST and gRPC); its REST binary extension is not measured here.
        ServerSpec("kserve", "baseline", frozenset({V2_REST, V2_GRPC}), unsupported=frozenset({"binary"})),
        # BentoML 1.4 speaks its own JSON API: the service declares the Seldon and V2 JSON routes (models/bentoml_service.py).
        ServerSpec("bentoml", "baseline", frozenset({SELDON_REST, V2_REST}), unsupported=frozenset({"binary"})),
        ServerSpec("ceiling-http", "ceiling", frozenset({SELDON_REST, V2_REST}), echo=True),
        # The Python floor: Seldon's semantics in a minimal handler on the ceiling's stack (floor_http.py).
        ServerSpec("python-floor", "ceiling", frozenset({SELDON_REST, V2_REST}), unsupported=frozenset({"binary"})),
        ServerSpec("grpc-echo-threaded", "ceiling", frozenset({SELDON_GRPC, V2_GRPC}), echo=True),
        ServerSpec("grpc-echo-aio", "ceiling", frozenset({SELDON_GRPC, V2_GRPC}), echo=True),
        # The graph scenarios (graphs.py): the chain's model alone, the chain in one process, the chain all remote.
        *(ServerSpec(name, "graph", frozenset({SELDON_REST, SELDON_GRPC}), graph=layout)
          for layout, name in graphs.SERVER_NAMES.items()),
    )
}
GROUPS = {"ceiling": ["ceiling-http", "python-floor", "grpc-echo-threaded", "grpc-echo-aio"], "graph": list(graphs.SERVER_NAMES.values())}


def revision_server(rev: str) -> ServerSpec:
    """`fastseldon@REV`: fastseldon at commit REV (see revisions.py), registered in SERVERS as fastseldon@<short sha>."""
    try:
        commit = revisions.resolve(rev)
    except revisions.RevisionError as exc:
        raise SystemExit(str(exc)) from None
    spec = SERVERS.get(commit.name)
    if spec is None:
        spec = ServerSpec(commit.name, "revision", SERVERS["fastseldon"].apis, revision=commit)
        SERVERS[spec.name] = spec
    return spec


def expand(names: list[str]) -> list[str]:
    """Server names from --servers: `ceiling` stands for the three ceilings and the Python floor, `fastseldon@REV` for a revision."""
    out: list[str] = []
    for name in names:
        for one in GROUPS.get(name, [name]):
            if revisions.is_revision(one):
                one = revision_server(one).name
            if one not in SERVERS:
                raise SystemExit(f"unknown server {one!r}; known: {', '.join([*SERVERS, *GROUPS])}, "
                                 f"fastseldon@REV (any git revision)")
            if one not in out:
                out.append(one)
    return out


@dataclass
class Companion:
    """A process a server needs besides its own (graph-remote: one per remote unit), in its own process group."""

    name: str
    command: list[str]
    http_port: int
    process: subprocess.Popen
    log_path: Path


@dataclass
class RunningServer:
    """A started server: its ports, its process group, and the log it writes."""

    spec: ServerSpec
    command: list[str]
    http_port: int
    grpc_port: int
    process: subprocess.Popen
    log_path: Path
    workdir: Path | None = None
    notes: list[str] = field(default_factory=list)
    companions: list[Companion] = field(default_factory=list)

    def alive(self) -> bool:
        return self.process.poll() is None and all(c.process.poll() is None for c in self.companions)

    def log_tail(self, chars: int = 2000) -> str:
        dead = [c for c in self.companions if c.process.poll() is not None]
        text = ""
        for path, label in [(c.log_path, f"[{c.name} exited with code {c.process.returncode}] ") for c in dead] + [
                (self.log_path, "")]:
            try:
                text += label + path.read_text(errors="replace")[-chars:] + "\n"
            except OSError:
                pass
        return text.rstrip("\n")[-chars:]

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after the grace period; then the companions."""
        for proc in [self.process, *(c.process for c in self.companions)]:
            _stop_group(proc, grace_s)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _stop_group(process: subprocess.Popen, grace_s: float) -> None:
    if process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(process.pid, signal.SIGKILL)  # stragglers (forked workers) too
    process.wait()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(spec: ServerSpec, *, model: str, cost_us: int, workers: int, cpus: set[int], log_dir: Path,
          unit_cpus: set[int] | None = None, chain: int = 3, unit_transport: str = "http") -> RunningServer:
    """Start `spec` pinned to `cpus`; returns once the process runs (readiness is checked by the caller).

    `unit_cpus` pins graph-remote's unit processes (default: `cpus`, the executor's); graph servers
    run a chain of `chain` units, graph-remote calling them over `unit_transport` (http or grpc).
    """
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    workdir: Path | None = None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    notes: list[str] = []
    companions: list[Companion] = []
    log_dir.mkdir(parents=True, exist_ok=True)
    if spec.revision is not None:
        pythonpath, _ = revisions.prepare(spec.revision)  # built once, before the first start
        env = revisions.server_env(pythonpath)  # its package first: wins over the editable install
        notes.append(f"fastseldon at {spec.revision.sha[:12]} ({spec.revision.subject}), PYTHONPATH={pythonpath}")
    if spec.name == "fastseldon" or spec.revision is not None:
        workdir = _model_dir(model)
        cmd = [sys.executable, "-m", "fastseldon", "serve", "MyModel", "--http-port", str(http_port),
               "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port), "--workers", str(workers),
               "--log-level", "WARNING", "--model-name", MODEL_NAME, *_seldon_parameters(cost_us)]
    elif spec.name == "seldon-core":
        workdir = _model_dir(model)
        exe = _baseline_exe("seldon-core", "seldon-core-microservice")
        cmd = [str(exe), "MyModel", "--http-port", str(http_port), "--grpc-port", str(grpc_port),
               "--metrics-port", str(metrics_port), "--workers", str(workers), "--grpc-workers", str(workers),
               "--log-level", "WARNING", *_seldon_parameters(cost_us)]
        env.pop("PYTHONPATH")  # its own venv; our repo must not shadow anything there
    elif spec.name == "mlserver":
        workdir = _mlserver_dir(http_port, grpc_port, metrics_port, workers, cost_us)
        cmd = [str(_baseline_exe("mlserver", "mlserver")), "start", str(workdir)]
        env.pop("PYTHONPATH")
        notes.append("parallel_workers=0 (inference in the server process)" if workers == 1
                     else f"parallel_workers={workers} (one HTTP/gRPC front, {workers} inference processes)")
    elif spec.name == "kserve":
        workdir = _model_dir(model, "kserve_model.py")
        cmd = [str(_baseline_exe("kserve", "python")), "kserve_model.py", "--http_port", str(http_port),
               "--grpc_port", str(grpc_port), "--workers", str(workers), "--model_name", MODEL_NAME,
               "--enable_latency_logging", "false", "--configure_logging", "false", "--cost_us", str(cost_us)]
        env.pop("PYTHONPATH")
        notes.append("latency logging and logging set-up off (no line per request)")
    elif spec.name == "bentoml":
        workdir = _model_dir(model, "bentoml_service.py")
        cmd = [str(_baseline_exe("bentoml", "bentoml")), "serve", "bentoml_service:Bench", "--host", "127.0.0.1",
               "--port", str(http_port)]
        env.pop("PYTHONPATH")
        env.update(BENCH_COST_US=str(cost_us), BENCH_WORKERS=str(workers), BENTOML_DO_NOT_TRACK="true")
        notes.append("access log off; Seldon and V2 JSON routes declared as BentoML APIs")
    elif spec.name == "python-floor":
        cmd = [sys.executable, "-m", "benchmarks.floor_http", "--port", str(http_port), "--workers", str(workers)]
    elif spec.name == "ceiling-http":
        cmd = [sys.executable, "-m", "benchmarks.ceiling_http", "--port", str(http_port), "--workers", str(workers)]
    elif spec.name.startswith("grpc-echo-"):
        flavour = spec.name.rsplit("-", 1)[1]
        cmd = [sys.executable, "-m", "benchmarks.ceiling_grpc", "--port", str(grpc_port), "--flavour", flavour,
               "--workers", str(workers)]
    elif spec.graph:
        workdir = _model_dir(model, "graph_units.py")
        common = ["--workers", str(workers), "--log-level", "WARNING"]
        if spec.graph == graphs.SINGLE:
            _node, cls, kind = graphs.MODEL_UNIT
            cmd = [sys.executable, "-m", "fastseldon", "serve", cls, "--service-type", kind, "--http-port",
                   str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port), *common]
        else:
            spec_path = graphs.write_spec(log_dir.parent / "graphs", chain)  # in the run's output folder
            cmd = [sys.executable, "-m", "fastseldon", "graph", str(spec_path.resolve()), "--source", str(workdir),
                   "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
                   *common]
            if spec.graph == graphs.REMOTE:
                pinned = unit_cpus or cpus
                for node, cls, kind in graphs.chain(chain):
                    unit_port, unit_grpc_port = free_port(), free_port()
                    unit_cmd = [sys.executable, "-m", "fastseldon", "serve", cls, "--service-type", kind,
                                "--http-port", str(unit_port), "--grpc-port", str(unit_grpc_port),
                                "--metrics-port", str(free_port()), *common]
                    unit_env = {**env, "PREDICTIVE_UNIT_ID": node, "PREDICTIVE_UNIT_IMAGE": graphs.image(node)}
                    unit_log = log_dir / f"{spec.name}-{node}.log"
                    companions.append(Companion(node, unit_cmd, unit_port,
                                                _popen(unit_cmd, workdir, unit_env, pinned, unit_log), unit_log))
                    url = f"grpc://127.0.0.1:{unit_grpc_port}" if unit_transport == "grpc" else f"http://127.0.0.1:{unit_port}"
                    cmd += ["--remote", f"{node}={url}"]
                notes.append(f"remote units {', '.join(c.name for c in companions)} over {unit_transport} on cores "
                             f"{sorted(pinned)}")
        notes.append(f"graph layout {spec.graph}, {chain}-unit chain: " + " ".join(cmd[1:]))
    else:
        raise ValueError(spec.name)
    log_path = log_dir / f"{spec.name.replace('@', '-')}-{model}.log"
    try:
        proc = _popen(cmd, workdir or ROOT, env, cpus, log_path)
    except OSError:
        for c in companions:
            _stop_group(c.process, 0)
        raise
    return RunningServer(spec, cmd, http_port, grpc_port, proc, log_path, workdir, notes, companions)


def _popen(cmd: list[str], cwd: Path, env: dict[str, str], cpus: set[int] | None, log_path: Path) -> subprocess.Popen:
    """Start `cmd` in its own process group, pinned to `cpus`, stdout and stderr appended to `log_path`."""
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(
            cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
    finally:
        log.close()


def wait_listening(server: RunningServer, timeout_s: float = 90.0) -> str | None:
    """Wait until the server's ports accept connections; None when up, else why not."""
    ports = [c.http_port for c in server.companions]
    if server.spec.apis & {SELDON_REST, V2_REST}:
        ports.append(server.http_port)
    if server.spec.apis & {SELDON_GRPC, V2_GRPC}:
        ports.append(server.grpc_port)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            if server.process.poll() is None:
                return f"a unit exited: {server.log_tail()}"
            return f"exited with code {server.process.returncode}: {server.log_tail()}"
        if all(_accepts(p) for p in ports):
            return None
        time.sleep(0.2)
    return f"ports {ports} not listening after {timeout_s:.0f} s: {server.log_tail()}"


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _seldon_parameters(cost_us: int) -> list[str]:
    if not cost_us:
        return []
    return ["--parameters", json.dumps([{"name": "cost_us", "value": str(cost_us), "type": "INT"}])]


def _model_dir(model: str, source: str = "MyModel.py") -> Path:
    """A temp dir holding models/`source`, the directory a Seldon server is started from."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{model}-"))
    shutil.copy(MODELS / source, workdir / source)
    return workdir


def _mlserver_dir(http_port: int, grpc_port: int, metrics_port: int, workers: int, cost_us: int) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="bench-mlserver-"))
    shutil.copy(MODELS / "mlserver_runtime.py", workdir / "mlserver_runtime.py")
    settings = {
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "parallel_workers": 0 if workers == 1 else workers,
        "debug": False,
        "host": "127.0.0.1",
    }
    model = {
        "name": MODEL_NAME,
        "implementation": "mlserver_runtime.BenchRuntime",
        "parameters": {"extra": {"cost_us": cost_us}},
    }
    (workdir / "settings.json").write_text(json.dumps(settings))
    (workdir / "model-settings.json").write_text(json.dumps(model))
    return workdir


def _baseline_exe(venv: str, name: str) -> Path:
    exe = cache_dir() / venv / "bin" / name
    if not exe.exists():
        raise FileNotFoundError(f"{exe} is missing: run `bash benchmarks/setup.sh {venv}` first")
    return exe


def baseline_version(venv: str, package: str) -> str | None:
    """The installed version of a baseline package in its venv, read from its dist-info."""
    for dist in (cache_dir() / venv / "lib").glob(f"python*/site-packages/{package.replace('-', '_')}-*.dist-info"):
        return dist.name.split("-")[1].removesuffix(".dist")
    return None
