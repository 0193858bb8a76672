"""Quotas on the request path: the limits that apply to a caller, admission, the headers,
settlement with the true usage, and lease renewal for requests still running here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math

from redis.exceptions import RedisError
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.auth.principal import Principal
from gateway.db.models import Limit
from gateway.db.row_cache import RowCache
from gateway.errors import QuotaExhausted, QuotaUnavailable, RateLimited
from gateway.quotas.admission import (
    Admission,
    Decision,
    Limits,
    Reservation,
    Scope,
    Window,
    tenant_scope,
)
from gateway.settings import QuotaSettings

logger = logging.getLogger("enclave.quotas")


def limits_of(row: Limit) -> Limits:
    return Limits(
        requests_per_minute=row.requests_per_minute,
        tokens_per_minute=row.tokens_per_minute,
        concurrent_requests=row.concurrent_requests,
        tokens_per_day=row.tokens_per_day,
        tokens_per_month=row.tokens_per_month,
    )


async def scopes_for(session: AsyncSession, principal: Principal) -> list[Scope]:
    """The tenant's total, the user's own limits (else the tenant's default per user), and
    the key's; only scopes with some limit."""
    wanted = [
        ("tenant", principal.tenant_id),
        ("tenant_user_default", principal.tenant_id),
        ("user", principal.user_id),
    ]
    if principal.key_id is not None:
        wanted.append(("key", principal.key_id))
    rows = await session.scalars(
        select(Limit).where(
            or_(*(and_(Limit.kind == kind, Limit.scope_id == scope) for kind, scope in wanted))
        )
    )
    by_kind = {row.kind: limits_of(row) for row in rows}
    user = by_kind.get("user") or by_kind.get("tenant_user_default")
    candidates = [
        (tenant_scope(principal.tenant_id), by_kind.get("tenant")),
        (f"user:{principal.user_id}", user),
        (f"key:{principal.key_id}", by_kind.get("key")),
    ]
    return [Scope(name, limits) for name, limits in candidates if limits and limits != Limits()]


def duration(seconds: float) -> str:
    """OpenAI's reset format: 20ms, 1.5s, 6m0s."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def ratelimit_headers(decision: Decision | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if decision is None:
        return headers
    for kind, window in (("requests", decision.requests), ("tokens", decision.tokens)):
        if window is not None:
            headers |= _window_headers(kind, window)
    return headers


def _window_headers(kind: str, window: Window) -> dict[str, str]:
    return {
        f"x-ratelimit-limit-{kind}": str(window.limit),
        f"x-ratelimit-remaining-{kind}": str(window.remaining),
        f"x-ratelimit-reset-{kind}": duration(window.reset_s),
    }


def refusal(decision: Decision) -> RateLimited:
    headers = ratelimit_headers(decision)
    if decision.retry_after_s is not None:
        headers["retry-after"] = str(max(1, math.ceil(decision.retry_after_s)))
        headers["retry-after-ms"] = str(round(decision.retry_after_s * 1000))
    reason = decision.reason or "rate_limit_exceeded"
    if decision.is_budget:
        period = "day" if reason == "daily_token_budget" else "month"
        return QuotaExhausted(
            f"The token budget for this {period} is spent; it renews with the next {period}.",
            code=reason,
            headers=headers,
        )
    messages = {
        "requests_per_minute": "Too many requests per minute",
        "tokens_per_minute": "Too many tokens per minute",
        "concurrent_requests": "Too many concurrent requests",
        "request_exceeds_tokens_per_minute": (
            "This request needs more tokens than the per-minute limit allows; lower max_tokens"
        ),
    }
    limit = messages.get(reason, "Rate limit reached")
    return RateLimited(f"{limit} for this key, user or tenant.", code=reason, headers=headers)


class Quotas:
    def __init__(
        self,
        admission: Admission,
        sessions: async_sessionmaker[AsyncSession],
        settings: QuotaSettings,
        cache: RowCache[list[Scope]] | None = None,
    ) -> None:
        self._admission = admission
        self._sessions = sessions
        self._cache = cache
        self._settings = settings
        self._running: dict[str, Reservation] = {}

    def reservation_size(self, prompt: str, max_tokens: int | None) -> int:
        """Prompt tokens, over-estimated (a token is rarely under 3 bytes), plus the answer's
        maximum (or the configured estimate; 0 for embeddings, which have no answer)."""
        prompt_tokens = math.ceil(len(prompt.encode()) / 3)
        estimate = self._settings.completion_tokens_estimate
        return prompt_tokens + (estimate if max_tokens is None else max_tokens)

    async def admit(
        self, principal: Principal, request_id: str, prompt: str, max_tokens: int | None
    ) -> Decision | None:
        """Admit or raise RateLimited/QuotaExhausted (429) or QuotaUnavailable (503). The
        decision, for the headers; None when no limit applies (or Redis is away and the
        operator chose to fail open)."""
        if self._cache is None:
            scopes = await self._scopes(principal)
        else:
            scope_key = (principal.tenant_id, principal.user_id, principal.key_id)
            scopes = await self._cache.get(scope_key, lambda: self._scopes(principal))
        if not scopes:  # nothing to decide; its usage still counts when it settles
            self._running[request_id] = Reservation(request_id, 0, (), principal.tenant_id)
            return None
        tokens = self.reservation_size(prompt, max_tokens)
        try:
            decision, reservation = await self._admission.admit(
                request_id, scopes, tokens, tenant_id=principal.tenant_id
            )
        except RedisError as exc:
            if self._settings.fail_open:
                logger.warning("quota store unreachable (%s): admitting", type(exc).__name__)
                return None
            raise QuotaUnavailable(
                "Limits cannot be checked right now; the request was not processed.",
                retry_after_s=5,
            ) from exc
        if reservation is None:
            raise refusal(decision)
        self._running[request_id] = reservation
        return decision

    async def _scopes(self, principal: Principal) -> list[Scope]:
        async with self._sessions() as session:
            return await scopes_for(session, principal)

    async def settle(self, request_id: str, used_tokens: int) -> None:
        """Correct the reservation to the true usage, free the slot, count the usage in the
        tenant's current hour; never raises."""
        reservation = self._running.pop(request_id, None)
        if reservation is None:
            return
        try:
            await self._admission.settle(reservation, used_tokens)
        except RedisError as exc:  # the lease expires on its own; the minute ages out
            logger.warning("quota settlement failed: %s", type(exc).__name__)

    async def run_renewals(self, stop: asyncio.Event) -> None:
        """Renew the leases of requests running here, every third of the lease time."""
        interval = self._settings.lease_ttl_s / 3
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if self._running:
                try:
                    await self._admission.renew(list(self._running.values()))
                except RedisError as exc:
                    logger.warning("lease renewal failed: %s", type(exc).__name__)
