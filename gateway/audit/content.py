"""Sealed prompts and answers for tenants that opt in; erasure and retention by shredding.

``ContentVault.seal`` encrypts text under the subject's key for the current month (created
on first use). ``open`` returns None once that key is shredded. ``erase`` shreds every key
of a subject (GDPR Art. 17); ``shred_expired`` shreds keys whose month ended more than the
tenant's retention ago. Either refuses or skips what a legal hold covers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.purge import purge_expired
from gateway.audit.sealing import new_wrapped_key, open_sealed, seal, unwrap_key
from gateway.db.models import AuditHold, AuditSubjectKey, Tenant
from gateway.db.session import upsert_insert
from gateway.errors import Conflict

logger = logging.getLogger("enclave.audit.retention")

SHRED_BATCH = 500


async def run_retention(
    vault: ContentVault,
    sequencer_db: AsyncEngine,
    metadata_retention_days: int,
    stop: asyncio.Event,
    interval_s: float = 3600,
) -> None:
    """Every ``interval_s`` until ``stop``: shred expired content keys, purge expired records."""
    while not stop.is_set():
        try:
            shredded = await vault.shred_expired()
            purged = await purge_expired(sequencer_db, vault.main, metadata_retention_days)
            if shredded or purged:
                logger.info(
                    "retention: %d content keys shredded, %d records purged", shredded, purged
                )
        except Exception as exc:  # the database is away: try again next time
            logger.warning("retention paused: %s", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


def period_of(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m")


def period_end(period: str) -> datetime:
    year, month = (int(part) for part in period.split("-"))
    return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


class LegalHold(Conflict):
    default_code = "legal_hold"


@dataclass(frozen=True)
class ContentVault:
    engine: AsyncEngine
    """The audit database (subject keys, holds)."""
    main: AsyncEngine
    """The main database (tenants' holds and retention)."""
    master_key: bytes
    default_retention_days: int

    async def seal(
        self, subject: str, tenant_id: str, text: str, context: str
    ) -> dict[str, Any] | None:
        """``text`` sealed under the subject's key of this month; None if that key was
        shredded already (an erased subject's content is not kept again this month)."""
        period = period_of(datetime.now(UTC))
        key = await self._key(subject, period, tenant_id)
        return None if key is None else seal(key, f"{subject}/{period}", text, context)

    async def open(self, sealed: dict[str, Any], context: str) -> str | None:
        """The sealed text, or None when its key has been shredded."""
        subject, _, period = str(sealed.get("kid", "")).partition("/")
        async with self.engine.connect() as conn:
            wrapped = await conn.scalar(
                select(AuditSubjectKey.wrapped).where(
                    AuditSubjectKey.subject == subject, AuditSubjectKey.period == period
                )
            )
        if wrapped is None:
            return None
        return open_sealed(unwrap_key(self.master_key, subject, period, wrapped), sealed, context)

    async def _key(self, subject: str, period: str, tenant_id: str) -> bytes | None:
        row = {
            "subject": subject,
            "period": period,
            "tenant_id": tenant_id,
            "wrapped": new_wrapped_key(self.master_key, subject, period),
            "created_at": datetime.now(UTC),
        }
        insert = upsert_insert(self.engine.dialect.name, AuditSubjectKey)
        async with self.engine.begin() as conn:
            await conn.execute(insert.values(**row).on_conflict_do_nothing())
            wrapped = await conn.scalar(
                select(AuditSubjectKey.wrapped).where(
                    AuditSubjectKey.subject == subject, AuditSubjectKey.period == period
                )
            )
        return None if wrapped is None else unwrap_key(self.master_key, subject, period, wrapped)

    async def is_held(self, subject: str) -> bool:
        """Whether a hold covers the subject or any tenant it has content in."""
        async with self.engine.connect() as conn:
            if await conn.scalar(select(AuditHold.subject).where(AuditHold.subject == subject)):
                return True
            tenants = set(
                await conn.scalars(
                    select(AuditSubjectKey.tenant_id).where(AuditSubjectKey.subject == subject)
                )
            )
        return bool(tenants & await self._held_tenants())

    async def _held_tenants(self) -> set[str]:
        async with self.main.connect() as conn:
            return set(await conn.scalars(select(Tenant.id).where(Tenant.legal_hold)))

    async def erase(self, subject: str, reason: str) -> int:
        """Shred every key of the subject; how many. Raises LegalHold under a hold."""
        if await self.is_held(subject):
            raise LegalHold("A legal hold covers this data subject; lift it before erasing.")
        return await self._shred(AuditSubjectKey.subject == subject, reason)

    async def shred_expired(self, now: datetime | None = None) -> int:
        """Shred keys whose month ended more than their tenant's retention before ``now``."""
        now = now or datetime.now(UTC)
        async with self.main.connect() as conn:
            tenants = (
                await conn.execute(
                    select(Tenant.id, Tenant.content_retention_days, Tenant.legal_hold)
                )
            ).all()
        async with self.engine.connect() as conn:
            live = (
                await conn.execute(
                    select(
                        AuditSubjectKey.subject, AuditSubjectKey.period, AuditSubjectKey.tenant_id
                    ).where(AuditSubjectKey.wrapped.is_not(None))
                )
            ).all()
            held = set(await conn.scalars(select(AuditHold.subject)))
        policy = {t.id: (t.content_retention_days, t.legal_hold) for t in tenants}
        expired = []
        for subject, period, tenant_id in live:
            days, tenant_held = policy.get(tenant_id, (None, False))
            expires = period_end(period) + timedelta(days=days or self.default_retention_days)
            if expires <= now and not tenant_held and subject not in held:
                expired.append(
                    (AuditSubjectKey.subject == subject) & (AuditSubjectKey.period == period)
                )
        shredded = 0
        for start in range(0, len(expired), SHRED_BATCH):  # one UPDATE per batch of keys
            shredded += await self._shred(or_(*expired[start : start + SHRED_BATCH]), "retention")
        return shredded

    async def _shred(self, where: Any, reason: str) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(AuditSubjectKey)
                .where(where, AuditSubjectKey.wrapped.is_not(None))
                .values(wrapped=None, shredded_at=datetime.now(UTC), shred_reason=reason[:255])
            )
        return int(result.rowcount or 0)

    async def hold(self, subject: str, reason: str) -> None:
        insert = upsert_insert(self.engine.dialect.name, AuditHold)
        row = {"subject": subject, "reason": reason[:255], "created_at": datetime.now(UTC)}
        async with self.engine.begin() as conn:
            await conn.execute(insert.values(**row).on_conflict_do_nothing())

    async def release(self, subject: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(AuditHold).where(AuditHold.subject == subject))
