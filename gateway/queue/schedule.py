"""Fair scheduling between tenants: the two Lua scripts that queue and pick jobs.

Jobs wait in one Redis stream per (model, priority class, queue); the queue is the tenant,
or ``FIFO_QUEUE`` for every tenant when the gateway schedules first come, first served. A
worker with free slots runs ``pick.lua``, which takes interactive jobs before batch jobs
and, within a class, the next job of the backlogged queue whose virtual token counter is
least: Virtual Token Counter scheduling (Sheng et al., "Fairness in Serving Large Language
Models", OSDI 2024). A counter grows by the queue's tokens divided by its weight: the
estimated prompt when a job is picked (atomically with the choice), then the correction to
the true prompt and each output token as the worker produces them (``charge``).

Imports neither litestar, sqlalchemy nor vllm: workers use it too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from gateway.queue.protocol import (
    BACKLOG_KEY_PREFIX,
    CANCEL_KEY_PREFIX,
    CANCEL_KEY_SUFFIX,
    PRIORITIES,
    WORKER_GROUP,
    Job,
    backlog_key,
    encode,
    jobs_prefix,
    jobs_stream_key,
    queued_key,
    queues_key,
    service_floor_key,
    service_key,
    work_channel,
)
from gateway.redis_batch import CommandBatcher

QUEUED_GRACE_S = 60
BYTES_PER_TOKEN = 4
"""Prompt tokens are estimated from its UTF-8 bytes until the worker counts them."""


def _script(name: str) -> str:
    return files("gateway.queue").joinpath(name).read_text(encoding="utf-8")


def estimated_tokens(text: str) -> int:
    return -(-len(text.encode()) // BYTES_PER_TOKEN)


@dataclass(frozen=True)
class Taken:
    """A job a worker took: ack it on ``stream`` by ``entry_id`` when done."""

    stream: str
    entry_id: bytes
    payload: bytes


class Scheduler:
    def __init__(self, redis: Redis, batcher: CommandBatcher | None = None) -> None:
        """With ``batcher``, enqueues made in one event-loop turn share a round trip."""
        self._redis = redis
        self._batcher = batcher
        self._enqueue: Any = redis.register_script(_script("enqueue.lua"))
        self._pick: Any = redis.register_script(_script("pick.lua"))

    async def enqueue(self, job: Job, registry: tuple[str, bytes] | None = None) -> bytes:
        """Queue ``job``; its tenant's waiting jobs are tracked until ``job.start_by``. With
        ``registry`` (a hash key and a value), the job's id is set in that hash in the same
        atomic step (a gateway's registry of accepted requests, ``gateway.custody``)."""
        keys = [
            jobs_stream_key(job.model, job.priority, job.queue_name),
            queues_key(job.model),
            backlog_key(job.model, job.priority),
            service_key(job.model),
            service_floor_key(job.model),
            queued_key(job.model, job.tenant),
        ]
        expire_at = int(job.start_by) + QUEUED_GRACE_S if job.start_by else 0
        args: list[Any] = [
            job.queue_name,
            encode(job),
            job.id,
            repr(job.start_by),
            job.cost,
            repr(job.weight),
            job.priority,
            work_channel(job.model),
            expire_at,
            WORKER_GROUP,
        ]
        if registry is not None:
            keys.append(registry[0])
            args.append(registry[1])
        if self._batcher is not None:
            sha: str = self._enqueue.sha
            try:
                batched: bytes = await self._batcher.call(
                    lambda p: p.evalsha(sha, len(keys), *keys, *args)
                )
                return batched
            except NoScriptError:  # a restarted Redis: the call below loads it again
                pass
        entry_id: bytes = await self._enqueue(keys=keys, args=args)
        return entry_id

    async def pick(self, model: str, consumer: str, free: int, free_batch: int) -> list[Taken]:
        """Take up to ``free`` jobs for ``model``, of which at most ``free_batch`` batch."""
        keys = [
            service_key(model),
            service_floor_key(model),
            backlog_key(model, "interactive"),
            backlog_key(model, "batch"),
        ]
        args = [
            jobs_prefix(model),
            WORKER_GROUP,
            consumer,
            repr(time.time()),
            free,
            free_batch,
            CANCEL_KEY_PREFIX,
            CANCEL_KEY_SUFFIX,
        ]
        taken: list[Any] = await self._pick(keys=keys, args=args)
        return [Taken(stream.decode(), entry_id, payload) for stream, entry_id, payload in taken]


def charge(job: Job, tokens: int) -> tuple[str, str, float]:
    """What serving ``tokens`` (negative: a refund) adds to which counter: the HASH key, the
    job's queue in it, and the weighted amount (``HINCRBYFLOAT``)."""
    weight = job.weight if job.weight > 0 else 1.0
    return service_key(job.model), job.queue_name, tokens / weight


async def waiting(redis: Redis, model: str) -> int:
    """Jobs for ``model`` not yet taken by any worker, in every class and queue."""
    async with redis.pipeline(transaction=False) as pipe:
        for priority in PRIORITIES:
            pipe.hvals(backlog_key(model, priority))
        counts: list[list[bytes]] = await pipe.execute()
    return sum(max(0, int(count)) for values in counts for count in values)


@dataclass(frozen=True)
class QueueBacklog:
    """Jobs of one queue (a tenant's, or ``FIFO_QUEUE``) waiting for a model's workers."""

    model: str
    queue: str
    depth: int
    oldest_age_s: float


async def backlogs(redis: Redis) -> list[QueueBacklog]:
    """Every backlogged queue of every model, both classes summed: how many jobs wait and
    how long the oldest has (from its stream entry id, the time it was queued)."""
    prefix = BACKLOG_KEY_PREFIX
    waiting_by_queue: dict[tuple[str, str], int] = {}
    streams: list[tuple[str, str, str]] = []
    async for raw in redis.scan_iter(match=f"{prefix}*", count=1000):
        model, _, priority = _text(raw)[len(prefix) :].rpartition(":")
        if priority not in PRIORITIES:
            continue
        for queue, count in (await redis.hgetall(raw)).items():
            if int(count) > 0:
                key = (model, _text(queue))
                waiting_by_queue[key] = waiting_by_queue.get(key, 0) + int(count)
                streams.append((model, key[1], jobs_stream_key(model, priority, key[1])))
    oldest: dict[tuple[str, str], float] = {}
    now_ms = time.time() * 1000
    for model, queue, stream in streams:
        queued_at_ms = await _oldest_undelivered_ms(redis, stream)
        if queued_at_ms is not None:
            age = max(0.0, (now_ms - queued_at_ms) / 1000)
            oldest[model, queue] = max(oldest.get((model, queue), 0.0), age)
    return [
        QueueBacklog(model, queue, depth, oldest.get((model, queue), 0.0))
        for (model, queue), depth in sorted(waiting_by_queue.items())
    ]


async def _oldest_undelivered_ms(redis: Redis, stream: str) -> int | None:
    """When the first entry no worker has taken yet was added (ms), if any."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # the stream went away meanwhile
        return None
    delivered = next(
        (g["last-delivered-id"] for g in groups if g["name"] == WORKER_GROUP.encode()), b"0-0"
    )
    entries = await redis.xrange(stream, min=b"(" + delivered, count=1)
    return int(_text(entries[0][0] or b"0").split("-")[0]) if entries else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
