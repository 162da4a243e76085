"""Small ONNX models built in the tests with onnx.helper, each with a numpy reference.

Nothing is downloaded: the weights come from a seeded generator, the files go to tmp_path.
IR version 9 / opset 17 keep them loadable by every onnxruntime the `onnx` extra allows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_VERSION = 9
OPSET = 17


def _save(graph: onnx.GraphProto, path: Path, check: bool = True, **metadata: str) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="fastseldon-tests")
    model.ir_version = IR_VERSION
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    if check:  # the checker insists on declared shapes; some tests want them undeclared
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


class Mlp:
    """x [batch, n_in] float32 -> Relu(x W1 + b1) W2 + b2 -> Softmax -> probs [batch, n_out]."""

    def __init__(self, n_in: int = 4, hidden: int = 16, n_out: int = 3, seed: int = 0, batch: int | str = "batch"):
        rng = np.random.default_rng(seed)
        self.n_in, self.n_out = n_in, n_out
        self.w1 = rng.normal(size=(n_in, hidden)).astype(np.float32)
        self.b1 = rng.normal(size=(hidden,)).astype(np.float32)
        self.w2 = rng.normal(size=(hidden, n_out)).astype(np.float32)
        self.b2 = rng.normal(size=(n_out,)).astype(np.float32)
        self.batch = batch

    def save(self, path: Path) -> Path:
        inits = [
            numpy_helper.from_array(self.w1, "w1"),
            numpy_helper.from_array(self.b1, "b1"),
            numpy_helper.from_array(self.w2, "w2"),
            numpy_helper.from_array(self.b2, "b2"),
        ]
        nodes = [
            helper.make_node("MatMul", ["x", "w1"], ["h0"]),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
            helper.make_node("Relu", ["h1"], ["h2"]),
            helper.make_node("MatMul", ["h2", "w2"], ["o0"]),
            helper.make_node("Add", ["o0", "b2"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ]
        graph = helper.make_graph(
            nodes,
            "mlp",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [self.batch, self.n_in])],
            [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [self.batch, self.n_out])],
            initializer=inits,
        )
        return _save(graph, path, purpose="test-mlp")

    def reference(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        h = np.maximum(x @ self.w1 + self.b1, 0.0)
        logits = h @ self.w2 + self.b2
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


class TwoInput:
    """a [batch, 3] float32 and b [batch, 3] int64 -> y = a * b (float32), total = sum(y, axis 1)."""

    def save(self, path: Path) -> Path:
        nodes = [
            helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["a", "bf"], ["y"]),
            helper.make_node("ReduceSum", ["y", "axes"], ["total"], keepdims=0),
        ]
        graph = helper.make_graph(
            nodes,
            "two_input",
            [
                helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
                helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", 3]),
            ],
            [
                helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3]),
                helper.make_tensor_value_info("total", TensorProto.FLOAT, ["batch"]),
            ],
            initializer=[numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
        )
        return _save(graph, path)

    @staticmethod
    def reference(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
        y = np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64)
        return {"y": y, "total": y.sum(axis=1)}


def save_string_identity(path: Path) -> Path:
    """s [n] string -> same strings: exercises the BYTES/string input path."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["out"])],
        "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["n"])],
        [helper.make_tensor_value_info("out", TensorProto.STRING, ["n"])],
    )
    return _save(graph, path)


def save_bool_not(path: Path) -> Path:
    """flag [n] bool -> Not(flag): exercises the BOOL cast rules."""
    graph = helper.make_graph(
        [helper.make_node("Not", ["flag"], ["out"])],
        "bools",
        [helper.make_tensor_value_info("flag", TensorProto.BOOL, ["n"])],
        [helper.make_tensor_value_info("out", TensorProto.BOOL, ["n"])],
    )
    return _save(graph, path)
