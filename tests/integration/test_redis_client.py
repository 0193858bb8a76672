"""The gateway's and worker's Redis client waits for a free connection rather than failing."""

from __future__ import annotations

import asyncio

import pytest

from gateway.redis_client import open_redis

pytestmark = pytest.mark.integration


async def test_more_commands_at_once_than_connections_all_succeed(redis_url: str) -> None:
    redis = open_redis(redis_url, max_connections=4)
    try:
        # each BLPOP holds its connection for 0.2 s: 20 of them need five rounds of four
        results = await asyncio.gather(
            *(redis.blpop([f"enclave:test:empty:{i}"], timeout=0.2) for i in range(20))
        )
        assert results == [None] * 20  # redis-py's own pool would refuse the fifth at once
    finally:
        await redis.aclose()
