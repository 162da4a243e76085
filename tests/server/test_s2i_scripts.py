"""The s2i scripts, run for real outside a container.

Each test lays out a temporary directory the way s2i lays out a build container (the
injected source, the restored artifacts, the application directory), points the scripts
at it through their environment variables, and runs ``assemble`` and then ``run``, which
starts the real server. Requirements are real pip installs of tiny local packages (a
directory, or an sdist served by a local index on 127.0.0.1) into a throwaway venv that
also sees this interpreter's packages, so no network is needed.
"""
from __future__ import annotations

import base64
import hashlib
import http.server
import importlib.metadata
import io
import json
import os
import re
import shutil
import signal
import site
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests

from support.serving import Server, free_port, wait_ready

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "s2i" / "bin"
IDENTITY = ROOT / "examples" / "identity"

# A PEP 517 backend small enough to live inside each test package: with `requires = []`
# pip's isolated build needs nothing from an index, and no setuptools/wheel either.
_BACKEND = '''
import base64, hashlib, os, tarfile, zipfile

NAME, VERSION, MODULES = {name!r}, {version!r}, {modules!r}
DIST = NAME.replace("-", "_")

def _record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{{path}},sha256={{digest}},{{len(data)}}"

def get_requires_for_build_wheel(config_settings=None):
    return []

def get_requires_for_build_sdist(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    info = f"{{DIST}}-{{VERSION}}.dist-info"
    files = {{m: open(os.path.join(here, m), "rb").read() for m in MODULES}}
    files[f"{{info}}/METADATA"] = f"Metadata-Version: 2.1\\nName: {{NAME}}\\nVersion: {{VERSION}}\\n".encode()
    files[f"{{info}}/WHEEL"] = b"Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n"
    record = [_record_line(p, d) for p, d in files.items()] + [f"{{info}}/RECORD,,"]
    files[f"{{info}}/RECORD"] = ("\\n".join(record) + "\\n").encode()
    filename = f"{{DIST}}-{{VERSION}}-py3-none-any.whl"
    with zipfile.ZipFile(os.path.join(wheel_directory, filename), "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)
    return filename
'''


def write_local_package(directory: Path, name: str, modules: dict[str, str], version: str = "0.1") -> Path:
    """A pip-installable source tree: pyproject with an in-tree backend, plus modules."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(
        "[build-system]\nrequires = []\nbuild-backend = \"backend\"\nbackend-path = [\"_build\"]\n\n"
        f"[project]\nname = \"{name}\"\nversion = \"{version}\"\n"
    )
    (directory / "PKG-INFO").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (directory / "_build").mkdir(exist_ok=True)
    (directory / "_build" / "backend.py").write_text(
        _BACKEND.format(name=name, version=version, modules=sorted(modules))
    )
    for module, source in modules.items():
        (directory / module).write_text(source)
    return directory


def make_sdist(package_dir: Path, out: Path) -> Path:
    """``<name>-<version>.tar.gz`` of a package tree, as an index would serve it."""
    name_version = out.name[: -len(".tar.gz")]
    with tarfile.open(out, "w:gz") as tar:
        tar.add(package_dir, arcname=name_version)
    return out


@pytest.fixture
def venv(tmp_path_factory) -> Path:
    """A venv standing in for the image's /opt/app-root: pip installs land in it, while
    this interpreter's packages (fastseldon and its dependencies) stay importable."""
    path = tmp_path_factory.mktemp("s2i-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    purelib = subprocess.run(
        [str(path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    outer = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
    # addsitedir (not a bare path) so the outer .pth files, editable installs included, run too.
    (Path(purelib) / "zz_outer_site.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in outer)
    )
    return path


@dataclass
class Layout:
    """The directories of one s2i build, and the environment that points the scripts at them."""

    root: Path
    src: Path
    artifacts: Path
    app: Path
    pip_cache: Path
    env: dict[str, str]


def layout(tmp_path: Path, venv: Path, name: str = "build", pip_cache: Path | None = None) -> Layout:
    root = tmp_path / name
    src, artifacts, app = root / "tmp" / "src", root / "tmp" / "artifacts", root / "opt" / "app-root" / "src"
    for d in (src, artifacts, app):
        d.mkdir(parents=True)
    cache = pip_cache or root / "opt" / "app-root" / ".cache" / "pip"
    env = {
        **os.environ,
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "FASTSELDON_S2I_SOURCE_DIR": str(src),
        "FASTSELDON_S2I_ARTIFACTS_DIR": str(artifacts),
        "FASTSELDON_APP_DIR": str(app),
        "PIP_CACHE_DIR": str(cache),
        "PIP_NO_INDEX": "1",  # proves nothing comes from the network
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "FASTSELDON_BUILDER": "cpu",
    }
    for key in ("MODEL_NAME", "API_TYPE", "SERVICE_TYPE", "PERSISTENCE", "WORKERS", "MAX_BATCH_SIZE",
                "MAX_BATCH_TIME_MS", "DEVICE", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_REQUIRE_VIRTUALENV"):
        env.pop(key, None)
    return Layout(root, src, artifacts, app, cache, env)


def write_environment(src: Path, **values: str) -> None:
    (src / ".s2i").mkdir(exist_ok=True)
    (src / ".s2i" / "environment").write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def assemble(lay: Layout, **env: str | None) -> subprocess.CompletedProcess:
    """Run assemble; ``NAME=None`` removes a variable from its environment."""
    full = {**lay.env, **env}
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run([str(SCRIPTS / "assemble")], env=full, capture_output=True, text=True, timeout=300)


@contextmanager
def run_script(lay: Layout, *args: str, **env: str) -> Iterator[Server]:
    """The ``run`` script on free ports (the server reads Seldon's port variables)."""
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    log_path = lay.root / f"run-{http_port}.log"
    full_env = {
        **lay.env,
        "PREDICTIVE_UNIT_HTTP_SERVICE_PORT": str(http_port),
        "PREDICTIVE_UNIT_GRPC_SERVICE_PORT": str(grpc_port),
        "PREDICTIVE_UNIT_METRICS_SERVICE_PORT": str(metrics_port),
        **env,
    }
    with open(log_path, "wb") as sink:
        proc = subprocess.Popen([str(SCRIPTS / "run"), *args], cwd=lay.root, env=full_env, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(proc, http_port, grpc_port, metrics_port, log_path)
    try:
        wait_ready(server)
        yield server
    finally:
        if not server.stopped:
            server.stop()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def venv_python(venv: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=cwd, capture_output=True, text=True)


def seldon_predict(server: Server, ndarray: list) -> dict:
    reply = requests.post(server.url + "/api/v1.0/predictions", json={"data": {"ndarray": ndarray}}, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()


# ------------------------------------------------------------------------------ tests


def test_assemble_then_run_serves_the_identity_example(tmp_path, venv):
    lay = layout(tmp_path, venv)
    shutil.copy(IDENTITY / "MyModel.py", lay.src)
    write_local_package(lay.src / "vendor" / "tinyscale", "tinyscale", {"tinyscale.py": "FACTOR = 3\n"})
    (lay.src / "requirements.txt").write_text("# a local package: no index needed\n./vendor/tinyscale\n")
    write_environment(lay.src, MODEL_NAME="MyModel", API_TYPE="REST", SERVICE_TYPE="MODEL", PERSISTENCE="0",
                      WORKERS="1", DEVICE="cpu")

    built = assemble(lay)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "Installing dependencies from requirements.txt" in built.stdout
    assert (lay.app / "MyModel.py").read_text() == (IDENTITY / "MyModel.py").read_text()
    assert (lay.app / ".s2i" / "environment").is_file()
    assert list(lay.src.iterdir()) == [], "the injected source is cleared once copied"
    # the requirement went into the image's Python (the venv), not just next to the app
    probe = venv_python(venv, "import tinyscale, sys; print(tinyscale.FACTOR, tinyscale.__file__)", tmp_path)
    assert probe.returncode == 0 and probe.stdout.startswith("3 ") and str(venv) in probe.stdout, probe

    with run_script(lay) as server:
        assert seldon_predict(server, [[1.0, 2.0], [3.0, 4.0]])["data"]["ndarray"] == [[1.0, 2.0], [3.0, 4.0]]
        assert port_open(server.grpc_port), "API_TYPE=REST is ignored, as Seldon 1.19's run ignores it"
        # run execs: the process s2i started *is* the server, so SIGTERM reaches it
        cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"fastseldon" in cmdline and b"serve" in cmdline and not any(b"bin/run" in a for a in cmdline)
        assert server.stop() == 0
    log = server.output()
    expected = "fastseldon serve MyModel --service-type MODEL --persistence 0 --workers 1 --device cpu"
    assert expected in log


def test_run_passes_batching_and_workers_to_the_server(tmp_path, venv):
    lay = layout(tmp_path, venv)
    shutil.copy(IDENTITY / "MyModel.py", lay.app)
    write_environment(lay.app, WORKERS="2", MAX_BATCH_SIZE="8", MAX_BATCH_TIME_MS="2.5", DEVICE="GPU:1")
    with run_script(lay) as server:
        rows = [[float(i)] for i in range(4)]
        assert seldon_predict(server, rows)["data"]["ndarray"] == rows
    assert ("fastseldon serve MyModel --service-type MODEL --workers 2 --max-batch-size 8 --max-batch-time-ms 2.5 "
            "--device cuda:1") in server.output()


def test_requirements_and_the_source_project_are_installed_for_the_model(tmp_path, venv):
    lay = layout(tmp_path, venv)
    (lay.src / "MyModel.py").write_text(
        "from tinyscale import FACTOR\n\n\nclass MyModel:\n"
        "    def predict(self, X, feature_names):\n        return X * FACTOR\n"
    )
    write_local_package(lay.root / "pkgs" / "tinyscale", "tinyscale", {"tinyscale.py": "FACTOR = 3\n"})
    (lay.src / "requirements.txt").write_text(f"{lay.root / 'pkgs' / 'tinyscale'}\n")
    # the source is itself a Python project: assemble pip-installs it too
    write_local_package(lay.src, "model-helpers", {"model_helpers.py": "OFFSET = 7\n"}, version="1.2")
    write_environment(lay.src, API_TYPE="both")

    built = assemble(lay)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "Installing the application source as a Python project" in built.stdout
    version = venv_python(venv, "import importlib.metadata as m; print(m.version('model-helpers'))", tmp_path)
    assert version.stdout.strip() == "1.2", version

    with run_script(lay) as server:
        assert seldon_predict(server, [[1, 2]])["data"]["ndarray"] == [[3, 6]]
        assert port_open(server.grpc_port), "API_TYPE=both serves gRPC too"
    assert "--api-type" not in server.output()


def test_missing_interface_file_fails_assemble_with_the_reason(tmp_path, venv):
    lay = layout(tmp_path, venv)
    (lay.src / "requirements.txt").write_text("./nothing-here\n")
    built = assemble(lay)
    assert built.returncode != 0
    assert "MyModel.py not found in the source" in built.stderr
    assert "MODEL_NAME" in built.stderr
    assert "Installing" not in built.stdout, "fails before any install"

    other = layout(tmp_path, venv, "other")
    shutil.copy(IDENTITY / "MyModel.py", other.src)
    write_environment(other.src, MODEL_NAME="Classifier")
    built = assemble(other)
    assert built.returncode != 0 and "Classifier.py not found in the source" in built.stderr


def test_dotted_interface_names_are_checked_after_installs(tmp_path, venv):
    lay = layout(tmp_path, venv)
    (lay.src / "models").mkdir()
    (lay.src / "models" / "__init__.py").write_text("")
    (lay.src / "models" / "linear.py").write_text(
        "class Model:\n    def predict(self, X, feature_names):\n        return X\n"
    )
    write_environment(lay.src, MODEL_NAME="models.linear.Model")
    built = assemble(lay)
    assert built.returncode == 0, built.stdout + built.stderr
    with run_script(lay) as server:
        assert seldon_predict(server, [[5]])["data"]["ndarray"] == [[5]]

    missing = layout(tmp_path, venv, "missing")
    write_environment(missing.src, MODEL_NAME="models.absent.Model")
    built = assemble(missing)
    assert built.returncode != 0 and "module models.absent" in built.stderr


def test_pyproject_without_a_project_table_is_not_installed(tmp_path, venv):
    lay = layout(tmp_path, venv)
    shutil.copy(IDENTITY / "MyModel.py", lay.src)
    (lay.src / "pyproject.toml").write_text("[tool.ruff]\nline-length = 100\n")
    built = assemble(lay)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "as a Python project" not in built.stdout


def test_both_onnxruntime_packages_fail_assemble(tmp_path, venv):
    lay = layout(tmp_path, venv)
    shutil.copy(IDENTITY / "MyModel.py", lay.src)
    names = ["onnxruntime-gpu"]
    try:
        importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        names.append("onnxruntime")  # nothing installed to clash with: bring both
    lines = []
    for name in names:
        module = name.replace("-", "_") + "_stand_in.py"  # dist name only; no real module is shadowed
        write_local_package(lay.root / "pkgs" / name, name, {module: ""}, version="0.0.1")
        lines.append(str(lay.root / "pkgs" / name))
    (lay.src / "requirements.txt").write_text("\n".join(lines) + "\n")
    built = assemble(lay)
    assert built.returncode != 0
    assert "both onnxruntime and onnxruntime-gpu are installed" in built.stderr


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass


@contextmanager
def local_index(root: Path) -> Iterator[str]:
    """A PEP 503 "simple" index of the sdists under ``root``, on 127.0.0.1."""
    handler = lambda *a, **kw: _QuietHandler(*a, directory=str(root), **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/simple"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_incremental_build_restores_the_pip_cache_from_save_artifacts(tmp_path, venv):
    index_root = tmp_path / "index"
    project = index_root / "simple" / "tinyscale"
    project.mkdir(parents=True)
    package = write_local_package(tmp_path / "pkg" / "tinyscale", "tinyscale", {"tinyscale.py": "FACTOR = 3\n"})
    make_sdist(package, project / "tinyscale-0.1.tar.gz")
    (project / "index.html").write_text('<a href="tinyscale-0.1.tar.gz">tinyscale-0.1.tar.gz</a>\n')

    def source(lay: Layout) -> None:
        shutil.copy(IDENTITY / "MyModel.py", lay.src)
        (lay.src / "requirements.txt").write_text("tinyscale==0.1\n")

    def uninstall() -> None:
        # each build starts from a clean image: drop what the previous one installed
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", "tinyscale"],
                       check=True, capture_output=True)

    with local_index(index_root) as index_url:
        pip_env = {"PIP_NO_INDEX": None, "PIP_INDEX_URL": index_url}
        first = layout(tmp_path, venv, "first")
        source(first)
        built = assemble(first, **pip_env)
        assert built.returncode == 0, built.stdout + built.stderr
        assert "Building wheel for tinyscale" in built.stdout

        saved = subprocess.run([str(SCRIPTS / "save-artifacts")], env=first.env, capture_output=True, timeout=60)
        assert saved.returncode == 0, saved.stderr
        with tarfile.open(fileobj=io.BytesIO(saved.stdout)) as tar:  # stdout is nothing but the tar
            names = tar.getnames()
            assert names and all(n == "pip" or n.startswith("pip/") for n in names), names
            assert any(n.endswith("tinyscale-0.1-py3-none-any.whl") for n in names), names
            tar.extractall(tmp_path / "saved", filter="data")
        uninstall()

        # the next image: s2i unpacks the saved tar into /tmp/artifacts before assemble
        second = layout(tmp_path, venv, "second")
        source(second)
        shutil.copytree(tmp_path / "saved", second.artifacts, dirs_exist_ok=True)
        built = assemble(second, **pip_env)
        assert built.returncode == 0, built.stdout + built.stderr
        assert "Restoring the pip cache from the previous build" in built.stdout
        assert "Building wheel for tinyscale" not in built.stdout, "the saved wheel must be reused"
        assert "Successfully installed tinyscale-0.1" in built.stdout
        uninstall()

        # control: the same build without the artifacts has to build the wheel again
        third = layout(tmp_path, venv, "third")
        source(third)
        built = assemble(third, **pip_env)
        assert built.returncode == 0, built.stdout + built.stderr
        assert "Building wheel for tinyscale" in built.stdout
        uninstall()

    with run_script(second) as server:
        assert seldon_predict(server, [[9]])["data"]["ndarray"] == [[9]]


def test_save_artifacts_without_a_cache_streams_an_empty_tar(tmp_path, venv):
    lay = layout(tmp_path, venv)
    saved = subprocess.run([str(SCRIPTS / "save-artifacts")], env=lay.env, capture_output=True, timeout=60)
    assert saved.returncode == 0, saved.stderr
    with tarfile.open(fileobj=io.BytesIO(saved.stdout)) as tar:
        assert tar.getnames() == []


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"PERSISTENCE": "maybe"}, "PERSISTENCE=maybe: use 0 or 1"),
        ({"WORKERS": "0"}, "WORKERS=0"),
        ({"MAX_BATCH_SIZE": "lots"}, "MAX_BATCH_SIZE=lots"),
        ({"MAX_BATCH_TIME_MS": "-1"}, "MAX_BATCH_TIME_MS=-1"),
        ({"DEVICE": "tpu"}, "DEVICE=tpu: use auto, cpu, cuda or cuda:N"),
        ({"DEVICE": "cuda:x"}, "DEVICE=cuda:x: use auto, cpu, cuda or cuda:N"),
    ],
)
def test_run_rejects_bad_settings_before_starting(tmp_path, venv, setting, message):
    lay = layout(tmp_path, venv)
    shutil.copy(IDENTITY / "MyModel.py", lay.app)
    write_environment(lay.app, **setting)
    done = subprocess.run([str(SCRIPTS / "run")], env=lay.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 64
    assert message in done.stderr


def test_environment_variables_win_over_the_environment_file(tmp_path, venv):
    lay = layout(tmp_path, venv)
    shutil.copy(IDENTITY / "MyModel.py", lay.app)
    write_environment(lay.app, WORKERS="2", SERVICE_TYPE="TRANSFORMER")
    # s2i -e / docker run -e values are in the environment and must not be overridden by the file
    with run_script(lay, "--log-level", "DEBUG", WORKERS="1", SERVICE_TYPE="MODEL") as server:
        assert seldon_predict(server, [[1]])["data"]["ndarray"] == [[1]]
    log = server.output()
    assert "fastseldon serve MyModel --service-type MODEL --workers 1 --log-level DEBUG" in log


def test_usage_prints_how_to_build(tmp_path):
    done = subprocess.run([str(SCRIPTS / "usage")], env={**os.environ, "FASTSELDON_BUILDER": "gpu",
                                                          "FASTSELDON_BUILDER_IMAGE": "fastseldon/s2i-gpu"},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    # the image names its repository; usage adds the tag, fastseldon's version
    assert re.search(r"s2i build <source dir or git URL> fastseldon/s2i-gpu:\d+\.\d+\S* my-model:latest", done.stdout)
    assert "MODEL_NAME=MyModel" in done.stdout and "DEVICE=cuda" in done.stdout
    helped = subprocess.run([str(SCRIPTS / "assemble"), "--help"], capture_output=True, text=True, timeout=30)
    assert helped.returncode == 0 and "s2i build" in helped.stdout


def _hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def test_the_in_tree_backend_builds_a_valid_wheel(tmp_path):
    """The helper packages above must be real wheels, or the install tests prove nothing."""
    package = write_local_package(tmp_path / "p", "demo-pkg", {"demo_pkg.py": "X = 1\n"}, version="2.0")
    sys.path.insert(0, str(package / "_build"))
    try:
        import backend  # type: ignore[import-not-found]

        filename = backend.build_wheel(str(tmp_path))
    finally:
        sys.path.remove(str(package / "_build"))
        sys.modules.pop("backend", None)
    assert filename == "demo_pkg-2.0-py3-none-any.whl"
    with zipfile.ZipFile(tmp_path / filename) as whl:
        record = whl.read("demo_pkg-2.0.dist-info/RECORD").decode()
        assert f"demo_pkg.py,sha256={_hash(b'X = 1' + bytes([10]))},6" in record
        assert "Name: demo-pkg" in whl.read("demo_pkg-2.0.dist-info/METADATA").decode()


def _dockerfile_steps(path: Path) -> list[tuple[str, str]]:
    steps, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).strip().partition(" ")
        steps.append((word, rest))
        pending = ""
    return steps


def test_the_generated_dockerfile_executed_step_by_step_serves_the_model(tmp_path, venv):
    """What `fastseldon build` writes when no engine exists, carried out the way an engine
    would, with the image's paths mapped onto the temporary layout."""
    src = tmp_path / "model-src"
    src.mkdir()
    shutil.copy(IDENTITY / "MyModel.py", src)
    write_environment(src, MODEL_NAME="MyModel", SERVICE_TYPE="MODEL")
    (src / ".s2i" / "bin").mkdir()
    wrapper = src / ".s2i" / "bin" / "assemble"
    wrapper.write_text('#!/bin/bash\nset -e\n"$STI_SCRIPTS_PATH/assemble"\n'
                       'echo extra-step > "${FASTSELDON_APP_DIR:-/opt/app-root/src}/extra.txt"\n')
    wrapper.chmod(0o755)
    context = tmp_path / "context"
    done = subprocess.run([sys.executable, "-m", "fastseldon", "build", str(src), "me/model:1", "--cpu",
                           "--engine", "none", "--output", str(context), "-e", "FASTSELDON_EXTRA_ARGS=--api-type REST"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr

    lay = layout(tmp_path, venv)
    lay.env["STI_SCRIPTS_PATH"] = str(SCRIPTS)  # the builder image's ENV
    paths = {"/tmp/src": lay.src, "/tmp/scripts": lay.root / "tmp" / "scripts", "/usr/libexec/s2i": SCRIPTS}

    def host(path: str) -> Path:
        for image_path, here in paths.items():
            if path == image_path or path.startswith(image_path + "/"):
                return here / path[len(image_path):].lstrip("/")
        raise AssertionError(f"unmapped image path {path}")

    command: list[str] = []
    for word, args in _dockerfile_steps(context / "Dockerfile"):
        if word == "FROM":
            assert args.startswith("fastseldon/s2i-cpu:")
        elif word == "ENV":
            lay.env.update({k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*")', args)})
        elif word == "COPY":
            source, target = args.split()[-2:]
            shutil.copytree(context / source, host(target), dirs_exist_ok=True)
        elif word == "RUN":
            built = subprocess.run([str(host(args))], env=lay.env, capture_output=True, text=True, timeout=300)
            assert built.returncode == 0, built.stdout + built.stderr
        elif word == "CMD":
            command = [str(host(p)) for p in json.loads(args)]
    assert (lay.app / "extra.txt").read_text() == "extra-step\n", "the source's .s2i/bin/assemble ran"
    assert command == [str(SCRIPTS / "run")]
    with run_script(lay) as server:
        assert seldon_predict(server, [[4, 2]])["data"]["ndarray"] == [[4, 2]]
        assert not port_open(server.grpc_port), "-e FASTSELDON_EXTRA_ARGS=... reached the image's environment"


def test_an_onnx_file_is_served_without_user_code(tmp_path, venv):
    from support.onnx_models import Mlp

    lay = layout(tmp_path, venv)
    mlp = Mlp()
    mlp.save(lay.src / "model.onnx")
    write_environment(lay.src, ONNX_MODEL="model.onnx", DEVICE="cpu", MODEL_NAME="iris")
    built = assemble(lay)
    assert built.returncode == 0, built.stdout + built.stderr
    x = [[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, 1.0, 1.0]]
    with run_script(lay) as server:
        got = np.array(seldon_predict(server, x)["data"]["ndarray"])
        # MODEL_NAME names the served model (not the interface: there is no user code)
        assert requests.get(server.url + "/v2/models/iris/ready", timeout=10).status_code == 200
    np.testing.assert_allclose(got, mlp.reference(np.array(x)), rtol=1e-5, atol=1e-6)
    assert f"--onnx {lay.app / 'model.onnx'} --model-name iris --service-type MODEL --device cpu" in server.output()

    missing = layout(tmp_path, venv, "missing")
    write_environment(missing.src, ONNX_MODEL="nope.onnx")
    built = assemble(missing)
    assert built.returncode != 0 and "ONNX_MODEL=nope.onnx not found in the source" in built.stderr


def test_gpu_builder_rejects_an_onnxruntime_that_lost_cuda(tmp_path, venv):
    """The pairing check Dockerfile.gpu runs at image build runs again after the user's
    requirements; here the installed onnxruntime is a CPU build, so it must fail."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: nothing to reject")
    lay = layout(tmp_path, venv)
    shutil.copy(IDENTITY / "MyModel.py", lay.src)
    gpu_env = {
        "FASTSELDON_BUILDER": "gpu",
        "FASTSELDON_GPU_CHECK": str(ROOT / "s2i" / "gpu" / "check_onnxruntime_gpu.py"),
        "CUDA_VERSION": "12.8.1",
        "NV_CUDNN_VERSION": "9.8.0.87",
    }
    built = assemble(lay, **gpu_env)
    assert built.returncode != 0
    assert "no CUDAExecutionProvider" in built.stderr
    assert "does not fit this GPU image" in built.stderr
    # the CPU builder has no such check
    again = layout(tmp_path, venv, "cpu")
    shutil.copy(IDENTITY / "MyModel.py", again.src)
    built = assemble(again, **{**gpu_env, "FASTSELDON_BUILDER": "cpu"})
    assert built.returncode == 0, built.stdout + built.stderr
