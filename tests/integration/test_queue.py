"""The queue between gateway and worker on real Redis: delivery, leases, cancel, drain.

A crashed worker is what it leaves in Redis: a pending entry owned by a consumer that
never acks. These tests create exactly that by picking a job under a dead consumer's name;
tests/e2e kills real worker processes with SIGKILL.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway.queue.client import RedisJobQueue
from gateway.queue.protocol import (
    ChatMessage,
    Delta,
    Event,
    Failed,
    Finished,
    Job,
    SamplingOptions,
    Started,
    queues_key,
    streamed_flag_key,
)
from gateway.queue.schedule import Scheduler, waiting
from tests.fakes.engine import FakeEngine
from tests.integration.stack import run_consumer

pytestmark = pytest.mark.integration


def make_job(queue: RedisJobQueue, job_id: str, **sampling: object) -> Job:
    return Job(
        id=job_id,
        model="fake-model",
        kind="chat",
        reply_to=queue.inbox,
        tenant="t",
        sampling=SamplingOptions(**sampling),  # type: ignore[arg-type]
        enqueued_at=time.time(),
        messages=(ChatMessage("user", "What is the capital of France?"),),
    )


async def collect(events: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in events]


async def until(predicate: object, timeout_s: float = 5.0) -> float:
    """Poll a condition (there is no event to await across processes); return seconds taken."""
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - start > timeout_s:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def test_job_round_trip(redis_client: Redis, queue: RedisJobQueue) -> None:
    async with run_consumer(redis_client, FakeEngine()):
        events = await collect(await queue.submit(make_job(queue, "j1")))
    assert isinstance(events[0], Started)
    assert "".join(e.text for e in events if isinstance(e, Delta)) == (
        "The capital of France is Paris."
    )
    assert isinstance(events[-1], Finished)
    streams = await redis_client.smembers(queues_key("fake-model"))
    assert [await redis_client.xlen(s) for s in streams] == [0]  # acked and deleted


async def test_cancel_aborts_the_engine_request_promptly(
    redis_client: Redis, queue: RedisJobQueue
) -> None:
    engine = FakeEngine(step_delay_s=0.02)
    async with run_consumer(redis_client, engine):
        events = await queue.submit(make_job(queue, "long", max_tokens=1000, ignore_eos=True))
        async for event in events:
            if isinstance(event, Delta) and event.completion_tokens >= 3:
                break
        assert engine.num_unfinished() == 1
        await queue.cancel("long")
        took = await until(lambda: engine.num_unfinished() == 0)
    assert "long" in engine.aborted
    assert took < 1.0


async def test_capacity_bounds_what_a_worker_takes(
    redis_client: Redis, queue: RedisJobQueue
) -> None:
    engine = FakeEngine(capacity=2, step_delay_s=0.01)
    async with run_consumer(redis_client, engine):
        streams = [await queue.submit(make_job(queue, f"j{i}", max_tokens=20)) for i in range(6)]
        results = await asyncio.gather(*(collect(s) for s in streams))
    assert all(isinstance(r[-1], Finished) for r in results)
    assert engine.peak_unfinished == 2


async def test_job_of_a_dead_worker_that_had_not_streamed_is_rerun(
    redis_client: Redis, queue: RedisJobQueue
) -> None:
    events = await queue.submit(make_job(queue, "orphan"))
    # The dead worker took it and died before any token.
    assert len(await Scheduler(redis_client).pick("fake-model", "dead-worker", 1, 1)) == 1
    assert await waiting(redis_client, "fake-model") == 0
    engine = FakeEngine()
    async with run_consumer(redis_client, engine):
        received = await collect(events)
    assert isinstance(received[-1], Finished)
    assert [r[0] for r in engine.requests] == ["orphan"]


async def test_job_of_a_dead_worker_that_had_streamed_fails_cleanly(
    redis_client: Redis, queue: RedisJobQueue
) -> None:
    events = await queue.submit(make_job(queue, "half"))
    [taken] = await Scheduler(redis_client).pick("fake-model", "dead-worker", 1, 1)
    stream = taken.stream
    await redis_client.set(streamed_flag_key("half"), b"1")  # what the dead worker left
    engine = FakeEngine()
    async with run_consumer(redis_client, engine):
        received = await collect(events)
    assert len(received) == 1
    failed = received[0]
    assert isinstance(failed, Failed)
    assert failed.code == "worker_lost"
    assert engine.requests == []  # never re-run: no duplicated tokens
    assert await redis_client.xlen(stream) == 0


async def test_drain_finishes_running_jobs_then_deregisters(
    redis_client: Redis, queue: RedisJobQueue
) -> None:
    engine = FakeEngine(step_delay_s=0.01)
    async with run_consumer(redis_client, engine) as consumer:
        events = await queue.submit(make_job(queue, "draining", max_tokens=30, ignore_eos=True))
        first = await anext(events)
        assert isinstance(first, Started)
    # run_consumer has set stop and awaited run(): the job must have completed.
    rest = await collect(events)
    assert isinstance(rest[-1], Finished)
    assert rest[-1].completion_tokens == 30
    assert await redis_client.exists(f"enclave:worker:{consumer.worker_id}") == 0
