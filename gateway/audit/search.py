"""Finding audit records: filters over the search index, in log order, a page at a time.

Every answer is built from the record bytes in ``audit_log``; ``audit_index`` only says
which sequence numbers match. A tenant-scoped auditor's filters always carry its tenant.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import ColumnElement, Row, Select, select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.db.models import AuditIndex, AuditLogEntry
from gateway.errors import InvalidRequest

Outcome = Literal["success", "error"]
EXPORT_CHUNK = 500
MAX_SEQ = 2**63 - 1
"""The largest sequence number PostgreSQL's BIGINT holds."""


@dataclass(frozen=True)
class Filters:
    since: datetime | None = None
    until: datetime | None = None
    tenant_id: str | None = None
    user: str | None = None
    """The user's pseudonym (the caller turns a user id into it)."""
    model: str | None = None
    event: str | None = None
    outcome: Outcome | None = None
    """success: status below 400; error: 400 and above."""
    endpoint: str | None = None
    request_id: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.since is not None:
            where.append(AuditIndex.time >= self.since)
        if self.until is not None:
            where.append(AuditIndex.time < self.until)
        for column, value in (
            (AuditIndex.tenant_id, self.tenant_id),
            (AuditIndex.user, self.user),
            (AuditIndex.model, self.model),
            (AuditIndex.event, self.event),
            (AuditIndex.endpoint, self.endpoint),
            (AuditIndex.request_id, self.request_id),
        ):
            if value is not None:
                where.append(column == value)
        if self.outcome == "success":
            where.append(AuditIndex.status < 400)
        elif self.outcome == "error":
            where.append(AuditIndex.status >= 400)
        return where

    def described(self) -> dict[str, str]:
        """The filters as given, for the auditor's own audit record."""
        values = {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "tenant_id": self.tenant_id,
            "user": self.user,
            "model": self.model,
            "event": self.event,
            "outcome": self.outcome,
            "endpoint": self.endpoint,
            "request_id": self.request_id,
        }
        return {name: value for name, value in values.items() if value is not None}


@dataclass(frozen=True)
class Found:
    seq: int
    data: bytes
    leaf: bytes
    tenant_id: str | None


def _found(row: Row[int, bytes | None, bytes, str | None]) -> Found:
    seq, data, leaf, tenant_id = row
    return Found(seq, bytes(data or b""), bytes(leaf), tenant_id)  # purged rows are excluded


def _query(filters: Filters) -> Select[int, bytes | None, bytes, str | None]:
    return (
        select(AuditLogEntry.seq, AuditLogEntry.data, AuditLogEntry.leaf, AuditIndex.tenant_id)
        .join(AuditIndex, AuditIndex.seq == AuditLogEntry.seq)
        .where(AuditLogEntry.data.is_not(None), *filters.conditions())
        .order_by(AuditLogEntry.seq)
    )


async def search(
    conn: AsyncConnection, filters: Filters, *, after: int | None, limit: int
) -> tuple[list[Found], bool]:
    """Up to ``limit`` matching records after sequence number ``after``; whether more match."""
    query = _query(filters)
    if after is not None:
        query = query.where(AuditLogEntry.seq > after)
    rows = (await conn.execute(query.limit(limit + 1))).all()
    return [_found(row) for row in rows[:limit]], len(rows) > limit


async def search_all(
    conn: AsyncConnection, filters: Filters, *, below: int | None = None
) -> AsyncIterator[Found]:
    """Every matching record (below sequence number ``below``), read in chunks."""
    after: int | None = None
    while True:
        query = _query(filters)
        if below is not None:
            query = query.where(AuditLogEntry.seq < below)
        if after is not None:
            query = query.where(AuditLogEntry.seq > after)
        rows = (await conn.execute(query.limit(EXPORT_CHUNK))).all()
        for row in rows:
            yield _found(row)
        if len(rows) < EXPORT_CHUNK:
            return
        after = rows[-1].seq


async def find(conn: AsyncConnection, seq: int) -> Found | None:
    """Record ``seq``; None if there is none (a number no BIGINT holds included)."""
    if not 0 <= seq <= MAX_SEQ:
        return None
    row = (await conn.execute(_query(Filters()).where(AuditLogEntry.seq == seq))).first()
    return _found(row) if row else None


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind == "seq" and value.isascii() and value.isdigit() and len(value) <= 19:
            seq = int(value)
            if seq <= MAX_SEQ:
                return seq
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise InvalidRequest("cursor is not one this API returned.", param="cursor")
