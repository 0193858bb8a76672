"""Who may act where in the admin API, and how objects outside that reach are hidden.

A ``platform_admin`` acts in every tenant; a ``tenant_admin`` only in its own. An object of
another tenant answers exactly like an id that does not exist (404, same message), so the
answer never tells whether it exists. A malformed id is such an id too.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from typing import Any, NoReturn

from litestar import Request
from litestar.openapi.spec import SecurityRequirement
from sqlalchemy import ColumnElement, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from gateway.api.intake import Intake, authorized_call
from gateway.auth.authenticator import Authenticator
from gateway.auth.principal import Principal
from gateway.db.models import ApiKey, Tenant, User
from gateway.errors import NotFound, PermissionDenied
from gateway.inference import InferenceService

ADMIN_ROLES = frozenset({"tenant_admin", "platform_admin"})
BEARER: SecurityRequirement = {"bearer": []}
"""OpenAPI: admin calls carry ``Authorization: Bearer``; app.py declares the scheme."""


@dataclass(frozen=True)
class AdminScope:
    """The authenticated admin and the tenants it reaches (None: every tenant)."""

    principal: Principal

    @property
    def tenant_id(self) -> str | None:
        return self.principal.reach

    def covers(self, tenant_id: str) -> bool:
        return self.principal.reaches(tenant_id)

    def restrict(self, tenant_column: InstrumentedAttribute[str]) -> ColumnElement[bool]:
        """A WHERE clause keeping the rows of reachable tenants."""
        return true() if self.tenant_id is None else tenant_column == self.tenant_id

    def require_platform_admin(self, action: str) -> None:
        if not self.principal.is_platform_admin:
            raise PermissionDenied(f"Only a platform_admin may {action}.")

    def refuse_self_change(self, action: str) -> NoReturn:
        """Admins do not lock themselves out nor raise their own roles; another admin must."""
        raise PermissionDenied(
            f"You may not {action}; another administrator must do it.", code="self_change_refused"
        )

    def may_manage(self, user: User) -> bool:
        """A platform_admin is managed by platform_admins only (no tenant-level takeover)."""
        return self.principal.is_platform_admin or "platform_admin" not in user.roles

    def require_may_manage(self, user: User) -> None:
        if not self.may_manage(user):
            self.require_platform_admin("manage a platform_admin or its keys")


def require_admin(principal: Principal) -> AdminScope:
    if not principal.roles & ADMIN_ROLES:
        raise PermissionDenied(
            "The admin API requires the tenant_admin or the platform_admin role."
        )
    return AdminScope(principal)


def admin_call(
    request: Request[Any, Any, Any],
    inference: InferenceService,
    authenticator: Authenticator,
    endpoint: str,
) -> contextlib.AbstractAsyncContextManager[tuple[Intake, AdminScope]]:
    """Authenticate an admin; every refusal raised inside the block is audited."""
    return authorized_call(request, inference, authenticator, endpoint, "admin", require_admin)


def not_found(kind: str, raw_id: str, param: str | None = None) -> NotFound:
    return NotFound(f"No {kind} with id {raw_id!r}.", code=f"{kind}_not_found", param=param)


def parse_id(kind: str, raw_id: str, param: str | None = None) -> str:
    """The canonical form of a UUID id; anything else is an id that does not exist."""
    try:
        return str(uuid.UUID(raw_id))
    except ValueError:
        raise not_found(kind, raw_id, param) from None


async def tenant_in_scope(
    session: AsyncSession, scope: AdminScope, raw_id: str, *, for_update: bool = False
) -> Tenant:
    tenant = await session.get(Tenant, parse_id("tenant", raw_id), with_for_update=for_update)
    if tenant is None or not scope.covers(tenant.id):
        raise not_found("tenant", raw_id)
    return tenant


async def user_in_scope(
    session: AsyncSession,
    scope: AdminScope,
    raw_id: str,
    *,
    for_update: bool = False,
    param: str | None = None,
) -> User:
    user = await session.get(User, parse_id("user", raw_id, param), with_for_update=for_update)
    if user is None or not scope.covers(user.tenant_id):
        raise not_found("user", raw_id, param)
    return user


async def key_in_scope(
    session: AsyncSession, scope: AdminScope, raw_id: str, *, for_update: bool = False
) -> ApiKey:
    key = await session.get(ApiKey, parse_id("key", raw_id), with_for_update=for_update)
    if key is None or not scope.covers(key.tenant_id):
        raise not_found("key", raw_id)
    return key
