"""The audit sequencer on real databases: concurrent writers, one gap-free hash chain whose
Merkle root the stored tree head reproduces; leadership; a failed batch changes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.chain import check_chain
from gateway.audit.merkle import Frontier, root
from gateway.audit.sequencer import (
    AuditBacklog,
    audit_backlog,
    leadership,
    run_sequencer,
    sequence_batch,
)
from gateway.audit.writer import PendingWriter, append_pending
from gateway.db.migrate import upgrade_to_head
from gateway.db.models import AuditLogEntry, AuditPending, AuditTree
from gateway.db.session import create_engine

pytestmark = pytest.mark.integration

WRITERS = 4
PER_WRITER = 150


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(upgrade_to_head, database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def write(pending: PendingWriter, writer: int, count: int) -> None:
    for n in range(count):
        await pending.append({"event": "accepted", "writer": writer, "n": n})


async def log_rows(engine: AsyncEngine) -> list[AuditLogEntry]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(AuditLogEntry).order_by(AuditLogEntry.seq))).all())


async def test_concurrent_writers_become_one_gap_free_chain(engine: AsyncEngine) -> None:
    stop = asyncio.Event()
    pending = PendingWriter(engine, max_batch=32)
    await pending.start()
    sequencer = asyncio.create_task(run_sequencer(engine, stop, batch_size=64))
    await asyncio.gather(*(write(pending, w, PER_WRITER) for w in range(WRITERS)))
    await pending.stop()
    while await sequence_batch(engine) > 0:  # whatever the running sequencer has not taken
        pass
    stop.set()
    await asyncio.wait_for(sequencer, 30)

    rows = await log_rows(engine)
    assert [r.seq for r in rows] == list(range(WRITERS * PER_WRITER))
    assert check_chain((r.seq, r.data) for r in rows) is None
    written = sorted((f["writer"], f["n"]) for f in (json.loads(r.data)["fields"] for r in rows))
    assert written == [(w, n) for w in range(WRITERS) for n in range(PER_WRITER)]
    async with engine.connect() as conn:
        head = (await conn.execute(select(AuditTree))).one()
        pending = await conn.scalar(select(func.count()).select_from(AuditPending))
    assert pending == 0
    assert head.size == len(rows)
    assert Frontier.from_bytes(head.frontier).root() == root([r.leaf for r in rows])
    assert head.last_leaf == rows[-1].leaf


async def test_a_failing_batch_sequences_nothing_and_loses_nothing(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await append_pending(conn, {"event": "accepted", "n": 1})
        await conn.execute(insert(AuditPending).values(created_at=func.now(), body=b"{not json"))

    with pytest.raises(ValueError, match="not JSON"):
        await sequence_batch(engine)

    async with engine.connect() as conn:
        pending = await conn.scalar(select(func.count()).select_from(AuditPending))
        head = (await conn.execute(select(AuditTree))).one()
    assert (pending, head.size) == (2, 0)
    assert await log_rows(engine) == []


async def test_one_leader_at_a_time_on_postgresql(
    make_postgres_url: Callable[[], str],
) -> None:
    url = make_postgres_url()
    await asyncio.to_thread(upgrade_to_head, url)
    first, second = create_engine(url), create_engine(url)
    try:
        async with leadership(first) as first_leads, leadership(second) as second_leads:
            assert (first_leads, second_leads) == (True, False)
        async with leadership(second) as second_leads_now:
            assert second_leads_now
    finally:
        await first.dispose()
        await second.dispose()


async def test_a_failed_group_commit_fails_every_append_in_it(
    make_postgres_url: Callable[[], str],
) -> None:
    url = make_postgres_url()  # never migrated: audit_pending does not exist
    engine = create_engine(url)
    pending = PendingWriter(engine)
    await pending.start()
    try:
        results = await asyncio.gather(
            *(pending.append({"n": n}) for n in range(5)), return_exceptions=True
        )
    finally:
        await pending.stop()
        await engine.dispose()
    assert len(results) == 5
    assert all(isinstance(result, Exception) for result in results)


async def test_bad_fields_fail_alone(engine: AsyncEngine) -> None:
    pending = PendingWriter(engine)
    await pending.start()
    try:
        good, bad = await asyncio.gather(
            pending.append({"n": 1}), pending.append({"n": float("nan")}), return_exceptions=True
        )
    finally:
        await pending.stop()
    assert good is None
    assert isinstance(bad, ValueError)
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(AuditPending)) == 1


async def test_the_audit_backlog_counts_what_waits_for_the_sequencer(
    engine: AsyncEngine,
) -> None:
    """What /metrics reports as enclave_audit_pending and the sequencer's lag."""
    assert await audit_backlog(engine) == AuditBacklog(0, 0.0)
    pending = PendingWriter(engine)
    await pending.start()
    try:
        await write(pending, 1, 3)
    finally:
        await pending.stop()
    waiting = await audit_backlog(engine)
    assert waiting.pending == 3
    assert 0 <= waiting.lag_s < 60
    assert await sequence_batch(engine) == 3
    assert await audit_backlog(engine) == AuditBacklog(0, 0.0)
