"""Generated protobuf and gRPC modules (see proto/generate.py; do not edit them by hand), and ``parse``."""
from __future__ import annotations

from typing import Any, TypeVar

from fastseldon.errors import CodecError

M = TypeVar("M")


def parse(cls: type[M], body: Any) -> M:
    """Bytes -> a message of ``cls``; undecodable bytes are the client's fault (400 / INVALID_ARGUMENT)."""
    try:
        return cls.FromString(bytes(body) if isinstance(body, memoryview) else body)  # type: ignore[attr-defined]
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise CodecError(f"Invalid protobuf {cls.DESCRIPTOR.name}: {exc}") from None  # type: ignore[attr-defined]
