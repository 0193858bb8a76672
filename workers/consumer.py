"""The queue consumer: take jobs by capacity, stream events, ack, renew leases, drain.

Jobs are taken with ``pick.lua`` (gateway/queue/schedule.py): interactive before batch, the
least-served tenant first; a batch job starts only if ``interactive_reserve`` slots stay free
after it, so the next interactive job never waits for one.
Every enqueue publishes on the model's work channel, which wakes idle workers.

Delivery is at-least-once: a job stays in its stream's pending list until acked. Leases are
the pending entries' idle time; this worker resets it for its running jobs every third of
the lease, and claims other workers' jobs idle for longer than a lease. A reclaimed job is
re-run only if no token reached its client (the streamed flag is set before the first token
is published); otherwise its client gets a clean error event.

While Redis is away (or stalled) no lease is renewed, so once it is back every running job
looks idle. A worker that has just met Redis failing, or slow to answer, waits a lease
before it reclaims anything (every living worker renews its own jobs in that time), and
never reclaims a job it runs itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from gateway.logs import request_context
from gateway.queue.protocol import (
    CANCEL_CHANNEL,
    MESSAGE_FIELD,
    WORKER_GROUP,
    Delta,
    Failed,
    Finished,
    Job,
    ModelCard,
    Started,
    WorkerInfo,
    cancel_key,
    decode_job,
    encode_model_card,
    encode_worker_info,
    model_card_key,
    queues_key,
    starts_key,
    streamed_flag_key,
    work_channel,
    worker_info_key,
    workers_index_key,
)
from gateway.queue.schedule import Scheduler
from gateway.telemetry import context_from
from workers.embedding_jobs import serve_embedding
from workers.engine import ChatPrompt, EngineRequestError, InferenceEngine, Prompt, TextPrompt
from workers.publisher import EventPublisher

logger = logging.getLogger("enclave.worker")

FLAG_TTL_S = 3600
STARTS_TTL_S = 180  # the current minute and the two before it
HOLD_BEFORE_GENERATE = "hold_before_generate"
IDLE_POLL_S = 1.0  # picks again this often without a wake-up (a lost message, a reconnect)
PRE_START_RETRY_S = 0.2
EARLY_CANCEL_S = 5.0  # a cancel heard for a job not running here is kept this long


@dataclass
class Running:
    stream: str
    entry_id: bytes
    task: asyncio.Task[None]


class Consumer:
    def __init__(
        self,
        redis: Redis,
        engine: InferenceEngine,
        *,
        worker_id: str,
        lease_timeout_s: float,
        worker_ttl_s: float,
        interactive_reserve: int = 1,
        failpoint: str | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._redis = redis
        self._engine = engine
        self.worker_id = worker_id
        self._lease_ms = int(lease_timeout_s * 1000)
        self._worker_ttl_s = worker_ttl_s
        self._failpoint = failpoint
        self._tracer = tracer or trace.NoOpTracer()
        self._model = engine.info.model
        self._reserve = min(interactive_reserve, engine.info.capacity - 1)
        self._scheduler = Scheduler(redis)
        self._publisher = EventPublisher(redis)
        self._running: dict[str, Running] = {}
        self._cancelled_early: dict[str, float] = {}
        """Cancels heard for jobs not running here (yet): job id -> time.monotonic()."""
        self._slot_freed = asyncio.Event()
        self._work_arrived = asyncio.Event()
        self._reclaim_not_before = 0.0
        """time.monotonic() before which ``_reclaim`` takes nothing (see the module's doc)."""
        self._draining = False
        self.ready = asyncio.Event()  # set once registered and pulling
        self.heartbeat_at: float | None = None
        """time.monotonic() of the last heartbeat Redis took."""
        self._stopped = asyncio.Event()  # an event, not task.cancel(): redis-py may swallow it

    @property
    def free_slots(self) -> int:
        return self._engine.info.capacity - len(self._running)

    @property
    def free_batch_slots(self) -> int:
        """Batch work leaves the reserve free, beyond the slots interactive work holds."""
        return max(0, self.free_slots - self._reserve)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then drain: stop pulling, finish running jobs."""
        self._publisher.start()
        await self._heartbeat(with_card=True)
        leases = asyncio.create_task(self._lease_loop(), name="leases")
        cancels = asyncio.create_task(self._listener(), name="cancels")
        puller = asyncio.create_task(self._pull_loop(), name="puller")
        self.ready.set()
        await stop.wait()
        self._draining = True
        logger.info("draining: %d running", len(self._running))
        self._slot_freed.set()
        await puller  # wakes on slot_freed and returns; never cancelled mid-command
        with contextlib.suppress(RedisError):
            await self._heartbeat()  # announce draining: gateways stop routing here
        while self._running:
            await asyncio.gather(*(r.task for r in list(self._running.values())))
        self._stopped.set()
        await asyncio.gather(leases, cancels, return_exceptions=True)
        await self._publisher.close()
        await self._deregister()

    async def _pull_loop(self) -> None:
        reclaim_every_s = self._lease_ms / 3000
        next_reclaim = time.monotonic()
        while not self._draining:
            free = self.free_slots
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            if time.monotonic() >= next_reclaim:
                # A dead worker's jobs first: under load, new jobs would otherwise take
                # every slot that frees, and the orphans wait until the queue runs dry.
                next_reclaim = time.monotonic() + reclaim_every_s
                try:
                    if await self._reclaim():  # more may wait: they take the next slot too
                        next_reclaim = time.monotonic()
                except RedisError:
                    self._redis_failed()
                    logger.warning("reclaim failed; retrying", exc_info=True)
                if self.free_slots <= 0:
                    continue
                free = self.free_slots
            # Cleared before the pick: a job queued while it runs wakes the next wait.
            self._work_arrived.clear()
            self._slot_freed.clear()
            try:
                asked_at = time.monotonic()
                taken = await self._scheduler.pick(
                    self._model, self.worker_id, free, self.free_batch_slots
                )
                self._note_if_slow(asked_at)
            except RedisError:
                self._redis_failed()
                logger.warning("job pick failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            for job in taken:
                self._spawn(job.stream, job.entry_id, job.payload, is_reclaimed=False)
            if not taken:
                await self._wait_for_work()

    async def _wait_for_work(self) -> None:
        """Until a job is queued, a slot frees (batch work may fit), or the poll interval."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self._work_arrived, self._slot_freed)]
        try:
            await asyncio.wait(waits, timeout=IDLE_POLL_S, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    def _spawn(
        self, stream: str, entry_id: bytes, payload: bytes | None, *, is_reclaimed: bool
    ) -> None:
        try:
            job = decode_job(payload or b"")
        except Exception:
            logger.error("dropping undecodable job %s", entry_id)
            self._publisher.ack(stream, entry_id)
            return
        task = asyncio.create_task(self._serve(stream, entry_id, job, is_reclaimed), name=job.id)
        self._running[job.id] = Running(stream, entry_id, task)

    async def _serve(self, stream: str, entry_id: bytes, job: Job, is_reclaimed: bool) -> None:
        try:
            if await self._should_skip(job, is_reclaimed):
                return
            if self._failpoint == HOLD_BEFORE_GENERATE:
                await asyncio.Event().wait()  # fault injection: hold the job until killed
            with self._traced(job), request_context(job.id):
                await (self._embed(job) if self._is_embedding(job) else self._generate(job))
        except asyncio.CancelledError:
            logger.info("job %s cancelled by its client", job.id)
        except Exception:
            logger.exception("job %s failed", job.id)
            self._publisher.reply(
                job,
                Failed(job.id, 500, "api_error", "worker_error", "The worker failed."),
            )
        finally:
            self._publisher.ack(stream, entry_id)
            # Acknowledged, the job can no longer be reclaimed: its flag has served (kept
            # for FLAG_TTL_S, every request would hold a key in Redis for an hour).
            self._publisher.clear_flag(streamed_flag_key(job.id))
            self._running.pop(job.id, None)
            self._slot_freed.set()
            with contextlib.suppress(RedisError):
                await self._heartbeat()

    @contextlib.contextmanager
    def _traced(self, job: Job) -> Iterator[None]:
        """The job's spans, in the trace of the request that queued it: the job, the wait
        in the queue (from enqueue to now), and the engine's work inside it."""
        context = context_from(job.trace)
        attributes = {
            "enclave.request_id": job.id,
            "enclave.model": job.model,
            "enclave.worker": self.worker_id,
        }
        with self._tracer.start_as_current_span("job", context=context, attributes=attributes):
            self._tracer.start_span("queue wait", start_time=int(job.enqueued_at * 1e9)).end()
            with self._tracer.start_as_current_span("engine generate"):
                yield

    async def _should_skip(self, job: Job, is_reclaimed: bool) -> bool:
        """Whether not to start the job. Redis away for a moment is no reason to fail a job
        that has not started: ask again until it answers or the start deadline passes."""
        while True:
            try:
                return await self._is_skipped(job, is_reclaimed)
            except RedisError:
                logger.warning("job %s: Redis unreachable before the start; retrying", job.id)
                await asyncio.sleep(PRE_START_RETRY_S)

    async def _is_skipped(self, job: Job, is_reclaimed: bool) -> bool:
        if job.start_by and time.time() > job.start_by:
            logger.info("job %s waited past its start deadline; not started", job.id)
            return True  # its gateway has answered 503 already
        if not is_reclaimed:
            # pick.lua looked at the cancel key in the step that took the job; a cancel
            # since then was heard by the listener (kept in _cancelled_early if the job was
            # not running yet) or is found by the sweep. No round trip before the start.
            return self._cancelled_early.pop(job.id, None) is not None
        if await self._redis.exists(cancel_key(job.id)):
            return True
        if await self._redis.exists(streamed_flag_key(job.id)):
            logger.warning("job %s was reclaimed after streaming; failing it", job.id)
            message = (
                "The worker serving this request stopped after the response had started; "
                "the response is incomplete. Retry the request."
            )
            self._publisher.reply(job, Failed(job.id, 502, "api_error", "worker_lost", message))
            return True
        return False

    async def _generate(self, job: Job) -> None:
        prompt: Prompt = (
            ChatPrompt(job.messages, job.tools)
            if job.kind == "chat"
            else TextPrompt(job.prompt, job.suffix)
        )
        has_streamed = False
        charged = 0  # output tokens charged to the job's queue so far
        deltas = 0  # deltas sent so far: the next one's seq, less one
        choices = job.sampling.n
        reasons: dict[int, str] = {}  # finish reason by choice
        try:
            async for out in self._engine.generate(job.id, prompt, job.sampling):
                if not has_streamed:
                    trace.get_current_span().add_event("first token")
                    # The flag precedes the first event in one ordered pipeline.
                    self._publisher.set_flag(streamed_flag_key(job.id), FLAG_TTL_S)
                    info = self._engine.info
                    self._publisher.reply(
                        job,
                        Started(job.id, self.worker_id, out.prompt_tokens, info.weights_digest),
                    )
                    minute = int(time.time() // 60)  # the drain rate gateways estimate waits by
                    self._publisher.count(starts_key(job.model, minute), STARTS_TTL_S)
                    self._publisher.charge(job, out.prompt_tokens - job.cost)  # estimate -> true
                    has_streamed = True
                self._publisher.charge(job, out.completion_tokens - charged)
                charged = out.completion_tokens
                if out.text or out.tool_calls or out.logprobs:
                    deltas += 1
                    delta = Delta(
                        job.id,
                        out.text,
                        out.completion_tokens,
                        out.tool_calls,
                        out.index,
                        out.logprobs,
                        seq=deltas,
                    )
                    self._publisher.reply(job, delta)
                if out.finish_reason is not None:
                    reasons[out.index] = out.finish_reason
                    if len(reasons) == choices or out.finish_reason == "abort":
                        finished = Finished(
                            job.id,
                            reasons.get(0, out.finish_reason),
                            out.prompt_tokens,
                            out.completion_tokens,
                            tuple(reasons.get(i, "abort") for i in range(choices))
                            if choices > 1
                            else (),
                        )
                        self._publisher.reply(job, finished)
        except EngineRequestError as exc:
            failed = Failed(
                job.id, 400, "invalid_request_error", exc.code, exc.message, param=exc.param
            )
            self._publisher.reply(job, failed)

    async def _lease_loop(self) -> None:
        interval_s = min(self._lease_ms / 3000, self._worker_ttl_s / 3)
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), interval_s)
                return
            try:
                asked_at = time.monotonic()
                await self._renew_leases()
                await self._sweep_cancelled()
                self._note_if_slow(asked_at)
                await self._reclaim()
                await self._heartbeat(with_card=True)
            except RedisError:
                self._redis_failed()
                logger.warning("lease renewal failed; retrying")

    async def _renew_leases(self) -> None:
        by_stream: dict[str, list[Any]] = {}
        for running in list(self._running.values()):
            by_stream.setdefault(running.stream, []).append(running.entry_id)
        if not by_stream:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, entry_ids in by_stream.items():
                pipe.xclaim(stream, WORKER_GROUP, self.worker_id, 0, entry_ids, justid=True)
            await pipe.execute()

    def _redis_failed(self) -> None:
        """Redis did not answer: the other workers' leases may be lapsing as this worker's
        are, through no fault of theirs. Give them a lease to renew before reclaiming."""
        self._reclaim_not_before = time.monotonic() + self._lease_ms / 1000

    def _note_if_slow(self, asked_at: float) -> bool:
        """Whether Redis took over a third of a lease to answer what was asked at
        ``asked_at``: stalled, it ran the renewals sent meanwhile only when it woke, so
        this counts as a failure (``_redis_failed``)."""
        if time.monotonic() - asked_at <= self._lease_ms / 3000:
            return False
        self._redis_failed()
        return True

    async def _reclaim(self) -> int:
        """Claim other workers' jobs idle past a lease, as many as slots are free; how many.

        Looked at first (XPENDING), then claimed only if still idle past the lease (XCLAIM's
        minimum idle time). A look that Redis was slow to answer (it was stalled: commands
        sent meanwhile, renewals among them, ran only when it woke) claims nothing, and
        neither does anything for a lease after: owners get to renew first."""
        if time.monotonic() < self._reclaim_not_before:
            return 0
        mine = {(r.stream, r.entry_id) for r in self._running.values()}
        asked_at = time.monotonic()
        streams: Any = await self._redis.smembers(queues_key(self._model))
        if self._note_if_slow(asked_at):
            return 0
        claimed_count = 0
        for stream in sorted(s.decode() for s in streams):
            free = self.free_slots
            if free <= 0 or self._draining:
                break
            asked_at = time.monotonic()
            try:
                idle: Any = await self._redis.xpending_range(
                    stream, WORKER_GROUP, "-", "+", free + len(mine), idle=self._lease_ms
                )
            except ResponseError:  # the stream or its group is gone: nothing to reclaim
                continue
            if self._note_if_slow(asked_at):
                return claimed_count
            entry_ids = [e["message_id"] for e in idle if (stream, e["message_id"]) not in mine]
            if not entry_ids:
                continue
            claimed: Any = await self._redis.xclaim(
                stream, WORKER_GROUP, self.worker_id, self._lease_ms, entry_ids[:free]
            )
            for entry_id, fields in claimed:
                if fields is not None:
                    logger.warning("reclaimed job entry %s from a silent worker", entry_id)
                    self._spawn(stream, entry_id, fields.get(MESSAGE_FIELD), is_reclaimed=True)
                    claimed_count += 1
        return claimed_count

    async def _listener(self) -> None:
        """Abort jobs whose clients went away; wake the pull loop when jobs are queued. Runs
        until the worker has drained."""
        work = work_channel(self._model).encode()
        while not self._stopped.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CANCEL_CHANNEL, work)
                self._work_arrived.set()  # what was queued while unsubscribed is waiting
                while not self._stopped.is_set():
                    message = await pubsub.get_message(timeout=0.5)
                    if message is None:
                        continue
                    if message["channel"] == work:
                        self._work_arrived.set()
                    else:
                        await self._abort(message["data"].decode())
            except RedisError:
                logger.warning("cancel channel lost; resubscribing")
                await asyncio.sleep(0.5)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _abort(self, job_id: str) -> None:
        running = self._running.get(job_id)
        if running is not None:
            running.task.cancel()
            await self._engine.abort(job_id)
            return
        # Perhaps taken by the pick in flight: remembered until it would have started.
        now = time.monotonic()
        early = self._cancelled_early
        early.pop(job_id, None)
        early[job_id] = now  # oldest first: the stale ones leave from the front
        while (oldest := next(iter(early))) != job_id and now - early[oldest] > EARLY_CANCEL_S:
            del early[oldest]

    async def _sweep_cancelled(self) -> None:
        """Catch cancels published while the channel was down: the cancel keys persist."""
        job_ids = list(self._running)
        if not job_ids:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.exists(cancel_key(job_id))
            flags = await pipe.execute()
        for job_id, is_cancelled in zip(job_ids, flags, strict=True):
            if is_cancelled:
                await self._abort(job_id)

    async def _heartbeat(self, *, with_card: bool = False) -> None:
        """Announce this worker (and, from the lease loop, its model card, which changes
        never and is too large to resend after every job)."""
        info = self._engine.info
        now = time.time()
        blob = encode_worker_info(
            WorkerInfo(
                worker_id=self.worker_id,
                model=info.model,
                max_context=info.max_context,
                weights_digest=info.weights_digest,
                capacity=info.capacity,
                running=self._engine.num_unfinished(),
                pid=os.getpid(),
                heartbeat_at=now,
                draining=self._draining,
                architecture=info.architecture,
                tool_parser=info.tool_parser,
                can_insert=bool(info.fim_template),
                task=info.task,
                embedding_size=info.embedding_size,
            )
        )
        ttl_s = max(1, int(self._worker_ttl_s))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(worker_info_key(self.worker_id), blob, ex=ttl_s)
            if with_card:
                card = ModelCard(
                    info.chat_template, dict(info.generation_defaults), info.fim_template
                )
                pipe.set(model_card_key(self.worker_id), encode_model_card(card), ex=ttl_s)
            pipe.zadd(workers_index_key(), {self.worker_id: now})
            pipe.zremrangebyscore(workers_index_key(), "-inf", now - 10 * self._worker_ttl_s)
            await pipe.execute()
        self.heartbeat_at = time.monotonic()

    @property
    def is_draining(self) -> bool:
        return self._draining

    @property
    def is_registered(self) -> bool:
        """Pulling jobs, with a heartbeat recent enough that gateways list this worker."""
        return (
            self.ready.is_set()
            and self.heartbeat_at is not None
            and time.monotonic() - self.heartbeat_at < self._worker_ttl_s
        )

    async def _deregister(self) -> None:
        with contextlib.suppress(RedisError):
            await self._redis.delete(
                worker_info_key(self.worker_id), model_card_key(self.worker_id)
            )
            await self._redis.zrem(workers_index_key(), self.worker_id)

    def _is_embedding(self, job: Job) -> bool:
        """An embed job, or any job for an embedding model (which refuses the others)."""
        return job.kind == "embed" or self._engine.info.task == "embed"

    async def _embed(self, job: Job) -> None:
        """An embed job: every vector at once (workers/embedding_jobs.py)."""

        def started(prompt_tokens: int) -> None:
            digest = self._engine.info.weights_digest
            self._publisher.reply(job, Started(job.id, self.worker_id, prompt_tokens, digest))
            minute = int(time.time() // 60)
            self._publisher.count(starts_key(job.model, minute), STARTS_TTL_S)
            self._publisher.charge(job, prompt_tokens - job.cost)  # estimate -> true

        await serve_embedding(job, self._engine, self._publisher, started)
