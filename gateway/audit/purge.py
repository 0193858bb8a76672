"""Purging records past their retention: their bytes go, their leaf hashes stay.

A record older than ``metadata_retention_days`` (never under six months) loses its
``data`` and its search index row; the Merkle tree, every checkpoint and proof, and the
next record's link are untouched, so the log still verifies (``verify`` counts purged
records and refuses any purged sooner than six months). A legal hold on the record's
tenant or user keeps it. Runs on the sequencer's connection: only its role may purge.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.db.models import AuditHold, AuditIndex, AuditLogEntry, Tenant

PURGE_BATCH = 5000


async def purge_expired(
    engine: AsyncEngine,
    main: AsyncEngine,
    retention_days: int,
    now: datetime | None = None,
) -> int:
    """Purge records sequenced before ``now - retention_days`` that no hold covers; how many."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    async with main.connect() as conn:
        held_tenants = list(await conn.scalars(select(Tenant.id).where(Tenant.legal_hold)))
    purged = 0
    while True:
        async with engine.begin() as conn:
            held_users = list(await conn.scalars(select(AuditHold.subject)))
            seqs = list(
                await conn.scalars(
                    select(AuditIndex.seq)
                    .where(
                        AuditIndex.time < cutoff,
                        or_(
                            AuditIndex.tenant_id.is_(None),
                            AuditIndex.tenant_id.not_in(held_tenants),
                        ),
                        or_(AuditIndex.user.is_(None), AuditIndex.user.not_in(held_users)),
                    )
                    .order_by(AuditIndex.seq)
                    .limit(PURGE_BATCH)
                )
            )
            if not seqs:
                return purged
            await conn.execute(
                update(AuditLogEntry)
                .where(AuditLogEntry.seq.in_(seqs), AuditLogEntry.data.is_not(None))
                .values(data=None)
            )
            await conn.execute(delete(AuditIndex).where(AuditIndex.seq.in_(seqs)))
        purged += len(seqs)
