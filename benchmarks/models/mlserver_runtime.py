"""The same identity / fixed-cost model as MyModel.py, as an MLServer custom runtime.

Inputs are decoded to numpy and the output encoded back with MLServer's own NumpyCodec, as a
user model written for MLServer would do; the cost comes from model-settings.json
(parameters.extra.cost_us).
"""
import time

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class BenchRuntime(MLModel):
    async def load(self) -> bool:
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        self.cost_s = int(extra.get("cost_us", 0)) / 1e6
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        arr = NumpyCodec.decode_input(payload.inputs[0])
        if self.cost_s:
            end = time.perf_counter() + self.cost_s
            while time.perf_counter() < end:
                pass
        out = NumpyCodec.encode_output("output-0", arr)
        return InferenceResponse(model_name=self.name, id=payload.id, outputs=[out])
