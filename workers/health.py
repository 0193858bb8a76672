"""A worker's readiness and metrics, served by its management listener (``/readyz``,
``/metrics``; ``gateway.management``).

Ready: the engine is loaded and healthy, the worker is registered (its heartbeat is fresh,
so gateways route to it) and not draining, and Redis answers. Metrics: the scheduler's
running and waiting requests and KV-cache use, labelled by model; vLLM's own ``vllm:*``
series sit beside them in the same registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from redis.asyncio import Redis

from workers.consumer import Consumer
from workers.engine import InferenceEngine


@dataclass
class WorkerHealth:
    redis: Redis
    engine: InferenceEngine | None = None
    """None while the model loads."""
    consumer: Consumer | None = None

    async def readiness(self) -> dict[str, str]:
        if self.engine is None or self.consumer is None:
            return {"engine": "loading"}
        checks: dict[str, str] = {}
        try:
            await self.engine.check_health()
            checks["engine"] = "ok"
        except Exception:
            checks["engine"] = "dead"
        if self.consumer.is_draining:
            checks["registered"] = "draining"
        else:
            checks["registered"] = "ok" if self.consumer.is_registered else "no heartbeat"
        try:
            await self.redis.ping()
            checks["redis"] = "ok"
        except Exception:
            checks["redis"] = "unreachable"
        return checks


class WorkerMetrics:
    """Gauges read from the engine's scheduler when Prometheus scrapes."""

    def __init__(self, meter: Meter, engine: InferenceEngine) -> None:
        self._engine = engine
        self._labels = {"model": engine.info.model}
        meter.create_observable_gauge(
            "enclave.worker.running",
            [self._running],
            unit="{request}",
            description="Requests in the engine's running batch",
        )
        meter.create_observable_gauge(
            "enclave.worker.waiting",
            [self._waiting],
            unit="{request}",
            description="Requests waiting inside the engine",
        )
        meter.create_observable_gauge(
            "enclave.worker.kv_cache_usage_ratio",
            [self._kv_cache],
            unit="1",
            description="Share of the KV cache in use (0 to 1)",
        )
        meter.create_observable_gauge(
            "enclave.worker.capacity",
            [self._capacity],
            unit="{request}",
            description="Requests the worker runs at once (max_num_seqs)",
        )

    def _running(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._engine.load().running, self._labels)]

    def _waiting(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._engine.load().waiting, self._labels)]

    def _kv_cache(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._engine.load().kv_cache_usage, self._labels)]

    def _capacity(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self._engine.info.capacity, self._labels)]
