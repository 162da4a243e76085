"""Request bodies for each scenario, and checks that a response carries the identity's answer.

Pure functions: the same scenario always gives the same bytes (fixed seed), so every server
and every load generator sends exactly the same request.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

from benchmarks.scenarios import MODEL_NAME, SELDON_GRPC, SELDON_REST, V2_GRPC, V2_REST, Scenario

SELDON_REST_PATH = "/api/v1.0/predictions"
SELDON_GRPC_METHOD = "/seldon.protos.Model/Predict"
V2_REST_PATH = f"/v2/models/{MODEL_NAME}/infer"
V2_GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"
_V2_TYPES = {"float32": "FP32", "float64": "FP64"}


@dataclass(frozen=True)
class HttpRequest:
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True)
class GrpcRequest:
    method: str
    message: bytes  # serialized protobuf, without the 5-byte gRPC prefix

    @property
    def framed(self) -> bytes:
        """The message as one gRPC length-prefixed frame (uncompressed), as h2load sends it."""
        return b"\x00" + struct.pack(">I", len(self.message)) + self.message


def array_for(scenario: Scenario) -> np.ndarray:
    """The scenario's input tensor: fixed-seed normal floats of its shape and dtype."""
    rng = np.random.default_rng(5)
    return rng.standard_normal((scenario.rows, scenario.cols)).astype(scenario.dtype)


def http_request(scenario: Scenario) -> HttpRequest:
    arr = array_for(scenario)
    json_headers = (("Content-Type", "application/json"),)
    if scenario.api == SELDON_REST:
        if scenario.encoding == "ndarray":
            data = {"ndarray": arr.tolist()}
        else:
            data = {"tensor": {"shape": list(arr.shape), "values": arr.ravel().tolist()}}
        return HttpRequest(SELDON_REST_PATH, json_headers, _json({"data": data}))
    if scenario.api == V2_REST:
        tensor = {"name": "input-0", "shape": list(arr.shape), "datatype": _V2_TYPES[scenario.dtype]}
        if scenario.encoding == "json":
            tensor["data"] = arr.ravel().tolist()
            return HttpRequest(V2_REST_PATH, json_headers, _json({"inputs": [tensor]}))
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
        header = _json({"inputs": [tensor], "parameters": {"binary_data_output": True}})
        headers = (("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", str(len(header))))
        return HttpRequest(V2_REST_PATH, headers, header + raw)
    raise ValueError(f"{scenario.name} is not an HTTP scenario")


def grpc_request(scenario: Scenario) -> GrpcRequest:
    arr = array_for(scenario)
    if scenario.api == SELDON_GRPC:
        from fastseldon.proto import prediction_pb2

        msg = prediction_pb2.SeldonMessage()
        msg.data.tensor.shape.extend(arr.shape)
        msg.data.tensor.values.extend(arr.ravel().tolist())
        # a graph scenario calls the executor's external API (which graph-single's unit answers too)
        method = "/seldon.protos.Seldon/Predict" if scenario.model == "graph" else SELDON_GRPC_METHOD
        return GrpcRequest(method, msg.SerializeToString())
    if scenario.api == V2_GRPC:
        pb2, _ = v2_grpc_modules()
        req = pb2.ModelInferRequest(model_name=MODEL_NAME)
        tensor = req.inputs.add(name="input-0", datatype=_V2_TYPES[scenario.dtype], shape=list(arr.shape))
        if scenario.encoding == "raw":
            req.raw_input_contents.append(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        elif scenario.dtype == "float32":
            tensor.contents.fp32_contents.extend(arr.ravel().tolist())
        else:
            tensor.contents.fp64_contents.extend(arr.ravel().tolist())
        return GrpcRequest(V2_GRPC_METHOD, req.SerializeToString())
    raise ValueError(f"{scenario.name} is not a gRPC scenario")


def v2_grpc_modules():
    """(messages, stubs) of the V2 `inference` package: ours once generated, else tritonclient's."""
    try:
        from fastseldon.proto import grpc_service_pb2 as pb2
        from fastseldon.proto import grpc_service_pb2_grpc as pb2_grpc
    except ImportError:
        from tritonclient.grpc import service_pb2 as pb2
        from tritonclient.grpc import service_pb2_grpc as pb2_grpc
    return pb2, pb2_grpc


# --- response checks: each returns None when the answer is right, else what is wrong ----------


def check_http_answer(scenario: Scenario, status: int, headers: dict[str, str], body: bytes) -> str | None:
    if not 200 <= status < 300:
        return f"HTTP {status}: {body[:200]!r}"
    expected = array_for(scenario)
    try:
        if scenario.api == SELDON_REST:
            data = json.loads(body)["data"]
            if scenario.encoding == "ndarray":
                got = np.asarray(data["ndarray"], dtype=np.float64)
            else:
                got = np.asarray(data["tensor"]["values"], dtype=np.float64).reshape(data["tensor"]["shape"])
            return _compare(got, expected)
        header_len = int(headers.get("inference-header-content-length", len(body)))
        doc = json.loads(body[:header_len])
        out = doc["outputs"][0]
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            got = np.frombuffer(body[header_len : header_len + size], dtype=expected.dtype.newbyteorder("<"))
        else:
            got = np.asarray(out["data"], dtype=np.float64)
        return _compare(got.reshape(out["shape"]), expected)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return f"unexpected answer ({type(exc).__name__}: {exc}): {body[:200]!r}"


def check_grpc_answer(scenario: Scenario, message: bytes) -> str | None:
    expected = array_for(scenario)
    try:
        if scenario.api == SELDON_GRPC:
            from fastseldon.proto import prediction_pb2

            msg = prediction_pb2.SeldonMessage.FromString(message)
            tensor = msg.data.tensor
            return _compare(np.asarray(tensor.values, dtype=np.float64).reshape(list(tensor.shape)), expected)
        pb2, _ = v2_grpc_modules()
        resp = pb2.ModelInferResponse.FromString(message)
        out = resp.outputs[0]
        if resp.raw_output_contents:
            got = np.frombuffer(resp.raw_output_contents[0], dtype=expected.dtype.newbyteorder("<"))
        elif out.datatype == "FP32":
            got = np.asarray(out.contents.fp32_contents, dtype=np.float32)
        else:
            got = np.asarray(out.contents.fp64_contents, dtype=np.float64)
        return _compare(got.reshape(list(out.shape)), expected)
    except Exception as exc:  # noqa: BLE001 - any decode failure is a wrong answer, reported as such
        return f"unexpected answer ({type(exc).__name__}: {exc})"


def _compare(got: np.ndarray, expected: np.ndarray) -> str | None:
    if got.shape != expected.shape:
        return f"shape {got.shape}, expected {expected.shape}"
    # JSON round-trips float32 through decimal text; the tolerance covers that, not wrong data.
    if not np.allclose(got.astype(np.float64), expected.astype(np.float64), rtol=1e-6, atol=0):
        return "values differ from the request (identity model)"
    return None


def _json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
