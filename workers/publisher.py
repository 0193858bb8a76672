"""Ordered, batched writes from a worker to Redis: events, streamed flags, counters, acks.

Everything the worker writes goes through one queue and leaves in one pipeline per event
loop turn, so the events of all requests in an engine step share a round trip, and each
job's writes reach Redis in the order they were made (flag before first token, events
before ack).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from gateway.queue.protocol import MESSAGE_FIELD, WORKER_GROUP, Event, Job, encode
from gateway.queue.schedule import charge

logger = logging.getLogger("enclave.worker")

INBOX_MAXLEN = 100_000
_RETRIES = 20

Command = Callable[[Pipeline], object]


class EventPublisher:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pending: list[Command] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name="publisher")

    def send(self, stream: str, event: Event) -> None:
        data = encode(event)
        self._put(lambda p: p.xadd(stream, {MESSAGE_FIELD: data}, maxlen=INBOX_MAXLEN))

    def set_flag(self, key: str, ttl_s: int) -> None:
        self._put(lambda p: p.set(key, b"1", ex=ttl_s))

    def count(self, key: str, ttl_s: int) -> None:
        """Add one to a counter that expires (e.g. jobs started this minute)."""
        self._put(lambda p: p.incr(key))
        self._put(lambda p: p.expire(key, ttl_s))

    def charge(self, job: Job, tokens: int) -> None:
        """Count ``tokens`` served (negative: refunded) to the job's fair-scheduling queue."""
        if tokens:
            self._put(lambda p: charge(p, job, tokens))

    def ack(self, stream: str, entry_id: bytes) -> None:
        self._put(lambda p: p.xack(stream, WORKER_GROUP, entry_id))
        self._put(lambda p: p.xdel(stream, entry_id))

    def _put(self, command: Command) -> None:
        self._pending.append(command)
        self._wakeup.set()

    async def close(self) -> None:
        """Flush what is pending, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _flush_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if batch:
                await self._flush(batch)
            if self._closing and not self._pending:
                return

    async def _flush(self, batch: list[Command]) -> None:
        for attempt in range(_RETRIES):
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for command in batch:
                        command(pipe)
                    await pipe.execute()
                return
            except RedisError:
                logger.warning("publishing to Redis failed (attempt %d)", attempt + 1)
                await asyncio.sleep(min(0.1 * 2**attempt, 2.0))
        logger.error("dropped %d queue writes after retries", len(batch))
