"""Limits hold across gateway processes: three real gateway processes share one Redis and
one PostgreSQL, a FakeEngine worker serves them; a request limit, a token limit and a
concurrency limit mean the same as with one replica, and a gateway killed with requests in
flight gives its concurrency slots back within the lease time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth.api_keys import create_key
from gateway.db.migrate import upgrade_to_head
from gateway.db.models import Limit
from gateway.db.session import create_engine, create_session_factory
from tests.fakes.engine import FakeEngine
from tests.integration.stack import run_consumer
from tests.processes import EnclaveProcess, Processes

pytestmark = pytest.mark.integration

LEASE_TTL_S = 3.0
LONG_REPLY = " ".join(f"word{n}" for n in range(240))  # 240 tokens for the fake tokenizer


class CountingEngine(FakeEngine):
    """Remembers how many generations ran at once, as the worker saw them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.running = 0
        self.most_running = 0

    async def generate(self, request_id: str, prompt: Any, sampling: Any) -> Any:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            async for output in super().generate(request_id, prompt, sampling):
                yield output
        finally:
            self.running -= 1


@dataclass
class Cluster:
    gateways: list[tuple[EnclaveProcess, str]]
    db: AsyncEngine
    key: str
    tenant_id: str

    def url(self, n: int) -> str:
        return self.gateways[n % len(self.gateways)][1]

    async def limit(self, **limits: int) -> None:
        async with create_session_factory(self.db)() as session:
            session.add(
                Limit(
                    kind="tenant", scope_id=self.tenant_id, updated_at=datetime.now(UTC), **limits
                )
            )
            await session.commit()


@pytest.fixture
def processes(tmp_path: Path, redis_url: str) -> Iterator[Processes]:
    processes = Processes(env={}, log_dir=tmp_path)
    yield processes
    processes.stop_all()


@pytest.fixture
async def cluster(
    make_postgres_url: Callable[[], str],
    redis_url: str,
    redis_client: Redis,
    processes: Processes,
    tmp_path: Path,
) -> AsyncIterator[Cluster]:
    database_url = make_postgres_url()
    await asyncio.to_thread(upgrade_to_head, database_url)
    db = create_engine(database_url)
    async with create_session_factory(db)() as session:
        new = await create_key(session, tenant="radiology", user="batch")
    processes.env.update(
        ENCLAVE_DATABASE__URL=database_url,
        ENCLAVE_REDIS__URL=redis_url,
        ENCLAVE_STATE_DIR=str(tmp_path / "state"),
        ENCLAVE_QUOTA__LEASE_TTL_S=str(LEASE_TTL_S),
    )
    gateways = await asyncio.gather(*(asyncio.to_thread(processes.gateway) for _ in range(3)))
    try:
        yield Cluster(list(gateways), db, new.plaintext, new.record.tenant_id)
    finally:
        await db.dispose()


async def chat(client: httpx.AsyncClient, url: str, key: str, **body: Any) -> httpx.Response:
    return await client.post(
        f"{url}/v1/chat/completions",
        json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], **body},
        headers={"Authorization": f"Bearer {key}"},
    )


async def admitted_now(client: httpx.AsyncClient, url: str, key: str) -> bool:
    """Whether a streaming request is admitted (its status, not its whole answer)."""
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
    async with client.stream(
        "POST",
        f"{url}/v1/chat/completions",
        json=body | {"stream": True},
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        assert response.status_code in (200, 429)
        return response.status_code == 200


async def test_sixty_requests_per_minute_across_three_gateways(
    cluster: Cluster, redis_client: Redis
) -> None:
    await cluster.limit(requests_per_minute=60)
    async with (
        run_consumer(redis_client, FakeEngine(capacity=32)),
        httpx.AsyncClient(timeout=60) as client,
    ):
        responses = await asyncio.gather(
            *(chat(client, cluster.url(n), cluster.key) for n in range(100))
        )
    statuses = [r.status_code for r in responses]
    # All sent within seconds: one minute's worth. Counted per replica, each of the three
    # would have admitted all of its ~33.
    assert statuses.count(200) == 60
    assert statuses.count(429) == 40


async def test_ten_thousand_tokens_per_minute_under_fifty_clients(
    cluster: Cluster, redis_client: Redis
) -> None:
    await cluster.limit(tokens_per_minute=10_000)
    engine = FakeEngine(reply=LONG_REPLY, capacity=64, tokens_per_step=40, step_delay_s=0.01)
    used: list[int] = []

    async def client_loop(n: int, client: httpx.AsyncClient) -> None:
        for attempt in range(4):
            response = await chat(client, cluster.url(n + attempt), cluster.key, max_tokens=250)
            if response.status_code == 200:
                used.append(response.json()["usage"]["total_tokens"])
            else:
                assert response.status_code == 429

    started = time.monotonic()
    async with run_consumer(redis_client, engine), httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(client_loop(n, client) for n in range(50)))
    assert time.monotonic() - started < 60  # all inside one minute
    print(f"tokens admitted in the minute: {sum(used)} over {len(used)} requests")
    assert sum(used) <= 10_000 * 1.05
    assert sum(used) >= 10_000 * 0.5  # the limit was reached, not avoided
    assert len(used) < 200  # some were refused


async def test_four_concurrent_requests_at_most_as_the_worker_sees_it(
    cluster: Cluster, redis_client: Redis
) -> None:
    await cluster.limit(concurrent_requests=4)
    engine = CountingEngine(capacity=32, step_delay_s=0.05)
    async with run_consumer(redis_client, engine), httpx.AsyncClient(timeout=60) as client:
        responses = await asyncio.gather(
            *(chat(client, cluster.url(n), cluster.key) for n in range(24))
        )
    statuses = [r.status_code for r in responses]
    assert engine.most_running == 4
    assert statuses.count(200) >= 4
    assert set(statuses) == {200, 429}


async def test_a_killed_gateways_slots_free_within_the_lease(
    cluster: Cluster, redis_client: Redis
) -> None:
    await cluster.limit(concurrent_requests=2)
    engine = FakeEngine(capacity=8, step_delay_s=0.5)  # 7 tokens: 3.5 s a request
    doomed, doomed_url = cluster.gateways[0]
    async with run_consumer(redis_client, engine), httpx.AsyncClient(timeout=60) as client:
        in_flight = [
            asyncio.create_task(chat(client, doomed_url, cluster.key, stream=True))
            for _ in range(2)
        ]
        while len(engine.requests) < 2:  # both admitted and running
            await asyncio.sleep(0.02)
        doomed.kill()
        killed_at = time.monotonic()
        for task in in_flight:
            with pytest.raises(httpx.HTTPError):
                await task
        # the slots are still held by the dead gateway's leases ...
        assert await admitted_now(client, cluster.url(1), cluster.key) is False
        # ... until they expire, without any restart
        while True:
            probe_at = time.monotonic()  # an admitted probe answers once its job started
            if await admitted_now(client, cluster.url(1), cluster.key):
                break
            assert probe_at - killed_at < LEASE_TTL_S + 2
            await asyncio.sleep(0.1)
        freed_after = probe_at - killed_at
    print(f"slots freed {freed_after:.2f} s after the kill (lease {LEASE_TTL_S} s)")
    assert freed_after <= LEASE_TTL_S + 0.25  # the lease, and the probes' 0.1 s interval
