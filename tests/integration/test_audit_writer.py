"""The audit writer's own connection on real PostgreSQL: what happens when the server ends it.

Each flusher holds a connection (``gateway.audit.writer``); a restart, a failover or an
administrator's ``pg_terminate_backend`` ends it under the writer's feet.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import writer as writer_module
from gateway.audit.writer import PendingWriter
from gateway.db.migrate import upgrade_to_head
from gateway.db.models import AuditPending
from gateway.db.session import create_engine

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(make_postgres_url: Callable[[], str]) -> AsyncIterator[AsyncEngine]:
    url = make_postgres_url()
    await asyncio.to_thread(upgrade_to_head, url)
    engine = create_engine(url)
    yield engine
    await engine.dispose()


async def end_other_sessions(engine: AsyncEngine) -> int:
    """End every other session on the writer's database, as the server would on a restart."""
    async with engine.connect() as conn:
        ended = await conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    return int(ended or 0)


async def written(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        bodies = await conn.scalars(select(AuditPending.body).order_by(AuditPending.id))
        return [json.loads(body)["n"] for body in bodies]


async def attempt(writer: PendingWriter, n: int) -> bool:
    try:
        await writer.append({"n": n})
    except Exception:
        return False
    return True


async def test_a_connection_ended_while_busy_fails_one_batch_closed_then_recovers(
    engine: AsyncEngine,
) -> None:
    """Ended between two batches close together (no ping in between): the next batch may
    fail, and its callers hear so (their requests are refused, not silently unlogged); the
    one after connects afresh."""
    writer = PendingWriter(engine, flushers=1)
    await writer.start()
    try:
        assert await attempt(writer, 0)
        assert await end_other_sessions(engine) == 1  # the writer's held connection
        outcomes = [await attempt(writer, n) for n in range(1, 4)]
    finally:
        await writer.stop()
    assert outcomes[1:] == [True, True], outcomes
    assert await written(engine) == [0] + [n for n, ok in enumerate(outcomes, 1) if ok]


async def test_a_connection_ended_while_idle_is_replaced_without_failing_anyone(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle past IDLE_PING_S (here: any idle time), the held connection is pinged first;
    found dead, it is replaced before anything is sent."""
    monkeypatch.setattr(writer_module, "IDLE_PING_S", 0.0)
    writer = PendingWriter(engine, flushers=1)
    await writer.start()
    try:
        assert await attempt(writer, 0)
        assert await end_other_sessions(engine) == 1
        started = time.monotonic()
        outcomes = [await attempt(writer, n) for n in range(1, 4)]
    finally:
        await writer.stop()
    assert outcomes == [True, True, True]
    assert time.monotonic() - started < 5
    assert await written(engine) == [0, 1, 2, 3]
