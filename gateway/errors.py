"""The error tree and the one handler that renders it as OpenAI's error envelope.

    EnclaveError                      500 api_error
    ├── InvalidRequest                400 invalid_request_error
    │   └── ContextLengthExceeded     400 invalid_request_error / context_length_exceeded
    ├── AuthenticationFailed          401 invalid_request_error / invalid_api_key
    ├── PermissionDenied              403 invalid_request_error / permission_denied
    ├── NotFound                      404 invalid_request_error
    │   └── ModelNotFound             404 invalid_request_error / model_not_found
    ├── Conflict                      409 invalid_request_error / conflict
    ├── PayloadTooLarge               413 invalid_request_error / request_too_large
    ├── RateLimited                   429 rate_limit_exceeded / the limit that refused
    │   └── QuotaExhausted            429 insufficient_quota / the budget that is spent
    ├── ServiceUnavailable            503 service_unavailable
    │   ├── QuotaUnavailable          503 service_unavailable / quota_unavailable
    │   ├── OverCapacity              503 service_unavailable / queue_full, queue_timeout
    │   ├── AuditUnavailable          503 service_unavailable / audit_unavailable
    │   ├── QueueUnavailable          503 service_unavailable / queue_unavailable
    │   └── NoWorkerAvailable         503 service_unavailable / no_worker_available
    ├── UpstreamFailed                502 api_error / worker_failed (or the worker's own)
    └── GatewayTimeout                504 timeout / request_timeout

Every response body is ``{"error": {"message", "type", "param", "code"}}``. Unknown
exceptions become a 500 carrying the request id; ``str(exc)`` never reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

logger = logging.getLogger("enclave.errors")


class EnclaveError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.headers = headers or {}
        self.is_audited = False  # set once an audit record covers this error


class InvalidRequest(EnclaveError):
    status = 400
    type = "invalid_request_error"
    default_code = "invalid_request"


class ContextLengthExceeded(InvalidRequest):
    default_code = "context_length_exceeded"


class AuthenticationFailed(EnclaveError):
    status = 401
    type = "invalid_request_error"
    default_code = "invalid_api_key"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="enclave"'})
        self.reason = reason  # for the audit record, finer than the public code


class PermissionDenied(EnclaveError):
    status = 403
    type = "invalid_request_error"
    default_code = "permission_denied"


class NotFound(EnclaveError):
    status = 404
    type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class Conflict(EnclaveError):
    status = 409
    type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLarge(EnclaveError):
    status = 413
    type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimited(EnclaveError):
    """A limit refused the request; ``headers`` carry Retry-After and x-ratelimit-*."""

    status = 429
    type = "rate_limit_exceeded"
    default_code = "rate_limit_exceeded"


class QuotaExhausted(RateLimited):
    type = "insufficient_quota"
    default_code = "insufficient_quota"


class ServiceUnavailable(EnclaveError):
    status = 503
    type = "service_unavailable"
    default_code = "service_unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after_s: int = 5) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after_s)})


class AuditUnavailable(ServiceUnavailable):
    default_code = "audit_unavailable"


class QuotaUnavailable(ServiceUnavailable):
    default_code = "quota_unavailable"


class OverCapacity(ServiceUnavailable):
    """Every worker is busy and the request may not wait longer (or more wait already)."""

    default_code = "over_capacity"


class QueueUnavailable(ServiceUnavailable):
    default_code = "queue_unavailable"


class NoWorkerAvailable(ServiceUnavailable):
    default_code = "no_worker_available"


class UpstreamFailed(EnclaveError):
    status = 502
    default_code = "worker_failed"


class GatewayTimeout(EnclaveError):
    status = 504
    type = "timeout"
    default_code = "request_timeout"


class ClientDisconnected(Exception):
    """The client closed the connection while its request was being served (not an error)."""


def error_body(
    message: str, type_: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def render_error_json(
    message: str, type_: str, code: str | None, param: str | None = None
) -> bytes:
    return msgspec.json.encode(error_body(message, type_, code, param))


_HTTP_CODES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}


def _request_id(request: Request[Any, Any, Any]) -> str:
    return str(request.scope.get("state", {}).get("request_id", "unknown"))


OLLAMA_PATHS = "/api/"


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The one exception handler: domain errors, framework errors, and the unknown; under
    ``/api/`` (Ollama's API) in Ollama's shape, ``{"error": message}``."""
    response = _openai_error(request, exc)
    if request.url.path.startswith(OLLAMA_PATHS) and isinstance(response.content, dict):
        error = response.content.get("error")
        if isinstance(error, dict):
            response.content = {"error": error.get("message", "")}
    return response


def _openai_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, ClientDisconnected):
        return Response(b"", status_code=499)
    if isinstance(exc, EnclaveError):
        body = error_body(exc.message, exc.type, exc.code, exc.param)
        return Response(body, status_code=exc.status, headers=exc.headers)
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        type_, code = _HTTP_CODES.get(exc.status_code, ("invalid_request_error", "invalid_request"))
        if exc.status_code == 413:
            message = "Request body too large."
        elif exc.status_code == 404:
            message = f"Unknown path {request.url.path}."
        else:
            message = str(exc.detail)
        return Response(error_body(message, type_, code), status_code=exc.status_code)
    request_id = _request_id(request)
    logger.error("unhandled error in request %s", request_id, exc_info=exc)
    message = f"The server had an error processing your request (request id {request_id})."
    return Response(error_body(message, "api_error", "internal_error"), status_code=500)
