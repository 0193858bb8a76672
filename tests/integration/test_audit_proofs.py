"""Proofs served from the database (stored subtree roots + leaves) equal the RFC 6962 proofs
computed from every leaf, and verify against the tree's roots; the search index follows
the log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit import merkle, proofs
from gateway.audit.sequencer import sequence_batch
from gateway.audit.writer import PendingWriter
from gateway.db.migrate import upgrade_to_head
from gateway.db.models import AuditIndex, AuditLogEntry, AuditNode
from gateway.db.session import create_engine

pytestmark = pytest.mark.integration

RECORDS = 1100  # past 4 stored subtrees of 256 leaves, with an uneven right edge


@pytest.fixture
async def log(database_url: str) -> AsyncIterator[tuple[AsyncEngine, list[bytes]]]:
    await asyncio.to_thread(upgrade_to_head, database_url)
    engine = create_engine(database_url)
    writer = PendingWriter(engine)
    await writer.start()
    await asyncio.gather(
        *(
            writer.append({"event": "accepted", "request_id": f"r{n}", "tenant_id": "t", "n": n})
            for n in range(RECORDS)
        )
    )
    await writer.stop()
    while await sequence_batch(engine, limit=300) > 0:  # several batches: nodes span them
        pass
    async with engine.connect() as conn:
        leaves = list(await conn.scalars(select(AuditLogEntry.leaf).order_by(AuditLogEntry.seq)))
    yield engine, leaves
    await engine.dispose()


async def test_stored_nodes_are_the_subtree_roots(log: tuple[AsyncEngine, list[bytes]]) -> None:
    engine, leaves = log
    async with engine.connect() as conn:
        nodes = (await conn.execute(select(AuditNode.height, AuditNode.idx, AuditNode.hash))).all()
    expected = {
        (h, i): merkle.root(leaves[i << h : (i + 1) << h])
        for h in range(proofs.STORED_HEIGHT, 11)
        for i in range(len(leaves) >> h)
    }
    assert {(h, i): value for h, i, value in nodes} == expected
    assert len(expected) == 4 + 2 + 1  # 256-leaf x4, 512-leaf x2, 1024-leaf x1


@pytest.mark.parametrize(
    ("index", "size"),
    [(0, 1), (0, RECORDS), (255, 256), (256, 700), (513, 1025), (1099, RECORDS), (700, 1024)],
)
async def test_inclusion_proofs_match_those_from_every_leaf(
    log: tuple[AsyncEngine, list[bytes]], index: int, size: int
) -> None:
    engine, leaves = log
    async with engine.connect() as conn:
        proof = await proofs.inclusion_proof(conn, index, size)
    assert proof == merkle.inclusion_proof(leaves[:size], index)
    assert merkle.verify_inclusion(leaves[index], index, size, proof, merkle.root(leaves[:size]))


@pytest.mark.parametrize(("old", "new"), [(1, RECORDS), (256, 1024), (300, 1099), (700, 701)])
async def test_consistency_proofs_match_those_from_every_leaf(
    log: tuple[AsyncEngine, list[bytes]], old: int, new: int
) -> None:
    engine, leaves = log
    async with engine.connect() as conn:
        proof = await proofs.consistency_proof(conn, old, new)
    assert proof == merkle.consistency_proof(leaves, old, new)
    assert merkle.verify_consistency(
        old, new, merkle.root(leaves[:old]), merkle.root(leaves[:new]), proof
    )


async def test_a_missing_record_is_an_error_not_a_wrong_proof(
    log: tuple[AsyncEngine, list[bytes]],
) -> None:
    engine, _ = log
    async with engine.connect() as conn:
        with pytest.raises(LookupError):
            await proofs.inclusion_proof(conn, 3, RECORDS + 5)


async def test_the_index_holds_each_record_once(log: tuple[AsyncEngine, list[bytes]]) -> None:
    engine, _ = log
    async with engine.connect() as conn:
        rows = (await conn.execute(select(AuditIndex.seq, AuditIndex.request_id))).all()
        logged = await conn.scalar(select(func.count()).select_from(AuditLogEntry))
    assert len(rows) == logged == RECORDS
    assert sorted(request_id for _, request_id in rows) == sorted(f"r{n}" for n in range(RECORDS))
