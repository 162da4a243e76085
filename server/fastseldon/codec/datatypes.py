"""Open Inference Protocol (V2) tensor datatypes and their numpy equivalents.

One table, read by both codec implementations and by the V2 adapter, so a datatype name
means the same element type everywhere. Wire byte order is little-endian (V2 binary
extension and raw_*_contents); the dtypes here say so explicitly, so a view built on a
big-endian host still reads the right values.
"""
from __future__ import annotations

import numpy as np

from fastseldon.errors import CodecError

#: datatype name -> little-endian numpy dtype of one element (BYTES: object array of bytes)
_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

#: numpy kind+itemsize -> datatype name, for arrays a model returns
_NAMES: dict[tuple[str, int], str] = {
    (dt.kind, dt.itemsize): name for name, dt in _DTYPES.items() if name != "BYTES"
}

DATATYPES: tuple[str, ...] = tuple(_DTYPES)
INTEGER_DATATYPES: frozenset[str] = frozenset(n for n, d in _DTYPES.items() if d.kind in "iu")
FLOAT_DATATYPES: frozenset[str] = frozenset(("FP16", "FP32", "FP64"))


def dtype_for(datatype: str) -> np.dtype:
    """numpy dtype (little-endian) for a V2 datatype name; CodecError if unknown or unsupported."""
    try:
        return _DTYPES[datatype]
    except (KeyError, TypeError):
        if datatype == "BF16":
            raise CodecError("Datatype BF16 is not supported (numpy has no bfloat16)") from None
        raise CodecError(f"Unknown datatype {datatype!r}") from None


def datatype_for(dtype: np.dtype) -> str:
    """V2 datatype name for a numpy dtype; strings, bytes and objects map to BYTES."""
    dtype = np.dtype(dtype)
    if dtype.kind in "OSU":
        return "BYTES"
    try:
        return _NAMES[(dtype.kind, dtype.itemsize)]
    except KeyError:
        raise CodecError(f"No V2 datatype for numpy dtype {dtype}") from None


def check_shape(shape: object) -> tuple[int, ...]:
    """A request's declared shape as a tuple of non-negative ints, or CodecError."""
    if not isinstance(shape, (list, tuple)):
        raise CodecError(f"Tensor shape must be a list of integers, got {shape!r}")
    bound = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise CodecError(f"Tensor shape must be a list of non-negative integers, got {list(shape)!r}")
        bound *= max(dim, 1)  # numpy refuses an array whose dimensions (zeros as ones) overflow, empty or not
    if bound > MAX_SHAPE_PRODUCT:
        raise CodecError(f"Tensor shape {list(shape)} is too large")
    return tuple(shape)


# The largest product of a shape's dimensions (zeros counted as ones) numpy can hold at 8 bytes an element.
MAX_SHAPE_PRODUCT = (2**63 - 1) // 8


def element_count(shape: tuple[int, ...]) -> int:
    """Number of elements of a shape, with Python ints (no int64 overflow)."""
    count = 1
    for dim in shape:
        count *= dim
    return count

