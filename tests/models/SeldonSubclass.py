"""A model written against seldon_core: subclasses SeldonComponent, returns SeldonResponse.

It overrides predict, transform_output and health_status only; every other hook is the base
class's, which raises SeldonNotImplementedError: Seldon reads that as "absent".
"""
import numpy as np
from seldon_core.user_model import SeldonComponent, SeldonNotImplementedError, SeldonResponse


class UserCustomException(Exception):
    """Seldon's documented model_error_handler example exception."""

    status_code = 404

    def __init__(self, message, application_error_code, http_status_code):
        Exception.__init__(self)
        self.message = message
        if http_status_code is not None:
            self.status_code = http_status_code
        self.application_error_code = application_error_code

    def to_dict(self):
        return {"status": {"status": self.status_code, "message": self.message, "app_code": self.application_error_code}}


try:  # Seldon needs Flask for this (fastseldon does not): the differential test serves both
    import flask
except ImportError:
    flask = None


class SeldonSubclass(SeldonComponent):
    if flask is not None:
        model_error_handler = flask.Blueprint("error_handlers", __name__)

        @model_error_handler.app_errorhandler(UserCustomException)
        def handle_custom_error(error):
            response = flask.jsonify(error.to_dict())
            response.status_code = error.status_code
            return response

    def __init__(self, factor=2, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)

    def predict(self, X, names, meta=None):
        if isinstance(X, dict) and "fail" in X:
            raise UserCustomException("Test-Error-Msg", 1402, 402)
        if isinstance(X, np.ndarray) and X.dtype.kind in "iuf":
            X = X * self.factor
        return SeldonResponse(data=X, tags={"runtime": "tag"},
                              metrics=[{"type": "COUNTER", "key": "subclass_calls", "value": 1, "tags": {"kind": "runtime"}}])

    def transform_input(self, X, names, meta=None):
        raise SeldonNotImplementedError("not this one")  # raised at call time: identity, as in Seldon

    def transform_output(self, X, names, meta=None):
        return SeldonResponse(data=X, tags={"out": "yes"})

    def health_status(self):
        return {"healthy": True}
