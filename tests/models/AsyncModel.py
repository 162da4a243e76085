"""async def hooks, and a sync hook that sleeps: neither may stall other connections."""
import asyncio
import time

import numpy as np


class AsyncModel:
    async def predict(self, X, feature_names):
        await asyncio.sleep(0.01)
        return np.asarray(X) * 3

    def transform_input(self, X, feature_names):
        time.sleep(float(np.asarray(X).ravel()[0]))
        return X

    async def tags(self):
        return {"async": True}
