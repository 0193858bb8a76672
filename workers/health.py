"""A worker's readiness and metrics, served by its management listener (``/readyz``,
``/metrics``; ``gateway.management``).

Ready: the engine is loaded and healthy, the worker is registered (its heartbeat is fresh,
so gateways route to it) and not draining, and Redis answers. Metrics: the scheduler's
running and waiting requests and KV-cache use, labelled by model; vLLM's own ``vllm:*``
series sit beside them in the same registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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


_GAUGES: tuple[tuple[str, str, str, Callable[[InferenceEngine], float]], ...] = (
    ("running", "{request}", "Requests in the engine's running batch", lambda e: e.load().running),
    ("waiting", "{request}", "Requests waiting inside the engine", lambda e: e.load().waiting),
    (
        "kv_cache_usage_ratio",
        "1",
        "Share of the KV cache in use (0 to 1)",
        lambda e: e.load().kv_cache_usage,
    ),
    ("capacity", "{request}", "Requests the worker runs at once", lambda e: e.info.capacity),
)


class WorkerMetrics:
    """Gauges read from the engine's scheduler when Prometheus scrapes:
    ``enclave_worker_<name>{model}``."""

    def __init__(self, meter: Meter, engine: InferenceEngine) -> None:
        labels = {"model": engine.info.model}
        for name, unit, description, read in _GAUGES:

            def observe(
                options: CallbackOptions, read: Callable[[InferenceEngine], float] = read
            ) -> Iterable[Observation]:
                return [Observation(read(engine), labels)]

            meter.create_observable_gauge(
                f"enclave.worker.{name}", [observe], unit=unit, description=description
            )
