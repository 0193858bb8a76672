from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from gateway.queue.client import RedisJobQueue
from tests.fakes.engine import FakeEngine
from tests.integration.stack import Stack, open_stack


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(max_context=256, capacity=4)


@pytest.fixture
async def stack(
    make_postgres_url: Callable[[], str],
    redis_url: str,
    redis_client: Redis,
    engine: FakeEngine,
) -> AsyncIterator[Stack]:
    async with open_stack(make_postgres_url(), redis_url, engine) as opened:
        yield opened


@pytest.fixture
async def queue(redis_client: Redis) -> AsyncIterator[RedisJobQueue]:
    """A gateway's side of the queue, without the gateway."""
    job_queue = RedisJobQueue(redis_client, request_timeout_s=20, worker_ttl_s=5)
    await job_queue.start()
    yield job_queue
    await job_queue.stop()
