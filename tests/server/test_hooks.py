"""*_raw hooks, PAYLOAD_PASSTHROUGH and SeldonNotImplementedError fall-through."""
from __future__ import annotations

import grpc
import requests

from fastseldon.proto import prediction_pb2 as pb
from fastseldon.proto import prediction_pb2_grpc as pbg
from support.serving import running


def test_raw_hooks_rest_and_grpc():
    with running(["RawModel"]) as server:
        r = requests.post(server.url + "/predict", json={"data": {"ndarray": [[1, 2]]}}, timeout=5)
        assert r.json() == {"jsonData": {"got": {"data": {"ndarray": [[1, 2]]}}}}  # plain JSON values, not arrays
        r = requests.post(server.url + "/predict", json={"strData": "teapot"}, timeout=5)
        assert r.status_code == 418 and r.json()["status"]["info"] == "teapot"
        assert 'raw_count_total{' in requests.get(server.metrics_url, timeout=5).text
        r = requests.post(server.url + "/route", json={"data": {"ndarray": [[1]]}}, timeout=5)
        assert r.json()["data"]["ndarray"] == [[2]]  # route_raw fell through to route
        assert requests.get(server.url + "/health/status", timeout=5).json() == {"status": {"status": 0}, "strData": "raw ok"}
        with grpc.insecure_channel(server.grpc_target) as channel:
            out = pbg.ModelStub(channel).Predict(pb.SeldonMessage(strData="x"))
            assert out.strData == "raw-grpc"


def test_payload_passthrough():
    with running(["RawModel"], env={"PAYLOAD_PASSTHROUGH": "true"}) as server:
        r = requests.post(server.url + "/predict", data=b'"anything not json"', headers={"content-type": "text/plain"}, timeout=5)
        assert r.status_code == 200 and r.content == b'{"echo":"anything not json"}'
