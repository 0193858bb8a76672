"""Many writers, one order: pending audit records become the hash-chained, Merkle-covered log.

Writers INSERT canonical field bytes into ``audit_pending`` and return (``gateway.audit.writer``).
One sequencer drains them in batches: in a single transaction it locks the tree head,
takes the oldest pending rows, chains each (``seq``, ``prev``), appends the leaves to the
frontier, inserts the log rows and their search index rows, deletes the pending rows and
writes the new head. A crash
anywhere rolls the whole batch back; nothing is sequenced twice or lost.

Leadership on PostgreSQL: the sequencer holds a session-level advisory lock on its own
connection for as long as it runs, so of N gateway replicas exactly one sequences and
another takes over when it dies (its connection closes, the lock is released). SQLite has
one process: the embedded default runs the sequencer in that process without a lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.chain import chain_body
from gateway.audit.merkle import Frontier
from gateway.audit.proofs import stored_nodes
from gateway.db.models import AuditIndex, AuditLogEntry, AuditNode, AuditPending, AuditTree
from gateway.db.session import upsert_insert

logger = logging.getLogger("enclave.audit.sequencer")

ADVISORY_LOCK_KEY = 0x656E636C61766531  # "enclave1": one sequencer per database
DEFAULT_BATCH_SIZE = 2000
DEFAULT_IDLE_S = 0.1
"""How long records gather between batches that were not full: the log lags the requests
by about this much; the requests themselves never wait for the sequencer."""
MAX_IDLE_S = 1.0
"""The longest pause between looks at an empty ``audit_pending``."""


_sqlite_locks: weakref.WeakKeyDictionary[AsyncEngine, asyncio.Lock] = weakref.WeakKeyDictionary()


async def sequence_batch(engine: AsyncEngine, limit: int = DEFAULT_BATCH_SIZE) -> int:
    """Sequence up to ``limit`` pending records in one transaction; how many were done."""
    if engine.dialect.name == "postgresql":  # the head row's FOR UPDATE orders sequencers
        return await _sequence_batch(engine, limit)
    # SQLite ignores FOR UPDATE; one process, so an in-process lock orders sequencers.
    lock = _sqlite_locks.setdefault(engine, asyncio.Lock())
    async with lock:
        return await _sequence_batch(engine, limit)


async def _sequence_batch(engine: AsyncEngine, limit: int) -> int:
    async with engine.begin() as conn:
        head = (
            await conn.execute(select(AuditTree).where(AuditTree.id == 1).with_for_update())
        ).one()
        pending = (
            await conn.execute(
                select(AuditPending.id, AuditPending.body).order_by(AuditPending.id).limit(limit)
            )
        ).all()
        if not pending:
            return 0
        frontier = Frontier.from_bytes(head.frontier)
        prev: bytes | None = head.last_leaf
        now = datetime.now(UTC)
        rows, index, completed = [], [], []
        for offset, (_, body) in enumerate(pending):
            record, fields = chain_body(head.size + offset, prev, body)
            completed.append(frontier.append(record.leaf))
            prev = record.leaf
            rows.append({"seq": record.seq, "data": record.data, "leaf": record.leaf})
            index.append(index_row(record.seq, fields, now))
        await conn.execute(insert(AuditLogEntry), [row | {"sequenced_at": now} for row in rows])
        await conn.execute(_upsert(conn.dialect.name, AuditIndex), index)
        if nodes := stored_nodes(head.size, completed):
            await conn.execute(_upsert(conn.dialect.name, AuditNode), nodes)
        # By id, not "id <= last": a writer's row with a lower id may commit after this batch
        # was read, and must wait for the next batch rather than vanish.
        await conn.execute(delete(AuditPending).where(AuditPending.id.in_([p.id for p in pending])))
        await conn.execute(
            update(AuditTree)
            .where(AuditTree.id == 1)
            .values(size=frontier.size, frontier=frontier.to_bytes(), last_leaf=prev)
        )
    return len(pending)


@dataclass(frozen=True)
class AuditBacklog:
    """Records written but not yet sequenced into the log, and how long the oldest waits."""

    pending: int
    lag_s: float


async def audit_backlog(engine: AsyncEngine) -> AuditBacklog:
    """What waits in ``audit_pending``: growing figures mean no sequencer is draining it."""
    async with engine.connect() as conn:
        count, oldest = (
            await conn.execute(select(func.count(), func.min(AuditPending.created_at)))
        ).one()
    lag = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
    return AuditBacklog(int(count), max(0.0, lag))


def _upsert(dialect: str, model: type[AuditIndex] | type[AuditNode]) -> Any:
    """INSERT derived rows (index, nodes), replacing stale ones: rows left behind by a
    restored or rolled-back log must not stop the sequencer."""
    statement = upsert_insert(dialect, model)
    table = cast(Table, model.__table__)
    keys = [c.name for c in table.columns if c.primary_key]
    return statement.on_conflict_do_update(
        index_elements=keys,
        set_={c.name: statement.excluded[c.name] for c in table.columns if not c.primary_key},
    )


def index_row(seq: int, fields: dict[str, Any], sequenced_at: datetime) -> dict[str, Any]:
    """The search columns of a record's fields."""

    def text(name: str, limit: int) -> str | None:
        value = fields.get(name)
        return value[:limit] if isinstance(value, str) else None

    status = fields.get("status")
    try:
        time = datetime.fromisoformat(fields["time"])
    except (KeyError, TypeError, ValueError):
        time = sequenced_at
    return {
        "seq": seq,
        "time": time,
        "event": text("event", 16) or "",
        "request_id": text("request_id", 64),
        "tenant_id": text("tenant_id", 36),
        "user": text("user", 64),
        "model": text("model", 255),
        "endpoint": text("endpoint", 64),
        "status": status if isinstance(status, int) and not isinstance(status, bool) else None,
    }


@contextlib.asynccontextmanager
async def leadership(engine: AsyncEngine) -> AsyncIterator[bool]:
    """Hold the sequencer lock while inside; yields whether this process is the leader."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    async with engine.connect() as conn:
        is_leader = bool(
            await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        )
        await conn.commit()
        try:
            yield is_leader
        finally:
            if is_leader:
                await conn.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
                await conn.commit()


async def run_sequencer(
    engine: AsyncEngine,
    stop: asyncio.Event,
    *,
    idle_s: float = DEFAULT_IDLE_S,
    retry_s: float = 1.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> None:
    """Sequence until ``stop`` is set: lead when the lock is free, drain; after a batch that
    was not full, wait ``idle_s`` for records to gather (a batch costs the same few
    statements whatever its size, so small batches would cost the gateway most per record),
    and after empty batches wait longer, up to ``MAX_IDLE_S``."""
    while not stop.is_set():
        try:
            async with leadership(engine) as is_leader:
                wait_s = idle_s
                while is_leader and not stop.is_set():
                    done = await sequence_batch(engine, batch_size)
                    # Nothing came: look again less often, up to once a second (an idle
                    # gateway should cost next to nothing); records reset the pace.
                    wait_s = min(MAX_IDLE_S, wait_s * 2) if done == 0 else idle_s
                    if done < batch_size:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), wait_s)
        except Exception as exc:  # the database is away: records wait in audit_pending
            logger.warning("sequencer paused: %s", type(exc).__name__)
        if not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_s)
