"""Fixtures of the fault tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from tests.faults.load import Load

StartLoad = Callable[[httpx.AsyncClient, str, int], Load]


@pytest.fixture
async def start_load() -> AsyncIterator[StartLoad]:
    """Factory: start ``clients`` concurrent clients on ``client`` with ``key``; loads a
    failing test left running are cancelled afterwards."""
    started: list[Load] = []

    def start(client: httpx.AsyncClient, key: str, clients: int) -> Load:
        load = Load(client, key, clients)
        load.start()
        started.append(load)
        return load

    yield start
    for load in started:
        await load.cancel()
