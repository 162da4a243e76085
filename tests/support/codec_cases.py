"""Shared pieces of the codec tests (no tests of its own): implementations, exact comparison.

Every codec test runs against each available implementation (the reference always, the
native one when built) and compares results bit for bit: arrays by dtype, shape and raw
bytes (so -0.0, NaN payloads and subnormals count), floats by their hex form.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from fastseldon.codec import reference
from fastseldon.errors import CodecError

try:
    from fastseldon.codec import native
except ImportError:  # extension not built: FASTSELDON_REQUIRE_EXT makes that a failure
    native = None

IMPLS = [reference] + ([native] if native is not None and os.environ.get("FASTSELDON_NO_EXT") != "1" else [])
IMPL_IDS = [impl.__name__.rsplit(".", 1)[-1] for impl in IMPLS]
ERROR = ("CodecError",)


def canon(value: Any) -> Any:
    """A hashable, exact rendering of a decoded value (arrays by bytes, floats by hex)."""
    if value is ERROR:
        return ERROR
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return ("object-array", value.shape, tuple(canon(v) for v in value.reshape(-1).tolist()))
        return ("array", value.dtype.str, value.shape, np.ascontiguousarray(value).tobytes())
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, dict):
        return ("dict", tuple((k, canon(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(canon(v) for v in value))
    return (type(value).__name__, value)


def outcome(fn, *args) -> Any:
    """fn(*args), or ERROR when it raises CodecError (any other exception propagates)."""
    try:
        return fn(*args)
    except CodecError:
        return ERROR


def seldon_view(doc: Any, to_array) -> Any:
    """A Seldon document with its tensors (data.ndarray, data.tensor.values of the message
    and of message lists) replaced by ``to_array`` of them, or ERROR where that fails; the
    form in which implementations must agree whether they returned arrays or lists."""

    def arr(value):
        return canon(outcome(to_array, value)) if isinstance(value, (list, np.ndarray)) else canon(value)

    def data(d):
        if not isinstance(d, dict):
            return canon(d)
        out = []
        for k, v in d.items():
            if k == "ndarray":
                out.append((k, arr(v)))
            elif k == "tensor" and isinstance(v, dict):
                out.append((k, tuple((tk, arr(tv) if tk == "values" else canon(tv)) for tk, tv in v.items())))
            else:
                out.append((k, canon(v)))
        return ("data", tuple(out))

    def message(m, top):
        if not isinstance(m, dict):
            return canon(m)
        out = []
        for k, v in m.items():
            if k == "data":
                out.append((k, data(v)))
            elif top and k == "seldonMessages" and isinstance(v, list):
                out.append((k, tuple(message(x, False) for x in v)))
            else:
                out.append((k, canon(v)))
        return ("message", tuple(out))

    if isinstance(doc, list):
        return ("list", tuple(message(x, False) for x in doc))
    return message(doc, True)
