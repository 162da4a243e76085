"""Helpers for s2i/test-images.sh: the model sources it builds images from, and the checks it
runs against a container of each image (real clients over the network).

    python tests/images/probe.py sources DIR
        DIR/onnx: an ONNX file and .s2i/environment ONNX_MODEL=... (no user code)
        DIR/reqs: MyModel.py that imports tinyscale, a requirements.txt naming it on a local
                  index, and DIR/index/simple/tinyscale/tinyscale-0.1.tar.gz, the sdist that
                  index serves (pip builds it into a wheel: what save-artifacts keeps)
    python tests/images/probe.py check CASE --http P --grpc P --metrics P [--wait S]
        CASE identity, onnx or reqs: Seldon REST and gRPC, V2 REST and gRPC, metrics.
    python tests/images/probe.py pins CONSTRAINTS FREEZE
        every package of FREEZE (an image's `pip list --format=freeze`) is pinned to the
        version CONSTRAINTS (s2i/constraints.txt) names; fastseldon itself is this checkout.

Not a pytest module: the script drives it with the image's ports. Exit status 0 when every
answer is right; otherwise one line per failure and status 1.
"""
from __future__ import annotations

import argparse
import io
import re
import sys
import tarfile
import time
from pathlib import Path

import grpc
import numpy as np
import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: support.*

REQS_FACTOR = 3
ONNX_NAME = "mlp"
_TINYSCALE_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "tinyscale"
version = "0.1"

[tool.setuptools]
py-modules = ["tinyscale"]
"""
_REQS_MODEL = """\
\"\"\"Multiplies by tinyscale.FACTOR: tinyscale comes from requirements.txt.\"\"\"
import numpy as np
import tinyscale


class MyModel:
    def predict(self, X, features_names=None):
        return np.asarray(X, dtype=np.float64) * tinyscale.FACTOR
"""


def _mlp():
    from support.onnx_models import Mlp

    return Mlp(n_in=4, hidden=8, n_out=3, seed=7)


def write_sources(root: Path, index_url: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    onnx_dir = root / "onnx"
    (onnx_dir / ".s2i").mkdir(parents=True, exist_ok=True)
    _mlp().save(onnx_dir / f"{ONNX_NAME}.onnx")
    (onnx_dir / ".s2i" / "environment").write_text(
        f"ONNX_MODEL={ONNX_NAME}.onnx\nMODEL_NAME={ONNX_NAME}\nDEVICE=auto\nMAX_BATCH_SIZE=8\nMAX_BATCH_TIME_MS=2\n"
    )

    reqs = root / "reqs"
    (reqs / ".s2i").mkdir(parents=True, exist_ok=True)
    (reqs / "MyModel.py").write_text(_REQS_MODEL)
    (reqs / "requirements.txt").write_text(
        "# tinyscale is an sdist on a local index: pip builds a wheel, which save-artifacts keeps\n"
        f"--extra-index-url {index_url}\n"
        "tinyscale==0.1\n"
    )
    (reqs / ".s2i" / "environment").write_text("MODEL_NAME=MyModel\nSERVICE_TYPE=MODEL\nWORKERS=2\nPERSISTENCE=0\n")
    package = root / "index" / "simple" / "tinyscale"
    package.mkdir(parents=True, exist_ok=True)
    with tarfile.open(package / "tinyscale-0.1.tar.gz", "w:gz") as tar:
        for name, text in (("pyproject.toml", _TINYSCALE_PYPROJECT), ("tinyscale.py", f"FACTOR = {REQS_FACTOR}\n"),
                           ("PKG-INFO", "Metadata-Version: 2.1\nName: tinyscale\nVersion: 0.1\n")):
            data = text.encode()
            info = tarfile.TarInfo(f"tinyscale-0.1/{name}")
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))


# ------------------------------------------------------------------ checks


def expected(case: str, x: np.ndarray) -> np.ndarray:
    if case == "identity":
        return x
    if case == "reqs":
        return x * REQS_FACTOR
    return _mlp().reference(x)


class Checker:
    def __init__(self, case: str, host: str, http: int, grpc_port: int, metrics: int):
        self.case, self.url = case, f"http://{host}:{http}"
        self.grpc_target, self.metrics_url = f"{host}:{grpc_port}", f"http://{host}:{metrics}/metrics"
        self.failures: list[str] = []
        self.x = np.array([[0.5, -1.0, 2.0, 3.5], [1.0, 0.0, -2.5, 4.0]])

    def expect(self, what: str, got: np.ndarray) -> None:
        want = expected(self.case, self.x)
        rtol = 1e-4 if self.case == "onnx" else 1e-9  # the ONNX model computes in float32
        if got.shape != want.shape or not np.allclose(got, want, rtol=rtol, atol=1e-6):
            self.failures.append(f"{what}: got {got.tolist()}, expected {want.tolist()}")
        else:
            print(f"probe: {self.case}: {what}: ok")

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if requests.get(self.url + "/health/ping", timeout=2).status_code == 200:
                    ready = requests.get(self.url + "/v2/health/ready", timeout=2)
                    if ready.status_code == 200:
                        return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"probe: {self.case}: the server did not become ready in {seconds:.0f} s")
            time.sleep(0.5)

    def seldon_rest(self) -> None:
        reply = requests.post(self.url + "/api/v1.0/predictions", json={"data": {"ndarray": self.x.tolist()}}, timeout=30)
        if reply.status_code != 200:
            self.failures.append(f"Seldon REST: HTTP {reply.status_code}: {reply.text[:300]}")
            return
        data = reply.json()["data"]
        if "ndarray" in data:
            got = np.array(data["ndarray"], dtype=np.float64)
        else:
            got = np.array(data["tensor"]["values"], dtype=np.float64).reshape(data["tensor"]["shape"])
        self.expect("Seldon REST /api/v1.0/predictions", got)

    def seldon_grpc(self, channel: grpc.Channel) -> None:
        from fastseldon.proto import prediction_pb2 as pb
        from fastseldon.proto import prediction_pb2_grpc as pbg

        message = pb.SeldonMessage()
        message.data.tensor.shape.extend(self.x.shape)
        message.data.tensor.values.extend(self.x.ravel().tolist())
        try:
            reply = pbg.ModelStub(channel).Predict(message, timeout=30)
        except grpc.RpcError as exc:
            self.failures.append(f"Seldon gRPC: {exc.code()}: {exc.details()}")
            return
        tensor = reply.data.tensor
        self.expect("Seldon gRPC Model/Predict", np.array(tensor.values, dtype=np.float64).reshape(list(tensor.shape)))

    def model_name(self) -> str:
        index = requests.post(self.url + "/v2/repository/index", json={}, timeout=10).json()
        return index[0]["name"]

    def _v2_input(self) -> tuple[str, str, np.ndarray]:
        if self.case == "onnx":
            return "x", "FP32", self.x.astype(np.float32)
        return "input-0", "FP64", self.x

    def v2_rest(self, name: str) -> None:
        input_name, datatype, x = self._v2_input()
        body = {"inputs": [{"name": input_name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}]}
        reply = requests.post(f"{self.url}/v2/models/{name}/infer", json=body, timeout=30)
        if reply.status_code != 200:
            self.failures.append(f"V2 REST: HTTP {reply.status_code}: {reply.text[:300]}")
            return
        out = reply.json()["outputs"][0]
        self.expect(f"V2 REST /v2/models/{name}/infer", np.array(out["data"], dtype=np.float64).reshape(out["shape"]))

    def v2_grpc(self, channel: grpc.Channel, name: str) -> None:
        from fastseldon.proto import grpc_service_pb2 as v2
        from fastseldon.proto import grpc_service_pb2_grpc as v2g

        input_name, datatype, x = self._v2_input()
        request = v2.ModelInferRequest(model_name=name)
        tensor = request.inputs.add(name=input_name, datatype=datatype, shape=list(x.shape))
        if datatype == "FP32":
            tensor.contents.fp32_contents.extend(x.ravel().tolist())
        else:
            tensor.contents.fp64_contents.extend(x.ravel().tolist())
        try:
            reply = v2g.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
        except grpc.RpcError as exc:
            self.failures.append(f"V2 gRPC: {exc.code()}: {exc.details()}")
            return
        out = reply.outputs[0]
        dtype = {"FP32": "<f4", "FP64": "<f8"}[out.datatype]
        values = np.frombuffer(reply.raw_output_contents[0], dtype=dtype) if reply.raw_output_contents else (
            np.array(out.contents.fp32_contents if out.datatype == "FP32" else out.contents.fp64_contents))
        self.expect("V2 gRPC ModelInfer", values.astype(np.float64).reshape(list(out.shape)))

    def metrics(self) -> None:
        """The requests just sent are counted, per protocol, on the metrics port."""
        needle = "fastseldon_request_duration_seconds_count"
        deadline = time.monotonic() + 10
        text, missing = "", ["rest", "grpc"]
        while time.monotonic() < deadline:
            text = requests.get(self.metrics_url, timeout=10).text
            counted = [line for line in text.splitlines() if line.startswith(needle + "{") and not line.endswith(" 0.0")]
            missing = [p for p in ("rest", "grpc") if not any(f'protocol="{p}"' in line for line in counted)]
            if not missing:
                print(f"probe: {self.case}: metrics: ok ({len(counted)} non-zero {needle} series, REST and gRPC)")
                return
            time.sleep(0.5)
        self.failures.append(f"metrics: no non-zero {needle} for {missing} at {self.metrics_url}:\n{text[:1500]}")

    def run(self) -> int:
        self.seldon_rest()
        with grpc.insecure_channel(self.grpc_target) as channel:
            self.seldon_grpc(channel)
            name = self.model_name()
            if self.case == "onnx" and name != ONNX_NAME:
                self.failures.append(f"V2 model name {name!r}, expected {ONNX_NAME!r} (MODEL_NAME)")
            self.v2_rest(name)
            self.v2_grpc(channel, name)
        self.metrics()
        for failure in self.failures:
            print(f"probe: {self.case}: FAILED: {failure}", file=sys.stderr)
        return 1 if self.failures else 0


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def check_pins(constraints: Path, freeze: Path) -> int:
    pins = {}
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_name(name)] = version.strip()
    problems = []
    for line in freeze.read_text().splitlines():
        if "==" not in line:
            continue
        name, version = line.split("==", 1)
        if _name(name) == "fastseldon":
            continue
        if _name(name) not in pins:
            problems.append(f"{name}=={version} is not in {constraints}")
        elif pins[_name(name)] != version:
            problems.append(f"{name}=={version}, but {constraints} pins {pins[_name(name)]}")
    for problem in problems:
        print(f"probe: pins: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="probe.py")
    sub = parser.add_subparsers(dest="command", required=True)
    sources = sub.add_parser("sources")
    sources.add_argument("dir", type=Path)
    sources.add_argument("--index-url", required=True)
    check = sub.add_parser("check")
    check.add_argument("case", choices=("identity", "onnx", "reqs"))
    check.add_argument("--host", default="127.0.0.1")
    check.add_argument("--http", type=int, required=True)
    check.add_argument("--grpc", type=int, required=True)
    check.add_argument("--metrics", type=int, required=True)
    check.add_argument("--wait", type=float, default=120.0)
    pins = sub.add_parser("pins")
    pins.add_argument("constraints", type=Path)
    pins.add_argument("freeze", type=Path)
    args = parser.parse_args(argv)
    if args.command == "pins":
        return check_pins(args.constraints, args.freeze)
    if args.command == "sources":
        write_sources(args.dir, args.index_url)
        return 0
    checker = Checker(args.case, args.host, args.http, args.grpc, args.metrics)
    checker.wait(args.wait)
    return checker.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
