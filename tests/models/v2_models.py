"""User models for the V2 tests (served as ``v2_models.<Class>`` from this folder)."""
import json

import numpy as np


class SeldonNotImplementedError(Exception):
    """Same name as seldon_core's: raising it means "fall through to the next hook"."""


class Echo:
    """Returns what it gets: one input -> that array; several -> the dict (one output per input)."""

    def predict(self, X, feature_names, meta=None):
        if isinstance(X, np.ndarray) and X.dtype.kind == "f" and X.size and X.flat[0] == 666:
            raise ValueError("the number of the beast")
        if isinstance(X, np.ndarray) and X.dtype.kind == "O" and X.size and X.flat[0] == b"meta":
            return np.array([json.dumps({"meta": meta, "names": feature_names})], dtype=object)
        if isinstance(X, np.ndarray) and X.dtype.kind == "O" and X.size and X.flat[0] == b"complex":
            return np.array([1 + 2j])
        if isinstance(X, dict):
            return dict(X)
        if isinstance(X, np.ndarray) and X.dtype.kind == "f":
            return X * 2
        return X


class Described:
    """init_metadata() declares KFServing-style inputs/outputs; predict returns two arrays."""

    class_names = ["ignored-a", "ignored-b"]

    def init_metadata(self):
        return {
            "versions": ["3"],
            "platform": "numpy_v1",
            "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 3]}],
            "outputs": [
                {"name": "doubled", "datatype": "FP64", "shape": [-1, 3]},
                {"name": "total", "datatype": "FP64", "shape": [-1]},
            ],
        }

    def predict(self, X, feature_names):
        return X * 2, X.sum(axis=1)


class Named:
    """No metadata: two outputs named after class_names; a single output is output-0."""

    class_names = ["low", "high"]

    def predict(self, X, feature_names):
        if X.shape[-1] == 1:
            return X + 1
        return X.min(axis=-1), X.max(axis=-1)


class Raw:
    """predict_raw answers with a V2 response dict of its own."""

    def predict_raw(self, request):
        total = float(sum(np.asarray(t["data"], dtype=np.float64).sum() for t in request["inputs"]))
        names = [t["name"] for t in request["inputs"]]
        return {
            "parameters": {"inputs": len(names), "first": names[0]},
            "outputs": [
                {"name": "total", "datatype": "FP32", "shape": [1, 1], "data": [total]},
                {"name": "names", "datatype": "BYTES", "shape": [len(names)], "data": names},
            ],
        }


class FallThrough:
    """predict_raw declines (Seldon's not-implemented error), so predict answers."""

    def predict_raw(self, request):
        raise SeldonNotImplementedError("use predict")

    def predict(self, X, feature_names):
        return X + 100


class BatchLog:
    """Doubles its input and appends each call's first-column values to a log file, so a test
    can see which requests shared one predict call; a negative first value holds the call (and
    touches ``<log_path>.held`` first, so the test knows the call is being held)."""

    def __init__(self, log_path: str = ""):
        self.log_path = log_path

    def predict(self, X, feature_names):
        if X.size and X.flat[0] < 0:
            import time

            open(self.log_path + ".held", "w").close()
            time.sleep(0.5)
        with open(self.log_path, "a") as log:
            log.write(json.dumps(X[:, 0].tolist()) + "\n")
        return X * 2
