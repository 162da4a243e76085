"""Regenerate server/fastseldon/proto/*_pb2*.py from the .proto files in this folder.

Run from anywhere: ``python proto/generate.py``. tests/unit/test_proto.py fails when the
committed files differ from what this script produces.

The generated modules are rewritten to register their descriptors in a private pool
(fastseldon.proto._pool): a user model that imports seldon_core or tensorflow loads
messages with the same full names into protobuf's default pool, and two definitions of
one name in one pool is a hard error.
"""
from __future__ import annotations

import pathlib
import re
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parent / "server" / "fastseldon" / "proto"
SOURCES = ["tensorflow/core/framework/tensor.proto", "prediction.proto", "grpc_service.proto"]
NO_SERVICES = {"tensor_pb2_grpc.py"}


def _rewrite(text: str) -> str:
    text = text.replace(
        "from google.protobuf import descriptor_pool as _descriptor_pool\n",
        "from fastseldon.proto._pool import POOL as _POOL\n",
    )
    text = text.replace("_descriptor_pool.Default()", "_POOL")
    text = re.sub(r"^from tensorflow\.core\.framework import", "from fastseldon.proto import", text, flags=re.M)
    text = re.sub(r"^import (\w+_pb2) as", r"from fastseldon.proto import \1 as", text, flags=re.M)
    return text


def generate() -> dict[str, str]:
    """Return {file name: content} of the generated modules."""
    from grpc_tools import protoc
    import grpc_tools

    include = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = [s for s in SOURCES if (HERE / s).exists()]
        args = ["protoc", f"-I{HERE}", f"-I{include}", f"--python_out={tmp}", f"--grpc_python_out={tmp}", *sources]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        for path in sorted(pathlib.Path(tmp).rglob("*.py")):
            if path.name in NO_SERVICES:
                continue
            files[path.name] = _rewrite(path.read_text())
    return files


def main() -> int:
    for name, content in generate().items():
        (OUT / name).write_text(content)
        print(f"wrote server/fastseldon/proto/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
