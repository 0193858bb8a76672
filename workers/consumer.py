"""The queue consumer: claim jobs by capacity, stream events, ack, renew leases, drain.

Delivery is at-least-once: a job stays in the stream's pending list until acked. Leases are
the pending entries' idle time; this worker resets it for its running jobs every third of
the lease, and claims other workers' jobs idle for longer than a lease. A reclaimed job is
re-run only if no token reached its client (the streamed flag is set before the first token
is published); otherwise its client gets a clean error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from gateway.queue.protocol import (
    CANCEL_CHANNEL,
    MESSAGE_FIELD,
    WORKER_GROUP,
    Delta,
    Failed,
    Finished,
    Job,
    Started,
    WorkerInfo,
    cancel_key,
    decode_job,
    encode_worker_info,
    jobs_stream_key,
    starts_key,
    streamed_flag_key,
    worker_info_key,
    workers_index_key,
)
from workers.engine import ChatPrompt, EngineRequestError, InferenceEngine, Prompt, TextPrompt
from workers.publisher import EventPublisher

logger = logging.getLogger("enclave.worker")

FLAG_TTL_S = 3600
STARTS_TTL_S = 180  # the current minute and the two before it
HOLD_BEFORE_GENERATE = "hold_before_generate"


class Consumer:
    def __init__(
        self,
        redis: Redis,
        engine: InferenceEngine,
        *,
        worker_id: str,
        lease_timeout_s: float,
        worker_ttl_s: float,
        failpoint: str | None = None,
    ) -> None:
        self._redis = redis
        self._engine = engine
        self.worker_id = worker_id
        self._lease_ms = int(lease_timeout_s * 1000)
        self._worker_ttl_s = worker_ttl_s
        self._failpoint = failpoint
        self._stream = jobs_stream_key(engine.info.model)
        self._publisher = EventPublisher(redis)
        self._running: dict[str, tuple[bytes, asyncio.Task[None]]] = {}
        self._slot_freed = asyncio.Event()
        self._draining = False
        self.ready = asyncio.Event()  # set once registered and pulling
        self._stopped = asyncio.Event()  # an event, not task.cancel(): redis-py may swallow it

    @property
    def free_slots(self) -> int:
        return self._engine.info.capacity - len(self._running)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then drain: stop pulling, finish running jobs."""
        await self._ensure_group()
        self._publisher.start()
        await self._heartbeat()
        leases = asyncio.create_task(self._lease_loop(), name="leases")
        cancels = asyncio.create_task(self._cancel_listener(), name="cancels")
        puller = asyncio.create_task(self._pull_loop(), name="puller")
        self.ready.set()
        await stop.wait()
        self._draining = True
        logger.info("draining: %d running", len(self._running))
        self._slot_freed.set()
        await puller  # returns within one blocking read; never cancelled mid-command
        with contextlib.suppress(RedisError):
            await self._heartbeat()  # announce draining: gateways stop routing here
        while self._running:
            await asyncio.gather(*(t for _, t in list(self._running.values())))
        self._stopped.set()
        await asyncio.gather(leases, cancels, return_exceptions=True)
        await self._publisher.close()
        await self._deregister()

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(self._stream, WORKER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

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
                    await self._reclaim()
                except RedisError:
                    logger.warning("reclaim failed; retrying", exc_info=True)
                if self.free_slots <= 0:
                    continue
                free = self.free_slots
            try:
                response: Any = await self._redis.xreadgroup(
                    WORKER_GROUP, self.worker_id, {self._stream: ">"}, count=free, block=1000
                )
            except RedisError:
                logger.warning("job read failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            for _stream, entries in response or []:
                for entry_id, fields in entries:
                    self._spawn(entry_id, fields, is_reclaimed=False)

    def _spawn(self, entry_id: bytes, fields: dict[bytes, bytes], *, is_reclaimed: bool) -> None:
        try:
            job = decode_job(fields[MESSAGE_FIELD])
        except Exception:
            logger.error("dropping undecodable job %s", entry_id)
            self._publisher.ack(self._stream, entry_id)
            return
        task = asyncio.create_task(self._serve(entry_id, job, is_reclaimed), name=job.id)
        self._running[job.id] = (entry_id, task)

    async def _serve(self, entry_id: bytes, job: Job, is_reclaimed: bool) -> None:
        try:
            if await self._should_skip(job, is_reclaimed):
                return
            if self._failpoint == HOLD_BEFORE_GENERATE:
                await asyncio.Event().wait()  # fault injection: hold the job until killed
            await self._generate(job)
        except asyncio.CancelledError:
            logger.info("job %s cancelled by its client", job.id)
        except Exception:
            logger.exception("job %s failed", job.id)
            self._publisher.send(
                job.reply_to,
                Failed(job.id, 500, "api_error", "worker_error", "The worker failed."),
            )
        finally:
            self._publisher.ack(self._stream, entry_id)
            self._running.pop(job.id, None)
            self._slot_freed.set()
            with contextlib.suppress(RedisError):
                await self._heartbeat()

    async def _should_skip(self, job: Job, is_reclaimed: bool) -> bool:
        if job.start_by and time.time() > job.start_by:
            logger.info("job %s waited past its start deadline; not started", job.id)
            return True  # its gateway has answered 503 already
        if await self._redis.exists(cancel_key(job.id)):
            return True
        if is_reclaimed and await self._redis.exists(streamed_flag_key(job.id)):
            logger.warning("job %s was reclaimed after streaming; failing it", job.id)
            message = (
                "The worker serving this request stopped after the response had started; "
                "the response is incomplete. Retry the request."
            )
            self._publisher.send(
                job.reply_to, Failed(job.id, 502, "api_error", "worker_lost", message)
            )
            return True
        return False

    async def _generate(self, job: Job) -> None:
        prompt: Prompt = ChatPrompt(job.messages) if job.kind == "chat" else TextPrompt(job.prompt)
        has_streamed = False
        try:
            async for out in self._engine.generate(job.id, prompt, job.sampling):
                if not has_streamed:
                    # The flag precedes the first event in one ordered pipeline.
                    self._publisher.set_flag(streamed_flag_key(job.id), FLAG_TTL_S)
                    info = self._engine.info
                    self._publisher.send(
                        job.reply_to,
                        Started(job.id, self.worker_id, out.prompt_tokens, info.weights_digest),
                    )
                    minute = int(time.time() // 60)  # the drain rate gateways estimate waits by
                    self._publisher.count(starts_key(job.model, minute), STARTS_TTL_S)
                    has_streamed = True
                if out.text:
                    self._publisher.send(
                        job.reply_to, Delta(job.id, out.text, out.completion_tokens)
                    )
                if out.finish_reason is not None:
                    finished = Finished(
                        job.id, out.finish_reason, out.prompt_tokens, out.completion_tokens
                    )
                    self._publisher.send(job.reply_to, finished)
        except EngineRequestError as exc:
            failed = Failed(
                job.id, 400, "invalid_request_error", exc.code, exc.message, param=exc.param
            )
            self._publisher.send(job.reply_to, failed)

    async def _lease_loop(self) -> None:
        interval_s = min(self._lease_ms / 3000, self._worker_ttl_s / 3)
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), interval_s)
                return
            try:
                await self._renew_leases()
                await self._sweep_cancelled()
                await self._reclaim()
                await self._heartbeat()
            except RedisError:
                logger.warning("lease renewal failed; retrying")

    async def _renew_leases(self) -> None:
        entry_ids: list[Any] = [entry_id for entry_id, _ in self._running.values()]
        if entry_ids:
            await self._redis.xclaim(
                self._stream, WORKER_GROUP, self.worker_id, 0, entry_ids, justid=True
            )

    async def _reclaim(self) -> None:
        free = self.free_slots
        if free <= 0 or self._draining:
            return
        claimed: Any = await self._redis.xautoclaim(
            self._stream, WORKER_GROUP, self.worker_id, self._lease_ms, "0-0", count=free
        )
        for entry_id, fields in claimed[1]:
            if fields is not None:
                logger.warning("reclaimed job entry %s from a silent worker", entry_id)
                self._spawn(entry_id, fields, is_reclaimed=True)

    async def _cancel_listener(self) -> None:
        """Abort jobs whose clients went away; runs until the worker has drained."""
        while not self._stopped.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(CANCEL_CHANNEL)
                while not self._stopped.is_set():
                    message = await pubsub.get_message(timeout=0.5)
                    if message is not None:
                        await self._abort(message["data"].decode())
            except RedisError:
                logger.warning("cancel channel lost; resubscribing")
                await asyncio.sleep(0.5)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _abort(self, job_id: str) -> None:
        running = self._running.get(job_id)
        if running is not None:
            running[1].cancel()
            await self._engine.abort(job_id)

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

    async def _heartbeat(self) -> None:
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
            )
        )
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(worker_info_key(self.worker_id), blob, ex=max(1, int(self._worker_ttl_s)))
            pipe.zadd(workers_index_key(), {self.worker_id: now})
            pipe.zremrangebyscore(workers_index_key(), "-inf", now - 10 * self._worker_ttl_s)
            await pipe.execute()

    async def _deregister(self) -> None:
        with contextlib.suppress(RedisError):
            await self._redis.delete(worker_info_key(self.worker_id))
            await self._redis.zrem(workers_index_key(), self.worker_id)
