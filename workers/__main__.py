"""settings -> engine -> consumer.run(): one worker process serving one model."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid
from pathlib import Path

from redis.asyncio import Redis

from gateway.logs import configure_logging, write_vllm_logging_config
from gateway.management import ManagementServer
from gateway.metrics import MetricsExport
from gateway.redis_client import open_redis
from gateway.settings import Settings, load_settings
from gateway.telemetry import tracer_of, tracer_provider
from workers.consumer import Consumer
from workers.health import WorkerHealth, WorkerMetrics
from workers.models import model_digest, resolve_model

logger = logging.getLogger("enclave.worker")

NO_PHONE_HOME = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"}


async def run_worker(settings: Settings) -> None:
    """Load the engine, then serve jobs until SIGTERM or SIGINT, then drain and exit."""
    os.environ.update(NO_PHONE_HOME)
    if settings.log_format == "json" and "VLLM_LOGGING_CONFIG_PATH" not in os.environ:
        # vLLM configures logging in each of its processes (the engine core too): ours.
        os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(write_vllm_logging_config())
    if settings.worker.kv_cache_memory_bytes is None:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.worker.cpu_kvcache_space_gib))
    else:  # vLLM's CPU platform lets this variable override the exact size
        os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
    if settings.worker.model_path is None:
        raise SystemExit("enclave worker: no model given (--model or ENCLAVE_WORKER__MODEL_PATH)")
    path = resolve_model(str(settings.worker.model_path), settings.model_dir)
    name = settings.worker.served_model_name or path.name
    redis = open_redis(settings.redis_url, settings.redis.max_connections)
    health = WorkerHealth(redis)
    export = MetricsExport.for_worker()  # beside vLLM's own series

    async def metrics_text() -> bytes:
        return export.render()

    management = ManagementServer(
        settings.http.host,
        settings.http.management_port,
        readiness=health.readiness,
        metrics=metrics_text,
    )
    if settings.http.management_port:
        await management.start()  # /readyz says "loading" until the model is in
    try:
        await _serve(settings, path, name, redis, health, export)
    finally:
        await management.stop()
        await redis.aclose()
        export.shutdown()


async def _serve(
    settings: Settings,
    path: Path,
    name: str,
    redis: Redis,
    health: WorkerHealth,
    export: MetricsExport,
) -> None:
    digest = model_digest(path)
    logger.info("starting engine for %s (%s) from %s", name, digest, path)
    from workers.vllm_engine import start_vllm_engine  # the only vllm import

    engine = await start_vllm_engine(
        path,
        served_model_name=name,
        weights_digest=digest,
        max_num_seqs=settings.worker.max_num_seqs,
        max_model_len=settings.worker.max_model_len,
        dtype=settings.worker.dtype,
        enforce_eager=settings.worker.enforce_eager,
        gpu_memory_utilization=settings.worker.gpu_memory_utilization,
        kv_cache_memory_bytes=settings.worker.kv_cache_memory_bytes,
        tool_call_parser=settings.worker.tool_call_parser,
        fim_template=settings.worker.fim_template,
        runner=settings.worker.runner,
    )
    provider = tracer_provider(settings.telemetry, "worker")
    worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    consumer = Consumer(
        redis,
        engine,
        worker_id=worker_id,
        lease_timeout_s=settings.queue.lease_timeout_s,
        worker_ttl_s=settings.queue.worker_ttl_s,
        interactive_reserve=settings.worker.interactive_reserve,
        failpoint=settings.worker.failpoint,
        tracer=tracer_of(provider),
    )
    health.engine, health.consumer = engine, consumer
    WorkerMetrics(export.meter, engine)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logger.info(
        "worker %s serving %s for %s (capacity %d)",
        worker_id,
        name,
        engine.info.task,
        engine.info.capacity,
    )
    try:
        await consumer.run(stop)
    finally:
        engine.shutdown()
        if provider is not None:
            provider.shutdown()  # sends the spans still batched
    logger.info("worker %s drained and stopped", worker_id)


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(run_worker(settings))


if __name__ == "__main__":
    main()
