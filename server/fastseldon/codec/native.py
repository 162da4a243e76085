"""The native codec: the reference codec's API, with the element-wise work done by the
compiled modules in fastseldon._fast (built from ../../_fast/*.pyx).

Each function gives exactly the reference's result. The compiled parts decide the common
layouts on their own and answer None for anything else, which is then handed to the
reference (codec/reference.py), so rare inputs (NaN literals, big integers, unpacked
protobuf fields...) cost time but never change results. Importing this module fails with
ImportError when the extension is not built; codec/__init__.py then uses the reference.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from fastseldon._fast import jsontensors, wire
from fastseldon.codec import reference
from fastseldon.codec.datatypes import check_shape, element_count
from fastseldon.errors import CodecError
from fastseldon.proto import grpc_service_pb2, prediction_pb2

to_array = reference.to_array
v2_json_tensor = reference.v2_json_tensor

_F8 = np.dtype("<f8")
_DUMPS_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
_SeldonMessage = prediction_pb2.SeldonMessage
_ModelInferRequest = grpc_service_pb2.ModelInferRequest


def loads(body: bytes | bytearray | memoryview | str) -> Any:
    """See reference.loads."""
    doc = jsontensors.loads(body)
    if doc is None:
        return reference.loads(body)
    return doc


def parse_seldon_json(body: bytes | bytearray | memoryview | str) -> Any:
    """See reference.parse_seldon_json; numeric rectangular ndarray/tensor.values come back
    as int64/float64 arrays decoded straight from the body."""
    doc = jsontensors.parse_seldon_json(body)
    if doc is None:
        return reference.parse_seldon_json(body)
    return doc


def parse_v2_json(body: bytes | bytearray | memoryview | str) -> Any:
    """See reference.parse_v2_json."""
    doc = jsontensors.parse_v2_json(body)
    if doc is None:
        return reference.parse_v2_json(body)
    return doc


# --------------------------------------------------------------------------- JSON encode


def _json_ready(arr: np.ndarray) -> Any:
    """An array orjson writes exactly as reference._default's tolist() would be written."""
    kind = arr.dtype.kind
    if arr.ndim == 0 or kind not in "biuf":
        return arr.tolist()
    if kind == "f" and arr.dtype.itemsize != 8:
        return arr.astype(np.float64)  # widen exactly, as tolist() does
    if not arr.dtype.isnative or not arr.flags.c_contiguous:
        return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
    return arr


_PLAIN = frozenset((float, int, str, bool, type(None)))
_ShortestFloats = reference.ShortestFloats
_CONTAINERS = (dict, list, tuple, np.ndarray, np.generic, _ShortestFloats)


def _plain_nonfinite(items: list | tuple) -> bool:
    """Whether a list of Python scalars holds NaN/Inf (sum() first: one C loop)."""
    try:
        if math.isfinite(sum(items)):
            return False
    except (TypeError, OverflowError):
        pass
    return any(type(v) is float and not math.isfinite(v) for v in items)


def _prepare(obj: Any) -> tuple[Any, bool]:
    """(object orjson writes as reference.dumps would, whether it holds NaN/Inf anywhere)."""
    # dicts first: every reply's meta is one, and its requestPath and tags
    if isinstance(obj, dict):
        types = set(map(type, obj.values()))
        if _PLAIN.issuperset(types):  # e.g. requestPath or tags of strings: one C pass
            return obj, float in types and _plain_nonfinite(list(obj.values()))
        out = None
        nonfinite = False
        for key, value in obj.items():
            if isinstance(value, _CONTAINERS) or type(value) is float:
                new, bad = _prepare(value)
                nonfinite |= bad
                if new is not value:
                    if out is None:
                        out = dict(obj)
                    out[key] = new
        return (obj if out is None else out), nonfinite
    if isinstance(obj, np.ndarray):
        ready = _json_ready(obj)
        if isinstance(ready, np.ndarray):
            return ready, not jsontensors.all_finite(ready)
        return _prepare(ready)
    if isinstance(obj, np.generic):
        return _prepare(obj.item())
    if isinstance(obj, _ShortestFloats):  # float32 values, written by orjson's float32 writer
        return obj.values, not jsontensors.all_finite(obj.values)
    if isinstance(obj, float):
        return obj, not math.isfinite(obj)
    if isinstance(obj, (list, tuple)):
        types = set(map(type, obj))
        if _PLAIN.issuperset(types):  # e.g. 10 000 column names: one C pass, no per-item Python
            return obj, float in types and _plain_nonfinite(obj)
        items = list(obj)
        changed = nonfinite = False
        for i, value in enumerate(items):
            new, bad = _prepare(value)
            nonfinite |= bad
            if new is not value:
                items[i] = new
                changed = True
        return (items if changed else obj), nonfinite
    return obj, False


def dumps(obj: Any) -> bytes:
    """See reference.dumps (same bytes); numpy arrays are written by orjson straight from
    their buffers, and NaN/Inf are found while preparing, not by scanning the output."""
    prepared, nonfinite = _prepare(obj)
    if nonfinite:
        return reference._dumps_nonfinite(obj)
    try:
        return orjson.dumps(prepared, default=reference._default, option=_DUMPS_OPTS)
    except orjson.JSONEncodeError as exc:
        raise CodecError(f"Cannot encode response as JSON: {exc}") from None


_F4 = np.dtype("=f4")


def v2_json_data(array: Any) -> Any:
    """See reference.v2_json_data; numeric data stays an array for orjson; FP16's decimals
    come from jsontensors.half_shortest_float32 (a table built once)."""
    arr = np.asarray(array)
    kind = arr.dtype.kind
    if kind in "OSU":
        return reference.v2_json_data(arr)
    if kind == "f" and arr.dtype.itemsize == 4:
        return _ShortestFloats(np.ascontiguousarray(arr.reshape(-1), dtype=_F4))
    if kind == "f" and arr.dtype.itemsize == 2:
        return _ShortestFloats(jsontensors.half_shortest_float32(arr))
    return _json_ready(arr.reshape(-1))


# --------------------------------------------------------------------------- raw tensor bytes


def decode_bytes_elements(buffer: Any, count: int) -> np.ndarray:
    """See reference.decode_bytes_elements."""
    try:
        items = wire.decode_bytes_elements(buffer, count)
    except ValueError as exc:
        raise CodecError(str(exc)) from None
    out = np.empty(count, dtype=object)
    out[:] = items
    return out


def encode_bytes_elements(array: Any) -> bytes:
    """See reference.encode_bytes_elements."""
    items = np.asarray(array, dtype=object).reshape(-1).tolist()
    for i, value in enumerate(items):
        if type(value) is not bytes:
            if isinstance(value, str):
                items[i] = value.encode("utf-8")
            elif isinstance(value, (bytes, bytearray)):
                items[i] = bytes(value)
            else:
                raise CodecError(f"BYTES tensor elements must be bytes or str, got {type(value).__name__}")
        if len(items[i]) > 0xFFFFFFFF:
            raise CodecError("A BYTES element is larger than 4 GiB")
    return wire.encode_bytes_elements(items)


def decode_raw(buffer: Any, datatype: str, shape: Any) -> np.ndarray:
    """See reference.decode_raw."""
    if datatype == "BYTES":
        dims = check_shape(shape)
        return decode_bytes_elements(buffer, element_count(dims)).reshape(dims)
    return reference.decode_raw(buffer, datatype, shape)


def encode_raw(array: Any, datatype: str | None = None) -> bytes | memoryview:
    """See reference.encode_raw."""
    arr = np.asarray(array)
    if datatype == "BYTES" or (datatype is None and arr.dtype.kind in "OSU"):
        return encode_bytes_elements(arr)
    return reference.encode_raw(arr, datatype)


# --------------------------------------------------------------------------- protobuf


def decode_seldon_message(body: Any) -> tuple[Any, np.ndarray | None]:
    """See reference.decode_seldon_message."""
    split = wire.split_seldon(body)
    if split is None:
        return reference._seldon_by_library(body)
    rest, offset, size = split
    if rest is None:
        return reference._parse(_SeldonMessage, body if type(body) is bytes else bytes(body)), None
    msg = reference._parse(_SeldonMessage, rest)
    return msg, np.frombuffer(body, dtype=_F8, count=size >> 3, offset=offset)


def encode_seldon_message(message: Any, tensor: Any = None, names_block: bytes | None = None) -> bytes:
    """See reference.encode_seldon_message (same bytes)."""
    if tensor is None:
        return message.SerializeToString()
    if names_block is not None:  # pre-encoded names: only framing and one copy of the values left
        return reference.encode_seldon_message(message, tensor, names_block)
    values, shape = reference._tensor_values(tensor)
    status = message.status.SerializeToString() if message.HasField("status") else None
    meta = message.meta.SerializeToString() if message.HasField("meta") else None
    return wire.seldon_tensor_message(status, meta, list(message.data.names), tuple(shape), values)


def decode_infer_request(body: Any) -> tuple[Any, list[memoryview]]:
    """See reference.decode_infer_request."""
    split = wire.split_repeated_bytes(body, 7)
    if split is None:
        return reference.decode_infer_request(body)
    rest, found = split
    msg = reference._parse(_ModelInferRequest, rest)
    if not found:
        return msg, []
    view = memoryview(body).cast("B")
    return msg, [view[a:b] for a, b in found]


def encode_infer_response(message: Any, raw_outputs: Sequence[Any]) -> bytes:
    """See reference.encode_infer_response (same bytes)."""
    return wire.append_repeated_bytes(message.SerializeToString(), 0x32, list(raw_outputs))


def encode_infer_request(message: Any, raw_inputs: Sequence[Any]) -> bytes:
    """See reference.encode_infer_request (same bytes)."""
    return wire.append_repeated_bytes(message.SerializeToString(), 0x3A, list(raw_inputs))

