"""The same identity / fixed-cost model as MyModel.py, as a BentoML 1.4 service.

BentoML speaks its own JSON-over-HTTP API (each top-level field of the body is an argument of
the API method), not Seldon's protocol nor V2, so the service declares the routes and fields of
the harness's REST scenarios as BentoML APIs, the way a user serving those clients with BentoML
would: Seldon REST (``data.ndarray`` / ``data.tensor``) and V2 REST JSON (``inputs[0]``), each
decoded to numpy, passed through the model and encoded back. Its access log is off, so no line
is written per request, as for every other server.

    bentoml serve bentoml_service:Bench --port 8080     # BENCH_COST_US=1000 for the cost model
"""
import os
import time

import bentoml
import numpy as np

_V2_DTYPES = {"FP32": np.float32, "FP64": np.float64}
_COST_S = int(os.environ.get("BENCH_COST_US", "0")) / 1e6


def _model(arr: np.ndarray) -> np.ndarray:
    if _COST_S:
        end = time.perf_counter() + _COST_S
        while time.perf_counter() < end:
            pass
    return arr


@bentoml.service(workers=int(os.environ.get("BENCH_WORKERS", "1")), logging={"access": {"enabled": False}})
class Bench:
    @bentoml.api(route="/api/v1.0/predictions")
    def seldon(self, data: dict) -> dict:
        if "ndarray" in data:
            arr = _model(np.asarray(data["ndarray"]))
            names = [f"t:{i}" for i in range(arr.shape[-1])] if arr.ndim else []
            return {"data": {"names": names, "ndarray": arr.tolist()}, "meta": {}}
        tensor = data["tensor"]
        arr = _model(np.asarray(tensor["values"], dtype=np.float64).reshape(tensor["shape"]))
        names = [f"t:{i}" for i in range(arr.shape[-1])] if arr.ndim else []
        return {"data": {"names": names, "tensor": {"shape": list(arr.shape), "values": arr.ravel().tolist()}}, "meta": {}}

    @bentoml.api(route="/v2/models/bench/infer")
    def v2_infer(self, inputs: list) -> dict:
        first = inputs[0]
        arr = _model(np.asarray(first["data"], dtype=_V2_DTYPES[first["datatype"]]).reshape(first["shape"]))
        output = {"name": "output-0", "datatype": first["datatype"], "shape": list(arr.shape), "data": arr.ravel().tolist()}
        return {"model_name": "bench", "outputs": [output]}
