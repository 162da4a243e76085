"""Fuzzing the codec: over 100 000 random and mutated inputs, bounded in time.

Valid Seldon/V2 messages (JSON and protobuf) are generated from a seeded RNG, then mutated
(bytes flipped, inserted, deleted, truncated, spliced). Each input goes through every
available implementation; each must either give exactly the reference's result or raise
CodecError (never another exception, never a crash), and protobuf decodes must agree with
the protobuf library. The seed is fixed so a failure reproduces; FASTSELDON_FUZZ_SEED
picks another.
"""
from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

from fastseldon.codec import reference
from fastseldon.errors import CodecError
from fastseldon.proto import grpc_service_pb2 as v2pb
from fastseldon.proto import prediction_pb2 as pb
from support.codec_cases import ERROR, IMPLS, canon, outcome, seldon_view

SEED = int(os.environ.get("FASTSELDON_FUZZ_SEED", "20240601"))
ROUNDS = {"seldon_proto": 30_000, "v2_proto": 15_000, "seldon_json": 30_000, "v2_json": 20_000, "bytes": 10_000}


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif op == 2:
            del buf[pos : pos + rng.randint(1, 8)]
        elif op == 3:
            del buf[pos:]
        elif op == 4 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        else:
            a = rng.randrange(len(buf) + 1)
            buf[pos:pos] = buf[a : a + rng.randint(1, 16)]
    return bytes(buf)


def _floats(rng: random.Random, n: int) -> list[float]:
    pool = [0.0, -0.0, 5e-324, 1e308, -1e-308, float("inf"), float("nan"), 0.1, 1.0, -2.5]
    return [rng.choice(pool) if rng.random() < 0.2 else rng.uniform(-1e6, 1e6) for _ in range(n)]


def _seldon_proto(rng: random.Random) -> bytes:
    msg = pb.SeldonMessage()
    if rng.random() < 0.5:
        msg.meta.puid = "p" * rng.randint(0, 3)
        if rng.random() < 0.3:
            msg.meta.tags["t"].string_value = "v"
    kind = rng.random()
    if kind < 0.8:
        n = rng.randint(0, 12)
        msg.data.names.extend(f"n{i}" for i in range(rng.randint(0, 2)))
        msg.data.tensor.SetInParent()
        msg.data.tensor.shape.extend([1, n] if rng.random() < 0.8 else [rng.randint(0, 5)])
        msg.data.tensor.values.extend(_floats(rng, n))
    elif kind < 0.9:
        msg.data.ndarray.values.add().number_value = 1.0
    else:
        msg.strData = "s"
    return msg.SerializeToString()


def _v2_proto(rng: random.Random) -> bytes:
    req = v2pb.ModelInferRequest(model_name="m", id=str(rng.randrange(100)))
    for i in range(rng.randint(0, 3)):
        req.inputs.add(name=f"x{i}", datatype="FP32", shape=[rng.randint(0, 4)] if rng.random() < 0.95 else [0, 2**62])
        req.raw_input_contents.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 16))))
    if rng.random() < 0.3:
        req.parameters["p"].bool_param = True
    return req.SerializeToString()


def _library(cls, body: bytes, field: str | None):
    try:
        msg = cls.FromString(body)
    except Exception:  # noqa: BLE001 - whatever protobuf raises is "not a message"
        return ERROR
    extra = None
    if field == "tensor":
        if msg.WhichOneof("data_oneof") == "data" and msg.data.WhichOneof("data_oneof") == "tensor":
            extra = canon(np.array(msg.data.tensor.values, dtype=np.float64))
            msg.data.tensor.ClearField("values")
    else:
        extra = tuple(bytes(r) for r in msg.raw_input_contents)
        msg.ClearField("raw_input_contents")
    msg.DiscardUnknownFields()
    return msg.SerializeToString(deterministic=True), extra


def _ours(fn, body: bytes, field: str):
    try:
        msg, extra = fn(body)
    except CodecError:
        return ERROR
    msg.DiscardUnknownFields()
    if field == "tensor":
        extra = canon(extra) if extra is not None else None
    else:
        extra = tuple(bytes(r) for r in extra)
    return msg.SerializeToString(deterministic=True), extra


def _inputs(rng: random.Random, make, count: int):
    """``count`` inputs: a quarter valid, the rest mutations of valid ones."""
    for i in range(count):
        body = make(rng)
        yield body if i % 4 == 0 else _mutate(rng, body)


@pytest.mark.parametrize("name,cls,field,make", [
    ("seldon_proto", pb.SeldonMessage, "tensor", _seldon_proto),
    ("v2_proto", v2pb.ModelInferRequest, "raw", _v2_proto),
])
def test_fuzz_protobuf(name, cls, field, make):
    rng = random.Random(f"{SEED}-{name}")
    decoders = [impl.decode_seldon_message if field == "tensor" else impl.decode_infer_request for impl in IMPLS]
    errors = 0
    for body in _inputs(rng, make, ROUNDS[name]):
        expected = _library(cls, body, field)
        for decode in decoders:
            got = _ours(decode, body, field)
            assert got == expected, (decode.__module__, body)
        errors += expected is ERROR
    assert 0 < errors < ROUNDS[name]  # both outcomes were exercised


def _seldon_json(rng: random.Random) -> bytes:
    rows, cols = rng.randint(0, 3), rng.randint(0, 4)
    pick = rng.random()
    if pick < 0.6:
        nd = [[rng.choice([rng.randint(-9, 9), rng.uniform(-1, 1), 1e300, -0.0]) for _ in range(cols)] for _ in range(rows)]
    elif pick < 0.8:
        nd = [[rng.choice([1, "a", None, True, 2.5, [1]]) for _ in range(cols)] for _ in range(rows)]
    else:
        nd = [[1.5] * rng.randint(0, 3) for _ in range(rows)]
    doc: dict = {"data": {"names": ["a"], "ndarray": nd}, "meta": {"puid": "x"}}
    if rng.random() < 0.3:
        doc = {"data": {"tensor": {"shape": [len(nd)], "values": [rng.uniform(-5, 5) for _ in nd]}}}
    if rng.random() < 0.2:
        doc = {"seldonMessages": [doc, {"data": {"ndarray": [[1, 2]]}}]}
    return json.dumps(doc).encode()


def _v2_json(rng: random.Random) -> bytes:
    datatype = rng.choice(["FP32", "FP64", "INT8", "INT64", "UINT8", "BOOL", "BYTES", "FP16"])
    n = rng.randint(0, 6)
    if datatype == "BOOL":
        data: list = [rng.random() < 0.5 for _ in range(n)]
    elif datatype == "BYTES":
        data = [rng.choice(["a", "bc", "é", ""]) for _ in range(n)]
    elif datatype.startswith(("INT", "UINT")):
        data = [rng.randint(-200, 300) for _ in range(n)]
    else:
        data = [rng.choice([rng.uniform(-1e5, 1e5), 7, 1e39, 70000.0]) for _ in range(n)]
    shape = [n] if rng.random() < 0.8 else [1, n]
    if rng.random() < 0.05:  # huge shapes: element counts that overflow 64 bits, dimensions numpy can't hold
        shape = [rng.choice([0, 1, 2**31, 2**32, 2**62, 2**63 - 1]) for _ in range(rng.randint(1, 4))]
    return json.dumps({"id": "r", "inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": data}]}).encode()


def test_fuzz_seldon_json():
    rng = random.Random(f"{SEED}-seldon_json")
    errors = 0
    for body in _inputs(rng, _seldon_json, ROUNDS["seldon_json"]):
        expected = outcome(reference.parse_seldon_json, body)
        errors += expected is ERROR
        expected = ERROR if expected is ERROR else seldon_view(expected, reference.to_array)
        for impl in IMPLS[1:]:
            got = outcome(impl.parse_seldon_json, body)
            assert (ERROR if got is ERROR else seldon_view(got, impl.to_array)) == expected, body
    assert 0 < errors < ROUNDS["seldon_json"]


def test_fuzz_v2_json():
    rng = random.Random(f"{SEED}-v2_json")
    errors = 0
    for body in _inputs(rng, _v2_json, ROUNDS["v2_json"]):
        expected = canon(outcome(reference.parse_v2_json, body))
        errors += expected is ERROR
        for impl in IMPLS[1:]:
            assert canon(outcome(impl.parse_v2_json, body)) == expected, body
    assert 0 < errors < ROUNDS["v2_json"]


def test_fuzz_bytes_elements():
    rng = random.Random(f"{SEED}-bytes")
    errors = 0
    for _ in range(ROUNDS["bytes"]):
        items = [bytes(rng.randrange(256) for _ in range(rng.randint(0, 5))) for _ in range(rng.randint(0, 4))]
        raw = b"".join(len(b).to_bytes(4, "little") + b for b in items)
        if rng.random() < 0.75:
            raw = _mutate(rng, raw)
        count = len(items) + rng.choice([0, 0, 0, -1, 1])
        if count < 0:
            count = 0
        expected = canon(outcome(reference.decode_raw, raw, "BYTES", [count]))
        errors += expected is ERROR
        for impl in IMPLS[1:]:
            assert canon(outcome(impl.decode_raw, raw, "BYTES", [count])) == expected, raw
    assert 0 < errors < ROUNDS["bytes"]


def test_fuzz_round_count():
    assert sum(ROUNDS.values()) >= 100_000
