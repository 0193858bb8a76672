"""The gateway's and worker's Redis client waits for a free connection rather than failing,
and replaces connections the server closed rather than failing a command on them."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

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


async def test_connections_the_server_closed_are_replaced_not_failed(
    redis_url: str, redis_client: Redis
) -> None:
    """As after a Redis restart: every idle connection of the pool closed by the server;
    the next commands, as many at once as there are connections, each get a fresh one."""
    name = f"enclave-test-{uuid.uuid4().hex[:12]}"
    redis = open_redis(f"{redis_url}?client_name={name}", max_connections=8)
    try:
        # eight commands at once leave eight idle connections in the pool
        await asyncio.gather(
            *(redis.blpop([f"enclave:test:empty:{i}"], timeout=0.1) for i in range(8))
        )
        ids = [c["id"] for c in await redis_client.client_list() if c["name"] == name]
        assert len(ids) == 8
        for client_id in ids:
            await redis_client.client_kill_filter(_id=client_id)
        assert [c for c in await redis_client.client_list() if c["name"] == name] == []

        replies = await asyncio.gather(*(redis.ping() for _ in range(8)), return_exceptions=True)
        assert replies == [True] * 8  # with redis-py 8's defaults: "Connection closed by server"
    finally:
        await redis.aclose()
