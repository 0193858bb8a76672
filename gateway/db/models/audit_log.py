"""The tamper-evident audit log's tables: pending records, the sequenced log, the tree head.

Writers only INSERT into ``audit_pending`` (no locks, no ordering). The sequencer moves
pending rows into ``audit_log`` in batches, giving each its ``seq``, its canonical bytes
(``data``, exactly what was hashed) and its Merkle leaf hash, and advances ``audit_tree``
(size, frontier, last leaf) in the same transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, LargeBinary, Text
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.models.base import Base, UtcDateTime


class AuditPending(Base):
    __tablename__ = "audit_pending"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    body: Mapped[bytes] = mapped_column(LargeBinary)
    """Canonical JSON of the record's fields, before the chain adds ``seq`` and ``prev``."""


class AuditLogEntry(Base):
    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    leaf: Mapped[bytes] = mapped_column(LargeBinary)
    sequenced_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AuditTree(Base):
    """One row (id 1): the tree over ``audit_log`` as the sequencer left it."""

    __tablename__ = "audit_tree"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    frontier: Mapped[bytes] = mapped_column(LargeBinary)
    last_leaf: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class AuditCheckpoint(Base):
    """A signed tree head: the C2SP checkpoint note over the first ``size`` records."""

    __tablename__ = "audit_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary)
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
