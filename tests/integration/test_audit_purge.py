"""Purging after the metadata retention: old records lose their bytes and keep their leaf
hashes, so the log, its checkpoints and proofs still verify; holds keep records; a purge
sooner than six months (or any other edit) is detected."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import merkle, proofs
from gateway.audit.checkpointer import write_checkpoint
from gateway.audit.checkpoints import Signer, generate_signer, open_checkpoint
from gateway.audit.purge import purge_expired
from gateway.audit.sequencer import sequence_batch
from gateway.audit.verify import Fault, verify_log
from gateway.audit.writer import PendingWriter
from gateway.db.migrate import upgrade_to_head
from gateway.db.models import AuditHold, AuditIndex, AuditLogEntry, Tenant
from gateway.db.session import create_engine

pytestmark = pytest.mark.integration

ORIGIN = "enclave.test/purge"
NOW = datetime.now(UTC)
SEVEN_YEARS_AGO = NOW - timedelta(days=7 * 365)
SIX_YEARS = 6 * 365
LATER = NOW + timedelta(days=7 * 365)  # verify as if years had passed since sequencing


@pytest.fixture
async def log(database_url: str) -> AsyncIterator[tuple[AsyncEngine, Signer]]:
    """Records 0-9: 0-5 seven years old (2: held tenant, 3: held user), 6-9 recent."""
    await asyncio.to_thread(upgrade_to_head, database_url)
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        for tenant, held in (("t-free", False), ("t-held", True)):
            await conn.execute(
                Tenant.__table__.insert().values(
                    id=tenant, name=tenant, created_at=NOW, legal_hold=held
                )
            )
        await conn.execute(
            AuditHold.__table__.insert().values(subject="u-held", reason="court", created_at=NOW)
        )
    writer = PendingWriter(engine)
    await writer.start()
    for n in range(10):
        old = n < 6
        await writer.append(
            {
                "event": "accepted",
                "request_id": f"r{n}",
                "tenant_id": "t-held" if n == 2 else "t-free",
                "user": "u-held" if n == 3 else "u-free",
                "time": (SEVEN_YEARS_AGO if old else NOW).isoformat(),
            }
        )
    await writer.stop()
    await sequence_batch(engine)
    private, _ = generate_signer(ORIGIN)
    signer = Signer.from_key_string(private)
    await write_checkpoint(engine, signer, ORIGIN)
    yield engine, signer
    await engine.dispose()


async def data_of(engine: AsyncEngine) -> dict[int, bytes | None]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(AuditLogEntry.seq, AuditLogEntry.data))).all()
    return {seq: data for seq, data in rows}


async def test_old_records_lose_their_bytes_and_the_log_still_verifies(
    log: tuple[AsyncEngine, Signer],
) -> None:
    engine, signer = log
    async with engine.connect() as conn:
        leaves = list(await conn.scalars(select(AuditLogEntry.leaf).order_by(AuditLogEntry.seq)))

    assert await purge_expired(engine, engine, SIX_YEARS) == 4
    assert await purge_expired(engine, engine, SIX_YEARS) == 0  # idempotent

    data = await data_of(engine)
    assert [seq for seq, value in sorted(data.items()) if value is None] == [0, 1, 4, 5]
    assert json.loads(data[2] or b"")["fields"]["tenant_id"] == "t-held"  # tenant hold
    assert json.loads(data[3] or b"")["fields"]["user"] == "u-held"  # subject hold
    async with engine.connect() as conn:
        indexed = sorted(await conn.scalars(select(AuditIndex.seq)))
        assert list(await conn.scalars(select(AuditLogEntry.leaf).order_by(AuditLogEntry.seq))) == (
            leaves
        )
    assert indexed == [2, 3, 6, 7, 8, 9]

    report = await verify_log(engine, signer.verifier(), ORIGIN, now=LATER)
    assert report.fault is None
    assert (report.size, report.purged) == (10, 4)

    note = await write_checkpoint(engine, signer, ORIGIN)  # nothing new: same head
    assert note is None
    async with engine.connect() as conn:
        proof = await proofs.inclusion_proof(conn, 2, 10)
        checkpoint_note = await conn.scalar(text("SELECT note FROM audit_checkpoints"))
    checkpoint = open_checkpoint(checkpoint_note, signer.verifier(), ORIGIN)
    assert merkle.verify_inclusion(leaves[2], 2, 10, proof, checkpoint.root_hash)


async def test_bytes_deleted_sooner_than_six_months_are_a_fault(
    log: tuple[AsyncEngine, Signer],
) -> None:
    engine, signer = log
    async with engine.begin() as conn:  # record 7's bytes deleted as if purged, a month on
        if engine.dialect.name == "postgresql":
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text("UPDATE audit_log SET data = NULL WHERE seq = 7"))

    report = await verify_log(engine, signer.verifier(), ORIGIN, now=NOW + timedelta(days=30))

    assert report.fault == Fault("record purged before the minimum retention (bytes deleted)", 7)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET data = data WHERE seq = 1",
        "UPDATE audit_log SET data = NULL, leaf = leaf || '\\x00'::bytea WHERE seq = 1",
        "UPDATE audit_log SET seq = 99 WHERE seq = 1",
    ],
)
async def test_the_trigger_lets_only_a_purge_through(
    log: tuple[AsyncEngine, Signer], statement: str
) -> None:
    engine, _ = log
    if engine.dialect.name != "postgresql":
        pytest.skip("triggers are PostgreSQL's")
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    async with engine.begin() as conn:  # the purge itself passes
        await conn.execute(text("UPDATE audit_log SET data = NULL WHERE seq = 1"))
    assert (await data_of(engine))[1] is None
