"""The reference codec: pure Python and numpy, no compiled code of ours.

It defines what every codec function returns; the native codec (fastseldon._fast, glued in
codec/native.py) must give the same results, bit for bit, only faster. It is also what runs
when the extension is not built or ``FASTSELDON_NO_EXT=1``.

JSON semantics are those of Python's ``json`` module, which Seldon's own server uses: a
Seldon ``ndarray`` decodes to exactly ``np.array(json.loads(body)["data"]["ndarray"])``,
and the non-standard literals ``NaN``/``Infinity``/``-Infinity``, integers beyond 64 bits
and lone surrogates behave as in Seldon. (orjson is not used for decoding: it turns
integers beyond 64 bits into floats.)

Protobuf: a small wire-format reader splits the tensor payload (``SeldonMessage.data.tensor
.values``, ``ModelInferRequest.raw_input_contents``) off the request bytes and returns
numpy views onto them (no copy); every other field is parsed by the generated classes. Any
encoding the reader does not take (duplicated or unpacked fields, groups, odd wire types,
truncation) is handed whole to the generated class, so results always equal protobuf's.
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from fastseldon.codec.datatypes import (
    FLOAT_DATATYPES,
    INTEGER_DATATYPES,
    check_shape,
    datatype_for,
    dtype_for,
    element_count,
)
from fastseldon.errors import CodecError
from fastseldon.proto import grpc_service_pb2, prediction_pb2

_DUMPS_OPTS = orjson.OPT_NON_STR_KEYS
_F8 = np.dtype("<f8")
_INT_RANGES = {name: (int(np.iinfo(dtype_for(name)).min), int(np.iinfo(dtype_for(name)).max)) for name in INTEGER_DATATYPES}


# --------------------------------------------------------------------------- JSON decode


def loads(body: bytes | bytearray | memoryview | str) -> Any:
    """Parse a JSON document with Python ``json`` semantics; CodecError on malformed input."""
    if isinstance(body, memoryview):
        body = body.tobytes()
    try:
        return json.loads(body)
    except (ValueError, TypeError, RecursionError) as exc:
        raise CodecError(f"Invalid JSON: {exc}") from None


def parse_seldon_json(body: bytes | bytearray | memoryview | str) -> Any:
    """Parse a Seldon JSON message (or message list).

    ``data.ndarray`` and ``data.tensor.values`` (of the message, or of each message in a
    ``seldonMessages`` list or bare list) come back either as numpy arrays or as the JSON
    lists; ``to_array`` of either equals ``np.array`` of the JSON list in dtype and values.
    This implementation always leaves the lists.
    """
    return loads(body)


def to_array(value: Any) -> np.ndarray:
    """``np.array`` of a decoded JSON list (or the array itself); ragged input is a CodecError."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.array(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise CodecError(f"Cannot convert data to an array (ragged or mixed nesting?): {exc}") from None


def _flatten(data: Any) -> list:
    """Leaves of a flat or rectangular nested list, row-major; CodecError if ragged."""
    if not isinstance(data, list):
        raise CodecError(f"Tensor data must be a list, got {type(data).__name__}")
    level = data
    while level and isinstance(level[0], list):
        width = len(level[0])
        nxt: list = []
        for row in level:
            if not isinstance(row, list) or len(row) != width:
                raise CodecError("Tensor data is ragged: nested lists of different lengths or depths")
            nxt.extend(row)
        level = nxt
    for leaf in level:
        if isinstance(leaf, list):
            raise CodecError("Tensor data is ragged: nested lists of different lengths or depths")
    return level


def v2_json_tensor(data: Any, datatype: str, shape: Any) -> np.ndarray:
    """A V2 JSON input's ``data`` (flat or nested lists) as an array of the declared datatype
    and shape. Element types must fit the datatype: BOOL takes true/false, integer types take
    JSON integers within range, FP types take any number (finite values that overflow FP16/
    FP32 are refused), BYTES takes strings (UTF-8 encoded to bytes, object array)."""
    dims = check_shape(shape)
    dtype = dtype_for(datatype)
    leaves = _flatten(data)
    if len(leaves) != element_count(dims):
        raise CodecError(f"Tensor data has {len(leaves)} elements but shape {list(dims)} needs {element_count(dims)}")
    if datatype == "BOOL":
        if any(type(v) is not bool for v in leaves):
            raise CodecError("BOOL tensor data must be true/false")
        arr = np.array(leaves, dtype=dtype)
    elif datatype in INTEGER_DATATYPES:
        low, high = _INT_RANGES[datatype]
        for v in leaves:
            if type(v) is not int:
                raise CodecError(f"{datatype} tensor data must be integers, got {v!r}")
            if v < low or v > high:
                raise CodecError(f"Value {v} is out of range for {datatype}")
        arr = np.array(leaves, dtype=dtype)
    elif datatype in FLOAT_DATATYPES:
        for v in leaves:
            if type(v) is not float and type(v) is not int:
                raise CodecError(f"{datatype} tensor data must be numbers, got {v!r}")
        try:
            wide = np.array(leaves, dtype=np.float64)
        except OverflowError:
            raise CodecError(f"A value is out of range for {datatype}") from None
        with np.errstate(over="ignore"):
            arr = wide.astype(dtype)
        if datatype != "FP64" and bool((np.isinf(arr) & np.isfinite(wide)).any()):
            raise CodecError(f"A value is out of range for {datatype}")
    else:  # BYTES
        arr = np.empty(len(leaves), dtype=object)
        for i, v in enumerate(leaves):
            if type(v) is not str:
                raise CodecError(f"BYTES tensor data must be strings, got {v!r}")
            arr[i] = v.encode("utf-8", "surrogatepass")
    return arr.reshape(dims)


def parse_v2_json(body: bytes | bytearray | memoryview | str) -> Any:
    """Parse a V2 inference request; each ``inputs[i].data`` that comes with a string
    ``datatype`` and a list ``shape`` is replaced by its array (see ``v2_json_tensor``).
    Inputs without ``data`` (binary extension) or without datatype/shape are left as they are
    for the adapter to judge."""
    doc = loads(body)
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    if isinstance(inputs, list):
        for tensor in inputs:
            if (
                isinstance(tensor, dict)
                and "data" in tensor
                and isinstance(tensor.get("datatype"), str)
                and isinstance(tensor.get("shape"), list)
            ):
                tensor["data"] = v2_json_tensor(tensor["data"], tensor["datatype"], tensor["shape"])
    return doc


# --------------------------------------------------------------------------- JSON encode


def _bytes_to_str(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError("A BYTES element is not valid UTF-8 and cannot be sent as JSON; request it as binary") from None
    return value


class ShortestFloats:
    """A V2 reply's FP32 or FP16 ``data``, flat, that ``dumps`` writes with the shortest text
    that round-trips the declared datatype (float32(0.1) as ``0.1``, not its float64 expansion
    ``0.10000000149011612``; float16(0.1) as ``0.1``, not ``0.0999755859375``).

    ``values`` are float32: an FP32 output's own values, an FP16 output's halves each as the
    float32 nearest to the half's shortest decimal, whose own shortest text is that decimal.
    orjson's float32 writer (shortest round-trip) puts them on the wire; with a NaN or infinity
    in the document, Python ``json`` writes the same digits (see ``dumps``). The native codec
    finds the halves' decimals with its own exact search (_fast/shortest.h), this reference
    with numpy's shortest-repr formatting (Dragon4); tests hold the two equal on every half."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values


_F4 = np.dtype("=f4")


def half_shortest_float32(arr: np.ndarray) -> np.ndarray:
    """float16 values as the float32 nearest each one's shortest round-trip decimal (flat)."""
    return arr.reshape(-1).astype(str).astype(np.float64).astype(_F4)


def _shortest_doubles(values: np.ndarray) -> list[float]:
    """float32 values as the float64 nearest each one's shortest decimal (NaN and infinities
    kept), which Python ``json`` writes with those same digits."""
    return values.astype(str).astype(np.float64).tolist()


def v2_json_data(array: Any) -> Any:
    """A V2 output's ``data`` value: the array flattened row-major (BYTES as UTF-8 strings),
    for ``dumps``; float32/float16 as ``ShortestFloats`` (the shortest text of the datatype)."""
    arr = np.asarray(array)
    kind = arr.dtype.kind
    if kind in "OSU":
        return [_bytes_to_str(v) for v in arr.reshape(-1).tolist()]
    if kind == "f" and arr.dtype.itemsize == 4:
        return ShortestFloats(np.ascontiguousarray(arr.reshape(-1), dtype=_F4))
    if kind == "f" and arr.dtype.itemsize == 2:
        return ShortestFloats(half_shortest_float32(arr))
    return arr.reshape(-1).tolist()


def json_fragment(obj: Any) -> orjson.Fragment:
    """Pre-encoded JSON that ``dumps`` inserts as is: for large constant parts of replies
    (Seldon's default column names), so they are neither rebuilt nor scanned per request."""
    return orjson.Fragment(orjson.dumps(obj))


def _default(obj: Any) -> Any:
    if isinstance(obj, ShortestFloats):  # NaN/Inf as null: dumps then writes with json
        return orjson.Fragment(orjson.dumps(obj.values, option=orjson.OPT_SERIALIZE_NUMPY))
    return _default_json(obj)


def _default_json(obj: Any) -> Any:
    """``_default`` for Python ``json`` (NaN/Infinity writing), which takes no Fragment."""
    if isinstance(obj, ShortestFloats):
        return _shortest_doubles(obj.values)
    if isinstance(obj, orjson.Fragment):
        return orjson.loads(orjson.dumps(obj))  # the only way to read a Fragment back
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj).decode("utf-8", "replace")
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _has_nonfinite(obj: Any) -> bool:
    """Whether a JSON-bound object holds a NaN or infinity anywhere."""
    if isinstance(obj, float):
        return not math.isfinite(obj)
    if isinstance(obj, dict):
        return any(_has_nonfinite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        try:
            return not math.isfinite(sum(obj))  # C loop; inconclusive only on overflow
        except (TypeError, OverflowError):
            pass
        return any(_has_nonfinite(v) for v in obj)
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "O":
            return _has_nonfinite(obj.tolist())
        return obj.dtype.kind in "fc" and not bool(np.isfinite(obj).all())
    if isinstance(obj, (np.floating, np.complexfloating)):
        return not bool(np.isfinite(obj))
    if isinstance(obj, ShortestFloats):
        return not bool(np.isfinite(obj.values).all())
    return False


def _dumps_nonfinite(obj: Any) -> bytes:
    """Python ``json`` writes NaN/Infinity/-Infinity literals (as Seldon's Flask server does)."""
    try:
        text = json.dumps(obj, default=_default_json, allow_nan=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"Cannot encode response as JSON: {exc}") from None
    return text.encode("utf-8", "surrogatepass")


def dumps(obj: Any) -> bytes:
    """Serialise to compact JSON bytes; numpy arrays and scalars as their ``tolist()`` values.

    NaN and infinities are written as the literals ``NaN``, ``Infinity`` and ``-Infinity``:
    that is what Seldon's Python server (Flask/``json``) and Triton (rapidjson with NaN/Inf
    writing on) put on the wire, and what Python ``json``, ``requests`` and tritonclient's
    rapidjson read back as floats. orjson on its own would write ``null``, which such clients
    turn into None (an object array). Strict JSON parsers reject the literals; a model that
    must serve those should replace non-finite values itself. Finite floats are written with
    the shortest text that round-trips (orjson's Ryu).
    """
    try:
        out = orjson.dumps(obj, default=_default, option=_DUMPS_OPTS)
    except orjson.JSONEncodeError as exc:
        raise CodecError(f"Cannot encode response as JSON: {exc}") from None
    if b"null" in out and _has_nonfinite(obj):
        return _dumps_nonfinite(obj)
    return out


# --------------------------------------------------------------------------- raw tensor bytes


def decode_bytes_elements(buffer: Any, count: int) -> np.ndarray:
    """Split V2 BYTES raw contents (each element: 4-byte little-endian length, then the bytes)
    into a 1-D object array of ``count`` bytes objects; the buffer must hold exactly that."""
    view = memoryview(buffer).cast("B")
    out = np.empty(count, dtype=object)
    pos, end = 0, len(view)
    for i in range(count):
        if end - pos < 4:
            raise CodecError(f"BYTES tensor data is truncated: element {i} has no length prefix")
        size = int.from_bytes(view[pos : pos + 4], "little")
        pos += 4
        if end - pos < size:
            raise CodecError(f"BYTES tensor data is truncated: element {i} needs {size} bytes")
        out[i] = bytes(view[pos : pos + size])
        pos += size
    if pos != end:
        raise CodecError(f"BYTES tensor data has {end - pos} bytes after its {count} elements")
    return out


def encode_bytes_elements(array: Any) -> bytes:
    """V2 BYTES raw contents of an array of bytes/str (row-major), each with its length prefix."""
    parts = []
    for value in np.asarray(array, dtype=object).reshape(-1).tolist():
        if isinstance(value, str):
            value = value.encode("utf-8")
        elif not isinstance(value, (bytes, bytearray)):
            raise CodecError(f"BYTES tensor elements must be bytes or str, got {type(value).__name__}")
        if len(value) > 0xFFFFFFFF:
            raise CodecError("A BYTES element is larger than 4 GiB")
        parts.append(len(value).to_bytes(4, "little"))
        parts.append(bytes(value))
    return b"".join(parts)


def decode_raw(buffer: Any, datatype: str, shape: Any) -> np.ndarray:
    """An array onto V2 raw tensor bytes (binary extension chunk or raw_input_contents entry).

    Numeric and BOOL tensors are read-only views sharing the buffer's memory (no copy);
    BYTES gives an object array of bytes. Size mismatches are CodecErrors.
    """
    dims = check_shape(shape)
    dtype = dtype_for(datatype)
    count = element_count(dims)
    if datatype == "BYTES":
        return decode_bytes_elements(buffer, count).reshape(dims)
    size = memoryview(buffer).nbytes
    if size != count * dtype.itemsize:
        raise CodecError(f"{datatype} tensor of shape {list(dims)} needs {count * dtype.itemsize} bytes, got {size}")
    arr = np.frombuffer(buffer, dtype=dtype, count=count)
    if datatype == "BOOL" and count and int(arr.view(np.uint8).max()) > 1:
        raise CodecError("BOOL tensor bytes must be 0 or 1")
    return arr.reshape(dims)


def encode_raw(array: Any, datatype: str | None = None) -> bytes | memoryview:
    """Raw V2 bytes of an array: little-endian row-major (a view when the array already is),
    BYTES elements length-prefixed. ``datatype`` defaults to the array's own."""
    arr = np.asarray(array)
    if datatype is None:
        datatype = datatype_for(arr.dtype)
    if datatype == "BYTES":
        return encode_bytes_elements(arr)
    arr = np.ascontiguousarray(arr, dtype=dtype_for(datatype))
    if arr.size == 0:
        return b""
    return memoryview(arr.data).cast("B")


# --------------------------------------------------------------------------- protobuf wire


class _Fallback(Exception):
    """The wire reader met an encoding it leaves to the generated class."""


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise _Fallback
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            if shift == 63 and byte > 1:
                raise _Fallback
            return result, pos
        shift += 7


def _fields(buf: memoryview, pos: int, end: int):
    """Yield (field number, wire type, start of field, start of payload, end of field)."""
    while pos < end:
        start = pos
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0 or tag > 0xFFFFFFFF:
            raise _Fallback
        if wire == 0:
            _, pos = _varint(buf, pos, end)
            yield number, wire, start, pos, pos
            continue
        if wire == 1:
            payload, pos = pos, pos + 8
        elif wire == 5:
            payload, pos = pos, pos + 4
        elif wire == 2:
            size, payload = _varint(buf, pos, end)
            pos = payload + size
        else:  # groups and invalid wire types
            raise _Fallback
        if pos > end:
            raise _Fallback
        yield number, wire, start, payload, pos


def _oneof_member(buf: memoryview, pos: int, end: int, number: int, others: range) -> tuple[int, int, int] | None:
    """(start, payload, stop) of submessage field ``number`` of a oneof among the fields in
    buf[pos:end], or None if it is not there. Raises _Fallback when protobuf must decide: the
    field twice (merged) or not length-delimited, or another member of the oneof (a field
    number in ``others``: the last one wins) present."""
    member = None
    for n, wire, start, payload, stop in _fields(buf, pos, end):
        if n == number:
            if member is not None or wire != 2:
                raise _Fallback
            member = (start, payload, stop)
        elif n in others:
            raise _Fallback
    return member


def _put_varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """One protobuf field of wire type 2 (bytes, string or submessage): tag varint, length
    varint, ``payload`` (copied once). E.g. ``length_delimited(2, response)`` is a
    ModelStreamInferResponse whose infer_response is the serialised ``response``."""
    head = bytearray()
    _put_varint(head, field_number << 3 | 2)
    _put_varint(head, len(payload))
    return bytes(head) + payload


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _split_seldon(view: memoryview) -> tuple[bytes | None, int, int, list[int]]:
    """Find data.tensor in SeldonMessage bytes.

    Returns (bytes of everything else with the tensor's shape kept, values offset, values
    length, shape), or (None, ...) when the message has no tensor. Raises _Fallback for any
    layout the generated class must decide (duplicates, oneof clashes, unpacked fields).
    """
    # SeldonMessage.data (3) of oneof data_oneof {data, binData, strData, jsonData, customData (7)}
    data = _oneof_member(view, 0, len(view), 3, range(4, 8))
    if data is None:
        return None, 0, 0, []
    # DefaultData.tensor (2) of oneof data_oneof {tensor, ndarray, tftensor (4)}
    tensor = _oneof_member(view, data[1], data[2], 2, range(3, 5))
    if tensor is None:
        return None, 0, 0, []
    shape: list[int] = []
    values = None
    for number, wire, _start, payload, stop in _fields(view, tensor[1], tensor[2]):
        if number == 1:
            if wire != 2:
                raise _Fallback
            pos = payload
            while pos < stop:
                dim, pos = _varint(view, pos, stop)
                shape.append(_int32(dim))
        elif number == 2:
            if values is not None or wire != 2 or (stop - payload) % 8:
                raise _Fallback
            values = (payload, stop - payload)
    packed_shape = bytearray()
    for dim in shape:
        _put_varint(packed_shape, dim & 0xFFFFFFFFFFFFFFFF)
    tensor_inner = bytearray()
    if shape:
        tensor_inner.append(0x0A)
        _put_varint(tensor_inner, len(packed_shape))
        tensor_inner += packed_shape
    data_inner = bytearray(view[data[1] : tensor[0]])
    data_inner += view[tensor[2] : data[2]]
    data_inner.append(0x12)
    _put_varint(data_inner, len(tensor_inner))
    data_inner += tensor_inner
    rest = bytearray(view[: data[0]])
    rest += view[data[2] :]
    rest.append(0x1A)
    _put_varint(rest, len(data_inner))
    rest += data_inner
    offset, size = values if values is not None else (0, 0)
    return bytes(rest), offset, size, shape


def _parse(cls: Any, data: Any) -> Any:
    try:
        return cls.FromString(data)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError, or RuntimeWarning-free ValueErrors
        raise CodecError(f"Invalid {cls.DESCRIPTOR.name} protobuf: {exc}") from None


def _seldon_by_library(body: Any) -> tuple[Any, np.ndarray | None]:
    msg = _parse(prediction_pb2.SeldonMessage, bytes(body))
    if msg.WhichOneof("data_oneof") == "data" and msg.data.WhichOneof("data_oneof") == "tensor":
        values = np.array(msg.data.tensor.values, dtype=np.float64)
        msg.data.tensor.ClearField("values")
        return msg, values
    return msg, None


def decode_seldon_message(body: Any) -> tuple[Any, np.ndarray | None]:
    """Parse ``SeldonMessage`` bytes.

    Returns ``(message, values)``. When the message carries ``data.tensor``, ``values`` is
    its float64 values (flat, not yet reshaped) as a read-only view onto ``body`` — no copy
    when the values are one packed field, as every protobuf library writes them — and
    ``message.data.tensor`` keeps its shape but no values. Otherwise ``values`` is None and
    ``message`` is the whole message.
    """
    view = memoryview(body).cast("B")
    try:
        rest, offset, size, _shape = _split_seldon(view)
    except _Fallback:
        return _seldon_by_library(view)
    if rest is None:
        return _parse(prediction_pb2.SeldonMessage, bytes(view)), None
    msg = _parse(prediction_pb2.SeldonMessage, rest)
    return msg, np.frombuffer(view, dtype=_F8, count=size // 8, offset=offset)


def _tensor_values(tensor: Any) -> tuple[np.ndarray, tuple[int, ...]]:
    arr = np.asarray(tensor)
    if arr.dtype.kind not in "biuf":
        raise CodecError(f"A Seldon tensor must be numeric, got dtype {arr.dtype}")
    for dim in arr.shape:
        if dim > 0x7FFFFFFF:
            raise CodecError("A Seldon tensor dimension does not fit in int32")
    return np.ascontiguousarray(arr, dtype=_F8).reshape(-1), arr.shape


def _put_len_field(out: bytearray, tag: int, payload: Any) -> None:
    out.append(tag)
    _put_varint(out, memoryview(payload).nbytes)
    out += payload


def encode_names(names: Any) -> bytes:
    """``DefaultData.names`` (field 1, repeated string) as wire bytes, for ``names_block``."""
    out = bytearray()
    for name in names:
        _put_len_field(out, 0x0A, name.encode("utf-8"))
    return bytes(out)


def encode_seldon_message(message: Any, tensor: Any = None, names_block: bytes | None = None) -> bytes:
    """Serialise a ``SeldonMessage``; with ``tensor``, its ``data.tensor`` is written from
    the array (shape and float64 values, packed straight from the array's buffer) in place
    of whatever the message's own data holds (its ``data.names`` are kept, or replaced by
    ``names_block``, names already encoded by ``encode_names`` — Seldon's default names of a
    wide tensor are thousands of strings, worth encoding once). The bytes equal what the
    generated class writes for the same content."""
    if tensor is None:
        return message.SerializeToString()
    values, shape = _tensor_values(tensor)
    head = bytearray()
    if message.HasField("status"):
        _put_len_field(head, 0x0A, message.status.SerializeToString())
    if message.HasField("meta"):
        _put_len_field(head, 0x12, message.meta.SerializeToString())
    names = encode_names(message.data.names) if names_block is None else names_block
    shape_field = bytearray()
    if shape:
        packed = bytearray()
        for dim in shape:
            _put_varint(packed, dim)
        _put_len_field(shape_field, 0x0A, packed)
    payload = memoryview(values.data).cast("B")
    values_head = _field_head(0x12, payload.nbytes) if payload.nbytes else b""
    tensor_size = len(shape_field) + len(values_head) + payload.nbytes
    tensor_head = _field_head(0x12, tensor_size)
    data_head = _field_head(0x1A, len(names) + len(tensor_head) + tensor_size)
    # the lengths are known up front: the values are copied once, straight into the result
    return b"".join((head, data_head, names, tensor_head, shape_field, values_head, payload))


def _field_head(tag: int, size: int) -> bytes:
    """The tag byte and length varint of a length-delimited field of ``size`` bytes."""
    out = bytearray((tag,))
    _put_varint(out, size)
    return bytes(out)


def _split_repeated_bytes(view: memoryview, field: int) -> tuple[bytes, list[tuple[int, int]]]:
    """Split off every occurrence of one ``repeated bytes`` field: (the other fields' bytes,
    [(offset, end) of each occurrence's payload])."""
    rest = bytearray()
    found: list[tuple[int, int]] = []
    kept = 0
    for number, wire, start, payload, stop in _fields(view, 0, len(view)):
        if number == field:
            if wire != 2:
                raise _Fallback
            rest += view[kept:start]
            kept = stop
            found.append((payload, stop))
    rest += view[kept:]
    return bytes(rest), found


def decode_infer_request(body: Any) -> tuple[Any, list[memoryview]]:
    """Parse V2 ``ModelInferRequest`` bytes: ``(message without raw_input_contents, [one
    memoryview per raw_input_contents entry])``. The views point into ``body`` (no copy);
    ``decode_raw(view, datatype, shape)`` turns one into an array."""
    view = memoryview(body).cast("B")
    try:
        rest, found = _split_repeated_bytes(view, 7)
    except _Fallback:
        msg = _parse(grpc_service_pb2.ModelInferRequest, bytes(view))
        raws = [memoryview(raw) for raw in msg.raw_input_contents]
        msg.ClearField("raw_input_contents")
        return msg, raws
    msg = _parse(grpc_service_pb2.ModelInferRequest, rest)
    return msg, [view[a:b] for a, b in found]


def _append_repeated_bytes(head: bytes, tag: int, raws: Sequence[Any]) -> bytes:
    out = bytearray(head)
    for raw in raws:
        _put_len_field(out, tag, memoryview(raw).cast("B"))
    return bytes(out)


def encode_infer_response(message: Any, raw_outputs: Sequence[Any]) -> bytes:
    """Serialise a V2 ``ModelInferResponse`` with ``raw_output_contents`` appended from the
    given buffers (e.g. ``encode_raw(array)``), copied once, straight into the result."""
    return _append_repeated_bytes(message.SerializeToString(), 0x32, raw_outputs)


def encode_infer_request(message: Any, raw_inputs: Sequence[Any]) -> bytes:
    """Serialise a V2 ``ModelInferRequest`` with ``raw_input_contents`` appended (for clients
    and tests; mirrors ``encode_infer_response``)."""
    return _append_repeated_bytes(message.SerializeToString(), 0x3A, raw_inputs)

