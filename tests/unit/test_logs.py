"""JSON log lines: the message, the request id of the request being served, the trace id
of the current span, the exception; one object per line."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from gateway.logs import (
    JsonFormatter,
    configure_logging,
    request_context,
    write_vllm_logging_config,
)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)


def lines(out: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_the_message(captured: io.StringIO) -> None:
    logging.getLogger("test.logs").info('worker %s ready, said "hi"\nthen left', "w-1")
    [entry] = lines(captured)
    assert entry["message"] == 'worker w-1 ready, said "hi"\nthen left'
    assert (entry["level"], entry["logger"]) == ("INFO", "test.logs")
    assert "request_id" not in entry
    assert "trace_id" not in entry


def test_the_request_and_trace_ids_come_from_the_context(captured: io.StringIO) -> None:
    tracer = TracerProvider().get_tracer("test")
    with request_context("chatcmpl-42"), tracer.start_as_current_span("request") as span:
        logging.getLogger("test.logs").info("settled")
    logging.getLogger("test.logs").info("after")
    inside, after = lines(captured)
    assert inside["request_id"] == "chatcmpl-42"
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "request_id" not in after


def test_an_exception_is_kept_in_the_line(captured: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("test.logs").exception("failed")
    [entry] = lines(captured)
    assert "ValueError: boom" in entry["exception"]


@pytest.fixture
def vllm_logger_restored() -> Iterator[logging.Logger]:
    """The ``vllm`` logger, as it was again after the test."""
    logger = logging.getLogger("vllm")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    try:
        yield logger
    finally:
        logger.handlers[:] = handlers
        logger.propagate, logger.level = propagate, level


def test_vllms_loggers_get_the_same_json_lines(vllm_logger_restored: logging.Logger) -> None:
    """The config vLLM reads in each of its processes (VLLM_LOGGING_CONFIG_PATH)."""
    path = write_vllm_logging_config()
    logging.config.dictConfig(json.loads(path.read_text()))
    path.unlink()
    [handler] = vllm_logger_restored.handlers
    out = io.StringIO()
    handler.setStream(out)  # type: ignore[attr-defined]
    with request_context("cmpl-7"):
        logging.getLogger("vllm.engine").info("engine core ready")
    [entry] = lines(out)
    assert (entry["logger"], entry["message"], entry["request_id"]) == (
        "vllm.engine",
        "engine core ready",
        "cmpl-7",
    )


def test_the_configured_handler_writes_to_stderr_as_it_is_at_each_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stream swapped after configuration (pytest's capture, an embedding program) gets
    the line; the one it replaced may be closed by then and must not be written to."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json")
        first, second = io.StringIO(), io.StringIO()
        monkeypatch.setattr("sys.stderr", first)
        logging.getLogger("test.logs.stderr").info("one")
        first.close()
        monkeypatch.setattr("sys.stderr", second)
        logging.getLogger("test.logs.stderr").info("two")
        assert [line["message"] for line in lines(second)] == ["two"]
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
