"""The user model every Seldon-protocol server under test loads (fastseldon and seldon-core).

With cost_us=0 it is the identity; with cost_us>0 each call also spins the CPU for that many
microseconds, a fixed per-call cost that stands in for real model work.
"""
import time


class MyModel:
    def __init__(self, cost_us: int = 0):
        self.cost_s = int(cost_us) / 1e6

    def predict(self, X, features_names=None, meta=None):
        if self.cost_s:
            end = time.perf_counter() + self.cost_s
            while time.perf_counter() < end:
                pass
        return X
