"""Verify the audit log: the chain record by record, the Merkle tree against every signed
checkpoint, and the stored tree head — reporting the first thing that is wrong.

Checkpoints come from the database and from files the verifier holds (``extra_notes``): a
checkpoint kept outside the database is what catches a deleted tail, a rollback, or a
chain rewritten consistently from some record on. Every checkpoint must carry a valid
signature of the configured key; two checkpoints of one size must agree; each must match
the root recomputed from the records it covers. Checkpoints that all match one log of
leaves are consistent with each other by construction (RFC 6962 consistency is implied).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit.chain import check_next
from gateway.audit.checkpoints import Checkpoint, CheckpointError, Verifier, open_checkpoint
from gateway.audit.merkle import Frontier, leaf_hash
from gateway.db.models import AuditCheckpoint, AuditLogEntry, AuditTree

PAGE = 5000


@dataclass(frozen=True)
class Fault:
    """What is wrong; ``seq`` is the first bad record when it can be named."""

    reason: str
    seq: int | None = None
    first_possible: int | None = None
    """For a root mismatch: the first bad record is in ``first_possible`` .. ``seq``."""


@dataclass(frozen=True)
class Report:
    size: int
    checkpoints: int
    fault: Fault | None
    purged: int = 0
    """Records whose bytes were purged after their retention (their leaves verified)."""

    @property
    def is_ok(self) -> bool:
        return self.fault is None


def open_all(
    notes: Sequence[str], verifier: Verifier, origin: str
) -> tuple[dict[int, Checkpoint], Fault | None]:
    """Parse and check signatures; the checkpoints by size, or the first bad one."""
    by_size: dict[int, Checkpoint] = {}
    for index, note in enumerate(notes):
        try:
            checkpoint = open_checkpoint(note, verifier, origin)
        except CheckpointError as exc:
            return by_size, Fault(f"checkpoint #{index + 1} is not valid: {exc.message}")
        other = by_size.setdefault(checkpoint.size, checkpoint)
        if other.root_hash != checkpoint.root_hash:
            return by_size, Fault(f"two signed checkpoints of size {checkpoint.size} disagree")
    return by_size, None


class _Walk:
    """The log replayed record by record against the chain rules and the checkpoints."""

    def __init__(self, checkpoints: dict[int, Checkpoint], purge_cutoff: datetime) -> None:
        self.checkpoints = checkpoints
        self.purge_cutoff = purge_cutoff
        self.purged = 0
        self.pending = sorted(checkpoints)
        self.frontier = Frontier.empty()
        self.prev_leaf: bytes | None = None
        self.last_good = 0

    def match_checkpoints(self) -> Fault | None:
        """Compare the root so far with every checkpoint of exactly this size."""
        while self.pending and self.pending[0] == self.frontier.size:
            size = self.pending.pop(0)
            if self.frontier.root() != self.checkpoints[size].root_hash:
                return Fault(
                    f"records {self.last_good}..{size - 1} do not match signed checkpoint "
                    f"{size} (rewritten)",
                    seq=size - 1,
                    first_possible=self.last_good,
                )
            self.last_good = size
        return None

    def feed(
        self, seq: int, data: bytes | None, leaf: bytes, sequenced_at: datetime
    ) -> Fault | None:
        if data is None:
            return self.feed_purged(seq, leaf, sequenced_at)
        chain_fault = check_next(self.frontier.size, seq, data, self.prev_leaf)
        if chain_fault is not None:
            return Fault(chain_fault.reason, chain_fault.seq)
        self.prev_leaf = leaf_hash(data)
        if leaf != self.prev_leaf:
            return Fault("stored leaf hash differs", seq)
        self.frontier.append(self.prev_leaf)
        return self.match_checkpoints()

    def feed_purged(self, seq: int, leaf: bytes, sequenced_at: datetime) -> Fault | None:
        """A purged record: only its leaf is left; the next record's link checks it, the
        tree and the checkpoints check all leaves. Purged too soon is a fault."""
        if seq != self.frontier.size:
            return Fault(f"record {self.frontier.size} is missing (found {seq} next)", seq)
        if sequenced_at > self.purge_cutoff:
            return Fault("record purged before the minimum retention (bytes deleted)", seq)
        self.purged += 1
        self.prev_leaf = leaf
        self.frontier.append(leaf)
        return self.match_checkpoints()

    def finish(self, head_size: int, head_root: bytes) -> Fault | None:
        size = self.frontier.size
        if self.pending:
            missing = self.pending[-1]
            return Fault(
                f"records {size}..{missing - 1} are missing: signed checkpoint {missing} "
                "covers them (tail deleted or log rolled back)",
                seq=size,
            )
        if head_size != size or head_root != self.frontier.root():
            return Fault("the stored tree head does not match the log", seq=min(size, head_size))
        return None


async def _records(
    conn: AsyncConnection,
) -> AsyncIterator[tuple[int, bytes | None, bytes, datetime]]:
    """Every log row in seq order, a page at a time (keyset pagination)."""
    after = -1
    while True:
        rows = (
            await conn.execute(
                select(
                    AuditLogEntry.seq,
                    AuditLogEntry.data,
                    AuditLogEntry.leaf,
                    AuditLogEntry.sequenced_at,
                )
                .where(AuditLogEntry.seq > after)
                .order_by(AuditLogEntry.seq)
                .limit(PAGE)
            )
        ).all()
        for seq, data, leaf, sequenced_at in rows:
            yield seq, None if data is None else bytes(data), bytes(leaf), sequenced_at
        if len(rows) < PAGE:
            return
        after = rows[-1].seq


MIN_RETENTION = timedelta(days=183)
"""No record may be purged sooner (``AuditSettings.metadata_retention_days`` >= 183)."""


async def verify_log(
    engine: AsyncEngine,
    verifier: Verifier,
    origin: str,
    extra_notes: Sequence[str] = (),
    *,
    now: datetime | None = None,
) -> Report:
    """Check everything; the report names the first fault found, if any.

    Everything is read in one transaction, on PostgreSQL at REPEATABLE READ: the tree head
    and the records are one snapshot, whatever the sequencer appends meanwhile.
    """
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn = await conn.execution_options(isolation_level="REPEATABLE READ")
        async with conn.begin():
            return await _verify(conn, verifier, origin, extra_notes, now)


async def _verify(
    conn: AsyncConnection,
    verifier: Verifier,
    origin: str,
    extra_notes: Sequence[str],
    now: datetime | None,
) -> Report:
    stored = list(await conn.scalars(select(AuditCheckpoint.note)))
    head = (await conn.execute(select(AuditTree).where(AuditTree.id == 1))).one()
    checkpoints, fault = open_all([*stored, *extra_notes], verifier, origin)
    if fault is not None:
        return Report(0, len(checkpoints), fault)
    walk = _Walk(checkpoints, (now or datetime.now(UTC)) - MIN_RETENTION)
    fault = walk.match_checkpoints()  # a checkpoint of the empty tree
    if fault is None:
        async for seq, data, leaf, sequenced_at in _records(conn):
            fault = walk.feed(seq, data, leaf, sequenced_at)
            if fault is not None:
                break
        else:
            head_root = Frontier.from_bytes(head.frontier).root()
            fault = walk.finish(head.size, head_root)
    return Report(walk.frontier.size, len(checkpoints), fault, walk.purged)
