"""Overload through the real app: with every worker busy a request waits up to its start
deadline (default or the x-enclave-queue-timeout header), then gets a 503 with Retry-After
and is never started; a tenant may have only so many requests waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from redis.asyncio import Redis

from gateway.queue.protocol import Job, SamplingOptions, queues_key
from gateway.queue.schedule import Scheduler, waiting
from gateway.settings import QueueSettings
from tests.fakes.engine import FakeEngine
from tests.integration.stack import Stack, open_stack, run_consumer

pytestmark = pytest.mark.integration

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
QUEUE = QueueSettings(
    lease_timeout_s=1.0, request_timeout_s=30.0, worker_ttl_s=5.0, max_queued_per_tenant=2
)


@pytest.fixture
async def stack(
    make_postgres_url: Callable[[], str], redis_url: str, redis_client: Redis
) -> AsyncIterator[Stack]:
    engine = FakeEngine(capacity=1, step_delay_s=0.3)  # one at a time, about 2 s each
    async with open_stack(make_postgres_url(), redis_url, engine, queue=QUEUE) as stack:
        yield stack


def auth(key: str, wait_s: float | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if wait_s is not None:
        headers["x-enclave-queue-timeout"] = str(wait_s)
    return headers


async def busy(stack: Stack, key: str) -> asyncio.Task[httpx.Response]:
    """A request that holds the only worker slot, once it has started and no longer counts
    as waiting (the worker that takes a job removes it from its tenant's waiting set)."""
    task = asyncio.create_task(
        stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key))
    )
    while not stack.engine.requests or await waiting_jobs(stack):
        await asyncio.sleep(0.01)
    return task


async def waiting_jobs(stack: Stack) -> int:
    keys = await stack.redis.keys("enclave:queued:fake-model:*")
    return sum([await stack.redis.zcard(k) for k in keys])


async def test_a_request_that_cannot_start_in_time_gets_503_and_never_starts(
    stack: Stack,
) -> None:
    key = await stack.key()
    holding = await busy(stack, key)
    started = time.monotonic()
    waited = await stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key, 0.5))
    elapsed = time.monotonic() - started

    assert waited.status_code == 503
    assert waited.json()["error"]["code"] == "queue_timeout"
    assert 1 <= int(waited.headers["retry-after"]) <= 60
    assert 0.5 <= elapsed < 2.0  # it waited its 0.5 s, not the busy request's 2 s
    assert (await holding).status_code == 200
    assert len(stack.engine.requests) == 1  # the worker never started the second

    rows = await stack.audit_rows()
    timed_out = [r for r in rows if r.error_code == "queue_timeout"]
    assert [(r.event, r.status) for r in timed_out] == [("outcome", 503)]
    accepted = [
        r for r in rows if r.event == "accepted" and r.request_id == timed_out[0].request_id
    ]
    assert len(accepted) == 1  # one accepted, one outcome: nothing lost, nothing twice


async def test_a_longer_wait_asked_in_the_header_is_honoured(stack: Stack) -> None:
    key = await stack.key()
    holding = await busy(stack, key)
    patient = await stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key, 10))
    assert patient.status_code == 200
    assert (await holding).status_code == 200


async def test_a_tenant_may_have_only_so_many_requests_waiting(stack: Stack) -> None:
    key = await stack.key(tenant="batch-dept")
    other = await stack.key(tenant="interactive-dept")
    holding = await busy(stack, key)
    waiting = [
        asyncio.create_task(
            stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key, 20))
        )
        for _ in range(2)
    ]
    while await stack.redis.zcard(f"enclave:queued:fake-model:{await tenant_id(stack)}") < 2:
        await asyncio.sleep(0.01)
    refused = await stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(key, 20))
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "queue_full"
    assert "retry-after" in refused.headers
    elsewhere = await stack.client.post("/v1/chat/completions", json=CHAT, headers=auth(other, 20))
    assert elsewhere.status_code == 200  # another tenant's queue is its own
    answered = await asyncio.gather(holding, *waiting)
    assert [r.status_code for r in answered] == [200, 200, 200], [r.text for r in answered]
    refusals = [r for r in await stack.audit_rows() if r.event == "refused"]
    assert [(r.status, r.error_code) for r in refusals] == [(503, "queue_full")]


async def tenant_id(stack: Stack) -> str:
    rows = await stack.audit_rows()
    found = rows[0].tenant_id
    assert found is not None
    return str(found)


@pytest.mark.parametrize("value", ["0", "-1", "soon", "601", "nan", "inf"])
async def test_a_bad_queue_timeout_header_is_a_400(stack: Stack, value: str) -> None:
    key = await stack.key()
    response = await stack.client.post(
        "/v1/chat/completions",
        json=CHAT,
        headers={"Authorization": f"Bearer {key}", "x-enclave-queue-timeout": value},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "x-enclave-queue-timeout"


async def test_a_worker_never_starts_a_job_past_its_deadline(redis_client: Redis) -> None:
    late = Job(
        id="late-1",
        model="late-model",
        kind="completion",
        reply_to="enclave:inbox:nobody",
        tenant="t",
        sampling=SamplingOptions(),
        enqueued_at=time.time() - 10,
        prompt="hi",
        start_by=time.time() - 1,
    )
    await Scheduler(redis_client).enqueue(late)
    assert await waiting(redis_client, "late-model") == 1
    engine = FakeEngine(model="late-model")
    async with run_consumer(redis_client, engine):
        while await waiting(redis_client, "late-model") > 0:
            await asyncio.sleep(0.01)
    assert engine.requests == []
    [stream] = await redis_client.smembers(queues_key("late-model"))
    assert await redis_client.xlen(stream) == 0  # dropped, not left behind
