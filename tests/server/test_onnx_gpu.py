"""OnnxModel on CUDA: the same checks as on CPU, with device=cuda.

Runs only where onnxruntime-gpu is installed and a GPU is visible; anywhere else every test
is skipped with the reason (see it with `pytest -rs`). Nothing here pretends to be a GPU.
onnxruntime and onnx are test dependencies, so a missing one fails like any broken import.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import onnxruntime as ort
import pytest

from fastseldon.runtimes.onnx import OnnxModel
from support.onnx_models import Mlp, TwoInput


def _gpu_skip_reason() -> str | None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return f"no CUDAExecutionProvider in this onnxruntime {ort.__version__} (install onnxruntime-gpu)"
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "CUDAExecutionProvider present but nvidia-smi not found: no visible GPU"
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True)
    if listed.returncode != 0 or "GPU" not in listed.stdout:
        return f"CUDAExecutionProvider present but no GPU visible ({listed.stderr.strip() or listed.stdout.strip()})"
    return None


SKIP_REASON = _gpu_skip_reason()
pytestmark = pytest.mark.skipif(SKIP_REASON is not None, reason=f"GPU test skipped: {SKIP_REASON}")
# CUDA kernels (TF32 matmuls included) round differently from numpy's float64 reference.
RTOL, ATOL = 5e-3, 1e-4


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu-models")
    mlp = Mlp(n_in=32, hidden=256, n_out=8, seed=1)
    return {"mlp": mlp, "mlp_path": str(mlp.save(folder / "mlp.onnx")), "two_path": str(TwoInput().save(folder / "two.onnx"))}


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "auto"])
def test_mlp_on_cuda_matches_numpy(paths, device):
    model = OnnxModel(model_uri=paths["mlp_path"], device=device)
    model.load()
    assert model.provider == "CUDAExecutionProvider"
    assert model._use_io_binding  # CUDA runs go through IO binding
    x = np.random.default_rng(0).normal(size=(64, 32))
    np.testing.assert_allclose(model.predict(x, []), paths["mlp"].reference(x), rtol=RTOL, atol=ATOL)
    assert model.init_metadata()["custom"]["execution_provider"] == "CUDAExecutionProvider"


def test_two_inputs_on_cuda(paths):
    model = OnnxModel(model_uri=paths["two_path"], device="cuda")
    model.load()
    a = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    b = np.random.default_rng(2).integers(-3, 3, size=(5, 3))
    out = model.predict({"a": a, "b": b}, [])
    ref = TwoInput.reference(a, b)
    np.testing.assert_allclose(out["y"], ref["y"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out["total"], ref["total"], rtol=RTOL, atol=ATOL)


def test_server_with_device_cuda(paths, tmp_path):
    import requests
    from test_onnx_server import onnx_server

    x = np.random.default_rng(3).normal(size=(4, 32))
    with onnx_server(["--onnx", paths["mlp_path"], "--device", "cuda"], tmp_path) as server:
        reply = requests.post(server.url + "/api/v1.0/predictions", json={"data": {"ndarray": x.tolist()}}, timeout=30)
        meta = requests.get(server.url + "/metadata", timeout=10).json()
    assert reply.status_code == 200, reply.text
    np.testing.assert_allclose(reply.json()["data"]["ndarray"], paths["mlp"].reference(x), rtol=RTOL, atol=ATOL)
    assert meta["custom"]["execution_provider"] == "CUDAExecutionProvider"
