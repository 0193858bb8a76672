"""The gateway's side of the queue: enqueue jobs, relay events from this replica's inbox.

One dispatcher task per gateway process reads the replica's inbox stream and routes each
event to the request waiting for it. Workers write to ``Job.reply_to``, so tokens travel
back to the replica that holds the client's connection.

A worker never waits for a client: each request holds at most ``max_buffered_events``
events its client has not taken. A client that falls further behind (it stopped reading,
or reads slower than the model writes) has its job cancelled, its buffer dropped and its
stream ended with a ``client_too_slow`` error; ``submit``'s ``on_overflow`` hears of it at
once, so the request's outcome does not wait for a client that may never read again.

Deltas are numbered per job (``Delta.seq``): one that Redis took twice (a write the worker
retried) is relayed once, and a missing one (a write the worker gave up on) ends the
stream with a ``worker_lost`` error rather than a response with a hole in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import GatewayTimeout, QueueUnavailable
from gateway.queue.protocol import (
    BATCH_FIELD,
    CANCEL_CHANNEL,
    MESSAGE_FIELD,
    Delta,
    Event,
    Failed,
    Finished,
    Job,
    ModelCard,
    WorkerInfo,
    cancel_key,
    decode_batch,
    decode_event,
    decode_model_card,
    decode_worker_info,
    inbox_key,
    model_card_key,
    queued_key,
    starts_key,
    worker_info_key,
    workers_index_key,
)
from gateway.queue.schedule import Scheduler, waiting
from gateway.redis_batch import CommandBatcher

logger = logging.getLogger("enclave.queue")

INBOX_TTL_S = 3600
CANCEL_TTL_S = 3600
_READ_BLOCK_MS = 1000
_HOUSEKEEPING_S = 1.0
MAX_BUFFERED_EVENTS = 1024
"""Events a request may hold for its client (a few seconds of tokens at most rates)."""
CLIENT_TOO_SLOW = "client_too_slow"
_TOO_SLOW = (
    "The client did not read the response as fast as it was written; the request was stopped."
)
EVENTS_LOST = "worker_lost"
_EVENTS_LOST = (
    "Part of the response was lost between the worker and the gateway; the response is "
    "incomplete. Retry the request."
)


def unavailable(exc: RedisError) -> QueueUnavailable:
    """The 503 for a Redis error, which is logged (its message names no secret)."""
    logger.warning("job queue unreachable: %s: %s", type(exc).__name__, exc)
    return QueueUnavailable("The job queue is unreachable; try again shortly.")


class RedisJobQueue:
    def __init__(
        self,
        redis: Redis,
        *,
        request_timeout_s: float,
        worker_ttl_s: float,
        gateway_id: str | None = None,
        max_buffered_events: int = MAX_BUFFERED_EVENTS,
    ) -> None:
        self._redis = redis
        self._max_buffered = max_buffered_events
        self._request_timeout_s = request_timeout_s
        self._worker_ttl_s = worker_ttl_s
        self.gateway_id = gateway_id or uuid.uuid4().hex
        self.inbox = inbox_key(self.gateway_id)
        self._waiting: dict[str, asyncio.Queue[Event]] = {}
        self._on_overflow: dict[str, Callable[[], Awaitable[None]]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self._workers_cache: tuple[float, list[WorkerInfo]] = (0.0, [])
        self._batch = CommandBatcher(redis)
        self._scheduler = Scheduler(redis, self._batch)

    async def start(self) -> None:
        self._dispatcher = asyncio.create_task(self._dispatch(), name="enclave-inbox")

    async def stop(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher

    async def submit(
        self,
        job: Job,
        on_overflow: Callable[[], Awaitable[None]] | None = None,
        registry: tuple[str, bytes] | None = None,
    ) -> AsyncIterator[Event]:
        """Queue a job for its model's workers; return its events, ending after Finished or
        Failed. ``on_overflow`` is awaited if the client falls too far behind; ``registry``
        (a hash key and value) is set for the job's id atomically with the enqueue."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._waiting[job.id] = queue
        if on_overflow is not None:
            self._on_overflow[job.id] = on_overflow
        try:
            await self._scheduler.enqueue(job, registry)
        except RedisError as exc:
            self._waiting.pop(job.id, None)
            self._on_overflow.pop(job.id, None)
            raise unavailable(exc) from exc
        return self._events(job.id, queue)

    async def _events(self, job_id: str, queue: asyncio.Queue[Event]) -> AsyncIterator[Event]:
        last_delta = 0
        try:
            while True:
                try:
                    async with asyncio.timeout(self._request_timeout_s):
                        event = await queue.get()
                except TimeoutError:
                    raise GatewayTimeout(
                        f"No response from a worker within {self._request_timeout_s:g} s."
                    ) from None
                if isinstance(event, Delta) and event.seq:
                    if event.seq <= last_delta:
                        continue  # a retried write that Redis took twice
                    if event.seq > last_delta + 1:  # the worker gave up on a write
                        await self.cancel(job_id)
                        yield Failed(job_id, 502, "api_error", EVENTS_LOST, _EVENTS_LOST)
                        return
                    last_delta = event.seq
                yield event
                if isinstance(event, Finished | Failed):
                    return
        finally:
            self._waiting.pop(job_id, None)
            self._on_overflow.pop(job_id, None)

    def buffered(self) -> dict[str, int]:
        """Events received for each request in flight that its client has not taken yet."""
        return {job_id: queue.qsize() for job_id, queue in self._waiting.items()}

    async def queued(self, model: str, tenant: str) -> int:
        """How many of the tenant's jobs for ``model`` wait for a worker (within deadline)."""
        try:
            key, now = queued_key(model, tenant), time.time()
            return int(await self._batch.call(lambda p: p.zcount(key, now, "+inf")))
        except RedisError as exc:
            raise unavailable(exc) from exc

    async def unqueue(self, job: Job) -> None:
        """The job's wait is over without a worker taking it: it no longer counts as
        waiting. (A worker that takes a job removes it itself, in ``pick.lua``.)"""
        with contextlib.suppress(RedisError):
            await self._redis.zrem(queued_key(job.model, job.tenant), job.id)

    async def wait_estimate_s(self, model: str) -> int:
        """Seconds until a new job for ``model`` would start: the jobs not yet taken by a
        worker over the rate workers started jobs in the last minutes; 1 to 60."""
        minute = int(time.time() // 60)
        try:
            counts = await self._redis.mget(
                [starts_key(model, minute - 1), starts_key(model, minute)]
            )
            lag = await waiting(self._redis, model)
        except RedisError:
            return 5
        started = sum(int(c) for c in counts if c is not None)
        rate = started / (60 + time.time() % 60)
        if rate <= 0:
            return 30
        return max(1, min(60, math.ceil((lag + 1) / rate)))

    async def cancel(self, job_id: str) -> None:
        """Tell whichever worker holds (or will claim) the job to drop it."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(cancel_key(job_id), b"1", ex=CANCEL_TTL_S)
                pipe.publish(CANCEL_CHANNEL, job_id)
                await pipe.execute()
        except RedisError:
            logger.warning("could not publish cancel for %s", job_id)

    async def live_workers(self) -> list[WorkerInfo]:
        """Workers with a fresh heartbeat; cached for one second."""
        cached_at, workers = self._workers_cache
        now = time.time()
        if now - cached_at < 1.0:
            return workers
        try:
            ids: Any = await self._redis.zrangebyscore(
                workers_index_key(), now - self._worker_ttl_s, "+inf"
            )
            keys = [worker_info_key(i.decode()) for i in ids]
            blobs: list[Any] = await self._redis.mget(keys) if keys else []
        except RedisError as exc:
            raise unavailable(exc) from exc
        workers = [decode_worker_info(b) for b in blobs if b is not None]
        workers = [w for w in workers if not w.draining]
        self._workers_cache = (now, workers)
        return workers

    async def model_card(self, worker_id: str) -> ModelCard:
        """What the worker's model says of itself; empty until the worker has written it."""
        try:
            blob: Any = await self._redis.get(model_card_key(worker_id))
        except RedisError as exc:
            raise unavailable(exc) from exc
        return ModelCard() if blob is None else decode_model_card(blob)

    async def _dispatch(self) -> None:
        """Read the inbox and route each event to its request. The inbox's expiry is pushed
        back and what was read trimmed at most every ``_HOUSEKEEPING_S``, not per read: under
        load a read returns a few events, and a command per read would cost as much again."""
        last_id = b"0-0"
        trimmed_id, housekept_at = last_id, -math.inf
        while True:
            try:
                if time.monotonic() - housekept_at >= _HOUSEKEEPING_S:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        pipe.expire(self.inbox, INBOX_TTL_S)
                        if last_id != trimmed_id:
                            pipe.xtrim(self.inbox, minid=last_id, approximate=True)
                        await pipe.execute()
                    trimmed_id, housekept_at = last_id, time.monotonic()
                response: Any = await self._redis.xread(
                    {self.inbox: last_id}, count=1000, block=_READ_BLOCK_MS
                )
            except RedisError:
                logger.warning("inbox read failed; retrying")
                await asyncio.sleep(0.5)
                continue
            for _stream, entries in response:
                for entry_id, fields in entries:
                    last_id = entry_id
                    self._route_entry(fields)

    def _route_entry(self, fields: dict[bytes, bytes]) -> None:
        try:
            if (batch := fields.get(BATCH_FIELD)) is not None:
                events = decode_batch(batch)
            elif (data := fields.get(MESSAGE_FIELD)) is not None:
                events = [decode_event(data)]
            else:
                return
        except Exception:
            logger.warning("dropping undecodable event")
            return
        for event in events:
            self._route(event)

    def _route(self, event: Event) -> None:
        queue = self._waiting.get(event.job_id)
        if queue is None:
            return
        if queue.qsize() < self._max_buffered:
            queue.put_nowait(event)
        else:
            self._overflow(event.job_id, queue)

    def _overflow(self, job_id: str, queue: asyncio.Queue[Event]) -> None:
        """The client cannot keep up: drop what waits for it, end its stream with an error
        (for when it reads again), and stop the job; later events for it are dropped."""
        self._waiting.pop(job_id, None)
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(Failed(job_id, 499, "api_error", CLIENT_TOO_SLOW, _TOO_SLOW))
        logger.warning("client of %s is too slow; stopping its job", job_id)
        task = asyncio.create_task(self._stop_overflowed(job_id))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop_overflowed(self, job_id: str) -> None:
        await self.cancel(job_id)
        on_overflow = self._on_overflow.pop(job_id, None)
        if on_overflow is not None:
            await on_overflow()
