"""Metrics: OpenTelemetry instruments, read by Prometheus at ``/metrics`` on the management
listener of every gateway and worker (``gateway.management``).

Labels name endpoints, models, tenants, statuses and reasons; never a user, a key, or any
content. Model labels come from served models only: a refusal before the model is known
carries ``model=""``, so a client cannot mint series by inventing model names.
Gauges read from Redis and the audit database (queues, audit backlog) are sampled when
Prometheus scrapes, so every replica reports the same shared figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.sequencer import AuditBacklog, audit_backlog
from gateway.queue.schedule import QueueBacklog, backlogs

METER_NAME = "enclave"

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
FIRST_TOKEN_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TOKEN_RATE_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)


class MetricsExport:
    """A meter provider whose readings a Prometheus registry renders.

    The gateway keeps a registry of its own (several apps may share a test process); a
    worker uses the process's global one, where vLLM registers its ``vllm:*`` series.
    """

    def __init__(self, role: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._reader = PrometheusMetricReader(registry=self.registry, scope_info_enabled=False)
        views = [
            _buckets("enclave.request.duration", LATENCY_BUCKETS_S),
            _buckets("enclave.time_to_first_token", FIRST_TOKEN_BUCKETS_S),
            _buckets("enclave.output_token_rate", TOKEN_RATE_BUCKETS),
        ]
        self.provider = MeterProvider(
            resource=Resource.create({"service.name": f"enclave-{role}"}),
            metric_readers=[self._reader],
            views=views,
        )

    @classmethod
    def for_worker(cls) -> MetricsExport:
        return cls("worker", REGISTRY)

    @property
    def meter(self) -> Meter:
        return self.provider.get_meter(METER_NAME)

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.provider.shutdown()  # also takes the reader's collector out of the registry


def _buckets(name: str, boundaries: Sequence[float]) -> View:
    return View(
        instrument_name=name,
        aggregation=ExplicitBucketHistogramAggregation(boundaries=boundaries),
    )


class GatewayMetrics:
    """The gateway's instruments: requests, latency, tokens, refusals; queue and audit
    gauges from the latest sample (``sampled``)."""

    def __init__(self, meter: Meter) -> None:
        self._requests = meter.create_counter(
            "enclave.requests", unit="{request}", description="Inference requests by outcome"
        )
        self._duration = meter.create_histogram(
            "enclave.request.duration", unit="s", description="End-to-end request latency"
        )
        self._first_token = meter.create_histogram(
            "enclave.time_to_first_token",
            unit="s",
            description="From the request's admission to its first token",
        )
        self._output_tokens = meter.create_counter(
            "enclave.output_tokens", unit="{token}", description="Tokens generated"
        )
        self._token_rate = meter.create_histogram(
            "enclave.output_token_rate",
            unit="{token}/s",
            description="Output tokens per second of a request, after its first token",
        )
        self._refusals = meter.create_counter(
            "enclave.admission.refusals",
            unit="{request}",
            description="Requests refused by quotas or capacity, by reason",
        )
        self._queues: list[QueueBacklog] = []
        self._audit: AuditBacklog | None = None
        meter.create_observable_gauge(
            "enclave.queue.depth",
            [self._observe_depth],
            unit="{job}",
            description="Jobs waiting for a worker, by model and tenant",
        )
        meter.create_observable_gauge(
            "enclave.queue.oldest_age",
            [self._observe_age],
            unit="s",
            description="Age of the oldest job waiting for a worker",
        )
        meter.create_observable_gauge(
            "enclave.audit.pending",
            [self._observe_pending],
            unit="{record}",
            description="Audit records written but not yet sequenced",
        )
        meter.create_observable_gauge(
            "enclave.audit.sequencer_lag",
            [self._observe_lag],
            unit="s",
            description="Age of the oldest audit record not yet sequenced",
        )

    def finished(
        self,
        *,
        endpoint: str,
        model: str,
        tenant: str,
        status: int,
        duration_s: float,
        first_token_s: float | None,
        output_tokens: int,
        decode_s: float | None,
    ) -> None:
        """An accepted request ended (whatever its status)."""
        labels = {"endpoint": endpoint, "model": model, "tenant": tenant}
        self._requests.add(1, labels | {"status": str(status)})
        self._duration.record(duration_s, labels | {"status": str(status)})
        if first_token_s is not None:
            self._first_token.record(first_token_s, labels)
        if output_tokens:
            self._output_tokens.add(output_tokens, {"model": model, "tenant": tenant})
        if decode_s and output_tokens > 1:
            self._token_rate.record((output_tokens - 1) / decode_s, {"model": model})

    def refused(self, *, endpoint: str, tenant: str, status: int, reason: str) -> None:
        """A request refused before a worker ran it; quota and capacity refusals (429,
        503) also count as admission refusals by reason."""
        labels = {"endpoint": endpoint, "model": "", "tenant": tenant, "status": str(status)}
        self._requests.add(1, labels)
        if status in (429, 503):
            self.refused_admission(tenant=tenant, reason=reason)

    def refused_admission(self, *, tenant: str, reason: str) -> None:
        self._refusals.add(1, {"reason": reason, "tenant": tenant})

    def sampled(self, queues: list[QueueBacklog] | None, audit: AuditBacklog | None) -> None:
        """The latest shared figures; None drops the series (their source is unreachable)."""
        self._queues = queues or []
        self._audit = audit

    async def sample(self, redis: Redis, audit_db: AsyncEngine) -> None:
        """Read the queues from Redis and the audit backlog from its database, now."""
        try:
            queues: list[QueueBacklog] | None = await backlogs(redis)
        except RedisError:
            queues = None
        try:
            audit: AuditBacklog | None = await audit_backlog(audit_db)
        except SQLAlchemyError:
            audit = None
        self.sampled(queues, audit)

    def _observe_depth(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(q.depth, {"model": q.model, "tenant": q.queue}) for q in self._queues]

    def _observe_age(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(q.oldest_age_s, {"model": q.model, "tenant": q.queue}) for q in self._queues
        ]

    def _observe_pending(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._audit.pending)] if self._audit is not None else []

    def _observe_lag(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._audit.lag_s)] if self._audit is not None else []
