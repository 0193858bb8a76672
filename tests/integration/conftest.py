from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from tests.fakes.engine import FakeEngine
from tests.integration.stack import Stack, open_stack


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(max_context=256, capacity=4)


@pytest.fixture
async def stack(
    make_postgres_url: Callable[[], str],
    redis_url: str,
    redis_client: Redis,
    engine: FakeEngine,
) -> AsyncIterator[Stack]:
    async with open_stack(make_postgres_url(), redis_url, engine) as opened:
        yield opened
