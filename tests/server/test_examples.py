"""The bundled examples serve and give the numbers numpy gives."""
from __future__ import annotations

import json

import numpy as np
import requests

from support.serving import EXAMPLES, running


def test_identity_example():
    with running(["MyModel"], cwd=EXAMPLES / "identity") as server:
        body = {"data": {"ndarray": [[1.0, 2.0, 3.0]]}}
        out = requests.post(server.url + "/api/v1.0/predictions", json=body, timeout=5).json()
        assert out == {"data": {"names": ["t:0", "t:1", "t:2"], "ndarray": [[1.0, 2.0, 3.0]]}, "meta": {}}


def test_linear_example_with_parameters():
    params = [{"name": "scale", "value": "2.0", "type": "FLOAT"}, {"name": "n_outputs", "value": "3", "type": "INT"},
              {"name": "bias", "value": "0.25", "type": "DOUBLE"}]
    X = np.arange(8, dtype=np.float64).reshape(2, 4) / 3
    weights = np.random.default_rng(0).standard_normal((4, 3))
    with running(["LinearModel", "--parameters", json.dumps(params)], cwd=EXAMPLES / "linear") as server:
        out = requests.post(server.url + "/predict", json={"data": {"tensor": {"shape": [2, 4], "values": X.ravel().tolist()}}},
                            timeout=5).json()
        assert out["data"]["names"] == ["y0", "y1", "y2"]
        got = np.array(out["data"]["tensor"]["values"]).reshape(out["data"]["tensor"]["shape"])
        np.testing.assert_allclose(got, X @ weights * 2.0 + 0.25, rtol=1e-12)
        assert out["meta"]["tags"] == {"model": "linear", "scale": 2.0}
        assert out["meta"]["metrics"] == [{"key": "linear_predictions", "type": "COUNTER", "value": 1.0}]
        meta = requests.get(server.url + "/metadata", timeout=5).json()
        assert meta["name"] == "linear" and meta["outputs"][0]["schema"]["shape"] == [-1, 3]
