"""Clients of non-streaming requests that hang up: one while its job runs, one while its job
waits in the queue behind it. Real gateway and worker processes (``deployment.py``); the
worker's fake engine takes 0.3 s a word, so the first job runs for seconds.

Each request keeps its one accepted and one outcome record (499, ``client_closed``); the
running job is stopped and the queued one never starts, so the worker serves the next
request at once rather than finishing work nobody reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from tests.faults.deployment import Deployment, held_jobs, open_deployment
from tests.faults.load import MODEL, REPLY_WORDS, poll

pytestmark = pytest.mark.integration

WORKER = "w-leave"
STEP_DELAY_S = 0.3


@pytest.fixture
async def deployment(
    postgres_url: str, redis_url: str, redis_client: Redis, tmp_path: Path
) -> AsyncIterator[Deployment]:
    async with open_deployment(postgres_url, redis_url, tmp_path) as opened:
        yield opened


def chat(nonce: str) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": nonce}]}


async def test_non_streaming_clients_that_hang_up_running_or_queued_get_a_499_each(
    deployment: Deployment, redis_client: Redis
) -> None:
    deployment.worker(WORKER, capacity=1, batch=1, step_delay_s=STEP_DELAY_S)
    _, base_url = deployment.gateway()
    key = await deployment.key()

    async def accepted() -> list[str]:
        rows = await deployment.audit_rows()
        return [r.request_id for r in rows if r.event == "accepted"]

    async with httpx.AsyncClient(
        base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        running = asyncio.create_task(client.post("/v1/chat/completions", json=chat("run")))

        async def is_streaming() -> bool:
            return list((await held_jobs(redis_client, WORKER)).values()) == [True]

        await poll(is_streaming, timeout_s=30, what="the first job's first words")
        (running_id,) = await accepted()
        queued = asyncio.create_task(client.post("/v1/chat/completions", json=chat("wait")))

        async def both_accepted() -> bool:
            return len(await accepted()) == 2

        await poll(both_accepted, timeout_s=30, what="the second request accepted")
        (queued_id,) = [i for i in await accepted() if i != running_id]
        queued.cancel()  # hangs up while its job waits behind the running one
        running.cancel()  # hangs up while its job runs
        for hung_up in (queued, running):
            with pytest.raises(asyncio.CancelledError):
                await hung_up

        async def both_ended() -> bool:
            rows = await deployment.audit_rows()
            return len([r for r in rows if r.event == "outcome"]) == 2

        await poll(both_ended, timeout_s=30, what="the outcome records")
        # The worker is free at once: neither job goes on for nobody.
        answered = await client.post("/v1/chat/completions", json=chat("next"))
        assert answered.status_code == 200, answered.text

    rows = await deployment.audit_rows()
    for request_id in (running_id, queued_id):
        events = [r.event for r in rows if r.request_id == request_id]
        assert events == ["accepted", "outcome"], (request_id, events)
    outcomes = {r.request_id: r for r in rows if r.event == "outcome"}
    for request_id in (running_id, queued_id):
        assert (outcomes[request_id].status, outcomes[request_id].error_code) == (
            499,
            "client_closed",
        )
    assert 0 < outcomes[running_id].completion_tokens < REPLY_WORDS  # stopped mid-answer
    assert outcomes[queued_id].worker_id is None  # never started
    assert answered.json()["usage"]["completion_tokens"] == REPLY_WORDS
