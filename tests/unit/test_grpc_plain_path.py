"""Seldon and V2 gRPC on the plain path (a plain sync hook called right on the gRPC thread, no step
generator driven) answer byte for byte as the steps do: names, meta merge, SeldonResponse tags and
metrics, Seldon's fall-through, user errors and their status codes, the request metric, and the
batcher when batching is on."""
from __future__ import annotations

import asyncio
import threading
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import json_format

from fastseldon import app as app_module
from fastseldon import grpc as grpc_front
from fastseldon.app import App
from fastseldon.proto import grpc_service_pb2 as v2pb
from fastseldon.proto import prediction_pb2 as pb
from fastseldon.runner import HookRunner
from fastseldon.settings import ServerSettings, UnitSettings
from fastseldon.user_model import UserModel
from tests.support.plain_models import Absent, Double, Failing, SeldonResponse, Tagged, Transformer, WithTags

PREDICT = "/seldon.protos.Model/Predict"
TRANSFORM = "/seldon.protos.Transformer/TransformInput"
INFER = "/inference.GRPCInferenceService/ModelInfer"


def _seldon(names: bool = True, meta: bool = True) -> bytes:
    msg = pb.SeldonMessage()
    msg.data.tensor.shape.extend([1, 3])
    msg.data.tensor.values.extend([1.0, 2.0, 3.0])
    if names:
        msg.data.names.extend(["x", "y", "z"])
    if meta:
        json_format.ParseDict({"puid": "abc", "tags": {"up": "stream"}, "requestPath": {"before": "b:1"},
                               "metrics": [{"key": "k", "type": "COUNTER", "value": 1}]}, msg.meta)
    return msg.SerializeToString()


def _v2() -> bytes:
    req = v2pb.ModelInferRequest(model_name="m", id="r1")
    req.inputs.add(name="x", datatype="FP64", shape=[1, 3])
    req.raw_input_contents.append(np.array([1.0, 2.5, 3.0], dtype="<f8").tobytes())
    return req.SerializeToString()


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self) -> None:
        self.code: Any = None

    def time_remaining(self) -> float:
        return 10.0

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def send_initial_metadata(self, metadata: Any) -> None: ...

    def abort(self, code: Any, details: str) -> None:
        self.code = code
        raise _Aborted(details)


class _Batched:
    def predict(self, X, names):
        return np.asarray(X) * 3


def _answers(obj: Any, method: str, body: bytes, plain: bool, requests: int = 3,
             unit: dict[str, Any] | None = None) -> list[tuple[Any, bytes | str]]:
    driven: list[int] = []

    class Runner(HookRunner):
        def run_blocking(self, steps: Any) -> Any:
            driven.append(1)
            return super().run_blocking(steps)

        if not plain:  # the steps only: the plain path declines every call
            def plain_blocking(self, *args: Any) -> Any:
                return None

            def plain_infer_blocking(self, *args: Any) -> Any:
                return None

    loop = asyncio.new_event_loop()
    settings = UnitSettings(interface_name=type(obj).__name__, model_name="m", predictive_unit_id="node",
                            predictive_unit_image="img:1", **(unit or {}))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app_module, "HookRunner", Runner)
        app = App(ServerSettings(), settings, UserModel.from_object(obj), loop)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        behaviour = grpc_front.MethodTable(app.grpc_methods)._methods[method].unary_unary
        out: list[tuple[Any, bytes | str]] = []
        for _ in range(requests):
            context = _Context()
            try:
                out.append((grpc.StatusCode.OK, behaviour(body, context)))
            except _Aborted as exc:
                out.append((context.code, str(exc)))
        tally = app.metrics._tally.drain()
        assert sum(v[0] for v in tally.values()) == requests  # the request metric counts on both paths
        assert len(driven) == (0 if plain and app.service.plain else requests), driven
        return out
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        app.close()
        loop.close()


@pytest.mark.parametrize(("obj", "method", "body"), [
    (Double(), PREDICT, _seldon()),
    (Double(), PREDICT, _seldon(names=False, meta=False)),
    (Tagged(), PREDICT, _seldon()),
    (Absent(), PREDICT, _seldon()),
    (Failing(), PREDICT, _seldon()),
    (Transformer(), TRANSFORM, _seldon()),
    (WithTags(), PREDICT, _seldon()),
    (Double(), INFER, _v2()),
    (Absent(), INFER, _v2()),
    (Failing(), INFER, _v2()),
])
def test_grpc_plain_path_answers_as_the_steps(obj: Any, method: str, body: bytes) -> None:
    assert _answers(obj, method, body, plain=True) == _answers(obj, method, body, plain=False)


def test_grpc_plain_path_keeps_seldon_meta_and_errors() -> None:
    (code, reply), *_ = _answers(Tagged(), PREDICT, _seldon(), plain=True)
    assert code == grpc.StatusCode.OK
    doc = json_format.MessageToDict(pb.SeldonMessage.FromString(reply))
    assert doc["data"]["names"] == ["a", "b", "c"] and doc["data"]["tensor"]["values"] == [2.0, 3.0, 4.0]
    assert doc["meta"]["tags"] == {"up": "stream", "who": "tagged"} and doc["meta"]["puid"] == "abc"
    assert doc["meta"]["requestPath"] == {"node": "img:1", "before": "b:1"}
    assert [m["key"] for m in doc["meta"]["metrics"]] == ["k", "hits"]
    (code, details), *_ = _answers(Failing(), PREDICT, _seldon(), plain=True)
    assert code == grpc.StatusCode.INTERNAL and "bad row" in str(details)


def test_grpc_plain_path_goes_through_the_batcher() -> None:
    unit = {"max_batch_size": 8, "max_batch_time_ms": 1.0}
    plain = _answers(_Batched(), PREDICT, _seldon(), plain=True, unit=unit)
    assert plain == _answers(_Batched(), PREDICT, _seldon(), plain=False, unit=unit)
    reply = pb.SeldonMessage.FromString(plain[0][1])  # type: ignore[arg-type]
    assert list(reply.data.tensor.values) == [3.0, 6.0, 9.0]


def test_seldon_response_on_grpc_plain_path() -> None:
    class Metered:
        def predict(self, X, names):
            return SeldonResponse(np.asarray(X) - 1, {"t": 1}, [{"type": "GAUGE", "key": "g", "value": 2}])

    assert _answers(Metered(), PREDICT, _seldon(), plain=True) == _answers(Metered(), PREDICT, _seldon(), plain=False)
