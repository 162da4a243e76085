"""Message classes built at import time from serialized FileDescriptorProtos (see proto/generate.py).

Only public protobuf API that every runtime from 3.20 to 6.x has: ``DescriptorPool.AddSerializedFile``,
``message_factory.GetMessageClass`` (``MessageFactory.GetPrototype`` before protobuf 4.22) and
``EnumTypeWrapper``. The classes behave like protoc's generated ones, nested types included.
"""
from __future__ import annotations

from typing import Any

from google.protobuf import message_factory
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from fastseldon.proto._pool import POOL

_get_class: Any = getattr(message_factory, "GetMessageClass", None)
if _get_class is None:  # protobuf < 4.22
    _get_class = message_factory.MessageFactory(POOL).GetPrototype


def add_file(serialized: bytes) -> Any:
    """Register one serialized FileDescriptorProto in the private pool; its FileDescriptor."""
    return POOL.AddSerializedFile(serialized)


def _with_nested(descriptor: Any) -> Any:
    cls = _get_class(descriptor)
    for nested in descriptor.nested_types:
        if not hasattr(cls, nested.name):  # protobuf's Python implementation leaves them off
            setattr(cls, nested.name, _with_nested(nested))
        else:
            _with_nested(nested)
    for enum in descriptor.enum_types:
        if not hasattr(cls, enum.name):
            setattr(cls, enum.name, EnumTypeWrapper(enum))
            for value in enum.values:
                setattr(cls, value.name, value.number)
    return cls


def message_class(file: Any, name: str) -> Any:
    """The class of top-level message ``name`` of ``file``."""
    return _with_nested(file.message_types_by_name[name])


def enum_type(file: Any, name: str) -> EnumTypeWrapper:
    """Top-level enum ``name`` of ``file``, as generated code exposes it (``Name``, ``Value``, ...)."""
    return EnumTypeWrapper(file.enum_types_by_name[name])
