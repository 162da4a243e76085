"""Seldon REST on the plain path (a plain sync hook called right on the loop, no step generator
driven) answers byte for byte as the steps do: names, meta merge, SeldonResponse tags and
metrics, Seldon's fall-through, user errors, the request metric."""
from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from fastseldon.app import App
from fastseldon.http import Request, Response
from fastseldon.runner import PROBE_CALLS
from fastseldon.settings import ServerSettings, UnitSettings
from fastseldon.user_model import UserModel
from tests.support.plain_models import Absent, Double, Failing, SeldonResponse, Tagged, Transformer, WithTags

BODY = json.dumps({"data": {"names": ["x", "y", "z"], "ndarray": [[1.0, 2.0, 3.0]]},
                   "meta": {"puid": "abc", "tags": {"up": "stream"}, "requestPath": {"before": "b:1"},
                            "metrics": [{"key": "k", "type": "COUNTER", "value": 1}]}}).encode()
TENSOR = json.dumps({"data": {"tensor": {"shape": [1, 3], "values": [1, 2, 3]}}}).encode()


def _answers(obj: Any, path: str, body: bytes, inline: bool, requests: int = 2) -> list[Response]:
    loop = asyncio.new_event_loop()
    unit = UnitSettings(interface_name=type(obj).__name__, model_name="m", predictive_unit_id="node",
                        predictive_unit_image="img:1")
    app = App(ServerSettings(inline_hook_seconds=10.0 if inline else 0.0), unit, UserModel.from_object(obj), loop)
    steps_driven = []
    for name in ("predict", "transform_input"):
        endpoint = getattr(app.service, name)

        def counted(*args: Any, _endpoint: Any = endpoint) -> Any:
            steps_driven.append(1)
            return _endpoint(*args)

        setattr(app.service, name, counted)
    app.router = type(app.router)()
    app.v2 = None  # type: ignore[assignment]
    from fastseldon import seldon_routes

    seldon_routes.register(app)  # the routes again, bound to the counting endpoints
    try:
        handler = app.router.resolve("POST", path)
        out = []
        for _ in range(PROBE_CALLS + requests):
            out.append(loop.run_until_complete(handler(Request("POST", path, "", {b"content-type": b"application/json"},
                                                               body))))
        tally = app.metrics._tally.drain()
        count = sum(v[0] for v in tally.values())
        assert count == PROBE_CALLS + requests  # the request metric counts on both paths
        driven = len(steps_driven) - PROBE_CALLS
        assert driven == (0 if inline and app.service.plain else requests), driven
        return out[PROBE_CALLS:]
    finally:
        app.close()
        loop.close()


@pytest.mark.parametrize(("obj", "path", "body"), [
    (Double(), "/api/v1.0/predictions", BODY),
    (Double(), "/predict", TENSOR),
    (Tagged(), "/api/v1.0/predictions", BODY),
    (Tagged(), "/api/v1.0/predictions", TENSOR),
    (Absent(), "/api/v1.0/predictions", BODY),
    (Failing(), "/api/v1.0/predictions", BODY),
    (Transformer(), "/transform-input", BODY),
    (WithTags(), "/api/v1.0/predictions", BODY),
])
def test_rest_plain_path_answers_as_the_steps(obj: Any, path: str, body: bytes) -> None:
    plain = _answers(obj, path, body, inline=True)
    steps = _answers(obj, path, body, inline=False)
    assert [(r.status, r.body) for r in plain] == [(r.status, r.body) for r in steps]


def test_rest_plain_path_keeps_seldon_meta_and_errors() -> None:
    (ok, _) = _answers(Tagged(), "/api/v1.0/predictions", BODY, inline=True)
    doc = json.loads(ok.body)
    assert doc["data"] == {"names": ["a", "b", "c"], "ndarray": [[2.0, 3.0, 4.0]]}
    assert doc["meta"]["tags"] == {"up": "stream", "who": "tagged"}
    assert doc["meta"]["requestPath"] == {"node": "img:1", "before": "b:1"} and doc["meta"]["puid"] == "abc"
    assert [m["key"] for m in doc["meta"]["metrics"]] == ["k", "hits"]
    (absent, _) = _answers(Absent(), "/api/v1.0/predictions", BODY, inline=True)
    assert absent.status == 200 and json.loads(absent.body)["data"]["ndarray"] == []
    (failed, _) = _answers(Failing(), "/api/v1.0/predictions", BODY, inline=True)
    assert failed.status == 500 and "bad row" in failed.body.decode()


# --------------------------------------------------------------------------- V2 inference


class V2Multi:
    def predict(self, X, names, meta=None):
        return {"y": np.asarray(X) * 2, "n": np.array([len(meta or {})])}


class V2Metrics:
    def predict(self, X, names):
        return SeldonResponse(np.asarray(X, dtype=np.float32), None, [{"type": "GAUGE", "key": "g", "value": 2}])


V2_BODY = json.dumps({"id": "r1", "parameters": {"p": 1}, "inputs": [
    {"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 2.5, 3.0]}]}).encode()
V2_OUTPUTS = json.dumps({"inputs": [{"name": "x", "shape": [3], "datatype": "INT64", "data": [1, 2, 3]}],
                         "outputs": [{"name": "n"}, {"name": "y", "parameters": {"binary_data": True}}]}).encode()
V2_UNKNOWN = json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}],
                         "outputs": [{"name": "nope"}]}).encode()


@pytest.mark.parametrize(("obj", "body"), [
    (Double(), V2_BODY),
    (V2Multi(), V2_BODY),
    (V2Multi(), V2_OUTPUTS),
    (V2Multi(), V2_UNKNOWN),
    (V2Metrics(), V2_BODY),
    (Absent(), V2_BODY),
    (Failing(), V2_BODY),
    (WithTags(), V2_BODY),
])
def test_v2_plain_path_answers_as_the_steps(obj: Any, body: bytes) -> None:
    def answers(inline: bool) -> list[tuple[int, bytes, list[Any]]]:
        loop = asyncio.new_event_loop()
        app = App(ServerSettings(inline_hook_seconds=10.0 if inline else 0.0),
                  UnitSettings(interface_name=type(obj).__name__, model_name="m"), UserModel.from_object(obj), loop)
        driven = []
        infer = app.service.infer
        app.service.infer = lambda request: driven.append(1) or infer(request)  # type: ignore[method-assign]
        try:
            handler = app.router.resolve("POST", "/v2/models/m/infer")
            out = [loop.run_until_complete(handler(Request("POST", "/v2/models/m/infer", "",
                                                           {b"content-type": b"application/json"}, body)))
                   for _ in range(PROBE_CALLS + 2)]
            stats = app.v2.stats.statistics()["inference_stats"]
            ok = sum(r.status == 200 for r in out)
            assert stats["success"]["count"] == ok and stats["fail"]["count"] == len(out) - ok
            assert len(driven) - PROBE_CALLS == (0 if inline and app.service.plain else 2)
            return [(r.status, r.body, r.headers) for r in out[PROBE_CALLS:]]
        finally:
            app.close()
            loop.close()

    assert answers(True) == answers(False)
