"""Generated protobuf code is current, works on any protobuf runtime, and our field numbers are
Seldon's and Triton's (wire compatibility)."""
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


def test_generated_modules_need_no_gencode_runtime():
    """The modules build classes from descriptors with public API only (protobuf 3.20 ... 6.x):
    no protoc gencode version check, no internal builder, no grpcio version pin in the stubs."""
    for path in (ROOT / "server" / "fastseldon" / "proto").glob("*_pb2*.py"):
        text = path.read_text()
        assert "runtime_version" not in text and "internal import builder" not in text, path.name
        assert "GRPC_GENERATED_VERSION" not in text, path.name


def test_v2_messages_match_tritons():
    """Every message we declare in grpc_service.proto has Triton's field names, numbers and types."""
    from tritonclient.grpc import service_pb2 as triton

    from fastseldon.proto import grpc_service_pb2 as v2

    def shape(desc):
        return {f.name: (f.number, f.type, f.label, f.message_type.full_name if f.message_type else "") for f in desc.fields}

    def walk(desc):
        yield desc
        for nested in desc.nested_types:
            if nested.full_name != "inference.ModelMetadataResponse.PropertiesEntry":  # OIP only
                yield from walk(nested)

    for top in v2.DESCRIPTOR.message_types_by_name.values():
        for desc in walk(top):
            theirs = triton.DESCRIPTOR.pool.FindMessageTypeByName(desc.full_name)
            ours = shape(desc)
            if desc.full_name == "inference.ModelMetadataResponse":
                ours.pop("properties")  # OIP's field 6, not in Triton's proto
            assert ours == shape(theirs), desc.full_name
    ours = {m.name: (m.input_type.full_name, m.output_type.full_name)
            for m in v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods}
    theirs = {m.name: (m.input_type.full_name, m.output_type.full_name)
              for m in triton.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods}
    assert ours.items() <= theirs.items()


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
