"""The body of a stand-in worker process: the real Consumer on a test engine, until SIGTERM or
SIGINT (``tests/bench/instant_worker.py``, ``tests/faults/fake_worker.py``)."""

from __future__ import annotations

import asyncio
import signal

from gateway.redis_client import open_redis
from gateway.settings import load_settings
from tests.fakes.engine import FakeEngine
from workers.consumer import Consumer


async def consume_until_signalled(engine: FakeEngine, worker_id: str) -> None:
    """Serve ``engine`` as worker ``worker_id`` with the queue settings of the environment
    (``ENCLAVE_REDIS__URL``, ``ENCLAVE_QUEUE__*``), as ``enclave worker`` would."""
    settings = load_settings()
    redis = open_redis(settings.redis_url, settings.redis.max_connections)
    consumer = Consumer(
        redis,
        engine,
        worker_id=worker_id,
        lease_timeout_s=settings.queue.lease_timeout_s,
        worker_ttl_s=settings.queue.worker_ttl_s,
        interactive_reserve=0,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await consumer.run(stop)
    finally:
        await redis.aclose()
