"""Open Inference Protocol (V2): REST JSON, the binary tensor extension and gRPC <-> numpy.

Wire bytes become an ``InferRequest`` (named numpy tensors) and an ``InferResult`` goes
back to bytes; element-wise work is the codec's. Nothing here touches a socket: the routes
(v2_routes.py) hand bodies and headers in and send back what comes out.

Framing rules (see the protocol notes): a REST body with ``Inference-Header-Content-Length``
is that many bytes of JSON followed by the binary chunks of the inputs that carry
``parameters.binary_data_size``, in input order; binary inputs become read-only numpy views
onto the body. Outputs go binary when the requested output says ``binary_data`` or the
request says ``binary_data_output``. gRPC replies always use ``raw_output_contents`` (Triton's
behaviour, and all tritonclient reads), also for a request that used typed ``contents``.
"""
from __future__ import annotations

import zlib
from typing import Any, NamedTuple

import numpy as np

from fastseldon import codec
from fastseldon.codec.datatypes import check_shape, dtype_for, element_count
from fastseldon.errors import BadRequest, CodecError, FastSeldonError, PayloadTooLarge, UnsupportedMediaType
from fastseldon.proto import grpc_service_pb2 as pb
from fastseldon.types import InferRequest, InferResult, RequestedOutput, Tensor

EXTENSIONS = ("binary_tensor_data", "statistics", "model_repository")
JSON = b"application/json"
OCTET_STREAM = b"application/octet-stream"
HEADER_LENGTH = b"inference-header-content-length"  # request headers arrive lower-cased
HEADER_LENGTH_OUT = b"Inference-Header-Content-Length"  # as Triton writes it



class RestReply(NamedTuple):
    """An encoded REST reply; the routes turn it into the front's response."""

    body: bytes
    content_type: bytes
    headers: list[tuple[bytes, bytes]]

# typed gRPC contents field per datatype (FP16 has none: it travels raw only)
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# element type of each typed contents field, as protobuf holds it
_CONTENTS_DTYPE = {
    "bool_contents": np.bool_, "int_contents": np.int32, "int64_contents": np.int64, "uint_contents": np.uint32,
    "uint64_contents": np.uint64, "fp32_contents": np.float32, "fp64_contents": np.float64,
}


# --------------------------------------------------------------------------- REST decoding


def _inflate(body: bytes, encoding: bytes, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate`` (tritonclient's opt-in request compression)."""
    encoding = encoding.strip().lower()
    if encoding in (b"", b"identity"):
        return body
    if encoding == b"gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == b"deflate":
        inflater = zlib.decompressobj()
    else:
        raise UnsupportedMediaType(f"Unsupported Content-Encoding {encoding.decode('latin-1')!r}; use gzip or deflate")
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"Request body is not valid {encoding.decode()} data: {exc}") from None
    if len(out) > limit:
        raise PayloadTooLarge(f"Decompressed request body is over the limit of {limit} bytes")
    return out


def _json_length(value: bytes) -> int:
    if not value.strip().isdigit():
        raise BadRequest(f"Inference-Header-Content-Length must be a non-negative integer, got {value.decode('latin-1')!r}")
    return int(value)


def decode_rest_request(body: bytes, headers: dict[bytes, bytes], model_name: str, model_version: str,
                        max_body: int = 1 << 62) -> InferRequest:
    """A V2 REST inference body (JSON, or JSON + binary chunks) -> InferRequest."""
    if b"content-encoding" in headers:
        body = _inflate(body, headers[b"content-encoding"], max_body)
    header = headers.get(HEADER_LENGTH)
    if header is None:
        doc = _parse_json(body)
        binary = None
    else:
        length = _json_length(header)
        if length == 0:
            raise BadRequest("Inference-Header-Content-Length: 0 (a raw binary request without JSON) is not supported; "
                             "send the JSON header with binary_data_size per input")
        if length > len(body):
            raise BadRequest(f"Inference-Header-Content-Length is {length} but the body has only {len(body)} bytes")
        view = memoryview(body)
        doc = _parse_json(view[:length])
        binary = view[length:]
    return request_from_json(doc, binary, model_name, model_version)


def _parse_json(body: Any) -> Any:
    try:
        return codec.parse_v2_json(body)
    except CodecError as exc:
        raise _locate(body, exc) from None


def _locate(body: Any, exc: CodecError) -> FastSeldonError:
    """Name the input a tensor decoding error came from (error path only: parses again)."""
    try:
        doc = codec.loads(body)
    except CodecError:
        return exc
    for i, item in enumerate(doc.get("inputs") or [] if isinstance(doc, dict) else []):
        if isinstance(item, dict) and "data" in item:
            try:
                codec.v2_json_tensor(item["data"], item.get("datatype"), item.get("shape"))
            except CodecError as inner:
                return BadRequest(f"Input {_label(item, i)}: {inner.message}")
    return exc


def _label(item: dict[str, Any], index: int) -> str:
    name = item.get("name")
    return repr(name) if isinstance(name, str) else f"#{index}"


def _parameters(obj: dict[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where} parameters must be a JSON object, got {params!r}")
    return params


def _flag(params: dict[str, Any], key: str, where: str) -> bool | None:
    value = params.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise BadRequest(f"{where} parameter {key} must be true or false, got {value!r}")


def request_from_json(doc: Any, binary: memoryview | None, model_name: str, model_version: str) -> InferRequest:
    """Validate a parsed V2 request (inputs' ``data`` possibly already arrays) and attach binary chunks."""
    if not isinstance(doc, dict):
        raise BadRequest("A V2 inference request must be a JSON object")
    items = doc.get("inputs")
    if not isinstance(items, list) or not items:
        raise BadRequest("A V2 inference request needs a non-empty 'inputs' list")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest(f"Request id must be a string, got {request_id!r}")
    inputs: list[Tensor] = []
    offset = 0
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"inputs[{i}] must be a JSON object")
        name, datatype, shape = item.get("name"), item.get("datatype"), item.get("shape")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"inputs[{i}] needs a 'name' string")
        if name in seen:
            raise BadRequest(f"Input {name!r} appears more than once")
        seen.add(name)
        if not isinstance(datatype, str):
            raise BadRequest(f"Input {name!r} needs a 'datatype' string")
        params = _parameters(item, f"Input {name!r}")
        size = params.get("binary_data_size")
        try:
            if size is not None:
                if "data" in item:
                    raise BadRequest(f"Input {name!r} has both 'data' and binary_data_size")
                if binary is None:
                    raise BadRequest(f"Input {name!r} has binary_data_size but the request has no "
                                     "Inference-Header-Content-Length header")
                if type(size) is not int or size < 0:
                    raise BadRequest(f"Input {name!r} binary_data_size must be a non-negative integer, got {size!r}")
                if offset + size > len(binary):
                    raise BadRequest(f"Input {name!r} binary_data_size {size} runs past the end of the body "
                                     f"({len(binary) - offset} binary bytes left)")
                data = codec.decode_raw(binary[offset:offset + size], datatype, shape)
                offset += size
                params = {k: v for k, v in params.items() if k != "binary_data_size"}
            elif "data" in item:
                data = item["data"]
                if not isinstance(data, np.ndarray):
                    data = codec.v2_json_tensor(data, datatype, shape)
            else:
                raise BadRequest(f"Input {name!r} has neither 'data' nor binary_data_size")
        except CodecError as exc:
            raise BadRequest(f"Input {name!r}: {exc.message}") from None
        inputs.append(Tensor(name, datatype, data, params))
    if binary is not None and offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data after the JSON header belong to no input "
                         "(binary_data_size values do not add up to the body)")
    outputs = None
    if "outputs" in doc and doc["outputs"] is not None:
        if not isinstance(doc["outputs"], list):
            raise BadRequest("'outputs' must be a list of {name, parameters}")
        outputs = []
        for i, item in enumerate(doc["outputs"]):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise BadRequest(f"outputs[{i}] needs a 'name' string")
            oparams = _parameters(item, f"Output {item['name']!r}")
            as_binary = _flag(oparams, "binary_data", f"Output {item['name']!r}")
            outputs.append(RequestedOutput(item["name"], as_binary, {k: v for k, v in oparams.items() if k != "binary_data"}))
    params = _parameters(doc, "Request")
    binary_output = bool(_flag(params, "binary_data_output", "Request"))
    params = {k: v for k, v in params.items() if k != "binary_data_output"}
    return InferRequest(model_name, model_version, request_id, inputs, outputs, params, binary_output)


# --------------------------------------------------------------------------- REST encoding


_JSON_STRS: dict[str, bytes] = {}


def _json_str(text: str) -> bytes:
    """``codec.dumps(text)``, kept for the few strings every reply repeats (model, output and datatype names)."""
    out = _JSON_STRS.get(text)
    if out is None:
        out = codec.dumps(text)
        if len(_JSON_STRS) < 4096:
            _JSON_STRS[text] = out
    return out


def encode_rest_response(result: InferResult, request: InferRequest, model_name: str, model_version: str
                         ) -> RestReply:
    """InferResult -> V2 REST response: JSON, plus binary chunks for outputs asked for as binary."""
    default_binary = request.binary_output
    flags = {o.name: o.binary for o in request.outputs} if request.outputs else {}
    dumps = codec.dumps
    # Assembled from the dumps of its parts, the bytes ``codec.dumps`` gives the whole document
    # (compact JSON, keys in this order), without walking the document's dicts for arrays.
    outputs: list[bytes] = []
    chunks: list[Any] = []
    for tensor in result.outputs:
        flag = flags.get(tensor.name)
        params = dict(tensor.parameters)
        if default_binary if flag is None else flag:
            raw = codec.encode_raw(tensor.data, tensor.datatype)
            params["binary_data_size"] = memoryview(raw).nbytes
            chunks.append(raw)
            data = b""
        else:
            data = b',"data":' + dumps(codec.v2_json_data(tensor.data))
        outputs.append(b'{"name":%b,"datatype":%b,"shape":%b%b%b}' % (
            _json_str(tensor.name), _json_str(tensor.datatype), str(list(tensor.data.shape)).replace(" ", "").encode(),
            data, b',"parameters":' + dumps(params) if params else b""))
    head = b'{"model_name":%b%b%b%b,"outputs":[%b]}' % (
        _json_str(model_name),
        b',"model_version":' + _json_str(model_version) if model_version else b"",
        b',"id":' + dumps(request.id) if request.id is not None else b"",
        b',"parameters":' + dumps(result.parameters) if result.parameters else b"",
        b",".join(outputs))
    if not chunks:
        return RestReply(head, JSON, [])
    return RestReply(b"".join([head, *chunks]), OCTET_STREAM, [(HEADER_LENGTH_OUT, str(len(head)).encode())])


# --------------------------------------------------------------------------- gRPC decoding / encoding


def param_value(p: Any) -> Any:
    """InferParameter -> Python value."""
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def _set_param(target: Any, key: str, value: Any) -> None:
    p = target[key]
    if isinstance(value, bool):
        p.bool_param = value
    elif isinstance(value, int):
        if value >= 1 << 63:
            p.uint64_param = value
        else:
            p.int64_param = value
    elif isinstance(value, float):
        p.double_param = value
    else:
        p.string_param = str(value)


def _typed_tensor(name: str, datatype: str, shape: tuple[int, ...], contents: Any) -> np.ndarray:
    dtype = dtype_for(datatype)
    field_name = _CONTENTS_FIELD.get(datatype)
    if field_name is None:
        raise BadRequest(f"Input {name!r}: {datatype} has no typed contents field; send it in raw_input_contents")
    values = getattr(contents, field_name)
    count = element_count(shape)
    if len(values) != count:
        raise BadRequest(f"Input {name!r}: {field_name} has {len(values)} elements but shape {list(shape)} needs {count}")
    if datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
    else:
        wide: np.ndarray = np.array(values, dtype=_CONTENTS_DTYPE[field_name])
        if datatype in ("INT8", "INT16", "UINT8", "UINT16") and wide.size:
            info = np.iinfo(dtype)
            if wide.min() < info.min or wide.max() > info.max:
                raise BadRequest(f"Input {name!r}: a value is out of range for {datatype}")
        arr = wide.astype(dtype, copy=False)
    return arr.reshape(shape)


# A client's stream of raw-input requests without ids differs only in its raw_input_contents: the
# decoded rest (names, datatypes, shapes, parameters, outputs) is kept per the rest's bytes.
_RawForm = tuple[str, str, list[tuple[str, str, tuple[int, ...], dict[str, Any]]], list[RequestedOutput] | None,
                 dict[str, Any]]
_RAW_FORMS: dict[bytes, _RawForm] = {}
_RAW_FORMS_MAX = 64


def decode_grpc_request(body: bytes) -> InferRequest:
    """ModelInferRequest bytes -> InferRequest; raw_input_contents become views onto ``body``."""
    msg, raws = codec.decode_infer_request(body)
    if not raws or msg.id:
        return _decode_grpc_request(msg, raws)
    key = msg.SerializeToString()
    form = _RAW_FORMS.get(key)
    if form is None or len(form[2]) != len(raws):
        request = _decode_grpc_request(msg, raws)
        if form is None:
            if len(_RAW_FORMS) >= _RAW_FORMS_MAX:
                _RAW_FORMS.clear()
            _RAW_FORMS[key] = (request.model_name, request.model_version,
                               [(t.name, t.datatype, t.data.shape, dict(t.parameters)) for t in request.inputs],
                               None if request.outputs is None else
                               [RequestedOutput(o.name, o.binary, dict(o.parameters)) for o in request.outputs],
                               dict(request.parameters))
        return request
    model_name, model_version, forms, outputs, params = form
    inputs = []
    for (name, datatype, shape, tensor_params), raw in zip(forms, raws):
        try:
            data = codec.decode_raw(raw, datatype, shape)
        except CodecError as exc:
            raise BadRequest(f"Input {name!r}: {exc.message}") from None
        inputs.append(Tensor(name, datatype, data, dict(tensor_params) if tensor_params else {}))
    return InferRequest(model_name, model_version, None, inputs,
                        None if outputs is None else [RequestedOutput(o.name, o.binary, dict(o.parameters)) for o in outputs],
                        dict(params) if params else {})


def _decode_grpc_request(msg: Any, raws: list[memoryview]) -> InferRequest:
    if not msg.inputs:
        raise BadRequest("ModelInferRequest needs at least one input")
    if raws and len(raws) != len(msg.inputs):
        raise BadRequest(f"raw_input_contents has {len(raws)} entries for {len(msg.inputs)} inputs")
    inputs: list[Tensor] = []
    seen: set[str] = set()
    for i, item in enumerate(msg.inputs):
        name = item.name
        if not name:
            raise BadRequest(f"inputs[{i}] needs a name")
        if name in seen:
            raise BadRequest(f"Input {name!r} appears more than once")
        seen.add(name)
        try:
            shape = check_shape(item.shape[:])  # a slice of a repeated field: a list, at a third of list()'s cost
            if raws:
                if item.HasField("contents"):
                    raise BadRequest(f"Input {name!r} has typed contents although raw_input_contents is used")
                data = codec.decode_raw(raws[i], item.datatype, shape)
            else:
                data = _typed_tensor(name, item.datatype, shape, item.contents)
        except CodecError as exc:
            raise BadRequest(f"Input {name!r}: {exc.message}") from None
        params = {k: param_value(v) for k, v in item.parameters.items()} if item.parameters else {}
        inputs.append(Tensor(name, item.datatype, data, params))
    outputs = None
    if msg.outputs:
        outputs = [RequestedOutput(o.name, None, {k: param_value(v) for k, v in o.parameters.items()}) for o in msg.outputs]
    params = {k: param_value(v) for k, v in msg.parameters.items()} if msg.parameters else {}
    return InferRequest(msg.model_name, msg.model_version, msg.id or None, inputs, outputs, params, typed_contents=not raws)


def encode_grpc_response(result: InferResult, request: InferRequest, model_name: str, model_version: str) -> bytes:
    """InferResult -> ModelInferResponse bytes, outputs always in ``raw_output_contents``, as
    Triton answers (tritonclient's ``as_numpy`` reads nothing else), whatever the request used."""
    msg = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request.id or "")
    for key, value in result.parameters.items():
        _set_param(msg.parameters, key, value)
    raws: list[Any] = []
    for tensor in result.outputs:
        out = msg.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.data.shape)
        for key, value in tensor.parameters.items():
            _set_param(out.parameters, key, value)
        raws.append(codec.encode_raw(tensor.data, tensor.datatype))
    return codec.encode_infer_response(msg, raws)


def stream_reply(response: bytes) -> bytes:
    """ModelStreamInferResponse{infer_response} around already serialized ModelInferResponse bytes."""
    return codec.length_delimited(2, response)


# --------------------------------------------------------------------------- metadata


def tensor_metadata(entries: Any) -> list[dict[str, Any]]:
    """The KFServing-style entries ({name, datatype, shape}) of a Seldon metadata inputs/outputs list."""
    out = []
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("datatype"), str):
            shape = entry.get("shape")
            out.append({"name": entry["name"], "datatype": entry["datatype"],
                        "shape": [int(d) for d in shape] if isinstance(shape, (list, tuple)) else []})
    return out


def model_metadata(metadata: dict[str, Any], model_name: str) -> dict[str, Any]:
    """V2 model metadata from the service's Seldon metadata (built from init_metadata())."""
    versions = [str(v) for v in metadata.get("versions") or [] if v not in (None, "")]
    doc: dict[str, Any] = {"name": model_name}
    if versions:
        doc["versions"] = versions
    doc["platform"] = str(metadata.get("platform") or "")
    doc["inputs"] = tensor_metadata(metadata.get("inputs"))
    doc["outputs"] = tensor_metadata(metadata.get("outputs"))
    return doc


def error_body(exc: FastSeldonError) -> bytes:
    """V2's error body (what tritonclient and KServe's client read)."""
    return codec.dumps({"error": str(exc)})


def _varint(body: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(body) or shift > 63:
            raise BadRequest("malformed V2 gRPC request: a truncated varint")
        byte = body[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def grpc_model_name(body: bytes) -> str:
    """Field 1 of a serialized V2 request — ``model_name`` of ModelInferRequest, ``name`` of
    ModelReady/ModelMetadata/ModelStatisticsRequest — found by stepping over the other top-level
    fields, so a server of several models picks the model without parsing the tensors twice."""
    at, end, name = 0, len(body), b""
    while at < end:
        key, at = _varint(body, at)
        wire = key & 7
        if wire == 0:
            _, at = _varint(body, at)
        elif wire == 2:
            length, at = _varint(body, at)
            if key >> 3 == 1:
                name = body[at:at + length]  # a field given twice: the last one counts, as protobuf reads it
            at += length
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise BadRequest(f"malformed V2 gRPC request: wire type {wire}")
    if at > end:
        raise BadRequest("malformed V2 gRPC request: a field runs past the end of the message")
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("malformed V2 gRPC request: the model name is not UTF-8") from None
