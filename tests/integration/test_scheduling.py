"""Fair scheduling on real Redis: pick.lua's choice between tenants (least weighted service
first, lifted on return, interactive before batch), one delivery per job across workers, and
the counters the worker grows by true tokens. The fairness benchmark measures the effect on
time to first token with a real model (tests/bench/bench_fairness.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.queue.client import RedisJobQueue
from gateway.queue.protocol import (
    FIFO_QUEUE,
    ChatMessage,
    Event,
    Finished,
    Job,
    Priority,
    SamplingOptions,
    Started,
    cancel_key,
    decode_job,
    queued_key,
    queues_key,
    service_key,
)
from gateway.queue.schedule import Scheduler, waiting
from gateway.redis_batch import CommandBatcher
from gateway.settings import QueueSettings
from tests.fakes.engine import FakeEngine
from tests.integration.stack import Stack, open_stack, run_consumer

pytestmark = pytest.mark.integration

MODEL = "fake-model"


def job(
    job_id: str,
    queue: str,
    *,
    priority: Priority = "interactive",
    weight: float = 1.0,
    cost: int = 10,
    start_by: float = 0.0,
    reply_to: str = "enclave:inbox:nobody",
    max_tokens: int | None = None,
    ignore_eos: bool = False,
) -> Job:
    return Job(
        id=job_id,
        model=MODEL,
        kind="chat",
        reply_to=reply_to,
        tenant=queue,
        sampling=SamplingOptions(max_tokens=max_tokens, ignore_eos=ignore_eos),
        enqueued_at=time.time(),
        messages=(ChatMessage("user", "What is the capital of France?"),),
        start_by=start_by,
        priority=priority,
        queue=queue,
        weight=weight,
        cost=cost,
    )


async def take(scheduler: Scheduler, free: int = 1, free_batch: int | None = None) -> list[Job]:
    batch = free if free_batch is None else free_batch
    return [decode_job(t.payload) for t in await scheduler.pick(MODEL, "w", free, batch)]


async def take_all(scheduler: Scheduler, count: int) -> list[Job]:
    """``count`` jobs, one pick at a time: what a worker freeing one slot at a time sees."""
    return [j for _ in range(count) for j in await take(scheduler)]


async def counter(redis: Redis, queue: str) -> float:
    return float(await redis.hget(service_key(MODEL), queue) or 0)


async def test_the_least_served_queue_goes_next(redis_client: Redis) -> None:
    scheduler = Scheduler(redis_client)
    for i in range(3):
        await scheduler.enqueue(job(f"a{i}", "tenant-a"))
    for i in range(3):
        await scheduler.enqueue(job(f"b{i}", "tenant-b"))
    order = [j.queue for j in await take_all(scheduler, 6)]
    # FIFO would give a a a b b b; equal counters fall to the smaller name.
    assert order == ["tenant-a", "tenant-b"] * 3
    assert await counter(redis_client, "tenant-a") == await counter(redis_client, "tenant-b") == 30


async def test_weights_share_the_workers_in_proportion(redis_client: Redis) -> None:
    scheduler = Scheduler(redis_client)
    for i in range(40):
        await scheduler.enqueue(job(f"a{i}", "tenant-a", weight=3.0, cost=12))
        await scheduler.enqueue(job(f"b{i}", "tenant-b", weight=1.0, cost=12))
    served = Counter(j.queue for j in await take_all(scheduler, 40))
    assert served["tenant-a"] in (29, 30, 31)  # 3 : 1
    assert served["tenant-a"] + served["tenant-b"] == 40


async def test_a_returning_tenant_is_lifted_so_idle_time_is_not_banked(
    redis_client: Redis,
) -> None:
    scheduler = Scheduler(redis_client)
    await scheduler.enqueue(job("b-early", "tenant-b"))
    await take_all(scheduler, 1)  # b: 10
    for i in range(20):
        await scheduler.enqueue(job(f"a{i}", "tenant-a"))
    await take_all(scheduler, 10)  # a alone, from where b left (10): 110, 10 more waiting
    assert await counter(redis_client, "tenant-a") == 110
    for i in range(10):
        await scheduler.enqueue(job(f"b{i}", "tenant-b"))
    assert await counter(redis_client, "tenant-b") == 110  # lifted from 10 to a's 110
    served = Counter(j.queue for j in await take_all(scheduler, 10))
    # Unlifted, b's 10 would come before any of a's (100 tokens of banked credit).
    assert served == Counter({"tenant-a": 5, "tenant-b": 5})


async def test_a_tenant_arriving_at_an_empty_queue_starts_where_the_last_one_left(
    redis_client: Redis,
) -> None:
    scheduler = Scheduler(redis_client)
    for i in range(5):
        await scheduler.enqueue(job(f"a{i}", "tenant-a"))
    await take_all(scheduler, 5)  # a alone, until its queue is empty: 50
    assert await waiting(redis_client, MODEL) == 0
    await scheduler.enqueue(job("b0", "tenant-b"))
    assert await counter(redis_client, "tenant-b") == 50


async def test_interactive_goes_before_batch_and_batch_leaves_the_reserve(
    redis_client: Redis,
) -> None:
    scheduler = Scheduler(redis_client)
    for i in range(3):
        await scheduler.enqueue(job(f"batch{i}", "tenant-a", priority="batch"))
    await scheduler.enqueue(job("chat", "tenant-b"))
    taken = await take(scheduler, free=4, free_batch=2)
    assert [j.id for j in taken] == ["chat", "batch0", "batch1"]
    assert await take(scheduler, free=1, free_batch=0) == []  # the reserved slot stays free
    assert await waiting(redis_client, MODEL) == 1


async def test_jobs_past_their_deadline_or_cancelled_are_dropped_and_not_charged(
    redis_client: Redis,
) -> None:
    scheduler = Scheduler(redis_client)
    await scheduler.enqueue(job("late", "tenant-a", start_by=time.time() - 1, cost=500))
    await scheduler.enqueue(job("gone", "tenant-a", start_by=time.time() + 60, cost=500))
    await redis_client.set(cancel_key("gone"), b"1")
    await scheduler.enqueue(job("ok", "tenant-a", start_by=time.time() + 60, cost=7))
    assert [j.id for j in await take(scheduler, free=3)] == ["ok"]
    assert await counter(redis_client, "tenant-a") == 7
    assert await waiting(redis_client, MODEL) == 0


async def test_a_job_leaves_its_tenants_waiting_set_when_a_worker_takes_or_drops_it(
    redis_client: Redis,
) -> None:
    scheduler = Scheduler(redis_client)
    deadline = time.time() + 60
    await scheduler.enqueue(job("taken", "tenant-a", start_by=deadline))
    await scheduler.enqueue(job("gone", "tenant-a", start_by=deadline))
    await scheduler.enqueue(job("later", "tenant-a", start_by=deadline))
    await redis_client.set(cancel_key("gone"), b"1")
    waiting_set = queued_key(MODEL, "tenant-a")
    assert await redis_client.zcard(waiting_set) == 3
    assert [j.id for j in await take(scheduler, free=1)] == ["taken"]
    assert await redis_client.zrange(waiting_set, 0, -1) == [b"gone", b"later"]
    assert [j.id for j in await take(scheduler, free=1)] == ["later"]  # "gone" dropped
    assert await redis_client.zcard(waiting_set) == 0


async def test_batched_enqueues_survive_a_redis_that_forgot_its_scripts(
    redis_client: Redis,
) -> None:
    scheduler = Scheduler(redis_client, CommandBatcher(redis_client))
    await scheduler.enqueue(job("before", "tenant-a"))
    await redis_client.script_flush()  # as after a restart without persistence
    await asyncio.gather(*(scheduler.enqueue(job(f"after-{i}", "tenant-a")) for i in range(3)))
    taken = [j.id for j in await take(scheduler, free=10)]
    assert sorted(taken) == ["after-0", "after-1", "after-2", "before"]  # each exactly once


async def test_concurrent_workers_take_every_job_exactly_once(redis_client: Redis) -> None:
    scheduler = Scheduler(redis_client)
    jobs = [
        job(f"{tenant}-{i}", tenant, priority="batch" if i % 3 == 0 else "interactive", cost=i)
        for tenant in ("t1", "t2", "t3", "t4", "t5")
        for i in range(60)
    ]
    for queued in jobs:
        await scheduler.enqueue(queued)

    async def worker(name: str) -> list[str]:
        mine: list[str] = []
        while taken := await scheduler.pick(MODEL, name, 3, 2):
            mine.extend(decode_job(t.payload).id for t in taken)
        return mine

    taken = await asyncio.gather(*(worker(f"w{n}") for n in range(6)))
    every = [job_id for mine in taken for job_id in mine]
    assert sorted(every) == sorted(j.id for j in jobs)  # none twice, none lost
    totals = [await counter(redis_client, t) for t in ("t1", "t2", "t3", "t4", "t5")]
    assert totals == [sum(range(60))] * 5  # each choice charged once, atomically


async def collect(events: object) -> list[Event]:
    return [event async for event in events]  # type: ignore[attr-defined]


async def test_the_worker_charges_true_prompt_and_output_tokens_over_weight(
    redis_client: Redis, queue: RedisJobQueue
) -> None:
    async with run_consumer(redis_client, FakeEngine()):
        sent = job("j1", "tenant-a", weight=2.0, cost=999, reply_to=queue.inbox)
        events = await collect(await queue.submit(sent))
    started, finished = events[0], events[-1]
    assert isinstance(started, Started)
    assert isinstance(finished, Finished)
    assert finished.completion_tokens > 0
    expected = (finished.prompt_tokens + finished.completion_tokens) / 2.0
    assert await counter(redis_client, "tenant-a") == pytest.approx(expected)


@pytest.mark.parametrize(("fair", "positions"), [(True, {2, 3}), (False, {9})])
async def test_a_flooding_tenant_does_not_hold_back_another(
    redis_client: Redis, queue: RedisJobQueue, fair: bool, positions: set[int]
) -> None:
    engine = FakeEngine(capacity=1, step_delay_s=0.01)
    flood = [
        job(f"a{i}", "tenant-a" if fair else FIFO_QUEUE, reply_to=queue.inbox, max_tokens=3)
        for i in range(8)
    ]
    async with run_consumer(redis_client, engine):
        streams = [await queue.submit(j) for j in flood]
        while not engine.requests:  # a0 runs; a1..a7 wait
            await asyncio.sleep(0.01)
        chat = job("b", "tenant-b" if fair else FIFO_QUEUE, reply_to=queue.inbox)
        streams.append(await queue.submit(chat))
        await asyncio.gather(*(collect(s) for s in streams))
    order = [request_id for request_id, _, _ in engine.requests]
    # Fair: b is lifted to a's counter; it goes next or, on a tie, after one more of a's.
    # FIFO: after all of a's.
    assert order.index("b") + 1 in positions


async def test_batch_jobs_leave_the_reserved_slot_to_interactive_work(
    redis_client: Redis, queue: RedisJobQueue
) -> None:
    engine = FakeEngine(capacity=2, step_delay_s=0.02)
    async with run_consumer(redis_client, engine, interactive_reserve=1):
        batch = [
            await queue.submit(
                job(f"a{i}", "tenant-a", priority="batch", reply_to=queue.inbox, max_tokens=5)
            )
            for i in range(4)
        ]
        while not engine.requests:
            await asyncio.sleep(0.01)
        assert engine.num_unfinished() == 1  # one batch job; the other slot is reserved
        chat = await queue.submit(job("b", "tenant-b", reply_to=queue.inbox))
        first = await anext(chat)
        assert isinstance(first, Started)
        assert [r[0] for r in engine.requests] == ["a0", "b"]  # b did not wait for a0
        await asyncio.gather(collect(chat), *(collect(s) for s in batch))
    assert len(engine.requests) == 5


async def test_batch_jobs_leave_the_reserve_free_beyond_running_interactive_work(
    redis_client: Redis, queue: RedisJobQueue
) -> None:
    engine = FakeEngine(capacity=3, step_delay_s=0.02)
    async with run_consumer(redis_client, engine, interactive_reserve=1):
        long_chat = job("b", "tenant-b", reply_to=queue.inbox, max_tokens=80, ignore_eos=True)
        chat = await queue.submit(long_chat)
        assert isinstance(await anext(chat), Started)
        batch = [
            await queue.submit(
                job(f"a{i}", "tenant-a", priority="batch", reply_to=queue.inbox, max_tokens=3)
            )
            for i in range(4)
        ]
        for events in batch:
            assert isinstance((await collect(events))[-1], Finished)
        assert engine.num_unfinished() == 1  # b still runs
        # b and one batch job at a time: a second would have taken the slot left free.
        assert engine.peak_unfinished == 2
        other = await queue.submit(job("c", "tenant-c", reply_to=queue.inbox))
        assert isinstance(await anext(other), Started)
        await asyncio.gather(collect(chat), collect(other))


CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


async def tenant_of(stack: Stack, root: str, name: str) -> dict[str, Any]:
    listed = await stack.client.get("/admin/v1/tenants", headers=bearer(root))
    [tenant] = [t for t in listed.json()["data"] if t["name"] == name]
    return dict(tenant)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def streams_of(redis: Redis) -> set[str]:
    return {s.decode() for s in await redis.smembers(queues_key(MODEL))}


async def test_a_platform_admin_sets_a_tenants_class_and_weight(stack: Stack) -> None:
    root = await stack.key(tenant="ops", user="root", roles=frozenset({"platform_admin"}))
    user = await stack.key(tenant="research", user="ann")
    admin = await stack.key(tenant="research", user="boss", roles=frozenset({"tenant_admin"}))
    tenant = await tenant_of(stack, root, "research")
    assert (tenant["priority"], tenant["weight"]) == ("interactive", 1.0)
    path = f"/admin/v1/tenants/{tenant['id']}"

    changed = await stack.client.patch(
        path, json={"priority": "batch", "weight": 2.5}, headers=bearer(root)
    )
    assert changed.status_code == 200
    assert (changed.json()["priority"], changed.json()["weight"]) == ("batch", 2.5)
    own = await stack.client.patch(path, json={"priority": "interactive"}, headers=bearer(admin))
    assert own.status_code == 403  # a tenant cannot raise its own class or share

    answer = await stack.client.post("/v1/chat/completions", json=CHAT, headers=bearer(user))
    assert answer.status_code == 200
    assert answer.json()["service_tier"] == "flex"  # it waited as batch
    assert await streams_of(stack.redis) == {f"enclave:jobs:{MODEL}:batch:{tenant['id']}"}
    counters = await stack.redis.hgetall(service_key(MODEL))
    usage = answer.json()["usage"]
    assert float(counters[tenant["id"].encode()]) == pytest.approx(usage["total_tokens"] / 2.5)

    changes = [r.change for r in await stack.audit_rows() if r.event == "admin"]
    assert {"action": "update_tenant", **SCHEDULING_CHANGE} in changes


SCHEDULING_CHANGE = {
    "priority": {"old": "interactive", "new": "batch"},
    "weight": {"old": 1.0, "new": 2.5},
}


@pytest.mark.parametrize(
    "body",
    [
        {"weight": 0},
        {"weight": -1},
        {"weight": 1001},
        {"weight": "heavy"},
        {"priority": "urgent"},
    ],
)
async def test_a_bad_class_or_weight_is_a_400(stack: Stack, body: dict[str, Any]) -> None:
    root = await stack.key(tenant="ops", user="root", roles=frozenset({"platform_admin"}))
    tenant = await tenant_of(stack, root, "ops")
    response = await stack.client.patch(
        f"/admin/v1/tenants/{tenant['id']}", json=body, headers=bearer(root)
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == next(iter(body))


@pytest.mark.parametrize(
    ("tier", "reported", "priority"),
    [
        (None, "default", "interactive"),
        ("auto", "default", "interactive"),
        ("flex", "flex", "batch"),
        ("priority", "default", "interactive"),
    ],
)
async def test_service_tier_flex_waits_as_batch(
    stack: Stack, tier: str | None, reported: str, priority: str
) -> None:
    key = await stack.key()
    body = {**CHAT, "stream": True} | ({"service_tier": tier} if tier else {})
    async with stack.client.stream(
        "POST", "/v1/chat/completions", json=body, headers=bearer(key)
    ) as response:
        lines = [line async for line in response.aiter_lines() if line.startswith("data: {")]
    assert response.status_code == 200
    tiers = {json.loads(line[len("data: ") :])["service_tier"] for line in lines}
    assert tiers == {reported}
    [stream] = await streams_of(stack.redis)
    assert stream.split(":")[3] == priority


async def test_an_unknown_service_tier_is_a_400(stack: Stack) -> None:
    key = await stack.key()
    body = {**CHAT, "service_tier": "platinum"}
    response = await stack.client.post("/v1/chat/completions", json=body, headers=bearer(key))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "service_tier"


async def test_fifo_scheduling_puts_every_tenant_in_one_queue(
    make_postgres_url: Callable[[], str], redis_url: str, redis_client: Redis
) -> None:
    queue = QueueSettings(scheduling="fifo")
    async with open_stack(make_postgres_url(), redis_url, FakeEngine(), queue=queue) as stack:
        for tenant in ("one", "two"):
            key = await stack.key(tenant=tenant)
            body = {**CHAT, "service_tier": "flex"}
            answer = await stack.client.post("/v1/chat/completions", json=body, headers=bearer(key))
            assert answer.json()["service_tier"] == "default"
        assert await streams_of(stack.redis) == {f"enclave:jobs:{MODEL}:interactive:{FIFO_QUEUE}"}
