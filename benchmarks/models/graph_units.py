"""The units of the graph benchmarks: near-identities, so what is measured is the graph, not the units.

Each does one cheap, visible thing, so the answer shows every unit ran, once and in order:
PlusOne -> TimesTwo -> MinusOne turns x into (x + 1) * 2 - 1 (2x + 1); MinusOne alone gives x - 1.
"""
import numpy as np


class PlusOne:
    """TRANSFORMER: X + 1."""

    def transform_input(self, X, features_names=None, meta=None):
        return np.asarray(X) + 1


class TimesTwo:
    """TRANSFORMER: X * 2."""

    def transform_input(self, X, features_names=None, meta=None):
        return np.asarray(X) * 2


class MinusOne:
    """MODEL: X - 1 (the graph's model, and the single unit it is compared with)."""

    def predict(self, X, features_names=None, meta=None):
        return np.asarray(X) - 1
