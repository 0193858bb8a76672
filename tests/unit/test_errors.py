"""Error rendering: OpenAI's envelope for domain, framework and unknown errors."""

from __future__ import annotations

from litestar import Litestar, get
from litestar.testing import TestClient

from gateway.errors import (
    AuditUnavailable,
    ContextLengthExceeded,
    EnclaveError,
    ModelNotFound,
    handle_exception,
)


def _app(exc: Exception) -> Litestar:
    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise exc

    return Litestar([boom], exception_handlers={Exception: handle_exception})


def _envelope(exc: Exception) -> tuple[int, dict[str, object], dict[str, str]]:
    with TestClient(_app(exc)) as client:
        response = client.get("/boom")
    return response.status_code, response.json()["error"], dict(response.headers)


def test_domain_error_renders_status_type_code_and_param() -> None:
    status, error, _ = _envelope(ContextLengthExceeded("too long", param="max_tokens"))
    assert status == 400
    assert error == {
        "message": "too long",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "context_length_exceeded",
    }


def test_model_not_found_is_404() -> None:
    status, error, _ = _envelope(ModelNotFound("no such model", param="model"))
    assert (status, error["code"]) == (404, "model_not_found")


def test_service_unavailable_carries_retry_after() -> None:
    status, error, headers = _envelope(AuditUnavailable("audit down"))
    assert status == 503
    assert error["code"] == "audit_unavailable"
    assert headers["retry-after"] == "5"


def test_unknown_exception_is_500_without_its_text() -> None:
    status, error, _ = _envelope(RuntimeError("secret detail /etc/passwd"))
    assert status == 500
    assert "secret" not in str(error["message"])
    assert error["type"] == "api_error"


def test_unknown_route_is_an_envelope_too() -> None:
    with TestClient(_app(EnclaveError("x"))) as client:
        response = client.get("/nope")
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
