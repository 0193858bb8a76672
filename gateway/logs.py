"""Logs as JSON lines, one object per record, with the request id and the trace id.

What a record may hold: the logger's own message (the code never logs a prompt, an answer,
a token or a key) and these fields. The request id comes from the request being served
(``request_context``), the trace and span ids from the current OpenTelemetry span.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from opentelemetry import trace

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "enclave_request_id", default=None
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


@contextlib.contextmanager
def request_context(request_id: str) -> Iterator[None]:
    """Records logged inside the block carry ``request_id``."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = _request_id.get()
        if request_id is not None:
            entry["request_id"] = request_id
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def vllm_logging_config() -> dict[str, Any]:
    """vLLM's loggers as JSON lines (a ``logging.config.dictConfig``): what vLLM reads from
    ``VLLM_LOGGING_CONFIG_PATH`` in every process it starts."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {"vllm": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
    }


def write_vllm_logging_config() -> Path:
    """The config in a private temporary file, for ``VLLM_LOGGING_CONFIG_PATH``."""
    descriptor, name = tempfile.mkstemp(prefix="enclave-vllm-logging-", suffix=".json")
    with os.fdopen(descriptor, "w") as file:
        json.dump(vllm_logging_config(), file)
    return Path(name)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is when a record is logged, not as it was when the
    handler was made (a test harness, or an embedding program, may replace it meanwhile)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(level: str, log_format: Literal["json", "text"]) -> None:
    """The root logger's one handler (stderr), JSON lines or plain text."""
    handler = _StderrHandler()
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
