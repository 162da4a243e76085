"""Seldon v1 gRPC against the real server, with grpcio stubs generated from proto/prediction.proto."""
from __future__ import annotations

import json
import threading

import grpc
import numpy as np
import pytest
from google.protobuf import empty_pb2, json_format

from fastseldon.proto import prediction_pb2 as pb
from fastseldon.proto import prediction_pb2_grpc as pbg
from support.seldon_envs import real_seldon_core, seldon_core_env
from support.serving import running

PARAMS = json.dumps([{"name": "offset", "value": "1", "type": "FLOAT"}, {"name": "label", "value": "g", "type": "STRING"}])


@pytest.fixture(scope="module", params=[1, 2], ids=["1worker", "2workers"])
def doubler(request):
    with running(["Doubler", "--workers", str(request.param)]) as server:
        with grpc.insecure_channel(server.grpc_target, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
            yield channel


@pytest.fixture(scope="module")
def rich():
    with running(["Rich", "--parameters", PARAMS]) as server:
        with grpc.insecure_channel(server.grpc_target) as channel:
            yield channel


def tensor_msg(values, shape, puid=""):
    m = pb.SeldonMessage()
    m.data.tensor.shape.extend(shape)
    m.data.tensor.values.extend(values)
    if puid:
        m.meta.puid = puid
    return m


def test_model_predict_tensor(doubler):
    out = pbg.ModelStub(doubler).Predict(tensor_msg([1, 2], [1, 2]))
    assert list(out.data.names) == ["t:0", "t:1"]
    assert list(out.data.tensor.shape) == [1, 2] and list(out.data.tensor.values) == [2.0, 4.0]
    assert out.HasField("meta")


def test_seldon_predict_ndarray_wire_bytes(doubler):
    """Byte-for-byte what seldon-core 1.19 sends for this request (shared/protocols/seldon-v1.md)."""
    m = pb.SeldonMessage()
    m.data.ndarray.extend([[1, 2]])
    m.meta.puid = "x"
    out = pbg.SeldonStub(doubler).Predict(m)
    expected = bytes.fromhex(
        "12030a0178" "1a26" "0a03743a30" "0a03743a31" "1a1a0a18" "32160a09110000000000000040" "0a09110000000000001040")
    assert out.SerializeToString() == expected


@pytest.mark.parametrize("kind", ["str", "json", "bin"])
def test_other_payload_kinds(doubler, kind):
    m = pb.SeldonMessage()
    if kind == "str":
        m.strData = "hello"
    elif kind == "json":
        json_format.ParseDict({"a": [1, "b"]}, m.jsonData)
    else:
        m.binData = b"\x00\x01"
    out = pbg.ModelStub(doubler).Predict(m)
    assert out.WhichOneof("data_oneof") == m.WhichOneof("data_oneof")
    assert getattr(out, out.WhichOneof("data_oneof")) == getattr(m, m.WhichOneof("data_oneof"))


def test_every_service_method(rich):
    msg = tensor_msg([4, 5], [1, 2], puid="p1")
    assert list(pbg.ModelStub(rich).Predict(msg).data.tensor.values) == [5.0, 6.0]
    assert list(pbg.SeldonStub(rich).Predict(msg).data.names) == ["a", "b"]
    for stub in (pbg.GenericStub(rich), pbg.TransformerStub(rich)):
        assert list(stub.TransformInput(msg).data.tensor.values) == [40.0, 50.0]
    for stub in (pbg.GenericStub(rich), pbg.OutputTransformerStub(rich)):
        assert list(stub.TransformOutput(msg).data.tensor.values) == [3.0, 4.0]
    for stub in (pbg.GenericStub(rich), pbg.RouterStub(rich)):
        routed = stub.Route(msg)
        assert list(routed.data.tensor.values) == [1.0] and routed.meta.puid == "p1"
    lst = pb.SeldonMessageList(seldonMessages=[tensor_msg([1, 2], [1, 2]), tensor_msg([3, 4], [1, 2])])
    for stub in (pbg.GenericStub(rich), pbg.CombinerStub(rich)):
        assert list(stub.Aggregate(lst).data.tensor.values) == [4.0, 6.0]
    fb = pb.Feedback(request=msg, reward=2.0)
    fb.response.meta.routing["0"] = 1
    for stub in (pbg.ModelStub(rich), pbg.RouterStub(rich), pbg.GenericStub(rich), pbg.SeldonStub(rich)):
        out = stub.SendFeedback(fb)
        assert out.data.tensor.values[0] == 2.0 and out.data.tensor.values[2] == 1.0
    meta = pbg.ModelStub(rich).Metadata(empty_pb2.Empty())
    assert meta.name == "rich-model" and list(meta.versions) == ["v7"] and meta.custom["author"] == "tests"
    assert pbg.SeldonStub(rich).ModelMetadata(pb.SeldonModelMetadataRequest(name="x")).platform == "numpy"


def test_tags_and_metrics_in_meta(rich):
    out = pbg.ModelStub(rich).Predict(tensor_msg([1, 2], [1, 2]))
    tags = json_format.MessageToDict(out.meta)["tags"]
    assert tags == {"label": "g", "flag": False, "count": 0.0}
    assert [m.key for m in out.meta.metrics] == ["rich_calls", "rich_gauge", "rich_timer"]


def _code(fn, *args):
    with pytest.raises(grpc.RpcError) as info:
        fn(*args)
    return info.value.code(), info.value.details()


def test_error_codes(rich, doubler):
    code, details = _code(pbg.ModelStub(rich).Predict, tensor_msg([666], [1, 1]))
    assert code == grpc.StatusCode.INTERNAL and details == "the number of the beast"
    code, details = _code(pbg.ModelStub(rich).Predict, pb.SeldonMessage())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Invalid request data type" in details
    code, details = _code(pbg.ModelStub(rich).Predict, tensor_msg([1, 2, 3], [2, 2]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "shape" in details
    code, details = _code(pbg.RouterStub(doubler).Route, tensor_msg([1], [1, 1]))
    assert code == grpc.StatusCode.UNIMPLEMENTED and details == "Route not defined"
    code, _ = _code(pbg.SeldonStub(rich).GraphMetadata, empty_pb2.Empty())
    assert code != grpc.StatusCode.OK
    garbage = rich.unary_unary("/seldon.protos.Model/Predict")
    code, details = _code(garbage, b"\xff\xff\xff")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "protobuf" in details and "SeldonMessage" in details
    code, _ = _code(rich.unary_unary("/seldon.protos.Model/Nope"), b"")
    assert code == grpc.StatusCode.UNIMPLEMENTED
    # still serving
    assert list(pbg.ModelStub(rich).Predict(tensor_msg([1], [1, 1])).data.tensor.values) == [2.0]


def test_concurrent_grpc_clients(doubler):
    errors = []

    def client(k):
        stub = pbg.ModelStub(doubler)
        for i in range(30):
            v = float(k * 100 + i)
            out = stub.Predict(tensor_msg([v], [1, 1]))
            if list(out.data.tensor.values) != [2 * v]:
                errors.append(v)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_large_tensor_over_default_4mib(doubler):
    """The server raises grpcio's 4 MiB default receive limit (tritonclient sends up to 2 GiB)."""
    values = np.arange(1_000_000, dtype=np.float64)
    out = pbg.ModelStub(doubler).Predict(tensor_msg(values, [values.size]), compression=None)
    assert len(out.data.tensor.values) == values.size and out.data.tensor.values[-1] == 2 * values[-1]


def test_grpc_only_api_type():
    with running(["Doubler", "--api-type", "GRPC"], grpc_only=True) as server:
        with grpc.insecure_channel(server.grpc_target) as channel:
            assert list(pbg.ModelStub(channel).Predict(tensor_msg([3], [1, 1])).data.tensor.values) == [6.0]


# --------------------------------------------------------------------------- models written against seldon_core
# (the real package in the seldon-core CI environments, tests/models/seldon_stub elsewhere)

def test_seldon_component_subclass_over_grpc():
    with running(["SeldonSubclass"], env=seldon_core_env()) as server, grpc.insecure_channel(server.grpc_target) as channel:
        out = pbg.ModelStub(channel).Predict(tensor_msg([1, 2], [1, 2], puid="g"))
        assert list(out.data.tensor.values) == [2.0, 4.0] and out.meta.puid == "g"
        meta = json_format.MessageToDict(out.meta)
        assert meta["tags"] == {"runtime": "tag"}
        assert meta["metrics"] == [{"key": "subclass_calls", "value": 1.0, "tags": {"kind": "runtime", "method": "predict"}}]
        assert list(pbg.TransformerStub(channel).TransformInput(tensor_msg([3], [1, 1])).data.tensor.values) == [3.0]
        code, details = _code(pbg.RouterStub(channel).Route, tensor_msg([1], [1, 1]))
        assert code == grpc.StatusCode.UNIMPLEMENTED and details == "route is not implemented"
        m = pb.SeldonMessage()
        json_format.ParseDict({"fail": 1}, m.jsonData)
        code, details = _code(pbg.ModelStub(channel).Predict, m)  # status_code 402 -> a client error code
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details == "Test-Error-Msg"


def test_legacy_grpc_hooks():
    with running(["LegacyHooks"]) as server, grpc.insecure_channel(server.grpc_target) as channel:
        out = pbg.ModelStub(channel).Predict(tensor_msg([1], [1, 1], puid="q"))
        assert out.strData == "via predict_grpc" and not out.HasField("meta")
        assert pbg.GenericStub(channel).TransformInput(tensor_msg([1], [1, 1])).strData == "via transform_input_grpc"
        assert json_format.MessageToDict(pbg.RouterStub(channel).Route(tensor_msg([1], [1, 1])).data) == {"ndarray": [[8.0]]}
        lst = pb.SeldonMessageList(seldonMessages=[tensor_msg([1], [1, 1])] * 3)
        assert pbg.CombinerStub(channel).Aggregate(lst).strData == "via aggregate_grpc: 3"
        assert pbg.ModelStub(channel).SendFeedback(pb.Feedback(reward=0.5)).strData == "via send_feedback_grpc: 0.5"


@pytest.mark.parametrize("include", ["true", "false"])
def test_raw_proto_reply_metrics(include):
    """predict_raw answering a SeldonMessage proto: its meta.metrics go to Prometheus, and leave the
    reply when INCLUDE_METRICS_IN_CLIENT_RESPONSE=false; its tags stay."""
    env = {**seldon_core_env(), "INCLUDE_METRICS_IN_CLIENT_RESPONSE": include}
    with running(["RawProto"], env=env) as server, grpc.insecure_channel(server.grpc_target) as channel:
        out = pbg.ModelStub(channel).Predict(tensor_msg([1], [1, 1]))
        assert out.strData.startswith("grpc:")
        if real_seldon_core():  # the hook got seldon_core's own class, as Seldon gives it
            assert out.strData == "grpc:seldon_core"
        else:
            assert out.strData == "grpc:fastseldon"
        assert json_format.MessageToDict(out.meta)["tags"] == {"t": "grpc"}
        assert [m.key for m in out.meta.metrics] == (["raw_grpc_calls"] if include == "true" else [])
        text = server.scrape("raw_grpc_calls{")
        assert 'raw_grpc_calls{' in text and 'method="predict"' in text
