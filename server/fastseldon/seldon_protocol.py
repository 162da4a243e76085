"""Seldon v1 wire formats (JSON and protobuf) <-> the service's in-memory messages.

Nothing here touches a socket. Decoding produces the in-memory types (``Message``,
``Feedback``: numpy payload, names, meta as a JSON-shaped dict); encoding turns a ``Reply``
back into the bytes Seldon's Python wrapper would have sent for the same request, following
its rules for which data kind (ndarray / tensor / tftensor / strData / ...) the reply uses
and which ``names`` it carries. REST bodies are found as Seldon's Flask wrapper finds them
(multipart fields, form or query ``json=``, then the body).
"""
from __future__ import annotations

import base64
import binascii
import functools
import sys
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from google.protobuf import json_format

from fastseldon import codec
from fastseldon.codec.datatypes import element_count
from fastseldon.errors import BadRequest, FastSeldonError, UserStatusError
from fastseldon.proto import parse as parse_proto
from fastseldon.proto import prediction_pb2 as pb
from fastseldon.proto import tensor_pb2 as tfpb
from fastseldon.types import DATA_KINDS, Feedback, Message, Reply, default_names, reply_names, result_array

# --------------------------------------------------------------------------- JSON decoding


def _array(value: Any) -> np.ndarray:
    return codec.to_array(value)


def message_from_json(obj: Any, *, raw: Any = None) -> Message:
    """A parsed Seldon JSON object -> Message (Seldon's precedence: data, jsonData, strData, binData)."""
    if not isinstance(obj, dict):
        raise BadRequest(f"Invalid request data type: {obj!r}")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise BadRequest(f"meta must be a JSON object, got {meta!r}")
    if "data" in obj:
        data = obj["data"]
        if not isinstance(data, dict):
            raise BadRequest(f"data must be a JSON object, got {data!r}")
        names = data.get("names") or []
        if "tensor" in data:
            tensor = data["tensor"]
            if not isinstance(tensor, dict) or "values" not in tensor:
                raise BadRequest("data.tensor needs values (and shape)")
            values = _array(tensor["values"])
            shape = tensor.get("shape")
            if shape is not None:
                try:
                    values = values.reshape([int(s) for s in shape])
                except (ValueError, TypeError) as exc:
                    raise BadRequest(f"data.tensor shape {shape} does not fit {values.size} values: {exc}") from None
            return Message("tensor", values, names, meta, raw)
        if "ndarray" in data:
            return Message("ndarray", _array(data["ndarray"]), names, meta, raw)
        if "tftensor" in data:
            tensor = _parse_json_into(tfpb.TensorProto(), data["tftensor"], "data.tftensor")
            return Message("tftensor", tftensor_to_array(tensor), names, meta, raw)
        return Message("ndarray", np.array([]), names, meta, raw)
    if "jsonData" in obj:
        return Message("jsonData", obj["jsonData"], [], meta, raw)
    if "strData" in obj:
        return Message("strData", obj["strData"], [], meta, raw)
    if "binData" in obj:
        try:
            payload = base64.b64decode(obj["binData"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise BadRequest("binData must be a base64 string") from None
        return Message("binData", payload, [], meta, raw)
    raise BadRequest(f"Invalid request data type: {obj!r}")


def _parse_json_into(message: Any, obj: Any, what: str) -> Any:
    try:
        return json_format.ParseDict(obj, message)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise BadRequest(f"Invalid JSON in {what}: {exc}") from None


def feedback_from_json(obj: Any) -> Feedback:
    """Feedback JSON goes through protobuf, as in Seldon (unknown fields are an error)."""
    if not isinstance(obj, dict):
        raise BadRequest(f"Invalid request data type: {obj!r}")
    try:
        proto = json_format.ParseDict(obj, pb.Feedback())
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise BadRequest(f"Invalid JSON: {exc}") from None
    return feedback_from_proto(proto)


def feedback_from_proto(proto: Any) -> Feedback:
    """A seldon.protos.Feedback -> Feedback; the proto itself stays for send_feedback_raw."""
    request = message_from_proto(proto.request) if proto.HasField("request") else Message("ndarray", np.array([]))
    truth = message_from_proto(proto.truth) if proto.HasField("truth") else None
    routing = dict(proto.response.meta.routing) if proto.HasField("response") else {}
    return Feedback(request, float(proto.reward), truth, routing, proto)


def feedback_from_proto_bytes(body: bytes, raw_class: Any = None) -> Feedback:
    """``raw_class``: the class send_feedback_raw gets the Feedback as (see ``user_proto_class``)."""
    return feedback_from_proto(parse_proto(raw_class or pb.Feedback, body))


def user_proto_class(name: str) -> Any:
    """The class raw hooks get a gRPC request as: seldon_core's own when the user's code imported
    it (as Seldon passes it, so ``isinstance`` checks against seldon_core's classes hold), else ours."""
    module = sys.modules.get("seldon_core.proto.prediction_pb2")
    return getattr(module, name, None) or getattr(pb, name)


def messages_from_proto_bytes(body: bytes, raw_class: Any = None) -> tuple[list[Message], Any]:
    """A SeldonMessageList (aggregate) -> its messages, and the list as aggregate_raw gets it."""
    lst = parse_proto(raw_class or pb.SeldonMessageList, body)
    return [message_from_proto(m) for m in lst.seldonMessages], lst


def messages_from_json(obj: Any) -> list[Message]:
    """Aggregate's REST body: ``{"seldonMessages": [...]}`` or a bare list."""
    items = obj.get("seldonMessages") if isinstance(obj, dict) else obj
    if not isinstance(items, list):
        raise BadRequest(f"Invalid request data type: {obj!r} (expected {{\"seldonMessages\": [...]}} or a list)")
    return [message_from_json(item, raw=item) for item in items]


# --------------------------------------------------------------------------- protobuf decoding

_TF_DTYPES = {
    tfpb.DT_FLOAT: (np.float32, "float_val"),
    tfpb.DT_DOUBLE: (np.float64, "double_val"),
    tfpb.DT_INT32: (np.int32, "int_val"),
    tfpb.DT_UINT8: (np.uint8, "int_val"),
    tfpb.DT_INT16: (np.int16, "int_val"),
    tfpb.DT_INT8: (np.int8, "int_val"),
    tfpb.DT_INT64: (np.int64, "int64_val"),
    tfpb.DT_BOOL: (np.bool_, "bool_val"),
    tfpb.DT_UINT16: (np.uint16, "int_val"),
    tfpb.DT_HALF: (np.float16, "half_val"),
    tfpb.DT_UINT32: (np.uint32, "uint32_val"),
    tfpb.DT_UINT64: (np.uint64, "uint64_val"),
    tfpb.DT_STRING: (np.object_, "string_val"),
}
_NP_TO_TF = {np.dtype(v[0]): k for k, v in _TF_DTYPES.items() if v[0] is not np.object_}


def tftensor_to_array(t: Any) -> np.ndarray:
    """TensorFlow's TensorProto -> numpy, without TensorFlow (Seldon needs it installed)."""
    if t.dtype not in _TF_DTYPES:
        raise BadRequest(f"unsupported tftensor dtype {tfpb.DataType.Name(t.dtype) if t.dtype in tfpb.DataType.values() else t.dtype}")
    dtype, field_name = _TF_DTYPES[t.dtype]
    shape = [d.size for d in t.tensor_shape.dim]
    count = element_count(tuple(shape))
    if t.tensor_content and dtype is not np.object_:
        arr = np.frombuffer(t.tensor_content, dtype=np.dtype(dtype).newbyteorder("<"))
    elif dtype is np.object_:
        arr = np.array(list(t.string_val), dtype=object)
    elif t.dtype == tfpb.DT_HALF:
        arr = np.array(t.half_val, dtype=np.uint16).view(np.float16)
    else:
        arr = np.array(getattr(t, field_name), dtype=dtype)
    if arr.size == 1 and count > 1:
        arr = np.full(count, arr[0], dtype=arr.dtype)  # TF broadcasts a single value
    try:
        return arr.reshape(shape)
    except ValueError:
        raise BadRequest(f"tftensor shape {shape} does not fit {arr.size} values") from None


def array_to_tftensor(arr: np.ndarray) -> Any:
    t = tfpb.TensorProto()
    for size in arr.shape:
        t.tensor_shape.dim.add().size = size
    if arr.dtype.kind in "OSU":
        t.dtype = tfpb.DT_STRING
        t.string_val.extend(x if isinstance(x, bytes) else str(x).encode() for x in arr.ravel())
        return t
    dtype = _NP_TO_TF.get(arr.dtype)
    if dtype is None:
        arr = arr.astype(np.float64)
        dtype = tfpb.DT_DOUBLE
    t.dtype = dtype
    t.tensor_content = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    return t


def _meta_to_dict(meta: Any) -> dict[str, Any]:
    if not meta.ByteSize():
        return {}
    return json_format.MessageToDict(meta)


def message_from_proto_bytes(body: bytes, *, full_raw: bool = True) -> Message:
    """SeldonMessage bytes -> Message, as ``message_from_proto(parse_proto(...))``, but a
    tensor's values come from codec.decode_seldon_message (a view onto ``body``, copied once:
    no Python float per value). ``raw`` stays the whole message, for *_raw hooks; with
    ``full_raw=False`` (no raw hook will read it) it is the message without the tensor's
    values, which spares parsing them a second time (a copy of the tensor in memory)."""
    msg, values = codec.decode_seldon_message(body)
    if values is None:
        return message_from_proto(msg)
    # one memcpy keeps Seldon's behaviour (models may write into their input) and aligns the
    # data; still ~100x cheaper than np.array() of the protobuf repeated field
    values = values.copy()
    raw = parse_proto(pb.SeldonMessage, body) if full_raw else msg
    if msg.HasField("meta"):
        return message_from_proto(msg, values=values, raw=raw)
    # A client's stream of tensors without meta differs only in its values: what message_from_proto
    # reads from the rest (shape, names) is kept per the rest's bytes.
    key = msg.SerializeToString()
    form = _TENSOR_FORMS.get(key)
    if form is None or values.size != form[2]:
        out = message_from_proto(msg, values=values, raw=raw)
        if form is None:
            if len(_TENSOR_FORMS) >= _TENSOR_FORMS_MAX:
                _TENSOR_FORMS.clear()
            _TENSOR_FORMS[key] = (msg.data.tensor.shape[:], tuple(out.names), out.payload.size)
        return out
    shape, names, _ = form
    return Message("tensor", values.reshape(shape) if shape else values, list(names), {}, raw)


_TENSOR_FORMS: dict[bytes, tuple[list[int], tuple[str, ...], int]] = {}
_TENSOR_FORMS_MAX = 64


def message_from_proto(msg: Any, *, values: np.ndarray | None = None, raw: Any = None) -> Message:
    """A parsed SeldonMessage -> Message. Tensor values are float64, as Seldon's gRPC path.
    ``values``/``raw``: the tensor values already decoded, and the message they came from."""
    meta = _meta_to_dict(msg.meta) if msg.HasField("meta") else {}
    which = msg.WhichOneof("data_oneof")
    if raw is not None:
        msg = raw
    if which == "data":
        data = msg.data
        names = data.names[:]  # a list; a slice of a repeated field costs a third of list() of it
        kind = data.WhichOneof("data_oneof")
        if kind == "tensor":
            if values is None:
                values = np.array(data.tensor.values, dtype=np.float64)
            shape = data.tensor.shape[:]
            if shape:
                try:
                    values = values.reshape(shape)
                except ValueError:
                    raise BadRequest(f"data.tensor shape {shape} does not fit {values.size} values") from None
            return Message("tensor", values, names, meta, msg)
        if kind == "ndarray":
            return Message("ndarray", _array(json_format.MessageToDict(data.ndarray)), names, meta, msg)
        if kind == "tftensor":
            return Message("tftensor", tftensor_to_array(data.tftensor), names, meta, msg)
        return Message("ndarray", np.array([]), names, meta, msg)
    if which == "jsonData":
        return Message("jsonData", json_format.MessageToDict(msg.jsonData), [], meta, msg)
    if which == "strData":
        return Message("strData", msg.strData, [], meta, msg)
    if which == "binData":
        return Message("binData", msg.binData, [], meta, msg)
    if which == "customData":
        return Message("customData", msg.customData, [], meta, msg)
    raise BadRequest("Invalid request data type: the SeldonMessage has no data, binData, strData, jsonData or customData")


# --------------------------------------------------------------------------- reply shaping


def _is_numeric(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "iufc"  # np.issubdtype(dtype, np.number), at a tenth of the cost


# Seldon's default names (t:0, t:1, ...) are pre-encoded and cached up to this many columns; a
# wider reply (a [1, 8M] tensor has 8M names) gets them built for it alone, straight into bytes:
# as Python strings they would cost about 10x the tensor in memory, and seconds.
_CACHED_NAMES = 4096


def _default_names_wire(columns: int, proto: bool) -> bytes:
    """Default names as a JSON array, or as ``DefaultData.names`` wire bytes, one numpy pass per digit count."""
    parts = []
    digits, low = 1, 0
    while low < columns:
        high = min(columns, 10**digits)
        prefix = (b"\n" + bytes([2 + digits]) + b"t:") if proto else b'"t:'
        suffix = b"" if proto else b'",'
        width = len(prefix) + digits + len(suffix)
        for start in range(low, high, 1 << 20):  # in slices of 1M names: bounded temporaries
            rest = np.arange(start, min(high, start + (1 << 20)), dtype=np.uint32)
            table = np.empty((width, len(rest)), dtype=np.uint8)  # one row per byte position, then transposed
            for k, byte in enumerate(prefix + b"0" * digits + suffix):
                table[k] = byte
            for j in range(len(prefix) + digits - 1, len(prefix) - 1, -1):
                table[j] += (rest % 10).astype(np.uint8)
                rest //= 10
            parts.append(table.T.tobytes())
        digits, low = digits + 1, high
    body = b"".join(parts)
    return body if proto else b"[" + body[:-1] + b"]"


@functools.lru_cache(maxsize=256)
def _cached_names_json(columns: int) -> Any:
    return codec.json_fragment(default_names(columns))


@functools.lru_cache(maxsize=256)
def _cached_names_bytes(columns: int) -> bytes:
    return codec.dumps(default_names(columns))


@functools.lru_cache(maxsize=256)
def _cached_names_block(columns: int) -> bytes:
    return codec.encode_names(default_names(columns))


# Wider replies keep their names' wire bytes in a small cache of their own up to this many columns
# (about 10 bytes a name: a few MB at most), so a steady stream of [1, 10000] replies encodes them once.
_CACHED_WIDE = 1 << 18


@functools.lru_cache(maxsize=8)
def _wide_names_wire(columns: int, proto: bool) -> bytes:
    return _default_names_wire(columns, proto)


def _names_wire(columns: int, proto: bool) -> bytes:
    return _wide_names_wire(columns, proto) if columns <= _CACHED_WIDE else _default_names_wire(columns, proto)


def _default_names_json(columns: int) -> Any:
    if columns <= _CACHED_NAMES:
        return _cached_names_json(columns)
    import orjson

    return orjson.Fragment(_names_wire(columns, proto=False))


def _default_names_bytes(columns: int) -> bytes:
    return _cached_names_bytes(columns) if columns <= _CACHED_NAMES else _names_wire(columns, proto=False)


def _names_json(arr: np.ndarray, names: list[str] | None) -> bytes:
    """A reply's ``names`` as JSON; Seldon's default names (given as None, or spelled out, as a graph
    passes them on from unit to unit) come from the cache."""
    if arr.ndim > 1:
        columns = arr.shape[1]
        if names is None or (len(names) == columns and tuple(names) == default_names(columns)):
            return _default_names_bytes(columns)
    return codec.dumps(reply_names(arr, names))


def _default_names_block(columns: int) -> bytes:
    return _cached_names_block(columns) if columns <= _CACHED_NAMES else _names_wire(columns, proto=True)


def _json_names(arr: np.ndarray, class_names: list[str] | None) -> Any:
    """``reply_names`` for JSON replies: the default ``t:<i>`` list goes out pre-encoded."""
    if arr.ndim > 1 and class_names is None:
        return _default_names_json(arr.shape[1])
    return reply_names(arr, class_names)


def _data_kind(reply_kind: str, arr: np.ndarray) -> str:
    """Seldon's choice: mirror the request's data kind for numeric results, ndarray otherwise."""
    if not _is_numeric(arr):
        return "ndarray"
    if reply_kind in DATA_KINDS:
        return reply_kind
    return "tensor"


def reply_to_json_obj(reply: Reply) -> Any:
    """Reply -> the JSON-ready object Seldon's REST wrapper would return."""
    if reply.raw:
        if hasattr(reply.payload, "DESCRIPTOR") and hasattr(reply.payload, "SerializeToString"):
            return json_format.MessageToDict(reply.payload)  # a raw hook answered a proto on REST
        return reply.payload
    payload = reply.payload
    out: dict[str, Any]
    arr = result_array(payload)
    if arr is not None:
        kind = _data_kind(reply.kind, arr)
        names = _json_names(arr, reply.names)
        if kind == "tensor":
            data = {"names": names, "tensor": {"shape": list(arr.shape), "values": arr.ravel()}}
        elif kind == "tftensor":
            data = {"names": names, "tftensor": json_format.MessageToDict(array_to_tftensor(arr))}
        else:
            data = {"names": names, "ndarray": arr if arr.dtype != object else arr.tolist()}
        out = {"data": data, "meta": reply.meta}
    elif isinstance(payload, dict):
        out = {"jsonData": payload, "meta": reply.meta}
    elif isinstance(payload, (bytes, bytearray, memoryview)):
        out = {"binData": base64.b64encode(bytes(payload)).decode("ascii"), "meta": reply.meta}
    elif isinstance(payload, str):
        out = {"meta": reply.meta, "strData": payload}
    else:
        raise BadRequest(f"Unknown data type returned as payload (must be list or np array):{payload!r}")
    return out


def reply_to_json(reply: Reply) -> bytes:
    """The bytes of ``reply_to_json_obj(reply)``, with the common array replies assembled
    around one ``codec.dumps`` of the array (no walk over the reply's dicts)."""
    arr = None if reply.raw else result_array(reply.payload)
    if arr is None or arr.dtype == object:
        return codec.dumps(reply_to_json_obj(reply))
    kind = _data_kind(reply.kind, arr)
    if kind == "tftensor":
        return codec.dumps(reply_to_json_obj(reply))
    names = _names_json(arr, reply.names)
    meta = codec.dumps(reply.meta) if reply.meta else b"{}"
    if kind == "tensor":
        shape = codec.dumps(list(arr.shape))
        return b'{"data":{"names":%b,"tensor":{"shape":%b,"values":%b}},"meta":%b}' % (
            names, shape, codec.dumps(arr.ravel()), meta)
    return b'{"data":{"names":%b,"ndarray":%b},"meta":%b}' % (names, codec.dumps(arr), meta)


def reply_to_proto(reply: Reply) -> Any:
    """Reply -> SeldonMessage proto (gRPC, and REST feedback which Seldon renders via protobuf)."""
    if reply.raw:
        payload = reply.payload
        if isinstance(payload, dict):
            return _parse_json_into(pb.SeldonMessage(), payload, "raw hook reply")
        return payload
    msg = pb.SeldonMessage()
    msg.meta.SetInParent()  # Seldon always sends meta, even empty
    if reply.meta:
        _parse_json_into(msg.meta, reply.meta, "meta")
    payload = reply.payload
    arr = result_array(payload)
    if arr is not None:
        kind = _data_kind(reply.kind, arr)
        msg.data.names.extend(reply_names(arr, reply.names))
        if kind == "tensor":
            msg.data.tensor.SetInParent()
            msg.data.tensor.shape.extend(arr.shape)
            msg.data.tensor.values.extend(np.asarray(arr, dtype=np.float64).ravel().tolist())
        elif kind == "tftensor":
            msg.data.tftensor.CopyFrom(array_to_tftensor(arr))
        else:
            msg.data.ndarray.SetInParent()
            try:
                msg.data.ndarray.extend(arr.tolist() if arr.ndim else [arr.item()])
            except (TypeError, ValueError) as exc:
                raise BadRequest(f"Cannot encode result as a ListValue: {exc}") from None
    elif isinstance(payload, dict):
        _parse_json_into(msg.jsonData, payload, "jsonData")
    elif isinstance(payload, (bytes, bytearray, memoryview)):
        msg.binData = bytes(payload)
    elif isinstance(payload, str):
        msg.strData = payload
    elif type(payload).__name__ == "Any" and hasattr(payload, "type_url"):
        msg.customData.CopyFrom(payload)
    else:
        raise BadRequest(f"Unknown data type returned as payload (must be list or np array):{payload!r}")
    return msg


# A tensor reply with Seldon's default names and an empty meta (no predictive unit id, no request
# meta) is the same bytes before its values for every reply of its shape: the encoder writes the
# first one, its head is kept, and the next replies are that head plus one copy of their values.
_TENSOR_HEADS: dict[tuple[int, ...], bytes] = {}
_TENSOR_HEADS_MAX = 64


def _default_tensor_reply(arr: np.ndarray) -> bytes:
    values: Any = np.ascontiguousarray(arr, dtype="<f8")  # a buffer bytes.join copies once
    head = _TENSOR_HEADS.get(arr.shape)
    if head is not None:
        return b"".join((head, values))
    msg = pb.SeldonMessage()
    msg.meta.SetInParent()
    out = codec.encode_seldon_message(msg, arr, _default_names_block(arr.shape[1]))
    if len(_TENSOR_HEADS) >= _TENSOR_HEADS_MAX:
        _TENSOR_HEADS.clear()
    _TENSOR_HEADS[arr.shape] = out[:len(out) - values.nbytes]
    return out


def reply_to_proto_bytes(reply: Reply) -> bytes:
    """``reply_to_proto(reply).SerializeToString()`` (same bytes); a numeric tensor reply's
    values are written straight from the result array's buffer (codec.encode_seldon_message)."""
    if not reply.raw:
        arr = result_array(reply.payload)
        if arr is not None and arr.dtype.kind in "iuf" and _data_kind(reply.kind, arr) == "tensor":
            if not reply.meta and reply.names is None and arr.ndim > 1 and arr.shape[1] <= _CACHED_NAMES:
                return _default_tensor_reply(arr)
            head = pb.SeldonMessage()
            head.meta.SetInParent()  # Seldon always sends meta, even empty
            if reply.meta:
                _parse_json_into(head.meta, reply.meta, "meta")
            if arr.ndim > 1 and reply.names is None:
                return codec.encode_seldon_message(head, arr, _default_names_block(arr.shape[1]))
            head.data.names.extend(reply_names(arr, reply.names))
            return codec.encode_seldon_message(head, arr)
    return reply_to_proto(reply).SerializeToString()


def reply_to_proto_json(reply: Reply) -> bytes:
    """Seldon renders feedback replies through protobuf's JSON mapping (floats, no empty names)."""
    return codec.dumps(json_format.MessageToDict(reply_to_proto(reply)))


def metadata_to_proto(metadata: dict[str, Any]) -> Any:
    return json_format.ParseDict(metadata, pb.SeldonModelMetadata(), ignore_unknown_fields=True)


def status_json(message: str, reason: str) -> bytes:
    """Seldon's error body: code is always -1 and status 1 (FAILURE) in the wrapper's dicts."""
    return codec.dumps({"status": {"code": -1, "info": message, "reason": reason, "status": 1}})


def error_body(exc: FastSeldonError) -> bytes:
    if isinstance(exc, UserStatusError):  # the user's own to_dict(), as Seldon's model_error_handler sends it
        return codec.dumps(exc.document)
    return status_json(str(exc), exc.reason)


# --------------------------------------------------------------------------- REST bodies


def parse_rest_body(body: bytes, content_type: bytes, query: str, *, fast: bool) -> Any:
    """Seldon's body precedence: multipart fields, form/query ``json=``, then the JSON body.

    ``fast`` lets the codec turn numeric arrays into numpy while parsing; *_raw hooks get
    plain JSON values instead, as Seldon gives them.
    """
    ctype = content_type.lower()
    if ctype.startswith(b"multipart/form-data"):
        return _parse_multipart(body, content_type)
    if ctype.startswith(b"application/x-www-form-urlencoded"):
        form = parse_qs(body.decode("utf-8", "replace"))
        if "json" in form:
            return codec.loads(form["json"][0]) if not fast else codec.parse_seldon_json(form["json"][0])
    if query and "json=" in query:
        params = parse_qs(query)
        if "json" in params:
            return codec.loads(params["json"][0]) if not fast else codec.parse_seldon_json(params["json"][0])
    if not body:
        raise BadRequest("Can't find JSON in data: the request has no body")
    try:
        obj = codec.parse_seldon_json(body) if fast else codec.loads(body)
    except FastSeldonError as exc:
        raise BadRequest(f"Can't find JSON in data: {exc.message}") from None
    if obj is None:
        raise BadRequest("Can't find JSON in data")
    return obj


def _parse_multipart(body: bytes, content_type: bytes) -> dict[str, Any]:
    """Seldon's multipart rule: fields hold JSON (strData raw); file binData is base64'd, others text."""
    head = b"Content-Type: " + content_type + b"\r\nMIME-Version: 1.0\r\n\r\n"
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise BadRequest("malformed multipart/form-data body")
    out: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or not name:
            continue
        data = part.get_payload(decode=True)
        data = data if isinstance(data, bytes) else b""
        if part.get_filename() is not None:
            out[name] = base64.b64encode(data).decode("ascii") if name == "binData" else data.decode("utf-8", "replace")
        elif name == "strData":
            out[name] = data.decode("utf-8", "replace")
        else:
            out[name] = codec.loads(data)
    return out
