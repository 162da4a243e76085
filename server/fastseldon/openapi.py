"""``GET /seldon.json``: an OpenAPI 3 document of this server's Seldon microservice API.

Seldon's wrapper serves its own ``openapi/seldon.json`` there; this one describes fastseldon's
routes, and its payload schemas are written from the very message descriptors the server
parses with (fastseldon/proto), in protobuf's JSON mapping, so the two cannot drift apart.
"""
from __future__ import annotations

from typing import Any

from fastseldon import __version__
from fastseldon.proto import prediction_pb2 as pb

_SCALARS = {
    "TYPE_DOUBLE": {"type": "number", "format": "double"}, "TYPE_FLOAT": {"type": "number", "format": "float"},
    "TYPE_INT64": {"type": "string", "format": "int64"}, "TYPE_UINT64": {"type": "string", "format": "uint64"},
    "TYPE_INT32": {"type": "integer", "format": "int32"}, "TYPE_UINT32": {"type": "integer", "format": "uint32"},
    "TYPE_SINT32": {"type": "integer", "format": "int32"}, "TYPE_SINT64": {"type": "string", "format": "int64"},
    "TYPE_FIXED32": {"type": "integer"}, "TYPE_FIXED64": {"type": "string"}, "TYPE_SFIXED32": {"type": "integer"},
    "TYPE_SFIXED64": {"type": "string"}, "TYPE_BOOL": {"type": "boolean"}, "TYPE_STRING": {"type": "string"},
    "TYPE_BYTES": {"type": "string", "format": "byte"},
}
# protobuf's well-known types in their JSON mapping
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Value": {"description": "any JSON value"},
    "google.protobuf.ListValue": {"type": "array", "items": {}, "description": "a JSON array (nested for an ndarray)"},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}, "additionalProperties": True},
    "google.protobuf.Empty": {"type": "object"},
}


def _schema_name(full_name: str) -> str:
    return full_name.replace("seldon.protos.", "").replace("tensorflow.", "Tensorflow").replace(".", "")


def _field_schema(field: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    kind = field.type
    if field.message_type is not None:
        desc = field.message_type
        if desc.GetOptions().map_entry:
            value = desc.fields_by_name["value"]
            return {"type": "object", "additionalProperties": _field_schema(value, schemas)}
        item = _ref(desc, schemas)
    elif field.enum_type is not None:
        item = {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    else:
        name = next(n for n, v in vars(type(field)).items() if n.startswith("TYPE_") and v == kind)
        item = dict(_SCALARS[name])
    if field.label == field.LABEL_REPEATED:
        return {"type": "array", "items": item}
    return item


def _ref(desc: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    if desc.full_name in _WELL_KNOWN:
        return dict(_WELL_KNOWN[desc.full_name])
    name = _schema_name(desc.full_name)
    if name not in schemas:
        schemas[name] = {}  # placeholder: recursive messages
        props = {f.json_name: _field_schema(f, schemas) for f in desc.fields}
        oneofs = [[f.json_name for f in o.fields] for o in desc.oneofs]
        schema: dict[str, Any] = {"type": "object", "properties": props}
        if oneofs:
            schema["description"] = "; ".join(f"at most one of {', '.join(o)}" for o in oneofs)
        schemas[name] = schema
    return {"$ref": f"#/components/schemas/{name}"}


def _post(summary: str, request: str, response: str = "SeldonMessage") -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{request}"}
    return {
        "summary": summary,
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": ref},
            "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
                "json": {"type": "string", "description": f"the {request} as JSON text"}}}},
            "multipart/form-data": {"schema": {"type": "object", "description": f"the {request}'s fields, "
                                               "each as JSON text (strData as text, binData as a file)"}},
        }},
        "responses": {
            "200": {"description": "the reply", "content": {"application/json": {"schema": {
                "$ref": f"#/components/schemas/{response}"}}}},
            "default": {"description": "an error: Seldon's status object", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/ErrorReply"}}}},
        },
    }


def document() -> dict[str, Any]:
    """The whole OpenAPI document (built once per worker)."""
    schemas: dict[str, Any] = {}
    for message in (pb.SeldonMessage, pb.SeldonMessageList, pb.Feedback, pb.SeldonModelMetadata):
        _ref(message.DESCRIPTOR, schemas)
    schemas["ErrorReply"] = {"type": "object", "properties": {"status": {"$ref": "#/components/schemas/Status"}}}
    unit = {
        "/api/v1.0/predictions": _post("predict (also POST /predict, /api/v0.1/predictions)", "SeldonMessage"),
        "/predict": _post("predict", "SeldonMessage"),
        "/transform-input": _post("transform_input", "SeldonMessage"),
        "/transform-output": _post("transform_output", "SeldonMessage"),
        "/route": _post("route: the reply's data holds the chosen child's index", "SeldonMessage"),
        "/aggregate": _post("aggregate (a SeldonMessageList, or a bare JSON list of SeldonMessages)", "SeldonMessageList"),
        "/api/v1.0/feedback": _post("send_feedback (also POST /send-feedback)", "Feedback"),
        "/send-feedback": _post("send_feedback", "Feedback"),
    }
    json_reply = {"200": {"description": "the reply", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/SeldonMessage"}}}}}
    paths: dict[str, Any] = {path: {"post": op} for path, op in unit.items()}
    paths["/health/ping"] = {"get": {"summary": "liveness", "responses": {"200": {
        "description": "pong", "content": {"text/plain": {"schema": {"type": "string", "enum": ["pong"]}}}}}}}
    paths["/health/status"] = {"get": {"summary": "the model's health_status (also /api/v1.0/health/status)",
                                       "responses": json_reply}}
    paths["/metadata"] = {"get": {"summary": "model metadata (also /api/v1.0/metadata)", "responses": {"200": {
        "description": "init_metadata() and MODEL_METADATA", "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/SeldonModelMetadata"}}}}}}}
    paths["/seldon.json"] = {"get": {"summary": "this document", "responses": {"200": {
        "description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "fastseldon: Seldon Core v1 microservice API", "version": __version__,
                 "description": "The Seldon v1 REST routes of one predictive unit. The same server answers the "
                                "Open Inference Protocol (V2) under /v2 and gRPC (seldon.protos.*, "
                                "inference.GRPCInferenceService) on its gRPC port."},
        "paths": paths,
        "components": {"schemas": schemas},
    }
