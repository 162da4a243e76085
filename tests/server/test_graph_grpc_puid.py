"""The graph's gRPC puid: ``seldon-puid`` call metadata in (generated when absent), the same puid back as
initial metadata (Seldon's executor sends it as a header), and on to every remote gRPC unit.

A real ``fastseldon graph`` server, a real grpcio client, and a remote unit that is a grpcio server in this
test recording the metadata of every call it gets.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
import yaml

from fastseldon.proto import prediction_pb2 as pb
from fastseldon.proto import prediction_pb2_grpc as pbg
from support.serving import MODELS, Server, running


class _RecordingUnit(grpc.GenericRpcHandler):
    """A remote Seldon MODEL over gRPC: Predict echoes its request, SendFeedback answers [[0]]."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self._lock = threading.Lock()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method

        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            with self._lock:
                self.calls.append((method, {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}))
            if method.endswith("/Predict"):
                return request
            ack = pb.SeldonMessage()
            ack.data.tensor.shape.extend([1, 1])
            ack.data.tensor.values.append(0.0)
            return ack.SerializeToString()

        if method in ("/seldon.protos.Model/Predict", "/seldon.protos.Model/SendFeedback"):
            return grpc.unary_unary_rpc_method_handler(answer)
        return None


@contextmanager
def _graph(tmp_path: Path) -> Iterator[tuple[Server, _RecordingUnit]]:
    unit = _RecordingUnit()
    remote = grpc.server(ThreadPoolExecutor(max_workers=4), handlers=[unit])
    port = remote.add_insecure_port("127.0.0.1:0")
    remote.start()
    doc = {"apiVersion": "machinelearning.seldon.io/v1", "kind": "SeldonDeployment", "metadata": {"name": "demo"},
           "spec": {"predictors": [{"name": "main", "graph": {"name": "m", "type": "MODEL"},
                                    "componentSpecs": [{"spec": {"containers": [
                                        {"name": "m", "image": "test/m:1.0",
                                         "env": [{"name": "MODEL_NAME", "value": "graph_units.Double"}]}]}}]}]}}
    spec = tmp_path / "graph.yaml"
    spec.write_text(yaml.safe_dump(doc))
    try:
        with running([str(spec), "--source", str(MODELS), "--remote", f"m=grpc://127.0.0.1:{port}"],
                     command="graph") as server:
            yield server, unit
    finally:
        remote.stop(0)


def _message() -> pb.SeldonMessage:
    m = pb.SeldonMessage()
    m.data.tensor.shape.extend([1, 2])
    m.data.tensor.values.extend([1.0, 2.0])
    return m


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, _RecordingUnit]]:
    with _graph(tmp_path_factory.mktemp("grpc-puid")) as pair:
        yield pair


def test_predict_keeps_the_callers_puid_returns_it_and_forwards_it(served):
    server, unit = served
    with grpc.insecure_channel(server.grpc_target) as channel:
        reply, call = pbg.SeldonStub(channel).Predict.with_call(_message(), metadata=(("seldon-puid", "abc-123"),),
                                                                 timeout=30)
    assert list(reply.data.tensor.values) == [1.0, 2.0]  # the remote unit's echo
    assert dict(call.initial_metadata())["seldon-puid"] == "abc-123"
    assert unit.calls[-1] == ("/seldon.protos.Model/Predict", {**unit.calls[-1][1], "seldon-puid": "abc-123"})


def test_predict_without_a_puid_gets_a_fresh_one_the_unit_sees_too(served):
    server, unit = served
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pbg.SeldonStub(channel)
        puids = []
        for _ in range(2):
            _reply, call = stub.Predict.with_call(_message(), timeout=30)
            puid = dict(call.initial_metadata())["seldon-puid"]
            assert len(puid) == 36 and puid.count("-") == 4
            assert unit.calls[-1][1]["seldon-puid"] == puid
            puids.append(puid)
    assert puids[0] != puids[1]


def test_send_feedback_takes_the_puid_from_metadata_and_returns_it(served):
    server, unit = served
    feedback = pb.Feedback(request=_message(), response=_message(), reward=1.0)
    with grpc.insecure_channel(server.grpc_target) as channel:
        _reply, call = pbg.SeldonStub(channel).SendFeedback.with_call(
            feedback, metadata=(("seldon-puid", "fb-7"),), timeout=30)
    assert dict(call.initial_metadata())["seldon-puid"] == "fb-7"
    method, metadata = unit.calls[-1]
    assert method == "/seldon.protos.Model/SendFeedback" and metadata["seldon-puid"] == "fb-7"
