"""The same identity / fixed-cost model as MyModel.py, on KServe's python model server (0.21).

A user model written for KServe: a ``kserve.Model`` whose ``predict`` reads the V2 request's
first input as numpy and answers it as one output (JSON data on REST, raw bytes on gRPC, as
``set_data_from_numpy`` offers; a request without an id gets a new one, as KServe's own
``get_predict_response`` does), served by ``kserve.ModelServer`` (FastAPI on uvicorn for REST,
grpc.aio for gRPC). The harness starts it with its latency logging and its logging set-up off,
so no line is written per request, as for every other server.

    python kserve_model.py --http_port 8080 --grpc_port 8081 --workers 1 --model_name bench \
        --enable_latency_logging false --configure_logging false [--cost_us 1000]
"""
import argparse
import time

from kserve import Model, ModelServer
from kserve.protocol.infer_type import InferOutput, InferResponse
from kserve.utils.utils import generate_uuid


class BenchModel(Model):
    def __init__(self, name: str, cost_us: int) -> None:
        super().__init__(name)
        self.cost_s = cost_us / 1e6
        self.ready = True

    async def predict(self, payload, headers=None, response_headers=None):
        tensor = payload.inputs[0]
        arr = tensor.as_numpy()
        if self.cost_s:
            end = time.perf_counter() + self.cost_s
            while time.perf_counter() < end:
                pass
        out = InferOutput(name="output-0", shape=list(arr.shape), datatype=tensor.datatype)
        out.set_data_from_numpy(arr, binary_data=payload.from_grpc)
        return InferResponse(response_id=payload.id or generate_uuid(), model_name=self.name, infer_outputs=[out])


if __name__ == "__main__":
    ours = argparse.ArgumentParser(add_help=False)  # ModelServer reads its own flags from sys.argv
    ours.add_argument("--model_name", default="bench")
    ours.add_argument("--cost_us", type=int, default=0)
    args, _ = ours.parse_known_args()
    ModelServer().start([BenchModel(args.model_name, args.cost_us)])
