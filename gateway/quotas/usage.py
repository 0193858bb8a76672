"""A tenant's usage as its admins see it: tokens and requests per UTC hour over the last
day (the hourly hashes ``settle`` writes) and the quota counters of its total right now,
read without changing them (``gateway.quotas.admission`` names every key).

A quota counter exists only while the tenant has that kind of limit (admission counts
nothing it does not enforce), so a figure here is None where nothing is counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from gateway.quotas.admission import PREFIX, Limits, Scope, scope_keys, usage_key

HOURS_SHOWN = 24
WINDOW_MS = 60_000
"""The sliding minute of admission.lua."""


@dataclass(frozen=True)
class HourUsage:
    hour: datetime
    """The start of the UTC hour."""
    tokens: int
    requests: int


@dataclass(frozen=True)
class CurrentUsage:
    """What a scope's limits are counted against now; None: not counted (no such limit)."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None


def hour_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def last_hours(now: datetime, count: int = HOURS_SHOWN) -> list[datetime]:
    """The starts of the ``count`` UTC hours ending with now's, oldest first."""
    current = hour_start(now)
    return [current - timedelta(hours=back) for back in range(count - 1, -1, -1)]


def hours_of(
    hours: Sequence[datetime], counts: Sequence[Sequence[bytes | None]]
) -> list[HourUsage]:
    """Each hour with its hash's (tokens, requests) as Redis returned them; absent: 0."""
    return [
        HourUsage(hour, int(tokens or 0), int(requests or 0))
        for hour, (tokens, requests) in zip(hours, counts, strict=True)
    ]


def usage_today(history: Sequence[HourUsage], now: datetime) -> HourUsage:
    """The hours of now's UTC day added up, as of its midnight (history must reach back to
    it)."""
    midnight = hour_start(now).replace(hour=0)
    today = [usage for usage in history if usage.hour >= midnight]
    return HourUsage(
        midnight, sum(usage.tokens for usage in today), sum(usage.requests for usage in today)
    )


async def read_history(
    redis: Redis,
    tenant_ids: Sequence[str],
    now: datetime | None = None,
    hours: int = HOURS_SHOWN,
    prefix: str = PREFIX,
) -> dict[str, list[HourUsage]]:
    """Each tenant's last ``hours`` UTC hours, oldest first, in one round trip."""
    starts = last_hours(now or datetime.now(UTC), hours)
    async with redis.pipeline(transaction=False) as pipe:
        for tenant_id in tenant_ids:
            for start in starts:
                pipe.hmget(usage_key(tenant_id, start, prefix), ["tokens", "requests"])
        replies = await pipe.execute()
    return {
        tenant_id: hours_of(starts, replies[i * hours : (i + 1) * hours])
        for i, tenant_id in enumerate(tenant_ids)
    }


def tokens_in_window(entries: Sequence[bytes], amounts: Mapping[bytes, bytes]) -> int:
    """The tokens of the requests still inside the minute (``_sum`` may hold older ones
    that the next admission prunes)."""
    return sum(int(amounts.get(entry) or 0) for entry in entries)


async def read_current(
    redis: Redis,
    scope: Scope,
    now: datetime,
    now_ms: int | None = None,
    prefix: str = PREFIX,
) -> CurrentUsage:
    """The counters of ``scope`` that its limits are checked against: the day and month of
    ``now``, the minute and leases at ``now_ms`` (by default Redis's clock), as admission
    reads them."""
    if now_ms is None:
        seconds, micros = await redis.time()
        now_ms = seconds * 1000 + micros // 1000
    requests, tokens, amounts, leases, day, month = scope_keys(scope, now, prefix)
    since = f"({now_ms - WINDOW_MS}"
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zcount(requests, since, "+inf")
        pipe.zrangebyscore(tokens, since, "+inf")
        pipe.hgetall(amounts)
        pipe.zcount(leases, f"({now_ms}", "+inf")
        pipe.get(day)
        pipe.get(month)
        counted, entries, spent, running, today, this_month = await pipe.execute()
    return counted_only(
        scope.limits,
        CurrentUsage(
            requests_per_minute=int(counted),
            tokens_per_minute=tokens_in_window(entries, spent),
            concurrent_requests=int(running),
            tokens_per_day=int(today or 0),
            tokens_per_month=int(this_month or 0),
        ),
    )


def counted_only(limits: Limits, usage: CurrentUsage) -> CurrentUsage:
    """Keep the figures of the kinds ``limits`` sets: admission counts no other."""
    return CurrentUsage(
        **{
            name: getattr(usage, name) if getattr(limits, name) else None
            for name in CurrentUsage.__dataclass_fields__
        }
    )
