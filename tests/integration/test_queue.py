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
    CANCEL_CHANNEL,
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
from tests.faults.load import poll
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


async def test_a_finished_job_leaves_no_key_of_its_own(
    redis_client: Redis, queue: RedisJobQueue
) -> None:
    """The flag that a job has streamed matters only while another worker could reclaim
    it: it goes when the job is acknowledged, or Redis would hold a key per request."""
    async with run_consumer(redis_client, FakeEngine()):
        events = await collect(await queue.submit(make_job(queue, "j1")))
    assert isinstance(events[-1], Finished)
    assert await redis_client.exists(streamed_flag_key("j1")) == 0
    assert await redis_client.keys("*j1*") == []


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


async def test_a_cancel_heard_while_the_job_was_being_taken_keeps_it_from_starting(
    redis_client: Redis, queue: RedisJobQueue
) -> None:
    """pick.lua checks the cancel key when it takes a job; a cancel published after that
    check but before the job runs reaches the worker only by its channel. (The key is left
    out here to make that window certain.)"""
    engine = FakeEngine()
    async with run_consumer(redis_client, engine) as consumer:
        await poll(
            lambda: subscribers(redis_client, CANCEL_CHANNEL), timeout_s=5, what="the listener"
        )
        await redis_client.publish(CANCEL_CHANNEL, "early")
        await until(lambda: "early" in consumer._cancelled_early)
        await queue.submit(make_job(queue, "early"))
        done = await collect(await queue.submit(make_job(queue, "after")))
    assert isinstance(done[-1], Finished)
    assert [r[0] for r in engine.requests] == ["after"]
    streams = await redis_client.smembers(queues_key("fake-model"))
    assert [await redis_client.xlen(s) for s in streams] == [0]  # taken, acked, not run


async def subscribers(redis_client: Redis, channel: str) -> bool:
    counts = await redis_client.pubsub_numsub(channel)
    return bool(counts and counts[0][1] > 0)


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
    assert await redis_client.exists(streamed_flag_key("half")) == 0


async def test_a_worker_does_not_reclaim_a_job_it_is_running(
    redis_client: Redis, queue: RedisJobQueue
) -> None:
    """Redis away for longer than a lease: once it is back, the jobs this worker is still
    streaming look idle to XAUTOCLAIM. Taking them again would fail them as lost."""
    engine = FakeEngine(step_delay_s=0.02)
    async with run_consumer(redis_client, engine) as consumer:
        events = await queue.submit(make_job(queue, "mine", max_tokens=60, ignore_eos=True))
        received = [await anext(events) for _ in range(2)]  # Started, then a token
        [stream] = await redis_client.smembers(queues_key("fake-model"))
        [pending] = await redis_client.xpending_range(stream, "workers", "-", "+", 1)
        # What an outage leaves: the entry idle for 5 s (XCLAIM's IDLE sets it).
        await redis_client.xclaim(
            stream, "workers", "worker-1", 0, [pending["message_id"]], idle=5000
        )
        assert await consumer._reclaim() == 0
        received += await collect(events)
    assert isinstance(received[-1], Finished), received[-1]
    assert sum(isinstance(e, Delta) for e in received) == 60
    assert [r[0] for r in engine.requests] == ["mine"]


async def test_a_worker_that_met_redis_failing_gives_others_a_lease_to_renew(
    redis_client: Redis, queue: RedisJobQueue
) -> None:
    """After an outage every worker's leases look lapsed; the first back must not take the
    jobs the others are still streaming."""
    slow = FakeEngine(step_delay_s=0.02)
    async with run_consumer(redis_client, slow, worker_id="worker-1"):
        events = await queue.submit(make_job(queue, "theirs", max_tokens=60, ignore_eos=True))
        received = [await anext(events) for _ in range(2)]
        [stream] = await redis_client.smembers(queues_key("fake-model"))
        [pending] = await redis_client.xpending_range(stream, "workers", "-", "+", 1)
        other = FakeEngine()
        async with run_consumer(redis_client, other, worker_id="worker-2") as second:
            second._redis_failed()  # as its lease loop does on a RedisError
            await redis_client.xclaim(
                stream, "workers", "worker-1", 0, [pending["message_id"]], idle=5000
            )
            assert await second._reclaim() == 0
            received += await collect(events)
    assert isinstance(received[-1], Finished), received[-1]
    assert other.requests == []


async def test_a_stalled_redis_does_not_hand_a_running_job_to_another_worker(
    redis_client: Redis, queue: RedisJobQueue
) -> None:
    """Redis stalled for two leases (CLIENT PAUSE: every command waits, as with a frozen
    server): what each worker sent meanwhile runs when it wakes, the renewals and the other
    worker's look for idle jobs alike. The job runs once, on one worker, to its end."""
    engines = [FakeEngine(step_delay_s=0.02), FakeEngine(step_delay_s=0.02)]
    async with (
        run_consumer(redis_client, engines[0], worker_id="worker-1"),
        run_consumer(redis_client, engines[1], worker_id="worker-2"),
    ):
        events = await queue.submit(make_job(queue, "stalled", max_tokens=150, ignore_eos=True))
        received = [await anext(events) for _ in range(2)]  # Started, then a token
        await redis_client.execute_command("CLIENT", "PAUSE", 2000, "ALL")
        received += await collect(events)
    assert isinstance(received[-1], Finished), received[-1]
    assert sum(isinstance(e, Delta) for e in received) == 150
    assert [r[0] for engine in engines for r in engine.requests] == ["stalled"]


async def test_a_dead_workers_jobs_take_the_slots_that_free_before_new_jobs(
    redis_client: Redis, queue: RedisJobQueue
) -> None:
    """Under load a slot frees every few milliseconds; the orphans must take each of them
    (they did only once per third of a lease, so new jobs overtook them for seconds)."""
    orphans = [await queue.submit(make_job(queue, f"orphan-{i}")) for i in range(4)]
    assert len(await Scheduler(redis_client).pick("fake-model", "dead-worker", 4, 4)) == 4
    fresh = [await queue.submit(make_job(queue, f"new-{i}")) for i in range(4)]
    [stream] = await redis_client.smembers(queues_key("fake-model"))

    async def idle_past_the_lease() -> bool:
        entries = await redis_client.xpending_range(stream, "workers", "-", "+", 10)
        return all(e["time_since_delivered"] > 1000 for e in entries)

    start = time.monotonic()
    while not await idle_past_the_lease():  # polling: the lease is Redis' idle time
        assert time.monotonic() - start < 5
        await asyncio.sleep(0.05)
    engine = FakeEngine(capacity=1)  # a job takes a few ms: slots free far apart from 0.33 s
    async with run_consumer(redis_client, engine):
        await asyncio.gather(*(collect(e) for e in [*orphans, *fresh]))
    order = [request_id for request_id, _, _ in engine.requests]
    assert order[:4] == [f"orphan-{i}" for i in range(4)], order


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
