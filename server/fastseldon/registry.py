"""Several models in one server, by name: the registry that routes look each request's model up in.

``fastseldon serve --repository DIR`` fills one from a folder — one subfolder per model (a
``MyModel.py``-style class with its ``.s2i/environment``, or an ``.onnx`` file), or ``NAME.onnx``
files — and the V2 repository extension loads and unloads its models while the server runs. A
graph fills a fixed one with its in-process units, so each answers V2 under its node name.

Each loaded model is an ordinary one-unit ``App`` (app.py) with its own service, runner, metrics
and routes; the registry only says which one a name means. Unloading drops the registry's
reference (requests already running finish on it), loading imports the class again from disk.
"""
from __future__ import annotations

import asyncio
import gc
import importlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastseldon import seldon_routes, v2_routes
from fastseldon.app import App, load_unit_app, timed_rest
from fastseldon.errors import BadRequest, FastSeldonError, NotFound, NotSupported, Unavailable
from fastseldon.http import Router
from fastseldon.metrics import Metrics
from fastseldon.settings import ONNX_CLASS, SERVICE_TYPES, ServerSettings, UnitSettings, unit_env_fields
from fastseldon.user_model import ModelLoadError, parse_parameters

log = logging.getLogger("fastseldon")

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
SYNC_TIMEOUT = 60.0  # seconds a load or unload waits for every worker to apply it


@dataclass
class Entry:
    """One model the registry knows: how to load it, and its App while it is loaded."""

    name: str
    unit: UnitSettings | None = None  # None: a fixed unit (a graph node) that is never loaded here
    source: Path | None = None  # the model's folder (or .onnx file) in a repository
    app: Any = None  # the loaded App; None while unloaded
    reason: str = ""  # why it is not loaded
    generation: int = 0  # the shared state's generation this load answers (--workers N)

    @property
    def state(self) -> str:
        return READY if self.app is not None else UNAVAILABLE


Loader = Callable[[Entry], Awaitable[Any]]


class ModelRegistry:
    """Units by name. ``get`` is called per request from the event loop and gRPC threads alike (a
    dict read); ``load`` and ``unload`` run on the loop, one at a time.

    ``find(name)`` describes a model afresh from disk (None: there is no such model); without
    ``loader`` and ``find`` the registry is fixed. ``shared``: the state all workers of the server
    follow (a load or unload here is applied by each of them before it is answered).
    """

    def __init__(self, entries: list[Entry], *, loader: Loader | None = None, find: Callable[[str], Entry | None] | None = None,
                 shared: SharedState | None = None, fixed: str = "the models of this server are fixed"):
        self.entries: dict[str, Entry] = {e.name: e for e in entries}
        self._loader = loader
        self._find = find
        self._fixed = fixed
        self._lock = asyncio.Lock()
        self._sync_lock = asyncio.Lock()
        self.shared = shared
        self.applied = -1  # the shared generation this worker has applied

    # -- per request

    def get(self, name: str) -> Any:
        """The App serving ``name``; NotFound for an unknown or unloaded model."""
        entry = self.entries.get(name)
        if entry is None:
            raise NotFound(f"Model {name!r} is not served here; models: {sorted(self.entries)}")
        app = entry.app
        if app is None:
            raise NotFound(f"Model {name!r} is not loaded ({entry.reason or 'unavailable'}); load it with "
                           f"POST /v2/repository/models/{name}/load (gRPC RepositoryModelLoad)")
        return app

    def known(self, name: str) -> bool:
        return name in self.entries

    def is_loaded(self, name: str) -> bool:
        entry = self.entries.get(name)
        return entry is not None and entry.app is not None

    def loaded(self) -> list[Any]:
        return [e.app for e in list(self.entries.values()) if e.app is not None]

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: every model with its state (and why, when it is not READY)."""
        out = []
        for name in sorted(self.entries):
            entry = self.entries[name]
            if ready_only and entry.app is None:
                continue
            item = {"name": name, "state": entry.state}
            if entry.app is None:
                item["reason"] = entry.reason or "unavailable"
            out.append(item)
        return out

    # -- the repository extension

    def _exists(self, name: str) -> bool:
        if self.known(name):
            return True
        if self._find is None:
            return False
        try:
            return self._find(name) is not None
        except ValueError:  # there, but broken: loading it says why
            return True

    def _check(self, action: str, name: str) -> None:
        if not (self.known(name) if action == "unload" else self._exists(name)):
            raise NotFound(f"Cannot {action} model {name!r}: there is no such model; models: {sorted(self.entries)}")
        if self._loader is None or self._find is None:
            raise NotSupported(f"Cannot {action} model {name!r}: {self._fixed}")

    async def load(self, name: str) -> None:
        """Load ``name`` (again, from disk, when it is loaded: the new one replaces it once it has
        loaded), here and then in every other worker of the server."""
        self._check("load", name)
        await self._load_here(name)
        if self.shared is not None:
            await self._publish(name, READY)

    async def unload(self, name: str) -> None:
        """Unload ``name``: it answers 404 from now on and its App is released (unloading twice is
        fine), here and then in every other worker of the server."""
        self._check("unload", name)
        await self._unload_here(name)
        if self.shared is not None:
            await self._publish(name, UNAVAILABLE)

    async def _load_here(self, name: str, generation: int = 0) -> None:
        assert self._loader is not None and self._find is not None
        async with self._lock:
            try:
                fresh = self._find(name)
            except ValueError as exc:
                raise BadRequest(f"Cannot load model {name!r}: {exc}") from None
            if fresh is None:
                raise NotFound(f"Cannot load model {name!r}: the repository has no such model; models: {sorted(self.entries)}")
            old = self.entries.get(name)
            try:
                fresh.app = await self._loader(fresh)
            except Exception as exc:  # noqa: BLE001 - user code at load time; the old one (if any) keeps serving
                reason = str(exc) or type(exc).__name__
                if old is None or old.app is None:
                    fresh.reason = f"load failed: {reason}"
                    self.entries[name] = fresh
                raise BadRequest(f"Failed to load model {name!r}: {reason}") from None
            fresh.generation = generation
            self.entries[name] = fresh
            if old is not None and old.app is not None:
                old.app.release()
            log.info("model %r loaded", name)

    async def _unload_here(self, name: str) -> None:
        async with self._lock:
            entry = self.entries[name]
            app, entry.app, entry.reason = entry.app, None, "unloaded"
            if app is not None:
                app.release()
                del app
                gc.collect()  # an App's routes refer back to it: free the model (its memory) now, not at some later collection
                log.info("model %r unloaded", name)

    # -- every worker of the server (--workers N)

    async def _publish(self, name: str, state: str) -> None:
        """Write the change for the other workers, and answer once each has applied it."""
        assert self.shared is not None
        generation = self.shared.change(name, state)
        if state == READY and name in self.entries:
            self.entries[name].generation = generation  # loaded here already: this worker's own sync skips it
        await self.sync()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SYNC_TIMEOUT
        while True:
            waiting, failures = self.shared.pending(generation, name)
            if not waiting:
                break
            if loop.time() > deadline:
                raise Unavailable(f"model {name!r}: {'loaded' if state == READY else 'unloaded'} here, but worker(s) "
                                  f"{waiting} did not follow within {SYNC_TIMEOUT:g}s")
            await asyncio.sleep(0.05)
        if failures:
            raise BadRequest(f"Failed to load model {name!r} in every worker: {'; '.join(failures)}")

    async def sync(self) -> None:
        """Apply what other workers changed since this one last looked (each flush, about twice a second)."""
        if self.shared is None:
            return
        async with self._sync_lock:
            wanted = self.shared.read()
            if wanted["generation"] == self.applied:
                return
            failures: dict[str, str] = {}
            for name, want in wanted["models"].items():
                entry = self.entries.get(name)
                try:
                    if want["state"] == UNAVAILABLE:
                        if entry is not None and entry.app is not None:
                            await self._unload_here(name)
                    elif entry is None or entry.app is None or entry.generation < want["load"]:
                        await self._load_here(name, want["load"])
                except FastSeldonError as exc:
                    failures[name] = str(exc)
            self.applied = wanted["generation"]
            self.shared.ack(self.applied, failures)


class SharedState:
    """What the workers of one server should have loaded, in a small JSON file they all read.

    ``wanted.json`` holds a generation (one more per change) and, per model changed since start,
    its state and the generation of its last load. The worker that takes a load or unload applies
    it, writes it there (under a file lock), and waits until every other live worker has written
    ``ack-PID.json`` with that generation or later; each worker looks at the file on every metrics
    flush and applies what changed. A worker that starts (a restart, a replacement) reads it first,
    so it comes up with the models the others serve.
    """

    def __init__(self, directory: Path, worker: int | None = None):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "wanted.json"
        self.worker = os.getpid() if worker is None else worker  # the process id this worker acknowledges as
        self._ack = directory / f"ack-{self.worker}.json"

    @classmethod
    def for_server(cls) -> SharedState | None:
        """Beside the workers' metric files (None outside a supervisor: this process alone)."""
        base = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        return cls(Path(base) / f"repository-{os.getppid()}") if base else None

    def read(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.path.read_text())
            return {"generation": int(doc["generation"]), "models": dict(doc["models"])}
        except (OSError, ValueError, KeyError, TypeError):
            return {"generation": 0, "models": {}}

    @staticmethod
    def _write(path: Path, doc: dict[str, Any]) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)  # atomic: a reader never sees half a file

    def change(self, name: str, state: str) -> int:
        import fcntl

        with open(self.directory / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two workers changing models at once both count
            doc = self.read()
            generation = doc["generation"] + 1
            last_load = int(doc["models"].get(name, {}).get("load", 0))
            doc["generation"] = generation
            doc["models"][name] = {"state": state, "load": generation if state == READY else last_load}
            self._write(self.path, doc)
        return generation

    def ack(self, generation: int, failures: dict[str, str]) -> None:
        self._write(self._ack, {"generation": generation, "failures": failures})

    def leave(self) -> None:
        self._ack.unlink(missing_ok=True)

    def pending(self, generation: int, name: str) -> tuple[list[int], list[str]]:
        """The other live workers that have not applied ``generation`` yet, and how loading ``name``
        failed in those that have."""
        waiting: list[int] = []
        failures: list[str] = []
        for path in self.directory.glob("ack-*.json"):
            pid = int(path.stem[len("ack-"):])
            if pid == self.worker:
                continue
            try:
                os.kill(pid, 0)
            except ProcessLookupError:  # a worker that died: nothing to wait for
                path.unlink(missing_ok=True)
                continue
            except PermissionError:
                pass
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                waiting.append(pid)
                continue
            if int(doc.get("generation", -1)) < generation:
                waiting.append(pid)
            elif name in doc.get("failures", {}):
                failures.append(f"worker {pid}: {doc['failures'][name]}")
        return sorted(waiting), failures


# --------------------------------------------------------------------------- a repository folder


def read_s2i_environment(folder: Path) -> dict[str, str]:
    from fastseldon.builder import read_s2i_environment as read

    return read(folder)


class Repository:
    """A folder of models: one subfolder per model, or ``NAME.onnx``; the model's name is the
    folder's (or the file's stem). ``base`` holds the server-wide unit settings (flags and
    environment) each model's ``.s2i/environment`` overrides."""

    def __init__(self, directory: Path, base: UnitSettings, device: str = "auto"):
        self.directory = directory
        self.base = base
        self.device = device

    def scan(self) -> list[Entry]:
        """Every model in the folder (ValueError, naming the model, for one that cannot be served)."""
        if not self.directory.is_dir():
            raise ValueError(f"--repository {self.directory}: no such folder")
        entries = [self.describe(path) for path in sorted(self.directory.iterdir()) if self._candidate(path)]
        if not entries:
            raise ValueError(f"--repository {self.directory} holds no models: give it one folder per model (MyModel.py "
                             "with its .s2i/environment, or an .onnx file) or NAME.onnx files")
        return entries

    @staticmethod
    def _candidate(path: Path) -> bool:
        if path.name.startswith((".", "_")):
            return False
        return path.is_dir() or (path.is_file() and path.suffix == ".onnx")

    def find(self, name: str) -> Entry | None:
        """The model called ``name`` as it is on disk now (a folder added since start-up too)."""
        if not name or name.startswith((".", "_")) or "/" in name or os.sep in name:
            return None
        for path in (self.directory / name, self.directory / f"{name}.onnx"):
            if self._candidate(path) and path.exists():
                return self.describe(path)
        return None

    def describe(self, path: Path) -> Entry:
        name = path.stem if path.is_file() else path.name
        if path.is_file():
            return Entry(name, self._onnx(name, path, self.device, {}), path)
        env = read_s2i_environment(path)
        where = f"model {name!r} ({path.name}/.s2i/environment)"
        try:
            fields = unit_env_fields(env)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        if fields.get("service_type", "MODEL") not in SERVICE_TYPES:
            raise ValueError(f"{where}: unknown SERVICE_TYPE {fields['service_type']!r}; valid are {', '.join(SERVICE_TYPES)}")
        onnx_files = sorted(path.glob("*.onnx"))
        if env.get("ONNX_MODEL") or (onnx_files and not env.get("MODEL_NAME") and not (path / "MyModel.py").is_file()):
            uri = path / env["ONNX_MODEL"] if env.get("ONNX_MODEL") else path
            return Entry(name, self._onnx(name, uri, env.get("DEVICE") or self.device, fields), path)
        interface = env.get("MODEL_NAME") or "MyModel"
        top = interface.split(".")[0]
        if not ((path / f"{top}.py").is_file() or (path / top).is_dir() or "." in interface):
            raise ValueError(f"model {name!r}: {path.name}/ has no {top}.py (set MODEL_NAME in its .s2i/environment, "
                             "or put an .onnx file there)")
        parameters = env.get("PREDICTIVE_UNIT_PARAMETERS") or env.get("PARAMETERS") or "[]"
        try:
            parse_parameters(parameters)
        except ModelLoadError as exc:
            raise ValueError(f"{where}: {exc}") from None
        unit = replace(self.base, interface_name=interface, model_name=name, parameters=parameters,
                       predictive_unit_id=name, **fields)
        return Entry(name, unit, path)

    def _onnx(self, name: str, uri: Path, device: str, fields: dict[str, Any]) -> UnitSettings:
        parameters = [{"name": "model_uri", "value": str(uri.resolve()), "type": "STRING"},
                      {"name": "device", "value": device, "type": "STRING"}]
        return replace(self.base, interface_name=ONNX_CLASS, model_name=name, parameters=json.dumps(parameters),
                       predictive_unit_id=name, **fields)


def _forget_modules(folder: Path) -> None:
    """Drop the modules imported from ``folder``, so loading the model again reads its files again."""
    prefix = str(folder.resolve()) + os.sep
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if origin and os.path.abspath(origin).startswith(prefix):
            del sys.modules[name]
    importlib.invalidate_caches()


# --------------------------------------------------------------------------- the served app


class RepositoryApp:
    """One worker serving a repository: V2 and Seldon REST routes that pick the model by name."""

    flush_interval = Metrics.flush_interval

    def __init__(self, server: ServerSettings, registry: ModelRegistry, loop: asyncio.AbstractEventLoop):
        self.server = server
        self.registry = registry
        self.loop = loop
        self.metrics = Metrics(UnitSettings(interface_name="repository", model_name="repository"))
        self.router = Router()
        self.grpc_methods: dict[str, Any] = {}
        self._sync: asyncio.Task[None] | None = None
        self.router.set_error_renderer("", seldon_routes.render_error)
        self.router.set_error_renderer("/v2", v2_routes.render_error)
        models = v2_routes.V2Models(registry, self.router, self.grpc_methods, self.timed_rest, loop)
        models.add_server_routes()
        models.add_model_routes(repository=True)
        models.add_grpc(repository=True)
        seldon_routes.SeldonModels(registry, self.router, self.grpc_methods).register()

    def timed_rest(self, label: str, fn: Any) -> Any:
        return timed_rest(self.metrics, self.router, label, fn)

    def flush(self) -> None:
        self.metrics.flush()
        for app in self.registry.loaded():
            app.flush()
        if self.registry.shared is not None and (self._sync is None or self._sync.done()):
            self._sync = self.loop.create_task(self._follow())

    async def _follow(self) -> None:
        try:
            await self.registry.sync()
        except Exception:  # noqa: BLE001 - the next flush tries again
            log.exception("applying the other workers' model changes failed")

    def close(self) -> None:
        if self.registry.shared is not None:
            self.registry.shared.leave()
        for app in self.registry.loaded():
            app.close()
        self.metrics.flush()


async def load_model(server: ServerSettings, loop: asyncio.AbstractEventLoop, entry: Entry) -> App:
    assert entry.unit is not None and entry.source is not None
    folder = entry.source if entry.source.is_dir() else None
    if folder is not None:
        _forget_modules(folder)
    return await load_unit_app(server, entry.unit, loop, str(folder.resolve()) if folder is not None else None)


async def load_repository_app(server: ServerSettings, repository: Repository, loop: asyncio.AbstractEventLoop) -> RepositoryApp:
    """Load the repository's models as the other workers serve them (at first: every model; one
    failing stops the worker, naming it), then build the app."""
    shared = SharedState.for_server()

    async def loader(entry: Entry) -> App:
        return await load_model(server, loop, entry)

    registry = ModelRegistry(repository.scan(), loader=loader, find=repository.find, shared=shared)
    wanted: dict[str, Any] = {"generation": 0, "models": {}}
    if shared is not None:
        shared.ack(-1, {})  # starting: a change made meanwhile waits for this worker too
        wanted = shared.read()
    for name, want in wanted["models"].items():
        if want["state"] == READY and not registry.known(name):
            found = repository.find(name)  # added to the folder after start-up, then loaded
            if found is not None:
                registry.entries[name] = found
    for entry in list(registry.entries.values()):
        want = wanted["models"].get(entry.name, {"state": READY, "load": 0})
        if want["state"] != READY:
            entry.reason = "unloaded"
            continue
        try:
            entry.app = await loader(entry)
        except Exception as exc:
            for app in registry.loaded():
                app.close()
            raise ModelLoadError(f"model {entry.name!r}: {exc}") from None
        entry.generation = int(want["load"])
    registry.applied = wanted["generation"]
    if shared is not None:
        shared.ack(registry.applied, {})
    return RepositoryApp(server, registry, loop)
