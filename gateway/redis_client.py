"""The Redis client of a gateway or a worker: a bounded pool that waits for a free
connection instead of failing, and replaces connections the server has closed.

redis-py's default pool refuses a command outright (``MaxConnectionsError``) once 100
connections are in use, and a gateway uses one per command in flight: a burst of 100
streaming requests was enough to turn one of them into a 503. A blocking pool makes the
101st command wait until a connection is free, for at most ``POOL_WAIT_S``.

Maintenance notifications (a Redis Enterprise and Cloud handshake, ``enabled="auto"`` by
default since redis-py 8) are turned off: with them on, the pool skips its check of a
connection at checkout, so after a Redis restart every idle connection failed its next
command with "Connection closed by server" (redis/redis-py#4128): one 503 per pooled
connection once Redis was back.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.maint_notifications import MaintNotificationsConfig

POOL_WAIT_S = 5.0
HEALTH_CHECK_INTERVAL_S = 30


def open_redis(url: str, max_connections: int) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )
    return Redis.from_pool(pool)
