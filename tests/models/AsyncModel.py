"""async def hooks, and a sync hook that sleeps: neither may stall other connections.

With ASYNC_MODEL_TRACE set to a directory, transform_input leaves one file there per call it
starts, so a test can wait until its slow calls are inside the model instead of guessing.
"""
import asyncio
import os
import time
import uuid

import numpy as np


class AsyncModel:
    async def predict(self, X, feature_names):
        await asyncio.sleep(0.01)
        return np.asarray(X) * 3

    def transform_input(self, X, feature_names):
        seconds = float(np.asarray(X).ravel()[0])
        trace = os.environ.get("ASYNC_MODEL_TRACE")
        if trace:
            open(os.path.join(trace, f"{seconds}-{uuid.uuid4().hex}"), "w").close()
        time.sleep(seconds)  # the hook's simulated cost
        return X

    async def tags(self):
        return {"async": True}
