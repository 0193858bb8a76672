"""What the soak test reads of Redis: memory, connections, and the keys left behind.

Redis 7.0 counts the buffers of an open connection in ``used_memory`` (about 38 KB each)
but not under ``mem_clients_normal``; connection pools (the gateway's grows with the
requests in flight) keep idle connections open, so a comparison of ``used_memory`` allows
for connections opened in between, at a cost measured on the server (``connection_bytes``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis


@dataclass(frozen=True)
class RedisMemory:
    """One reading of Redis: its memory, its connections, its keys."""

    used_bytes: int
    """``used_memory``: everything Redis allocated, connections included."""
    connections: int
    """``connected_clients``: connection pools keep idle connections open."""
    keys: int
    key_bytes: int
    """The sum of MEMORY USAGE over every key: what the data takes."""


async def used_memory(redis: Redis) -> int:
    info: Any = await redis.info("memory")
    return int(info["used_memory"])


async def read_redis_memory(redis: Redis) -> RedisMemory:
    info: Any = await redis.info()
    key_bytes = 0
    async for key in redis.scan_iter(count=1000):
        key_bytes += int(await redis.memory_usage(key) or 0)
    return RedisMemory(
        int(info["used_memory"]), int(info["connected_clients"]), int(await redis.dbsize()),
        key_bytes,
    )  # fmt: skip


async def connection_bytes(redis_url: str, connections: int = 20) -> int:
    """What Redis allocates for one open connection that has sent a command: its buffers,
    which ``used_memory`` counts, though not ``mem_clients_normal`` (Redis 7.0).
    Measured on the server itself, with connections opened and closed for the purpose."""
    probe = Redis.from_url(redis_url)
    clients = [Redis.from_url(redis_url, single_connection_client=True) for _ in range(connections)]
    try:
        before = await used_memory(probe)
        for client in clients:
            await client.ping()
        after = await used_memory(probe)
    finally:
        for client in clients:
            await client.aclose()
        await probe.aclose()
    return max(0, (after - before) // connections)


async def memory_stats(redis: Redis) -> dict[str, int]:
    """MEMORY STATS, its whole numbers only."""
    stats: Any = await redis.memory_stats()
    return {str(k): int(v) for k, v in stats.items() if isinstance(v, int)}


KeyShapes = dict[str, tuple[int, int]]


async def key_shapes(redis: Redis) -> KeyShapes:
    """Keys by shape (ids and numbers as ``*``, so a key kept per request shows as a count):
    how many, and the bytes they take (MEMORY USAGE)."""
    shapes: KeyShapes = {}
    async for key in redis.scan_iter(count=1000):
        shape = re.sub(r"[0-9a-f]{8,}|\d+", "*", key.decode(errors="replace"))
        count, size = shapes.get(shape, (0, 0))
        shapes[shape] = (count + 1, size + int(await redis.memory_usage(key) or 0))
    return shapes


def added_keys(before: KeyShapes, after: KeyShapes) -> KeyShapes:
    """Shapes with more keys after than before: (keys added, bytes of all of them after)."""
    return {
        shape: (count - before.get(shape, (0, 0))[0], size)
        for shape, (count, size) in after.items()
        if count > before.get(shape, (0, 0))[0]
    }
