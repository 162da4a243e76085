"""A model with every Seldon hook, for protocol tests."""
import os

import numpy as np


class SeldonNotImplementedError(Exception):
    """Same name as seldon_core's: raising it means "not implemented, fall through"."""


class Rich:
    def __init__(self, offset: float = 0.0, label: str = "rich", flag: bool = False, count: int = 0):
        self.offset = offset
        self.label = label
        self.flag = flag
        self.count = count
        self.loaded = False
        self.feedback = []

    def load(self):
        self.loaded = True

    def predict(self, X, feature_names, meta=None):
        if isinstance(X, dict) and X.get("raise"):
            raise ValueError(X["raise"])
        if isinstance(X, str) and X == "meta":
            return {"meta_seen": meta, "names": feature_names}
        if isinstance(X, np.ndarray) and np.issubdtype(X.dtype, np.number):
            if X.size and X.ravel()[0] == 666:
                raise RuntimeError("the number of the beast")
            return X + self.offset
        return X

    def transform_input(self, X, feature_names):
        return np.asarray(X) * 10

    def transform_output(self, X, feature_names):
        return np.asarray(X) - 1

    def route(self, features, feature_names):
        return int(np.asarray(features).ravel()[0]) % 3

    def aggregate(self, features_list, feature_names_list):
        return np.sum([np.asarray(f) for f in features_list], axis=0)

    def send_feedback(self, features, feature_names, reward, truth, routing=None):
        self.feedback.append(reward)
        return np.array([[reward, len(self.feedback), -1 if routing is None else routing]])

    def health_status(self):
        return {"loaded": self.loaded, "pid": os.getpid()}

    def tags(self):
        return {"label": self.label, "flag": self.flag, "count": self.count}

    def metrics(self):
        return [
            {"type": "COUNTER", "key": "rich_calls", "value": 1},
            {"type": "GAUGE", "key": "rich_gauge", "value": 42, "tags": {"kind": "g"}},
            {"type": "TIMER", "key": "rich_timer", "value": 20.5},
        ]

    def class_names(self):
        return ["a", "b"]

    def init_metadata(self):
        return {
            "name": "rich-model",
            "versions": ["v7"],
            "platform": "numpy",
            "inputs": [{"messagetype": "tensor", "schema": {"names": ["a", "b"], "shape": [2]}}],
            "outputs": [{"name": "out", "datatype": "FP64", "shape": [-1, 2]}],
            "custom": {"author": "tests"},
        }
