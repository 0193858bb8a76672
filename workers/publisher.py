"""Ordered, batched writes from a worker to Redis: events, streamed flags, counters, acks.

Everything the worker writes goes through one queue and leaves in one pipeline per event
loop turn, so the writes of all requests in an engine step share a round trip, and each
job's writes reach Redis in the order they were made (flag before first token, events
before ack).

Events that follow one another with no other write between them go out as one stream entry
per inbox (``BATCH_FIELD``): an engine step's tokens for the requests of one gateway cost
Redis one XADD and the gateway one entry to read, not one each. Fair-scheduling charges are
summed per queue and added once per pipeline: they are counters, and their order does not
matter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from gateway.queue.protocol import (
    BATCH_FIELD,
    MESSAGE_FIELD,
    WORKER_GROUP,
    Event,
    Job,
    encode,
    encode_batch,
)
from gateway.queue.schedule import charge

logger = logging.getLogger("enclave.worker")

INBOX_MAXLEN = 100_000
_RETRIES = 20

Command = Callable[[Pipeline], object]


def _xadd(stream: str, events: list[bytes]) -> Command:
    if len(events) == 1:
        one = events[0]
        return lambda p: p.xadd(stream, {MESSAGE_FIELD: one}, maxlen=INBOX_MAXLEN)
    batch = encode_batch(events)
    return lambda p: p.xadd(stream, {BATCH_FIELD: batch}, maxlen=INBOX_MAXLEN)


def _hincrbyfloat(key: str, field: str, amount: float) -> Command:
    return lambda p: p.hincrbyfloat(key, field, amount)


class EventPublisher:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pending: list[Command] = []
        self._events: dict[str, list[bytes]] = {}
        """Events sent since the last other write, by inbox, in the order sent."""
        self._charges: dict[tuple[str, str], float] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name="publisher")

    def reply(self, job: Job, event: Event) -> None:
        """Send ``event`` to the gateway that queued ``job``."""
        if job.reads_batches:
            self._send(job.reply_to, event)
        else:
            self._put(_xadd(job.reply_to, [encode(event)]))

    def _send(self, stream: str, event: Event) -> None:
        events = self._events.get(stream)
        if events is None:
            self._events[stream] = events = []
        events.append(encode(event))
        self._wakeup.set()

    def set_flag(self, key: str, ttl_s: int) -> None:
        self._put(lambda p: p.set(key, b"1", ex=ttl_s))

    def clear_flag(self, key: str) -> None:
        self._put(lambda p: p.delete(key))

    def count(self, key: str, ttl_s: int) -> None:
        """Add one to a counter that expires (e.g. jobs started this minute)."""
        self._put(lambda p: p.incr(key))
        self._put(lambda p: p.expire(key, ttl_s))

    def charge(self, job: Job, tokens: int) -> None:
        """Count ``tokens`` served (negative: refunded) to the job's fair-scheduling queue."""
        if tokens:
            key, queue, amount = charge(job, tokens)
            self._charges[key, queue] = self._charges.get((key, queue), 0.0) + amount
            self._wakeup.set()

    def ack(self, stream: str, entry_id: bytes) -> None:
        self._put(lambda p: p.xack(stream, WORKER_GROUP, entry_id))
        self._put(lambda p: p.xdel(stream, entry_id))

    def _put(self, command: Command) -> None:
        self._end_events()
        self._pending.append(command)
        self._wakeup.set()

    def _end_events(self) -> None:
        """The events sent so far go before whatever write comes next."""
        if self._events:
            events, self._events = self._events, {}
            self._pending.extend(_xadd(stream, sent) for stream, sent in events.items())

    def _take(self) -> list[Command]:
        self._end_events()
        batch, self._pending = self._pending, []
        if self._charges:
            charges, self._charges = self._charges, {}
            batch.extend(
                _hincrbyfloat(key, queue, amount)
                for (key, queue), amount in charges.items()
                if amount
            )
        return batch

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
            batch = self._take()
            if batch:
                await self._flush(batch)
            if self._closing and not (self._pending or self._events or self._charges):
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
