"""Fail a GPU image build when onnxruntime-gpu would not run on CUDA in that image.

The classic failure is silent: ONNX Runtime lists CUDAExecutionProvider, a session asks for
it, the provider library cannot be loaded (libcudnn.so.9 or libcublas.so.12 missing, or a
cuDNN of another major), ORT logs a warning and the model runs on the CPU. Everything this
script checks is a file in the image, so no GPU (and no driver) is needed:

1. the pairing: the CUDA major and the cuDNN major onnxruntime-gpu was built for, against
   what the image holds. The build side comes from the wheel's build info (CUDA) and, for
   cuDNN, from the wheel's metadata (its ``cudnn`` extra names ``nvidia-cudnn-cu12~=9.0``)
   or the cuDNN library the CUDA provider links (``libcudnn.so.9``); the image side from an
   nvidia/cuda base's ``CUDA_VERSION`` / ``NV_CUDNN_VERSION``, or else from the installed
   ``nvidia-cuda-runtime-cu*`` / ``nvidia-cudnn-cu*`` wheels.
2. the libraries: every shared library the CUDA provider needs resolves (``ldd``), and so
   do cuDNN's sub-libraries, which libcudnn opens itself at run time; the only one allowed
   to be missing is the driver's ``libcuda.so.1``, which the NVIDIA container toolkit
   mounts from the host when the container starts.

Exit status 0 when all is well, 1 with one ``error:`` line per problem otherwise;
``--verbose`` lists every library each checked object links and where it resolved.
"""
from __future__ import annotations

import glob
import importlib.metadata as md
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

DRIVER_LIBRARIES = frozenset({"libcuda.so.1"})
PROVIDER = "libonnxruntime_providers_cuda.so"
# which PyPI wheel ships a library, for the message about a missing one
_WHEELS = (
    (re.compile(r"^libcudnn"), "nvidia-cudnn-cu{major} (onnxruntime-gpu[cudnn])"),
    (re.compile(r"^libcublas"), "nvidia-cublas-cu{major} (a dependency of nvidia-cudnn-cu{major})"),
    (re.compile(r"^libcudart"), "nvidia-cuda-runtime-cu{major} (onnxruntime-gpu[cuda])"),
    (re.compile(r"^libcufft"), "nvidia-cufft-cu{major} (onnxruntime-gpu[cuda])"),
    (re.compile(r"^libcurand"), "nvidia-curand-cu{major} (onnxruntime-gpu[cuda])"),
    (re.compile(r"^libnvrtc"), "nvidia-cuda-nvrtc-cu{major} (onnxruntime-gpu[cuda])"),
    (re.compile(r"^libnvJitLink"), "nvidia-nvjitlink-cu{major}"),
)


def _major(version: str) -> str:
    return version.strip().split(".")[0] if version else ""


# ------------------------------------------------------------------ what the wheel was built for


def cudnn_major_from_requires(requires: Iterable[str]) -> str:
    """The cuDNN major of ``Requires-Dist`` lines (``nvidia-cudnn-cu12~=9.0; extra == "cudnn"``)."""
    for line in requires:
        match = re.match(r"^\s*nvidia[-_]cudnn[-_]cu\d+\s*(?:\[[^\]]*\])?\s*(?:~=|==|>=)\s*(\d+)", line, re.I)
        if match:
            return match.group(1)
    return ""


def cudnn_major_from_needed(needed: Iterable[str]) -> str:
    """The cuDNN major of the library names a shared object links (``libcudnn.so.9``)."""
    for name in needed:
        match = re.fullmatch(r"libcudnn\.so\.(\d+)", name)
        if match:
            return match.group(1)
    return ""


# ------------------------------------------------------------------ what the image has


def image_versions(env: Mapping[str, str], dists: Mapping[str, str]) -> tuple[str, str, str]:
    """(CUDA, cuDNN, where from): an nvidia/cuda base's variables, else the nvidia-* wheels."""
    cuda, cudnn = env.get("CUDA_VERSION", ""), env.get("NV_CUDNN_VERSION", "")
    if cuda or cudnn:
        return cuda, cudnn, "the nvidia/cuda base image (CUDA_VERSION, NV_CUDNN_VERSION)"
    runtime = next((v for k, v in sorted(dists.items()) if re.fullmatch(r"nvidia-cuda-runtime(-cu\d+)?", k)), "")
    dnn = next((v for k, v in sorted(dists.items()) if re.fullmatch(r"nvidia-cudnn-cu\d+", k)), "")
    return runtime, dnn, "the nvidia-* wheels (nvidia-cuda-runtime-cu*, nvidia-cudnn-cu*)"


def pairing_problems(
    providers: list[str], ort_cuda: str, ort_cudnn: str, base_cuda: str, base_cudnn: str
) -> list[str]:
    """What is wrong with this onnxruntime build on this image (empty when it fits)."""
    problems = []
    if "CUDAExecutionProvider" not in providers:
        problems.append(
            "onnxruntime has no CUDAExecutionProvider: the CPU package 'onnxruntime' is installed "
            "over (or instead of) 'onnxruntime-gpu'"
        )
    if not base_cuda:
        problems.append(
            "no CUDA runtime in the image: CUDA_VERSION is not set (not an nvidia/cuda base) and no "
            "nvidia-cuda-runtime-cu* wheel is installed (onnxruntime-gpu[cuda])"
        )
    elif ort_cuda and _major(ort_cuda) != _major(base_cuda):
        problems.append(f"onnxruntime-gpu is built for CUDA {ort_cuda}, the image has CUDA {base_cuda}")
    if not base_cudnn:
        problems.append(
            "no cuDNN in the image: NV_CUDNN_VERSION is not set (use a -cudnn- tag of nvidia/cuda) and no "
            "nvidia-cudnn-cu* wheel is installed (onnxruntime-gpu[cudnn])"
        )
    elif ort_cudnn and _major(ort_cudnn) != _major(base_cudnn):
        problems.append(f"onnxruntime-gpu is built for cuDNN {ort_cudnn}, the image has cuDNN {base_cudnn}")
    return problems


# ------------------------------------------------------------------ the libraries


def parse_ldd(text: str) -> dict[str, str | None]:
    """``ldd`` output as {soname: resolved path, or None when "not found"}."""
    found: dict[str, str | None] = {}
    for line in text.splitlines():
        line = line.strip()
        match = re.match(r"^(\S+)\s+=>\s+not found", line)
        if match:
            found[match.group(1)] = None
            continue
        match = re.match(r"^(\S+)\s+=>\s+(\S+)\s+\(0x[0-9a-f]+\)", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def wheel_for(library: str, cuda_major: str = "12") -> str:
    for pattern, wheel in _WHEELS:
        if pattern.search(library):
            return wheel.format(major=cuda_major or "12")
    return "the package that ships it"


def library_problems(
    resolved: Mapping[str, Mapping[str, str | None]], cuda_major: str = "12", allowed: Iterable[str] = DRIVER_LIBRARIES
) -> list[str]:
    """One problem per library that does not resolve, with who needs it; ``resolved`` maps
    each checked object to its ldd result."""
    allowed = set(allowed)
    missing: dict[str, list[str]] = {}
    for owner, libraries in resolved.items():
        for name, path in libraries.items():
            if path is None and name not in allowed:
                missing.setdefault(name, []).append(Path(owner).name)
    return [
        f"{name} does not resolve (needed by {', '.join(sorted(set(owners)))}): install {wheel_for(name, cuda_major)}"
        for name, owners in sorted(missing.items())
    ]


def ldd(path: str) -> dict[str, str | None]:
    done = subprocess.run(["ldd", path], capture_output=True, text=True, check=False)
    if done.returncode != 0 and "not a dynamic executable" in done.stderr:
        return {}
    return parse_ldd(done.stdout)


def cudnn_sublibraries(resolved: Mapping[str, str | None]) -> list[str]:
    """The libcudnn_*.so.N files beside the libcudnn.so.N the provider resolved to."""
    for name, path in resolved.items():
        match = re.fullmatch(r"libcudnn\.so\.(\d+)", name)
        if match and path:
            directory = os.path.dirname(os.path.realpath(path))
            return sorted(glob.glob(os.path.join(directory, f"libcudnn_*.so.{match.group(1)}")))
    return []


def can_dlopen(name: str) -> bool:
    import ctypes

    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def check_libraries(
    provider: str, cuda_major: str, opens: Callable[[str], bool] | None = None
) -> tuple[list[str], dict[str, dict[str, str | None]]]:
    """(problems, ldd results) for the CUDA provider and cuDNN's sub-libraries, plus NVRTC,
    which cuDNN's runtime-compiled engines open by name (no object links it)."""
    if not os.path.isfile(provider):
        return [f"{provider} is missing: this onnxruntime has no CUDA provider library"], {}
    results = {provider: ldd(provider)}
    subs = cudnn_sublibraries(results[provider])
    for sub in subs:
        results[sub] = ldd(sub)
    problems = library_problems(results, cuda_major)
    if cuda_major and subs:
        nvrtc = f"libnvrtc.so.{cuda_major}"
        if (opens or can_dlopen)(nvrtc):
            results["dlopen"] = {nvrtc: nvrtc}
        else:
            results["dlopen"] = {nvrtc: None}
            problems.append(f"{nvrtc} cannot be opened (cuDNN's runtime-compiled engines open it): "
                            f"install {wheel_for(nvrtc, cuda_major)}")
    if not subs and any(re.fullmatch(r"libcudnn\.so\.\d+", n) and p for n, p in results[provider].items()):
        problems.append("cuDNN's sub-libraries (libcudnn_*.so.N, opened by libcudnn at run time) are not beside libcudnn")
    return problems, results


# ------------------------------------------------------------------ main


def _distributions() -> dict[str, str]:
    return {
        re.sub(r"[-_.]+", "-", (d.metadata["Name"] or "")).lower(): d.version for d in md.distributions()
    }


def main(argv: list[str] | None = None) -> int:
    verbose = "--verbose" in (sys.argv[1:] if argv is None else argv)
    import onnxruntime
    from onnxruntime.capi import build_and_package_info as info

    providers = onnxruntime.get_available_providers()
    ort_cuda = getattr(info, "cuda_version", "") or ""
    base_cuda, base_cudnn, base_from = image_versions(os.environ, _distributions())
    provider = str(Path(onnxruntime.__file__).parent / "capi" / PROVIDER)
    library_issues, results = check_libraries(provider, _major(ort_cuda or base_cuda))

    # cuDNN: the build info of today's wheels has no cudnn_version; the [cudnn] extra and the
    # library the provider links say it instead
    ort_cudnn, cudnn_from = getattr(info, "cudnn_version", "") or "", "build info"
    if not ort_cudnn:
        try:
            requires = md.requires("onnxruntime-gpu") or []
        except md.PackageNotFoundError:
            requires = []
        ort_cudnn, cudnn_from = cudnn_major_from_requires(requires), "the wheel's [cudnn] extra"
    if not ort_cudnn:
        ort_cudnn, cudnn_from = cudnn_major_from_needed(results.get(provider, {})), f"the cuDNN {PROVIDER} links"

    problems = pairing_problems(providers, ort_cuda, ort_cudnn, base_cuda, base_cudnn)
    if "CUDAExecutionProvider" in providers:
        problems += library_issues
    if verbose:
        for owner, libraries in results.items():
            for name, path in sorted(libraries.items()):
                state = path or ("not here: the driver's, mounted at run time" if name in DRIVER_LIBRARIES
                                 else "NOT FOUND")
                print(f"  {Path(owner).name}: {name} => {state}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    resolved = sum(1 for libs in results.values() for path in libs.values() if path)
    print(
        f"onnxruntime-gpu {onnxruntime.__version__}: built for CUDA {ort_cuda or '?'} (build info), "
        f"cuDNN {ort_cudnn or '?'} ({cudnn_from}); the image has CUDA {base_cuda or '?'}, cuDNN {base_cudnn or '?'} "
        f"({base_from}); {PROVIDER} and {max(len([k for k in results if k.startswith('/')]) - 1, 0)} cuDNN sub-libraries "
        f"(and NVRTC): {resolved} library links "
        f"resolve, {', '.join(sorted(DRIVER_LIBRARIES))} is left to the driver: {'MISMATCH' if problems else 'ok'}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
