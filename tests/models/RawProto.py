"""predict_raw answers a SeldonMessage proto on gRPC (seldon_core's own class when installed) and
a dict on REST, both with meta.metrics and meta.tags."""
try:
    from seldon_core.proto import prediction_pb2
    ORIGIN = "seldon_core"
except ImportError:  # the stand-in seldon_core has no protos: fastseldon's are the same messages
    from fastseldon.proto import prediction_pb2
    ORIGIN = "fastseldon"


class RawProto:
    def predict_raw(self, request):
        if isinstance(request, dict):
            return {"strData": "rest", "meta": {"tags": {"t": "rest"},
                                                "metrics": [{"type": "COUNTER", "key": "raw_rest_total_calls", "value": 1}]}}
        # which class the request came as: by identity, since seldon-core 1.17's old gencode names
        # its classes' module "proto.prediction_pb2"
        origin = ORIGIN if type(request) is prediction_pb2.SeldonMessage else type(request).__module__
        reply = prediction_pb2.SeldonMessage(strData=f"grpc:{origin}")
        reply.meta.tags["t"].string_value = "grpc"
        metric = reply.meta.metrics.add()
        metric.key, metric.type, metric.value = "raw_grpc_calls", prediction_pb2.Metric.GAUGE, 3.0
        return reply
