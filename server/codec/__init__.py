"""Wire <-> numpy conversions, one API over two implementations.

PROVISIONAL (core issue): only the reference behaviour exists so far; the native codec
issue replaces this module's body with a switch between fastseldon._fast and
codec/reference.py, keeping these names and results.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from fastseldon.errors import CodecError

IMPLEMENTATION = "reference"

_DUMPS_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def loads(body: bytes | str) -> Any:
    """Parse a JSON document; raise CodecError on malformed input."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CodecError(f"Invalid JSON: {exc}") from None


def parse_seldon_json(body: bytes | str) -> Any:
    """Parse a Seldon JSON message. ``data.ndarray`` and ``data.tensor.values`` may come back
    as numpy arrays (equal in dtype and values to ``np.array`` of the JSON lists) or as lists."""
    return loads(body)


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (bytes, bytearray)):
        return obj.decode("utf-8", "replace")
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def dumps(obj: Any) -> bytes:
    """Serialise to compact JSON; numpy arrays straight from their buffers. NaN/Inf -> null."""
    try:
        return orjson.dumps(obj, default=_default, option=_DUMPS_OPTS)
    except orjson.JSONEncodeError as exc:
        raise CodecError(f"Cannot encode response as JSON: {exc}") from None


def to_array(value: Any) -> np.ndarray:
    """``np.array`` of a decoded JSON list (or the array itself); ragged input is a CodecError."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.array(value)
    except (ValueError, TypeError) as exc:
        raise CodecError(f"Cannot convert data to an array (ragged or mixed nesting?): {exc}") from None


__all__ = ["CodecError", "IMPLEMENTATION", "loads", "dumps", "parse_seldon_json", "to_array"]
