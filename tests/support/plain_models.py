"""Models for the plain-path tests (tests/unit/test_plain_path.py, test_rest_plain_path.py): one of
each case the plain path must answer exactly as the step machinery does."""
from __future__ import annotations

from typing import Any

import numpy as np


class SeldonNotImplementedError(Exception):
    """seldon_core's name: raising it means the hook is absent."""


class SeldonResponse:
    """seldon_core's SeldonResponse(data, tags, metrics), recognised by its name."""

    def __init__(self, data: Any, tags: Any = None, metrics: Any = None):
        self.data, self.tags, self.metrics = data, tags, metrics


class Double:
    """A plain predict (with meta) and a plain transform_input that counts the meta's keys."""

    def predict(self, X, names, meta=None):
        return np.asarray(X) * 2

    def transform_input(self, X, names, meta=None):
        return np.asarray(X) + len(meta or {})


class Tagged:
    def predict(self, X, names):
        return SeldonResponse(X + 1, {"who": "tagged"}, [{"type": "COUNTER", "key": "hits", "value": 1}])

    def class_names(self):
        return ["a", "b", "c"]


class Absent:
    def predict(self, X, names):
        raise SeldonNotImplementedError("not here")

    def transform_input(self, X, names):
        raise SeldonNotImplementedError("not here either")


class Failing:
    def predict(self, X, names):
        raise ValueError("bad row")


class Transformer:
    def transform_input(self, X, names):
        return np.asarray(X) + 1


class WithTags:
    """tags() makes the endpoint not plain: it always goes through the steps."""

    def predict(self, X, names):
        return X

    def tags(self):
        return {"t": 1}
