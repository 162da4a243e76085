"""The in-memory forms every layer shares: numpy arrays plus names and meta.

Protocol adapters decode wire bytes into these and encode them back; the service, the
batcher and (later) the graph executor work on nothing else. So a unit's ``Reply`` can
become the next unit's ``Message`` with no serialization in between (``Reply.to_message``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Seldon payload kinds that carry a numeric tensor (the rest: jsonData, strData, binData, customData)
DATA_KINDS = ("ndarray", "tensor", "tftensor")


@functools.lru_cache(maxsize=256)
def default_names(columns: int) -> tuple[str, ...]:
    """Seldon's column names when the model gives none: ``t:0``, ``t:1``, ..."""
    return tuple(f"t:{i}" for i in range(columns))


def result_array(payload: Any) -> np.ndarray | None:
    """A hook's result as the array Seldon would reply with, or None for non-array payloads."""
    if isinstance(payload, np.ndarray):
        return payload
    if isinstance(payload, (list, tuple)):
        try:
            return np.array(payload)
        except ValueError:
            return np.array(payload, dtype=object)
    return None


def reply_names(arr: np.ndarray, class_names: list[str] | None) -> list[str] | tuple[str, ...]:
    """The ``names`` a reply carries: none for 0/1-D results, else class_names or the default."""
    if arr.ndim <= 1:
        return []
    if class_names is not None:
        return class_names
    return default_names(arr.shape[1])


# --------------------------------------------------------------------------- Seldon v1


@dataclass(slots=True)
class Message:
    """One decoded SeldonMessage: what the user's hooks get, plus what the reply must mirror."""

    kind: str  # ndarray | tensor | tftensor | jsonData | strData | binData | customData | raw
    payload: Any
    names: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    raw: Any = None  # the parsed request as *_raw hooks receive it (dict for REST, proto for gRPC)


@dataclass(slots=True)
class Reply:
    """A hook's result plus the response meta, before it is put on the wire."""

    payload: Any
    kind: str  # the request kind to mirror
    names: list[str] | None = None  # user class_names; None means Seldon's "t:<i>" default
    meta: dict[str, Any] = field(default_factory=dict)
    raw: bool = False  # a *_raw hook's return value, sent as-is
    status: int = 200

    def to_message(self) -> Message:
        """This reply as the next unit's request, as Seldon's executor would pass it on (``message_of``;
        the reply's meta is handed on: it is the reply's own).

        A *_raw hook's reply is wire-shaped (a dict or a proto): decode it with the protocol adapter instead.
        """
        if self.raw:
            raise ValueError("a *_raw hook's reply is wire-shaped; decode it with the protocol adapter")
        return message_of(self.payload, self.kind, self.names, self.meta)


def message_of(payload: Any, kind: str, names: list[str] | None, meta: dict[str, Any]) -> Message:
    """A unit's result as the next unit's request: a numeric result keeps its array (no copy) and
    the names the wire would carry; other payloads pass through as their Seldon kind."""
    arr = payload if type(payload) is np.ndarray else result_array(payload)
    if arr is not None:
        kind = kind if kind in DATA_KINDS and arr.dtype.kind in "iufc" else "ndarray"
        return Message(kind, arr, list(reply_names(arr, names)), meta)
    if isinstance(payload, dict):
        return Message("jsonData", payload, [], meta)
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return Message("binData", bytes(payload), [], meta)
    if isinstance(payload, str):
        return Message("strData", payload, [], meta)
    return Message("customData", payload, [], meta)


@dataclass(slots=True)
class Feedback:
    """A decoded seldon.protos.Feedback: the request, the response's routing, the reward and truth."""

    request: Message
    reward: float
    truth: Message | None = None
    routing: dict[str, int] = field(default_factory=dict)  # response.meta.routing
    raw: Any = None  # the Feedback proto, as send_feedback_raw receives it on REST and gRPC alike


# --------------------------------------------------------------------------- Open Inference Protocol (V2)


@dataclass(slots=True)
class Tensor:
    """One named tensor: the array plus its V2 datatype (BYTES tensors are object arrays of bytes)."""

    name: str
    datatype: str
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: follow the request's binary_data_output
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferRequest:
    """A decoded V2 inference request, whatever wire it came on."""

    model_name: str
    model_version: str
    id: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # without the binary extension's own
    binary_output: bool = False  # binary_data_output: outputs go binary unless one says otherwise
    typed_contents: bool = False  # gRPC request used InferTensorContents: answer in kind

    def as_dict(self) -> dict[str, Any]:
        """The request as ``predict_raw`` receives it: V2 JSON shape, ``data`` already numpy."""
        doc: dict[str, Any] = {
            "model_name": self.model_name,
            "inputs": [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.data.shape),
                 "parameters": dict(t.parameters), "data": t.data}
                for t in self.inputs
            ],
            "parameters": dict(self.parameters),
        }
        if self.model_version:
            doc["model_version"] = self.model_version
        if self.id is not None:
            doc["id"] = self.id
        if self.outputs is not None:
            doc["outputs"] = [{"name": o.name, "parameters": dict(o.parameters)} for o in self.outputs]
        return doc


@dataclass(slots=True)
class InferResult:
    """What the service hands back: named output tensors and optional response parameters."""

    outputs: list[Tensor]
    parameters: dict[str, Any] = field(default_factory=dict)
