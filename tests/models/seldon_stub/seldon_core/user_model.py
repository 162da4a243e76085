"""seldon_core.user_model's SeldonComponent, SeldonResponse and SeldonNotImplementedError (stand-in)."""
from seldon_core.flask_utils import SeldonMicroserviceException


class SeldonNotImplementedError(SeldonMicroserviceException):
    status_code = 400

    def __init__(self, message):
        SeldonMicroserviceException.__init__(self, message)


class SeldonResponse:
    def __init__(self, data, tags=None, metrics=None):
        self.data = data
        self.tags = tags if tags is not None else {}
        self.metrics = metrics if metrics is not None else []


def _absent(name, message=None):
    def method(self, *args, **kwargs):
        raise SeldonNotImplementedError(message or f"{name} is not implemented")

    method.__name__ = name
    return method


class SeldonComponent:
    def __init__(self, **kwargs):
        pass

    def load(self):
        pass

    tags = _absent("tags")
    class_names = _absent("class_names")
    predict = _absent("predict")
    predict_raw = _absent("predict_raw")
    send_feedback = _absent("send_feedback")
    send_feedback_raw = _absent("send_feedback_raw")
    transform_input = _absent("transform_input")
    transform_input_raw = _absent("transform_input_raw")
    transform_output = _absent("transform_output")
    transform_output_raw = _absent("transform_output_raw")
    metrics = _absent("metrics")
    feature_names = _absent("feature_names")
    route = _absent("route")
    route_raw = _absent("route_raw")
    aggregate = _absent("aggregate")
    aggregate_raw = _absent("aggregate_raw")
    health_status = _absent("health_status", "health is not implemented")
    health_status_raw = _absent("health_status_raw", "health_raw is not implemented")
    metadata = _absent("metadata")
    init_metadata = _absent("init_metadata")
