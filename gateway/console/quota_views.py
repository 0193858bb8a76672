"""What the console's quotas pages show: each tenant's limits (its total and its default per
user) with its usage now and over the last day, and the limits form read back as the admin
API's body. Reach is the admin API's (``AdminScope``); the figures are the quota counters'.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin.limits import FIELDS, LimitsBody
from gateway.api.admin.scope import AdminScope
from gateway.db.models import Limit, Tenant
from gateway.errors import InvalidRequest
from gateway.quotas.admission import Limits, Scope, tenant_scope
from gateway.quotas.service import limits_of
from gateway.quotas.usage import (
    CurrentUsage,
    HourUsage,
    read_current,
    read_history,
    usage_today,
)

EDITABLE_KINDS = ("tenant", "tenant_user_default")
"""The scopes these pages set; users' and keys' own limits are set elsewhere."""
MAX_TENANTS_SHOWN = 500
LABELS = {
    "requests_per_minute": "Requests per minute",
    "tokens_per_minute": "Tokens per minute",
    "concurrent_requests": "Concurrent requests",
    "tokens_per_day": "Tokens per day (UTC)",
    "tokens_per_month": "Tokens per month",
}
USAGE_LABELS = {
    "requests_per_minute": "Requests in the last minute",
    "tokens_per_minute": "Tokens in the last minute",
    "concurrent_requests": "Requests running now",
    "tokens_per_day": "Tokens today (UTC)",
    "tokens_per_month": "Tokens this month",
}
_WHOLE_NUMBER = re.compile(r"[0-9]{1,10}")


@dataclass(frozen=True)
class UsageRow:
    name: str
    label: str
    used: int | None
    """None: not counted (the tenant has no limit of this kind)."""
    limit: int | None
    source: str
    """How ``used`` was counted: ``limit`` (what the limit is checked against, reservations
    of running requests included), ``hours`` (tokens of requests that ended today) or
    ``none``."""


@dataclass(frozen=True)
class TenantQuotas:
    tenant: Tenant
    total: Limits
    per_user: Limits
    history: list[HourUsage]
    """The hours shown, oldest first (on the list: today's only)."""
    today: HourUsage
    """Today's tokens and requests (UTC), from the hourly usage."""


def limits_from_form(form: Mapping[str, Any]) -> LimitsBody:
    """The form's five fields as the admin API's body: empty is no limit; anything but a
    whole number is a 400 naming the field (the API's ``checked`` then bounds it)."""
    values: dict[str, int | None] = {}
    for name in FIELDS:
        raw = str(form.get(name) or "").strip()
        if raw and not _WHOLE_NUMBER.fullmatch(raw):
            raise InvalidRequest(
                f"{LABELS[name]} must be a whole number of at least 1, or empty for no limit.",
                param=name,
            )
        values[name] = int(raw) if raw else None
    return LimitsBody(**values)


def usage_rows(limits: Limits, current: CurrentUsage, today_tokens: int) -> list[UsageRow]:
    """Each kind of limit against what it counts; today's tokens come from the hourly usage
    where no daily budget counts them."""
    rows = []
    for name, label in USAGE_LABELS.items():
        used, limit = getattr(current, name), getattr(limits, name)
        source = "limit" if used is not None else "none"
        if used is None and name == "tokens_per_day":
            used, source = today_tokens, "hours"
        rows.append(UsageRow(name, label, used, limit, source))
    return rows


async def limits_of_tenants(
    session: AsyncSession, tenant_ids: list[str]
) -> dict[tuple[str, str], Limits]:
    """(kind, tenant id) -> the limits set there, for the kinds these pages set."""
    rows = await session.scalars(
        select(Limit).where(Limit.kind.in_(EDITABLE_KINDS), Limit.scope_id.in_(tenant_ids))
    )
    return {(row.kind, row.scope_id): limits_of(row) for row in rows}


async def tenants_quotas(
    session: AsyncSession, redis: Redis, scope: AdminScope, now: datetime
) -> list[TenantQuotas]:
    """The tenants within reach by name, with their limits and today's usage."""
    tenants = list(
        await session.scalars(
            select(Tenant)
            .where(scope.restrict(Tenant.id))
            .order_by(Tenant.name)
            .limit(MAX_TENANTS_SHOWN)
        )
    )
    ids = [tenant.id for tenant in tenants]
    limits = await limits_of_tenants(session, ids)
    histories = await read_history(redis, ids, now, hours=now.hour + 1)
    return [
        TenantQuotas(
            tenant,
            limits.get(("tenant", tenant.id), Limits()),
            limits.get(("tenant_user_default", tenant.id), Limits()),
            histories[tenant.id],
            usage_today(histories[tenant.id], now),
        )
        for tenant in tenants
    ]


async def tenant_quotas(
    session: AsyncSession, redis: Redis, tenant: Tenant, now: datetime
) -> tuple[TenantQuotas, list[UsageRow]]:
    """One tenant's limits, its last 24 hours and its usage now against its total."""
    limits = await limits_of_tenants(session, [tenant.id])
    total = limits.get(("tenant", tenant.id), Limits())
    history = (await read_history(redis, [tenant.id], now))[tenant.id]
    current = await read_current(redis, Scope(tenant_scope(tenant.id), total), now)
    today = usage_today(history, now)
    per_user = limits.get(("tenant_user_default", tenant.id), Limits())
    quotas = TenantQuotas(tenant, total, per_user, history, today)
    return quotas, usage_rows(total, current, today.tokens)
