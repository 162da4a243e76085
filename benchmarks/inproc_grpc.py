"""In-process cost of one gRPC call from grpcio's handler to the reply bytes, for instruction counting.

It builds the App a worker serves, puts its gRPC methods in the worker's MethodTable and calls
the unary behaviour grpcio would call (raw request bytes, a fake ServicerContext), many times,
on this thread (as a gRPC pool thread would). Count instructions under callgrind for two call
counts and take the difference, so set-up and warm-up cancel out:

    PY=$(python -c 'import sys; print(sys.executable)')
    for n in 200 1000; do PYTHONHASHSEED=0 PYTHONPATH=server valgrind --tool=callgrind \\
        --callgrind-out-file=/tmp/cg.$n "$PY" benchmarks/inproc_grpc.py seldon $n; done

instructions per call = (I(1000) - I(200)) / 800 (``I`` = the ``summary:`` line of each output
file). The first argument is ``seldon`` (Model/Predict, tensor 1x10), ``v2`` (ModelInfer, FP64
raw 1x10), ``v2-typed`` (fp64_contents) or ``batch`` (Model/Predict through the adaptive batcher:
one call at a time, so each is a batch of one; the event loop runs on a second thread as in a
worker); an optional third argument is the column count (default 10). Hooks run on this thread
after the probe calls, so placement heuristics don't change what is counted.
"""
from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import numpy as np

SELDON_METHOD = "/seldon.protos.Model/Predict"
V2_METHOD = "/inference.GRPCInferenceService/ModelInfer"


class Identity:
    def predict(self, X: Any, features_names: Any = None, meta: Any = None) -> Any:
        return X


class _Context:
    """The ServicerContext calls the MethodTable makes on a unary call."""

    def time_remaining(self) -> float | None:
        return 10.0

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def send_initial_metadata(self, metadata: Any) -> None: ...

    def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"{code}: {details}")


def _request(kind: str, columns: int) -> tuple[str, bytes]:
    arr = np.random.rand(1, columns)
    if kind in ("seldon", "batch"):
        from fastseldon.proto import prediction_pb2

        msg = prediction_pb2.SeldonMessage()
        msg.data.tensor.shape.extend(arr.shape)
        msg.data.tensor.values.extend(arr.ravel().tolist())
        return SELDON_METHOD, msg.SerializeToString()
    from fastseldon.proto import grpc_service_pb2 as pb2

    req = pb2.ModelInferRequest(model_name="m")
    tensor = req.inputs.add(name="input-0", datatype="FP64", shape=list(arr.shape))
    if kind == "v2":
        req.raw_input_contents.append(arr.astype("<f8").tobytes())
    else:
        tensor.contents.fp64_contents.extend(arr.ravel().tolist())
    return V2_METHOD, req.SerializeToString()


def main(kind: str, count: int, columns: int = 10) -> None:
    from fastseldon import grpc as grpc_front
    from fastseldon.app import App
    from fastseldon.settings import ServerSettings, UnitSettings
    from fastseldon.user_model import UserModel

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    unit: dict[str, Any] = {"max_batch_size": 64, "max_batch_time_ms": 5.0} if kind == "batch" else {}
    try:
        settings = UnitSettings(interface_name="Identity", model_name="m", **unit)
    except TypeError:
        settings = UnitSettings(interface_name="Identity", model_name="m")
    app = App(ServerSettings(inline_hook_seconds=10.0), settings, UserModel.from_object(Identity()), loop)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    method, body = _request(kind, columns)
    table = grpc_front.MethodTable(app.grpc_methods)
    handler = table._methods[method]
    call, context = handler.unary_unary, _Context()
    for _ in range(200):  # warm-up: probe calls done, caches filled
        reply = call(body, context)
    assert isinstance(reply, bytes) and reply, reply
    start = time.process_time()
    for _ in range(count):
        call(body, context)
    spent = (time.process_time() - start) / max(count, 1)
    print(f"{kind} columns={columns} calls={count} cpu={spent * 1e6:.1f} us/call", flush=True)
    loop.call_soon_threadsafe(loop.stop)
    thread.join()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *(int(a) for a in sys.argv[3:4]))
