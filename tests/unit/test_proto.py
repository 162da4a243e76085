"""Generated protobuf code is current, and our field numbers are Seldon's (wire compatibility)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from fastseldon.proto import prediction_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for name, content in generate.generate().items():
        committed = (ROOT / "server" / "fastseldon" / "proto" / name).read_text()
        assert committed == content, f"server/fastseldon/proto/{name} is stale: run python proto/generate.py"


def _fields(message):
    return {f.name: f.number for f in message.DESCRIPTOR.fields}


def test_seldon_field_numbers():
    assert pb.DESCRIPTOR.package == "seldon.protos"
    assert _fields(pb.SeldonMessage) == {"status": 1, "meta": 2, "data": 3, "binData": 4, "strData": 5, "jsonData": 6, "customData": 7}
    assert _fields(pb.DefaultData) == {"names": 1, "tensor": 2, "ndarray": 3, "tftensor": 4}
    assert _fields(pb.Tensor) == {"shape": 1, "values": 2}
    assert _fields(pb.Meta) == {"puid": 1, "tags": 2, "routing": 3, "requestPath": 4, "metrics": 5}
    assert _fields(pb.Metric) == {"key": 1, "type": 2, "value": 3, "tags": 4}
    assert _fields(pb.Feedback) == {"request": 1, "response": 2, "reward": 3, "truth": 4}
    assert _fields(pb.Status) == {"code": 1, "info": 2, "reason": 3, "status": 4}
    assert _fields(pb.SeldonModelMetadata) == {"name": 1, "versions": 2, "platform": 3, "inputs": 4, "outputs": 5, "custom": 6}
    assert _fields(pb.SeldonMessageMetadata) == {"messagetype": 1, "schema": 2, "name": 3, "datatype": 4, "shape": 5}
    assert pb.Metric.DESCRIPTOR.fields_by_name["value"].type == pb.Metric.DESCRIPTOR.fields_by_name["value"].TYPE_FLOAT


def test_seldon_services_and_methods():
    services = {s.name: {m.name: (m.input_type.full_name, m.output_type.full_name) for m in s.methods}
                for s in pb.DESCRIPTOR.services_by_name.values()}
    msg, lst, fb = "seldon.protos.SeldonMessage", "seldon.protos.SeldonMessageList", "seldon.protos.Feedback"
    assert services["Generic"] == {"TransformInput": (msg, msg), "TransformOutput": (msg, msg), "Route": (msg, msg),
                                   "Aggregate": (lst, msg), "SendFeedback": (fb, msg)}
    assert services["Model"] == {"Predict": (msg, msg), "SendFeedback": (fb, msg),
                                 "Metadata": ("google.protobuf.Empty", "seldon.protos.SeldonModelMetadata")}
    assert services["Router"] == {"Route": (msg, msg), "SendFeedback": (fb, msg)}
    assert services["Transformer"] == {"TransformInput": (msg, msg)}
    assert services["OutputTransformer"] == {"TransformOutput": (msg, msg)}
    assert services["Combiner"] == {"Aggregate": (lst, msg)}
    assert set(services["Seldon"]) == {"Predict", "SendFeedback", "ModelMetadata", "GraphMetadata"}
