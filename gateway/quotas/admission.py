"""Admission against every limit of a request's scopes in one Redis round trip.

A request is admitted only if each of its scopes (tenant, user, key) admits it: requests
and tokens per minute in an exact sliding minute, concurrent requests as leases that expire
(so a crashed gateway cannot leak slots), and token budgets per UTC day and calendar month.
Tokens are reserved at admission (prompt plus the requested maximum) and corrected to the
true usage by ``settle``. The decision carries what the ``x-ratelimit-*`` headers report:
the tightest scope's limit, remaining and reset, for requests and for tokens.

Keys, all under ``enclave:quota:`` and built here only:

- ``<scope>:requests``, ``:tokens``, ``:amounts``, ``:leases`` — the sliding minute and the
  concurrency leases of a scope (``tenant:<id>``, ``user:<id>``, ``key:<id>``), written
  only for the kinds of limit the scope has.
- ``<scope>:day:<YYYY-MM-DD>``, ``<scope>:month:<YYYY-MM>`` — tokens counted against the
  scope's daily and monthly budgets (only while it has one).
- ``tenant:<id>:hour:<YYYY-MM-DDTHH>`` — a hash of the tenant's usage in that UTC hour,
  ``tokens`` (prompt plus completion, as settled) and ``requests`` (admitted requests that
  ended in that hour, whatever their outcome), for every tenant whether limited or not;
  written by ``settle`` in its one round trip, kept ``USAGE_TTL_S`` (48 h).
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis

from gateway.redis_batch import CommandBatcher

LEASE_TTL_S = 30.0
PREFIX = "enclave:quota:"
KEYS_PER_SCOPE = 6
USAGE_TTL_S = 48 * 3600


def _script(name: str) -> str:
    return files("gateway.quotas").joinpath(name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Limits:
    """None: no limit of that kind."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None

    def arguments(self) -> list[int]:
        values = (
            self.requests_per_minute,
            self.tokens_per_minute,
            self.concurrent_requests,
            self.tokens_per_day,
            self.tokens_per_month,
        )
        return [value or 0 for value in values]


@dataclass(frozen=True)
class Scope:
    """Who a limit belongs to, e.g. ``tenant:<id>``, ``user:<id>``, ``key:<id>``."""

    name: str
    limits: Limits


@dataclass(frozen=True)
class Window:
    limit: int
    remaining: int
    reset_s: float
    """Until the oldest use in the minute ages out (0: nothing used)."""


@dataclass(frozen=True)
class Decision:
    admitted: bool
    reason: str | None
    """Which limit refused: requests_per_minute, tokens_per_minute,
    request_exceeds_tokens_per_minute, concurrent_requests, daily_token_budget,
    monthly_token_budget."""
    retry_after_s: float | None
    """When a retry can succeed; None when none can (a request larger than the limit)."""
    requests: Window | None
    tokens: Window | None

    @property
    def is_budget(self) -> bool:
        """A budget is spent (OpenAI's ``insufficient_quota``), not a rate exceeded."""
        return self.reason in ("daily_token_budget", "monthly_token_budget")


@dataclass(frozen=True)
class Reservation:
    request_id: str
    tokens: int
    keys: tuple[str, ...]
    tenant_id: str | None = None
    """Whose hourly usage the request counts in when it settles (None: nobody's)."""


def calendar_ends(now: datetime) -> tuple[int, int]:
    """The ends (unix seconds) of now's UTC day and calendar month."""
    day = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    last = calendar.monthrange(now.year, now.month)[1]
    month = datetime(now.year, now.month, last, tzinfo=UTC) + timedelta(days=1)
    return int(day.timestamp()), int(month.timestamp())


def tenant_scope(tenant_id: str) -> str:
    """The name of a tenant's total's scope (its keys' base)."""
    return f"tenant:{tenant_id}"


def scope_keys(scope: Scope, now: datetime, prefix: str = PREFIX) -> list[str]:
    base = f"{prefix}{scope.name}"
    return [
        f"{base}:requests",
        f"{base}:tokens",
        f"{base}:amounts",
        f"{base}:leases",
        f"{base}:day:{now:%Y-%m-%d}",
        f"{base}:month:{now:%Y-%m}",
    ]


def usage_key(tenant_id: str, hour: datetime, prefix: str = PREFIX) -> str:
    """The hash of a tenant's tokens and requests in the UTC hour holding ``hour``."""
    return f"{prefix}{tenant_scope(tenant_id)}:hour:{hour.astimezone(UTC):%Y-%m-%dT%H}"


class Admission:
    def __init__(
        self, redis: Redis, *, lease_ttl_s: float = LEASE_TTL_S, prefix: str = PREFIX
    ) -> None:
        self._redis = redis
        self._lease_ttl_ms = int(lease_ttl_s * 1000)
        self._prefix = prefix
        self._admit: Any = redis.register_script(_script("admission.lua"))
        self._settle: Any = redis.register_script(_script("settle.lua"))
        self._renew: Any = redis.register_script(_script("renew.lua"))
        self._batch = CommandBatcher(redis)

    async def admit(
        self,
        request_id: str,
        scopes: Sequence[Scope],
        tokens: int,
        *,
        now: datetime | None = None,
        tenant_id: str | None = None,
    ) -> tuple[Decision, Reservation | None]:
        """Decide on every limit at once; on admission, reserve ``tokens`` and a slot.

        ``now`` is for tests (a fake clock); by default the Redis server's clock is used,
        the same for every replica. The request counts in ``tenant_id``'s hourly usage.
        """
        today = now or datetime.now(UTC)
        day_end, month_end = calendar_ends(today)
        keys = [key for scope in scopes for key in scope_keys(scope, today, self._prefix)]
        args: list[int | str] = [
            "" if now is None else int(now.timestamp() * 1000),
            request_id,
            tokens,
            self._lease_ttl_ms,
            day_end,
            month_end,
        ]
        for scope in scopes:
            args += scope.limits.arguments()
        result = await self._admit(keys=keys, args=args)
        admitted, raw_reason, retry_ms = int(result[0]), result[1], int(result[2])
        windows = [int(value) for value in result[3:9]]
        reason = raw_reason.decode() if isinstance(raw_reason, bytes) else str(raw_reason)
        decision = Decision(
            admitted=bool(admitted),
            reason=reason or None,
            retry_after_s=None if retry_ms < 0 else max(retry_ms, 0) / 1000,
            requests=_window(*windows[0:3]),
            tokens=_window(*windows[3:6]),
        )
        reservation = Reservation(request_id, tokens, tuple(keys), tenant_id) if admitted else None
        return decision, reservation

    async def settle(
        self, reservation: Reservation, used_tokens: int, *, now: datetime | None = None
    ) -> None:
        """Correct the reservation to ``used_tokens``, release the concurrency slots and add
        the usage to its tenant's current hour (``now``'s, for tests), in one round trip."""
        if not reservation.keys:  # no limit: only the hour's usage, batched with others'
            if reservation.tenant_id is not None:
                hour = now or datetime.now(UTC)
                await self._count(usage_key(reservation.tenant_id, hour, self._prefix), used_tokens)
            return
        keys = list(reservation.keys)
        args: list[int | str] = [reservation.request_id, used_tokens - reservation.tokens]
        if reservation.tenant_id is not None:
            hour = now or datetime.now(UTC)
            keys.append(usage_key(reservation.tenant_id, hour, self._prefix))
            args += [used_tokens, USAGE_TTL_S]
        await self._settle(keys=keys, args=args)

    async def _count(self, key: str, used_tokens: int) -> None:
        """A request without limits in its tenant's hour: what settle.lua does for a
        limited one, as plain commands in the pipeline concurrent requests share (no
        script: a script in a pipeline costs a round trip of its own)."""
        await self._batch.call_all(
            lambda pipe: pipe.hincrby(key, "tokens", used_tokens),
            lambda pipe: pipe.hincrby(key, "requests", 1),
            lambda pipe: pipe.expire(key, USAGE_TTL_S),
        )

    async def renew(self, reservations: Sequence[Reservation], now_ms: int | None = None) -> None:
        """Extend the leases of requests still running here (call every third of the TTL)."""
        keys, ids = [], []
        for reservation in reservations:
            for leases in reservation.keys[3::KEYS_PER_SCOPE]:
                keys.append(leases)
                ids.append(reservation.request_id)
        if not keys:
            return
        if now_ms is None:
            seconds, micros = await self._redis.time()
            now_ms = seconds * 1000 + micros // 1000
        await self._renew(keys=keys, args=[now_ms + self._lease_ttl_ms, self._lease_ttl_ms, *ids])


def _window(limit: int, remaining: int, reset_ms: int) -> Window | None:
    if limit < 0:
        return None
    return Window(limit=limit, remaining=max(remaining, 0), reset_s=max(reset_ms, 0) / 1000)
