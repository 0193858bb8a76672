"""No audit record, no inference: an unreachable audit store gives 503 and no job."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from gateway.queue.schedule import waiting
from tests.fakes.engine import FakeEngine
from tests.integration.stack import open_stack
from tests.processes import free_port

pytestmark = pytest.mark.integration


async def test_unreachable_audit_store_refuses_with_503_and_never_calls_the_model(
    make_postgres_url: Callable[[], str], redis_url: str, redis_client: Redis
) -> None:
    engine = FakeEngine()
    dead = f"postgresql+asyncpg://enclave@127.0.0.1:{free_port()}/audit"
    async with open_stack(make_postgres_url(), redis_url, engine, audit_url=dead) as stack:
        key = await stack.key()
        response = await stack.client.post(
            "/v1/chat/completions",
            json={"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {key}"},
        )
        ready = await stack.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "audit_unavailable"
    assert response.headers["retry-after"]
    assert engine.requests == []
    assert await waiting(redis_client, "fake-model") == 0
    assert ready.status_code == 503
    assert ready.json()["audit"] == "unreachable"
