"""Server-sent events framed exactly as OpenAI's: ``data: {json}\\n\\n`` … ``data: [DONE]``."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import EnclaveError, error_body

DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MEDIA_TYPE = "text/event-stream"

_encoder = msgspec.json.Encoder()


def headers(request_id: str) -> dict[str, str]:
    return {**HEADERS, "x-request-id": request_id}


def frame(payload: Any) -> bytes:
    return b"data: " + _encoder.encode(payload) + b"\n\n"


def error_frame(error: EnclaveError) -> bytes:
    """An error after the stream started: one final event, then the stream closes."""
    return frame(error_body(error.message, error.type, error.code, error.param))
