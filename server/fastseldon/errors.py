"""One exception family for the whole server.

Each kind fixes its HTTP status, its gRPC status code (by name, so this module needs no
grpc import) and its Seldon "reason" together, so a REST client and a gRPC client always
hear the same story. The protocol modules turn an error into Seldon's status JSON or V2's
``{"error": ...}``; nothing else decides status codes.
"""
from __future__ import annotations

BAD_DATA = "MICROSERVICE_BAD_DATA"
INTERNAL = "MICROSERVICE_INTERNAL_ERROR"

# gRPC's reading of HTTP client statuses (the gRPC/HTTP mapping doc, in reverse)
_GRPC_FOR_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 412: "FAILED_PRECONDITION", 413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}


class FastSeldonError(Exception):
    """Base of the family; raise one of the kinds below (their status, code and reason are class-level)."""

    http_status: int = 400
    grpc_code: str = "INVALID_ARGUMENT"
    reason: str = BAD_DATA

    def __init__(self, message: str = "", *, reason: str | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason

    def __str__(self) -> str:
        return self.message or type(self).__name__


class BadRequest(FastSeldonError):
    """The request is malformed or does not fit the model (400 / INVALID_ARGUMENT)."""


class CodecError(BadRequest):
    """A tensor could not be decoded or encoded (ragged, wrong type, bad wire bytes)."""


class NotImplementedHook(BadRequest):
    """The user's class lacks the hook a route needs (Seldon's SeldonNotImplementedError): 400 as Seldon."""

    grpc_code = "UNIMPLEMENTED"


class NotFound(FastSeldonError):
    http_status = 404
    grpc_code = "NOT_FOUND"


class MethodNotAllowed(FastSeldonError):
    http_status = 405
    grpc_code = "UNIMPLEMENTED"


class PayloadTooLarge(FastSeldonError):
    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class UnsupportedMediaType(FastSeldonError):
    http_status = 415
    grpc_code = "INVALID_ARGUMENT"


class ClientError(FastSeldonError):
    """A 4xx a user model chose (Seldon's ``SeldonMicroserviceException(status_code=...)``).

    The one kind whose status is per instance; its gRPC code is derived from that status,
    never set separately.
    """

    def __init__(self, message: str, status: int, *, reason: str | None = None):
        super().__init__(message, reason=reason)
        self.http_status = status
        self.grpc_code = _GRPC_FOR_STATUS.get(status, "INVALID_ARGUMENT")


class UpstreamError(FastSeldonError):
    """A unit the graph called answered with an error: its status (and body) go back to the client.

    As with ClientError the status is per instance and the gRPC code follows from it.
    """

    def __init__(self, message: str, status: int, *, body: bytes | None = None, reason: str | None = None):
        super().__init__(message, reason=reason or (BAD_DATA if 400 <= status < 500 else INTERNAL))
        self.http_status = status
        self.grpc_code = _GRPC_FOR_STATUS.get(status, "INVALID_ARGUMENT" if 400 <= status < 500 else "INTERNAL")
        self.body = body


class UserStatusError(FastSeldonError):
    """A user exception with its own ``status_code`` and ``to_dict()``: Seldon's documented
    ``model_error_handler`` pattern (and SeldonMicroserviceException itself). REST answers that
    status with ``to_dict()`` as the body; gRPC's code follows from the status."""

    def __init__(self, message: str, status: int, document: dict, *, reason: str | None = None):
        super().__init__(message, reason=reason or (BAD_DATA if status < 500 else INTERNAL))
        self.http_status = status
        self.grpc_code = _GRPC_FOR_STATUS.get(status, "INVALID_ARGUMENT" if status < 500 else "INTERNAL")
        self.document = document


class InternalError(FastSeldonError):
    """Our own fault, or a server-side state that makes the call impossible (500 / INTERNAL)."""

    http_status = 500
    grpc_code = "INTERNAL"
    reason = INTERNAL


class NotSupported(FastSeldonError):
    """A valid call this server does not offer (501 / UNIMPLEMENTED)."""

    http_status = 501
    grpc_code = "UNIMPLEMENTED"
    reason = INTERNAL


class UserModelError(InternalError):
    """The user's code raised: 500 / INTERNAL with the exception's message (traceback in our log)."""


class BadMetric(UserModelError):
    reason = "MICROSERVICE_BAD_METRIC"


class BadMetadata(UserModelError):
    reason = "MICROSERVICE_BAD_METADATA"


class Unavailable(FastSeldonError):
    http_status = 503
    grpc_code = "UNAVAILABLE"
    reason = "MICROSERVICE_UNAVAILABLE"


class QueueFull(Unavailable):
    """More requests wait than the limit allows: shed load at once (503 / RESOURCE_EXHAUSTED)."""

    grpc_code = "RESOURCE_EXHAUSTED"


class Loading(Unavailable):
    """The worker serves, but its model has not finished loading yet (503 / UNAVAILABLE: not ready)."""


class RequestTimeout(FastSeldonError):
    """The client took too long to send its request (408; the connection is closed after it)."""

    http_status = 408
    grpc_code = "DEADLINE_EXCEEDED"


class UriTooLong(FastSeldonError):
    http_status = 414
    grpc_code = "INVALID_ARGUMENT"


class HeadersTooLarge(FastSeldonError):
    """Too many header fields, or too many bytes of them (431)."""

    http_status = 431
    grpc_code = "INVALID_ARGUMENT"


class DeadlineExceeded(FastSeldonError):
    """The request ran past --request-timeout (504 / DEADLINE_EXCEEDED)."""

    http_status = 504
    grpc_code = "DEADLINE_EXCEEDED"
    reason = INTERNAL


def from_user_exception(exc: BaseException) -> FastSeldonError:
    """An exception from user code as one of ours, keeping Seldon's ``status_code``/``reason`` hints."""
    if isinstance(exc, FastSeldonError):
        return exc
    status = getattr(exc, "status_code", None)
    reason = getattr(exc, "reason", None)
    reason = reason if isinstance(reason, str) else None
    message = getattr(exc, "message", None) or str(exc)
    if not isinstance(message, str):
        message = str(message)
    to_dict = getattr(exc, "to_dict", None)
    if isinstance(status, int) and 100 <= status < 600 and callable(to_dict):
        try:
            document = to_dict()
        except Exception:  # noqa: BLE001 - user code; fall back to the status alone
            document = None
        if isinstance(document, dict):
            return UserStatusError(message, status, document, reason=reason)
    if isinstance(status, int) and 400 <= status < 500:
        if status == 400:
            return BadRequest(message, reason=reason)
        return ClientError(message, status, reason=reason)
    return UserModelError(message or type(exc).__name__)
