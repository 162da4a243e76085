"""One exception family for the whole server.

Each error knows its HTTP status, its gRPC status code (by name, so this module needs no
grpc import) and a Seldon "reason". Fronts turn it into Seldon's status JSON or V2's
``{"error": ...}`` body; nothing else in the code base decides status codes.
"""
from __future__ import annotations


class FastSeldonError(Exception):
    """Base class: bad input unless a subclass says otherwise."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"
    reason = "MICROSERVICE_BAD_DATA"

    def __init__(self, message: str = "", *, http_status: int | None = None, reason: str | None = None):
        super().__init__(message)
        self.message = message
        if http_status is not None:
            self.http_status = http_status
        if reason is not None:
            self.reason = reason


class BadRequest(FastSeldonError):
    """The request is malformed or does not fit the model (400 / INVALID_ARGUMENT)."""


class CodecError(BadRequest):
    """A tensor could not be decoded or encoded (ragged, wrong type, bad wire bytes)."""


class NotFound(FastSeldonError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class MethodNotAllowed(FastSeldonError):
    http_status = 405
    grpc_code = "UNIMPLEMENTED"


class PayloadTooLarge(FastSeldonError):
    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class NotImplementedHook(FastSeldonError):
    """The user's class lacks the hook a route needs (Seldon's SeldonNotImplementedError)."""

    grpc_code = "UNIMPLEMENTED"


class UserModelError(FastSeldonError):
    """The user's code raised: 500 / INTERNAL with the exception's message, no traceback."""

    http_status = 500
    grpc_code = "INTERNAL"
    reason = "MICROSERVICE_INTERNAL_ERROR"


class BadMetric(UserModelError):
    reason = "MICROSERVICE_BAD_METRIC"


class BadMetadata(UserModelError):
    reason = "MICROSERVICE_BAD_METADATA"


class Unavailable(FastSeldonError):
    http_status = 503
    grpc_code = "UNAVAILABLE"
    reason = "MICROSERVICE_UNAVAILABLE"
