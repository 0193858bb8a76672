"""Traces: one chat request is one trace, from the gateway's request span through
authentication, admission, audit and enqueue to the worker's job, its wait in the queue and
the engine's work with its first token; nothing is traced unless asked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.asyncio import Redis

from gateway.settings import TelemetrySettings
from gateway.telemetry import current_context_carrier, tracer_provider
from tests.fakes.engine import FakeEngine
from tests.integration.stack import Stack, open_stack
from tests.otlp_receiver import OtlpReceiver, otlp_receiver

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
async def stack(
    make_postgres_url: Callable[[], str],
    redis_url: str,
    redis_client: Redis,
    exporter: InMemorySpanExporter,
) -> AsyncIterator[Stack]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = FakeEngine()
    async with open_stack(make_postgres_url(), redis_url, engine, tracer_provider=provider) as s:
        yield s


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans}


async def test_one_request_is_one_trace_from_gateway_to_worker(
    stack: Stack, exporter: InMemorySpanExporter
) -> None:
    key = await stack.key()
    response = await stack.client.post(
        "/v1/chat/completions",
        json={"model": "fake-model", "messages": QUESTION},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200
    spans = by_name(exporter.get_finished_spans())
    request = spans["POST /v1/chat/completions"]
    assert request.parent is None
    trace_id = request.context.trace_id
    wanted = ["authenticate", "admission", "audit", "enqueue", "job", "queue wait"]
    assert {spans[name].context.trace_id for name in [*wanted, "engine generate"]} == {trace_id}
    for child in ["authenticate", "admission", "audit", "enqueue"]:
        parent = spans[child].parent
        assert parent is not None
        assert parent.span_id == request.context.span_id  # children of the request
    job_parent = spans["job"].parent
    assert job_parent is not None
    assert job_parent.span_id == spans["enqueue"].context.span_id  # across the queue
    engine = spans["engine generate"]
    assert engine.parent is not None
    assert engine.parent.span_id == spans["job"].context.span_id
    assert [event.name for event in engine.events] == ["first token"]
    wait = spans["queue wait"]
    assert wait.start_time is not None
    assert wait.end_time is not None
    assert wait.start_time <= wait.end_time
    assert spans["job"].attributes is not None
    assert spans["job"].attributes["enclave.model"] == "fake-model"


async def test_health_probes_are_not_traced(stack: Stack, exporter: InMemorySpanExporter) -> None:
    assert (await stack.client.get("/healthz")).status_code == 200
    assert exporter.get_finished_spans() == ()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


async def test_the_configured_endpoint_receives_the_spans_over_otlp(
    receiver: OtlpReceiver,
) -> None:
    settings = TelemetrySettings(otlp_endpoint=receiver.url)
    provider = tracer_provider(settings, "gateway")
    assert provider is not None
    with provider.get_tracer("test").start_as_current_span("probe"):
        pass
    await asyncio.to_thread(provider.shutdown)  # flushes the batch to the receiver
    [span] = receiver.spans()
    assert (span.service, span.name) == ("enclave-gateway", "probe")


def test_tracing_is_off_unless_an_endpoint_is_configured() -> None:
    assert tracer_provider(TelemetrySettings(), "gateway") is None


def test_the_job_message_carries_the_trace_context_only_when_traced() -> None:
    assert current_context_carrier() == {}  # no span: nothing to carry
    provider = TracerProvider()
    with provider.get_tracer("test").start_as_current_span("request") as span:
        carrier = current_context_carrier()
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert carrier["traceparent"].split("-")[1] == trace_id
    json.dumps(carrier)  # plain strings: fits the msgpack job message
