"""Small units for the graph tests: each does one visible thing, so a graph's answer shows its path."""
import time

import numpy as np


class AddOne:
    """TRANSFORMER: X + 1."""

    def transform_input(self, X, names):
        return np.asarray(X) + 1

    def tags(self):
        return {"add_one": True}


class Double:
    """MODEL: X * factor (default 2)."""

    def __init__(self, factor=2.0):
        self.factor = float(factor)

    def predict(self, X, names):
        return np.asarray(X) * self.factor

    def tags(self):
        return {f"times_{self.factor:g}": True}

    def metrics(self):
        return [{"type": "COUNTER", "key": "double_calls", "value": 1}]


class Negate:
    """OUTPUT_TRANSFORMER: -X."""

    def transform_output(self, X, names):
        return -np.asarray(X)


class FixedRouter:
    """ROUTER: always ``route`` (a parameter), or X[0][0] when from_input is set."""

    def __init__(self, route=0, from_input=False):
        self.fixed = int(route)
        self.from_input = bool(from_input)

    def route(self, X, names):
        return int(np.asarray(X).ravel()[0]) if self.from_input else self.fixed

    def tags(self):
        return {"router_tag": "dropped"}  # a router's reply is not passed on


class Sum:
    """COMBINER: the element-wise sum of the children's outputs."""

    def aggregate(self, Xs, names_list):
        return np.sum([np.asarray(x, dtype=float) for x in Xs], axis=0)


class Fail:
    """MODEL that fails: 500 with a message, or the status of its exception."""

    def __init__(self, status=0):
        self.status = int(status)

    def predict(self, X, names):
        if self.status:
            err = ValueError(f"refused with {self.status}")
            err.status_code = self.status
            raise err
        raise RuntimeError("unit exploded")


class Slow:
    """MODEL that takes ``seconds`` before answering X."""

    def __init__(self, seconds=1.0):
        self.seconds = float(seconds)

    def predict(self, X, names):
        time.sleep(self.seconds)
        return X


class Rewardable:
    """MODEL that counts feedback calls and returns them as its answer to feedback."""

    def __init__(self):
        self.rewards = []

    def predict(self, X, names):
        return np.asarray(X) * 0 + len(self.rewards)

    def send_feedback(self, X, names, reward, truth, routing=None):
        self.rewards.append(reward)
        return np.array([[len(self.rewards)]])
