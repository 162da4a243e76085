"""Fail the GPU image build when onnxruntime-gpu does not fit the CUDA base image.

onnxruntime-gpu is built for one CUDA major and one cuDNN major; a mismatch with the
base image only shows up at run time, as a warning and a silent fall-back to the CPU.
This runs at build time and reads both sides from what is really installed: the
onnxruntime build info and the base image's CUDA_VERSION / NV_CUDNN_VERSION variables.
No GPU is needed.
"""
from __future__ import annotations

import os
import sys


def _major(version: str) -> str:
    return version.strip().split(".")[0] if version else ""


def pairing_problems(
    providers: list[str], ort_cuda: str, ort_cudnn: str, base_cuda: str, base_cudnn: str
) -> list[str]:
    """What is wrong with this onnxruntime build on this base (empty when it fits)."""
    problems = []
    if "CUDAExecutionProvider" not in providers:
        problems.append(
            "onnxruntime has no CUDAExecutionProvider: the CPU package 'onnxruntime' is installed "
            "over (or instead of) 'onnxruntime-gpu'"
        )
    if not base_cuda:
        problems.append("CUDA_VERSION is not set: the base is not an nvidia/cuda image")
    elif ort_cuda and _major(ort_cuda) != _major(base_cuda):
        problems.append(f"onnxruntime-gpu is built for CUDA {ort_cuda}, the base image has CUDA {base_cuda}")
    if not base_cudnn:
        problems.append("NV_CUDNN_VERSION is not set: use a -cudnn- runtime tag of nvidia/cuda")
    elif ort_cudnn and _major(ort_cudnn) != _major(base_cudnn):
        problems.append(f"onnxruntime-gpu is built for cuDNN {ort_cudnn}, the base image has cuDNN {base_cudnn}")
    return problems


def main() -> int:
    import onnxruntime
    from onnxruntime.capi import build_and_package_info as info

    ort_cuda = getattr(info, "cuda_version", "") or ""
    ort_cudnn = getattr(info, "cudnn_version", "") or ""
    base_cuda = os.environ.get("CUDA_VERSION", "")
    base_cudnn = os.environ.get("NV_CUDNN_VERSION", "")
    problems = pairing_problems(onnxruntime.get_available_providers(), ort_cuda, ort_cudnn, base_cuda, base_cudnn)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    print(
        f"onnxruntime-gpu {onnxruntime.__version__} (built for CUDA {ort_cuda or '?'}, cuDNN {ort_cudnn or '?'}) "
        f"on CUDA {base_cuda or '?'}, cuDNN {base_cudnn or '?'}: {'MISMATCH' if problems else 'ok'}"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
