"""A model that misbehaves on request, for the production-hardening tests (tests/server/test_hardening.py).

``predict`` reads the first value of X:

* ``v > 0``: sleeps ``v`` seconds (a slow or hung predict), then returns X;
* ``-1``: ``os.abort()`` (a crash in native code);
* ``-2``: keeps 200 MiB alive in the process (a leak);
* ``-3``: raises ``ValueError("bad value -3")`` (a user exception);
* anything else: returns X.

With ``FRAGILE_TRACE`` set to a folder, every predict leaves a file there as it starts, so a
test can tell which calls were started. ``FRAGILE_LOAD_SECONDS`` makes ``load()`` take that
long. With ``FRAGILE_FAIL_AFTER_FIRST`` set to a file path, the first process to construct the
model creates it and any later one fails in its constructor (a model that can no longer start).
"""
import os
import time
import uuid

import numpy as np

_LEAK = []


class Fragile:
    def __init__(self):
        marker = os.environ.get("FRAGILE_FAIL_AFTER_FIRST")
        if marker:
            if os.path.exists(marker):
                raise RuntimeError("the weights are gone")
            open(marker, "w").close()

    def load(self):
        time.sleep(float(os.environ.get("FRAGILE_LOAD_SECONDS", "0")))

    def predict(self, X, feature_names):
        value = float(np.asarray(X).ravel()[0]) if np.size(X) else 0.0
        trace = os.environ.get("FRAGILE_TRACE")
        if trace:
            open(os.path.join(trace, f"{value}-{uuid.uuid4().hex}"), "w").close()
        if value > 0:
            time.sleep(value)
        elif value == -1:
            os.abort()
        elif value == -2:
            _LEAK.append(np.ones(200 * 2**20, dtype=np.uint8))
        elif value == -3:
            raise ValueError("bad value -3")
        return X

    def health_status(self):
        return {"pid": os.getpid()}
