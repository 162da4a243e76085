"""Wire <-> numpy conversions, one API over two implementations.

``native`` (codec/native.py over the compiled fastseldon._fast modules) is used when the
extension is built; ``reference`` (codec/reference.py, pure Python + numpy) otherwise, or
always when the environment variable ``FASTSELDON_NO_EXT=1`` is set at import time. Both
give identical results; ``IMPLEMENTATION`` says which one is active.

JSON: ``parse_seldon_json``/``parse_v2_json`` decode request bodies with their tensors
(Seldon ndarray/tensor.values, V2 inputs[].data) as numpy arrays, ``loads`` parses any
other JSON, ``dumps`` writes responses (NaN/Inf as ``NaN``/``Infinity`` literals, as
Seldon's own server does: see ``reference.dumps``), ``to_array`` turns a decoded Seldon
list into an array, ``v2_json_tensor``/``v2_json_data`` convert one V2 tensor.
V2 binary: ``decode_raw``/``encode_raw`` (zero-copy views; BYTES length-prefixed).
Protobuf: ``decode_seldon_message``/``encode_seldon_message`` and
``decode_infer_request``/``encode_infer_response`` split tensor payloads off the message
bytes as numpy views (no copy) and write them straight from array buffers;
``length_delimited`` frames already serialised bytes as one field (tag, length, payload).

``__all__`` below is the codec's public API; the implementation modules keep none of their
own (nothing star-imports them).
"""
from __future__ import annotations

import os

from fastseldon.codec import reference as _reference
from fastseldon.codec.datatypes import DATATYPES, datatype_for, dtype_for
from fastseldon.errors import CodecError


def _select():
    """The active implementation module and its name."""
    if os.environ.get("FASTSELDON_NO_EXT") == "1":
        return _reference, "reference"
    try:
        from fastseldon.codec import native
    except ImportError:
        return _reference, "reference"
    return native, "native"


_impl, IMPLEMENTATION = _select()

loads = _impl.loads
json_fragment = _reference.json_fragment
encode_names = _reference.encode_names
length_delimited = _reference.length_delimited
dumps = _impl.dumps
parse_seldon_json = _impl.parse_seldon_json
to_array = _impl.to_array
parse_v2_json = _impl.parse_v2_json
v2_json_tensor = _impl.v2_json_tensor
v2_json_data = _impl.v2_json_data
decode_raw = _impl.decode_raw
encode_raw = _impl.encode_raw
decode_bytes_elements = _impl.decode_bytes_elements
encode_bytes_elements = _impl.encode_bytes_elements
decode_seldon_message = _impl.decode_seldon_message
encode_seldon_message = _impl.encode_seldon_message
decode_infer_request = _impl.decode_infer_request
encode_infer_response = _impl.encode_infer_response
encode_infer_request = _impl.encode_infer_request

__all__ = [
    "CodecError",
    "DATATYPES",
    "IMPLEMENTATION",
    "datatype_for",
    "decode_bytes_elements",
    "decode_infer_request",
    "decode_raw",
    "decode_seldon_message",
    "dtype_for",
    "dumps",
    "encode_bytes_elements",
    "encode_infer_request",
    "encode_infer_response",
    "encode_names",
    "encode_raw",
    "encode_seldon_message",
    "json_fragment",
    "length_delimited",
    "loads",
    "parse_seldon_json",
    "parse_v2_json",
    "to_array",
    "v2_json_data",
    "v2_json_tensor",
]
