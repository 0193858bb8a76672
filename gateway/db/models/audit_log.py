"""The tamper-evident audit log's tables: pending records, the sequenced log, its search
index, the tree head and the signed checkpoints.

Writers only INSERT into ``audit_pending`` (no locks, no ordering). The sequencer moves
pending rows into ``audit_log`` in batches, giving each its ``seq``, its canonical bytes
(``data``, exactly what was hashed) and its Merkle leaf hash, and advances ``audit_tree``
(size, frontier, last leaf) in the same transaction. ``audit_index`` is a projection of
each record's searchable fields, written in that transaction too: searches find sequence
numbers there, and every answer comes from the record bytes in ``audit_log``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, LargeBinary, SmallInteger, String, Text
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
    data: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """The record's exact bytes; NULL once purged after its retention (the leaf stays)."""
    leaf: Mapped[bytes] = mapped_column(LargeBinary)
    sequenced_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AuditIndex(Base):
    """Search columns of one sequenced record; derived from ``audit_log.data``, never the
    authority (a verifier ignores it)."""

    __tablename__ = "audit_index"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    time: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    event: Mapped[str] = mapped_column(String(16))
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    tenant_id: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)
    user: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    """The user's pseudonym, as in the record."""
    model: Mapped[str | None] = mapped_column(String(255), nullable=True)
    endpoint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)


class AuditNode(Base):
    """The root of a perfect subtree of 2^height leaves (``idx``: its position among those of
    its height), stored from ``proofs.STORED_HEIGHT`` up so proofs need not read every leaf."""

    __tablename__ = "audit_nodes"

    height: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


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
