"""fastseldon at another git revision, run as one more server beside the working tree.

`fastseldon@REV` (any commit-ish git understands: a sha, a tag, ``HEAD~3``) names fastseldon
as it was at REV. The first run exports that commit with ``git archive`` into
``$FASTSELDON_BENCH_CACHE/rev-<sha>/``, builds its Cython codec in place there
(``python setup.py build_ext --inplace``, with the interpreter running the harness) and checks
that an import under the revision's ``PYTHONPATH`` really loads the revision's code and its
compiled codec; later runs reuse that tree (the check is repeated, the build is not).

Both package layouts work: the current one (``server/fastseldon/``, so ``server/`` goes on
``PYTHONPATH``) and the old one (``setup.py``'s ``package_dir={"fastseldon": "server"}``:
``server/`` *is* the package, so ``rev-<sha>/_pkg/fastseldon`` is a symlink to it and
``_pkg/`` goes on ``PYTHONPATH``). ``PYTHONPATH`` comes before site-packages, so it wins over
the working tree's editable install (a ``.pth`` path or finder appended after it); the import
check and, once a server is up, the compiled modules mapped into its process
(``/proc/PID/maps``) confirm which tree is running.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "fastseldon@"
READY = ".bench-ready.json"  # written into the exported tree once it is built and checked
SOURCES = ("*.pyx", "*.pxd", "*.h", "*.cc")  # the hand-written codec sources in _fast/ (not generated .c/.cpp)

# What a server's environment imports: the package file, the active codec, its compiled modules.
_PROBE = r"""
import glob, importlib, json, os, sys
import fastseldon
import fastseldon.codec as codec
native = {}
try:
    import fastseldon._fast as fast
    names = sorted({os.path.basename(p).split(".")[0] for p in glob.glob(os.path.join(os.path.dirname(fast.__file__), "*.so"))})
except ImportError:
    names = []
for name in names:
    try:
        native[name] = importlib.import_module("fastseldon._fast." + name).__file__
    except ImportError as exc:
        native[name] = "import failed: %s" % exc
print(json.dumps({"file": fastseldon.__file__, "implementation": getattr(codec, "IMPLEMENTATION", None),
                  "native": native, "python": sys.executable}))
"""


class RevisionError(ValueError):
    """A revision that cannot be resolved, exported, built or imported."""


@dataclass(frozen=True)
class Revision:
    sha: str  # the full commit id
    short: str  # git's abbreviation, used in the server name
    subject: str

    @property
    def name(self) -> str:
        return PREFIX + self.short


def _root() -> Path:
    from benchmarks.servers import ROOT

    return ROOT


def _cache() -> Path:
    from benchmarks.servers import cache_dir

    return cache_dir()


def _git(*args: str, strip: bool = True) -> str:
    proc = subprocess.run(["git", "-C", str(_root()), *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RevisionError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout.strip() if strip else proc.stdout


def is_revision(name: str) -> bool:
    return name.startswith(PREFIX)


def resolve(rev: str) -> Revision:
    """The commit `rev` names (`rev` may also be a server name `fastseldon@REV`)."""
    rev = rev.removeprefix(PREFIX)
    if not rev:
        raise RevisionError("empty revision: write fastseldon@REV, e.g. fastseldon@da070a3")
    try:
        sha = _git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except RevisionError:
        raise RevisionError(f"{rev!r} is not a commit in {_root()}") from None
    short, subject = _git("log", "-1", "--format=%h%x00%s", sha).split("\0", 1)
    return Revision(sha, short, subject)


def tree_dir(rev: Revision) -> Path:
    return _cache() / f"rev-{rev.sha}"


def package_path(tree: Path) -> Path:
    """The folder to put on PYTHONPATH so that `import fastseldon` is this tree's package."""
    if (tree / "server" / "fastseldon" / "__init__.py").exists():
        return tree / "server"
    if (tree / "fastseldon" / "__init__.py").exists():
        return tree
    if (tree / "server" / "__init__.py").exists():  # old layout: package_dir={"fastseldon": "server"}
        pkg = tree / "_pkg"
        link = pkg / "fastseldon"
        if not link.is_symlink():
            pkg.mkdir(exist_ok=True)
            link.symlink_to(Path("..") / "server", target_is_directory=True)
        return pkg
    raise RevisionError(f"no fastseldon package found in {tree} (looked for server/fastseldon/, fastseldon/, server/)")


def server_env(pythonpath: Path | None) -> dict[str, str]:
    """The environment a fastseldon server runs in: the revision's package first on the path.

    None: the working tree (the editable install, with the repository root on the path as for
    every server the harness starts).
    """
    env = dict(os.environ)
    first = str(pythonpath) if pythonpath is not None else str(_root())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (first, env.get("PYTHONPATH", "")) if p)
    return env


def probe(pythonpath: Path | None, tree: Path) -> dict:
    """Import fastseldon as its server would (same interpreter, environment, a bare cwd) and say what loaded.

    `tree` is the checkout the code should come from; its codec sources are compared with the
    compiled modules' times (``stale_native``: sources edited since the last build).
    """
    with tempfile.TemporaryDirectory(prefix="bench-probe-") as cwd:
        proc = subprocess.run([sys.executable, "-c", _PROBE], cwd=cwd, env=server_env(pythonpath),
                              capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        where = "the working tree" if pythonpath is None else f"PYTHONPATH={pythonpath}"
        raise RevisionError(f"import fastseldon failed for {where}: {proc.stderr.strip()[-1500:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["stale_native"] = stale_native(info, tree)
    return info


_current: dict = {}


def current_probe() -> dict:
    """probe() of the working tree, once per process."""
    if not _current:
        _current.update(probe(None, _root()))
    return dict(_current)


def stale_native(info: dict, tree: Path) -> list[str]:
    """Codec sources in `tree`/_fast newer than the oldest compiled module that was imported."""
    built = [Path(p) for p in info.get("native", {}).values() if p and not p.startswith("import failed")]
    if not built:
        return []
    oldest = min(p.stat().st_mtime for p in built)
    sources = [p for pattern in SOURCES for p in (tree / "_fast").glob(pattern)]
    return sorted(str(p.relative_to(tree)) for p in sources if p.stat().st_mtime > oldest)


def check_loaded(info: dict, tree: Path) -> str | None:
    """None when `info` (from probe) shows the package and every compiled module coming from `tree`."""
    tree = tree.resolve()
    where = Path(info["file"]).resolve()
    if not where.is_relative_to(tree):
        return f"import fastseldon loaded {where}, not the revision in {tree}"
    for name, path in info.get("native", {}).items():
        if path.startswith("import failed"):
            return f"fastseldon._fast.{name}: {path}"
        if not Path(path).resolve().is_relative_to(tree):
            return f"fastseldon._fast.{name} loaded from {path}, not from {tree}"
    return None


_prepared: dict[str, tuple[Path, dict] | RevisionError] = {}


def prepare(rev: Revision, log=None) -> tuple[Path, dict]:
    """Export and build `rev` once (cached on disk and in this process); its PYTHONPATH entry and probe.

    The revision must end up with the same codec implementation as the working tree (native
    against native), else the comparison would measure the build, not the code.
    """
    done = _prepared.get(rev.sha)
    if isinstance(done, RevisionError):
        raise done
    if done is not None:
        return done
    try:
        result = _prepare(rev, log or (lambda text: print(f"  {text}", file=sys.stderr, flush=True)))
    except RevisionError as exc:
        _prepared[rev.sha] = exc
        raise
    _prepared[rev.sha] = result
    return result


def _prepare(rev: Revision, log) -> tuple[Path, dict]:
    cache = _cache()
    cache.mkdir(parents=True, exist_ok=True)
    tree = tree_dir(rev)
    with open(cache / f"rev-{rev.sha}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two harness runs never build the same tree at once
        if not tree.exists():
            log(f"{rev.name}: exporting {rev.sha[:12]} ({rev.subject}) to {tree}")
            _export(rev, tree)
        pythonpath = package_path(tree)
        ready = _read_ready(tree)
        info = None
        if ready is not None:
            try:
                info = probe(pythonpath, tree)
            except RevisionError:
                info = None
        if info is None or check_loaded(info, tree) or info["stale_native"] or not info["native"]:
            log(f"{rev.name}: building its codec in {tree} (python setup.py build_ext --inplace; "
                f"log in {tree / '.bench-build.log'})")
            _build(tree)
            info = probe(pythonpath, tree)
        problem = check_loaded(info, tree)
        if problem:
            raise RevisionError(f"{rev.name}: {problem}")
        current = current_probe()
        if info["implementation"] != current["implementation"]:
            raise RevisionError(
                f"{rev.name} runs the {info['implementation']} codec, the working tree the "
                f"{current['implementation']} one: not comparable (build log: {tree / '.bench-build.log'})")
        (tree / READY).write_text(json.dumps({"sha": rev.sha, "soabi": sysconfig.get_config_var("SOABI"),
                                              "python": sys.executable, "pythonpath": str(pythonpath),
                                              "checked": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "probe": info},
                                             indent=1))
    return pythonpath, info


def _read_ready(tree: Path) -> dict | None:
    try:
        ready = json.loads((tree / READY).read_text())
    except (OSError, ValueError):
        return None
    return ready if ready.get("soabi") == sysconfig.get_config_var("SOABI") else None


def _export(rev: Revision, tree: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".rev-{rev.sha[:12]}-", dir=tree.parent))
    try:
        archive = subprocess.Popen(["git", "-C", str(_root()), "archive", "--format=tar", rev.sha],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        untar = subprocess.run(["tar", "-x", "-C", str(tmp)], stdin=archive.stdout, capture_output=True, check=False)
        archive.stdout.close()
        err = archive.stderr.read().decode(errors="replace")
        if archive.wait() != 0 or untar.returncode != 0:
            raise RevisionError(f"git archive {rev.sha} | tar -x failed: {err} {untar.stderr.decode(errors='replace')}")
        tmp.rename(tree)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build(tree: Path) -> None:
    log_path = tree / ".bench-build.log"
    env = dict(os.environ)
    env.pop("FASTSELDON_NO_EXT", None)  # probe() then compares implementations with the working tree's
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tree, env=env,
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-1500:]
        raise RevisionError(f"building {tree} failed (exit {proc.returncode}): {tail}")


def working_tree() -> dict:
    """The commit the working tree sits on and the files it changes; {} outside a git checkout."""
    try:
        head = _git("log", "-1", "--format=%H%x00%h%x00%s")
        status = _git("status", "--porcelain", "-z", "--untracked-files=normal", strip=False)
    except (RevisionError, OSError):
        return {}
    sha, short, subject = head.split("\0", 2)
    changed, entries = [], iter(status.split("\0"))
    for entry in entries:  # "XY path", a rename's source path follows as its own entry
        if len(entry) > 3:
            changed.append(entry[3:])
            if entry[0] in "RC":
                next(entries, None)
    return {"head": sha, "short": short, "subject": subject, "changed": changed}


def mapped_native(pid: int) -> list[str]:
    """The compiled fastseldon._fast modules mapped into process `pid` (real paths; [] off Linux)."""
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    found = {line.split(None, 5)[-1] for line in text.splitlines() if "/_fast/" in line and line.rstrip().endswith(".so")}
    return sorted(found)
