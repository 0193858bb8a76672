"""The tamper suite: a superuser changes the audit log on real PostgreSQL, and verification
names what is wrong and where.

Each test builds a log of 20 records with signed checkpoints at 8 and 20, keeps copies of
the checkpoint notes outside the database (as the checkpoint directory, or a regulator,
would), tampers with triggers off (``session_replication_role = replica``), and verifies.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.chain import chain_fields
from gateway.audit.checkpointer import write_checkpoint
from gateway.audit.checkpoints import Checkpoint, Signer, Verifier, generate_signer, sign
from gateway.audit.merkle import Frontier, leaf_hash
from gateway.audit.sequencer import sequence_batch
from gateway.audit.verify import Fault, verify_log
from gateway.audit.writer import PendingWriter
from gateway.db.migrate import upgrade_to_head
from gateway.db.session import create_engine

pytestmark = pytest.mark.integration

ORIGIN = "enclave.test/audit"
RECORDS = 20


@dataclass
class Log:
    engine: AsyncEngine
    signer: Signer
    verifier: Verifier
    notes: list[str]
    """Copies of the signed checkpoints kept outside the database."""

    async def verify(self) -> Fault | None:
        return (await verify_log(self.engine, self.verifier, ORIGIN, self.notes)).fault

    async def tamper(self, *statements: str, **params: object) -> None:
        """Run SQL as the superuser with triggers and rules off."""
        async with self.engine.begin() as conn:
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            for statement in statements:
                await conn.execute(text(statement), params)

    async def rows(self) -> list[tuple[int, bytes]]:
        async with self.engine.connect() as conn:
            result = await conn.execute(text("SELECT seq, data FROM audit_log ORDER BY seq"))
            return [(row[0], bytes(row[1])) for row in result]

    async def replace_from(self, start: int, fields: Callable[[int], dict[str, object]]) -> None:
        """Rewrite records ``start``.. consistently: valid chain, leaves and tree head."""
        rows = await self.rows()
        prev = None
        frontier = Frontier.empty()
        new_rows = []
        for seq, data in rows:
            record = (
                chain_fields(seq, prev, fields(seq))
                if seq >= start
                else chain_fields(seq, prev, json.loads(data)["fields"])
            )
            prev = record.leaf
            frontier.append(record.leaf)
            new_rows.append(record)
        async with self.engine.begin() as conn:
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            for record in new_rows[start:]:
                await conn.execute(
                    text("UPDATE audit_log SET data = :data, leaf = :leaf WHERE seq = :seq"),
                    {"data": record.data, "leaf": record.leaf, "seq": record.seq},
                )
            await conn.execute(
                text("UPDATE audit_tree SET size = :size, frontier = :f, last_leaf = :last"),
                {"size": frontier.size, "f": frontier.to_bytes(), "last": prev},
            )


async def append(engine: AsyncEngine, first: int, count: int) -> None:
    writer = PendingWriter(engine)
    await writer.start()
    try:
        for n in range(first, first + count):
            await writer.append({"event": "accepted", "request_id": f"req-{n}", "status": 202})
    finally:
        await writer.stop()
    while await sequence_batch(engine) > 0:
        pass


@pytest.fixture
async def log(make_postgres_url: Callable[[], str]) -> AsyncIterator[Log]:
    url = make_postgres_url()
    await asyncio.to_thread(upgrade_to_head, url)
    engine = create_engine(url)
    private, public = generate_signer(ORIGIN)
    signer, verifier = Signer.from_key_string(private), Verifier.from_key_string(public)
    notes = []
    for first, count in ((0, 8), (8, RECORDS - 8)):
        await append(engine, first=first, count=count)
        checkpoint = await write_checkpoint(engine, signer, ORIGIN)
        assert checkpoint is not None
        async with engine.connect() as conn:
            note = await conn.scalar(
                text("SELECT note FROM audit_checkpoints WHERE size = :s"), {"s": checkpoint.size}
            )
        notes.append(str(note))
    yield Log(engine, signer, verifier, notes)
    await engine.dispose()


async def test_an_untouched_log_verifies(log: Log) -> None:
    report = await verify_log(log.engine, log.verifier, ORIGIN, log.notes)
    assert (report.size, report.checkpoints, report.fault) == (RECORDS, 2, None)


async def test_one_records_bytes_edited(log: Log) -> None:
    rows = await log.rows()
    edited = rows[5][1].replace(b'"status":202', b'"status":200')
    await log.tamper("UPDATE audit_log SET data = :data WHERE seq = 5", data=edited)
    assert await log.verify() == Fault("stored leaf hash differs", 5)


async def test_one_record_edited_with_its_leaf_hash_recomputed(log: Log) -> None:
    rows = await log.rows()
    edited = rows[5][1].replace(b'"status":202', b'"status":200')
    await log.tamper(
        "UPDATE audit_log SET data = :data, leaf = :leaf WHERE seq = 5",
        data=edited,
        leaf=leaf_hash(edited),
    )
    assert await log.verify() == Fault("prev is not the hash of the previous record", 6)


async def test_a_middle_record_deleted(log: Log) -> None:
    await log.tamper("DELETE FROM audit_log WHERE seq = 10")
    assert await log.verify() == Fault("record 10 is missing (found 11 next)", 10)


async def test_the_tail_deleted_is_found_against_a_checkpoint(log: Log) -> None:
    await log.tamper(
        "DELETE FROM audit_log WHERE seq >= 15", "DELETE FROM audit_checkpoints WHERE size > 8"
    )
    await log.replace_from(15, lambda seq: {})  # the tree head recomputed for what is left

    fault = await log.verify()

    assert fault is not None
    assert fault.seq == 15
    assert "missing" in fault.reason
    assert "checkpoint 20" in fault.reason


async def test_the_whole_chain_rewritten_consistently(log: Log) -> None:
    await log.tamper("DELETE FROM audit_checkpoints")
    await log.replace_from(0, lambda seq: {"event": "accepted", "request_id": f"fake-{seq}"})

    fault = await log.verify()

    assert fault is not None
    assert (fault.first_possible, fault.seq) == (0, 7)
    assert "checkpoint 8" in fault.reason


async def test_the_chain_rewritten_after_the_first_checkpoint(log: Log) -> None:
    await log.tamper("DELETE FROM audit_checkpoints")
    await log.replace_from(12, lambda seq: {"event": "accepted", "request_id": f"fake-{seq}"})

    fault = await log.verify()

    assert fault is not None
    assert (fault.first_possible, fault.seq) == (8, 19)


async def test_two_records_swapped(log: Log) -> None:
    await log.tamper(
        "UPDATE audit_log SET seq = -1 WHERE seq = 3",
        "UPDATE audit_log SET seq = 3 WHERE seq = 4",
        "UPDATE audit_log SET seq = 4 WHERE seq = -1",
    )
    fault = await log.verify()
    assert fault is not None
    assert fault.seq == 3


async def test_a_forged_record_inserted(log: Log) -> None:
    rows = await log.rows()
    forged = chain_fields(10, leaf_hash(rows[9][1]), {"event": "accepted", "request_id": "x"})
    await log.tamper(
        "UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 10",
        "UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1010",
        "INSERT INTO audit_log (seq, data, leaf, sequenced_at) VALUES (10, :d, :l, now())",
        d=forged.data,
        l=forged.leaf,
    )
    fault = await log.verify()
    assert fault is not None
    assert fault.seq == 11


async def test_rolled_back_to_an_older_state(log: Log) -> None:
    early = log.notes[0]
    await log.tamper(
        "DELETE FROM audit_log WHERE seq >= 8", "DELETE FROM audit_checkpoints WHERE size > 8"
    )
    await log.replace_from(8, lambda seq: {})

    fault = await log.verify()

    assert early  # the first checkpoint still matches; the held later one does not
    assert fault is not None
    assert fault.seq == 8
    assert "rolled back" in fault.reason


async def test_a_checkpoint_with_edited_text(log: Log) -> None:
    edited = log.notes[1].replace("\n20\n", "\n21\n", 1)
    assert edited != log.notes[1]
    await log.tamper("UPDATE audit_checkpoints SET note = :note WHERE size = 20", note=edited)
    fault = await log.verify()
    assert fault is not None
    assert "checkpoint #2 is not valid" in fault.reason


async def test_a_checkpoint_with_a_bad_signature(log: Log) -> None:
    other_private, _ = generate_signer(ORIGIN)  # same name, another key
    forged = sign(Checkpoint(ORIGIN, 20, bytes(32)), Signer.from_key_string(other_private))

    fault = (await verify_log(log.engine, log.verifier, ORIGIN, [forged])).fault
    assert fault is not None
    assert "not valid" in fault.reason


async def test_a_checkpoint_inconsistent_with_an_earlier_one(log: Log) -> None:
    # The signer is tricked into signing a fork: roll back to 8, append other records, sign.
    await log.tamper(
        "DELETE FROM audit_log WHERE seq >= 8", "DELETE FROM audit_checkpoints WHERE size > 8"
    )
    await log.replace_from(8, lambda seq: {})
    await append(log.engine, first=100, count=12)
    assert await write_checkpoint(log.engine, log.signer, ORIGIN) is not None

    fault = await log.verify()  # the verifier still holds the original checkpoint 20

    assert fault == Fault("two signed checkpoints of size 20 disagree")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET data = data WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 1",
        "TRUNCATE audit_log",
        "UPDATE audit_checkpoints SET note = note",
        "DELETE FROM audit_checkpoints",
        "TRUNCATE audit_checkpoints",
        "DELETE FROM audit_tree",
        "TRUNCATE audit_tree",
    ],
)
async def test_the_application_cannot_change_sequenced_records(log: Log, statement: str) -> None:
    before = await log.rows()
    with pytest.raises(DBAPIError, match="append-only"):
        async with log.engine.begin() as conn:
            await conn.execute(text(statement))
    assert await log.rows() == before
    assert await log.verify() is None
