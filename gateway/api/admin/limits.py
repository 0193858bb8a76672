"""Limits per scope: a tenant's total, a tenant's default per user, a user, an API key.

GET    /admin/v1/limits/{kind}/{id}   the limits set there (null: none of that kind)
PUT    /admin/v1/limits/{kind}/{id}   set them (every field; null removes that limit)
DELETE /admin/v1/limits/{kind}/{id}   remove them all

``kind`` is ``tenant``, ``tenant_user_default``, ``user`` or ``key``. A tenant_admin sets
limits inside their tenant (its default per user, its users and keys); only a
platform_admin sets a tenant's total. Each request is held to every scope that applies
(tenant, user or else the tenant's default, key): the tightest wins.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Controller, Request, delete, get, put
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.api.admin.bodies import MAX_BODY_BYTES, described_body, read_json
from gateway.api.admin.scope import (
    BEARER,
    AdminScope,
    admin_call,
    key_in_scope,
    tenant_in_scope,
    user_in_scope,
)
from gateway.api.intake import Intake, record_action
from gateway.auth.authenticator import Authenticator
from gateway.db.models import Limit
from gateway.db.models.limits import SCOPE_KINDS
from gateway.errors import InvalidRequest, NotFound
from gateway.inference import InferenceService

LIMITS = "/admin/v1/limits/{kind:str}/{scope_id:str}"
MAX_LIMIT = 2**31 - 1


class LimitsBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Each limit is a positive whole number, or null for none at this scope."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None


class LimitsInfo(LimitsBody, frozen=True):
    kind: str = ""
    scope_id: str = ""
    object: str = "limits"


FIELDS = tuple(LimitsBody.__struct_fields__)


def info(kind: str, scope_id: str, row: Limit | None) -> LimitsInfo:
    values = {name: getattr(row, name) for name in FIELDS} if row else {}
    return LimitsInfo(kind=kind, scope_id=scope_id, **values)


async def scope_in_reach(
    session: AsyncSession, scope: AdminScope, kind: str, raw_id: str, *, writing: bool
) -> str:
    """The canonical id of the scope, once the caller may see it (and change it)."""
    if kind not in SCOPE_KINDS:
        raise NotFound(f"No limit scope {kind!r}; use one of {', '.join(SCOPE_KINDS)}.")
    if kind in ("tenant", "tenant_user_default"):
        tenant = await tenant_in_scope(session, scope, raw_id)
        if writing and kind == "tenant":
            scope.require_platform_admin("set a tenant's total limits")
        return tenant.id
    if kind == "user":
        user = await user_in_scope(session, scope, raw_id)
        if writing:
            scope.require_may_manage(user)
        return user.id
    return (await key_in_scope(session, scope, raw_id)).id


def checked(body: LimitsBody) -> dict[str, int | None]:
    values: dict[str, int | None] = {name: getattr(body, name) for name in FIELDS}
    for name, value in values.items():
        if value is not None and not 1 <= value <= MAX_LIMIT:
            raise InvalidRequest(f"{name} must be a positive whole number or null.", param=name)
    return values


async def store_limits(
    session: AsyncSession,
    inference: InferenceService,
    intake: Intake,
    kind: str,
    canonical: str,
    values: dict[str, int | None],
) -> Limit:
    """Set every limit of a scope already in reach (``scope_in_reach``, writing) to the
    ``checked`` values; audited (``admin``, ``set_limits``), then committed."""
    row = await session.get(Limit, (kind, canonical), with_for_update=True)
    old = {name: getattr(row, name) for name in FIELDS} if row else None
    if row is None:
        row = Limit(kind=kind, scope_id=canonical)
        session.add(row)
    for name, value in values.items():
        setattr(row, name, value)
    row.updated_at = datetime.now(UTC)
    await record_action(
        inference,
        intake,
        target=f"{kind}:{canonical}",
        change={"action": "set_limits", "old": old, "new": values},
    )
    await session.commit()
    return row


class AdminLimitsController(Controller):
    path = LIMITS
    tags = ("admin",)
    security = (BEARER,)
    request_max_body_size = MAX_BODY_BYTES

    @get("")
    async def get_limits(
        self,
        kind: FromPath[str],
        scope_id: FromPath[str],
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> LimitsInfo:
        """The limits set at this scope."""
        async with (
            admin_call(request, inference, authenticator, LIMITS) as (_, scope),
            sessions() as session,
        ):
            canonical = await scope_in_reach(session, scope, kind, scope_id, writing=False)
            return info(kind, canonical, await session.get(Limit, (kind, canonical)))

    @put("", dependencies=described_body(LimitsBody))
    async def set_limits(
        self,
        kind: FromPath[str],
        scope_id: FromPath[str],
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> LimitsInfo:
        """Set every limit of this scope (null: no limit of that kind here)."""
        async with (
            admin_call(request, inference, authenticator, LIMITS) as (intake, scope),
            sessions() as session,
        ):
            canonical = await scope_in_reach(session, scope, kind, scope_id, writing=True)
            values = checked(await read_json(request, LimitsBody))
            row = await store_limits(session, inference, intake, kind, canonical, values)
            return info(kind, canonical, row)

    @delete("", status_code=200)
    async def remove_limits(
        self,
        kind: FromPath[str],
        scope_id: FromPath[str],
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> LimitsInfo:
        """Remove every limit of this scope."""
        async with (
            admin_call(request, inference, authenticator, LIMITS) as (intake, scope),
            sessions() as session,
        ):
            canonical = await scope_in_reach(session, scope, kind, scope_id, writing=True)
            row = await session.get(Limit, (kind, canonical), with_for_update=True)
            if row is not None:
                old = {name: getattr(row, name) for name in FIELDS}
                await record_action(
                    inference,
                    intake,
                    target=f"{kind}:{canonical}",
                    change={"action": "remove_limits", "old": old},
                )
                await session.delete(row)
                await session.commit()
            return info(kind, canonical, None)
