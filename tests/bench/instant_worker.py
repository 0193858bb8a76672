"""A BENCHMARK-ONLY worker: the real Consumer on an engine that answers a fixed short text at
once, so a benchmark sees what the gateway, the queue and the audit log cost with no model in
the way. It lives under tests/: no Enclave setting or command can select it.

    python -m tests.bench.instant_worker MODEL      (ENCLAVE_REDIS__URL as for a worker)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from redis.asyncio import Redis

from gateway.settings import load_settings
from tests.fakes.engine import FakeEngine
from workers.consumer import Consumer

INSTANT_REPLY = "ok"
CAPACITY = 256


async def main(model: str) -> None:
    settings = load_settings()
    redis = Redis.from_url(settings.redis_url)
    engine = FakeEngine(reply=INSTANT_REPLY, capacity=CAPACITY, model=model, max_context=4096)
    consumer = Consumer(
        redis,
        engine,
        worker_id=f"instant-{os.getpid()}",
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


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
