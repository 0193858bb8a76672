"""The console's tenants page, for ``tenant_admin`` (its own tenant, to read) and
``platform_admin`` (every tenant, to create, disable and enable): the admin API's reach,
rules and ``admin`` records (``gateway.api.admin.tenants``), rendered.

GET  /console/admin/tenants              tenants within reach, their users and live keys
POST /console/admin/tenants              create one (a name)
POST /console/admin/tenants/{id}/state   disable or enable one (is_disabled: true or false)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin.scope import AdminScope, require_admin
from gateway.api.admin.tenants import add_tenant, apply_tenant_update, tenant_to_change
from gateway.console.access import ConsoleServices, Visit, console_call
from gateway.console.forms import text_field, yes_or_no
from gateway.db.models import ApiKey, Tenant, User
from gateway.schemas.identity import TenantUpdate

TENANTS_PAGE = "/console/admin/tenants"
TENANT_PAGE = "/console/admin/tenants/{id}"


async def counts_by_tenant(session: AsyncSession, scope: AdminScope) -> dict[str, dict[str, int]]:
    """Tenant id -> its number of users and of keys neither revoked nor expired."""
    users = await session.execute(
        select(User.tenant_id, func.count())
        .where(scope.restrict(User.tenant_id))
        .group_by(User.tenant_id)
    )
    keys = await session.execute(
        select(ApiKey.tenant_id, func.count())
        .where(scope.restrict(ApiKey.tenant_id), ApiKey.revoked_at.is_(None))
        .where(ApiKey.expires_at.is_(None) | (ApiKey.expires_at > datetime.now(UTC)))
        .group_by(ApiKey.tenant_id)
    )
    counts: dict[str, dict[str, int]] = {}
    for kind, rows in (("users", users), ("keys", keys)):
        for tenant_id, count in rows.all():
            counts.setdefault(tenant_id, {"users": 0, "keys": 0})[kind] = count
    return counts


async def tenants_page(session: AsyncSession, scope: AdminScope, visit: Visit) -> dict[str, Any]:
    """The tenants within the admin's reach, by name."""
    tenants = list(
        await session.scalars(select(Tenant).where(scope.restrict(Tenant.id)).order_by(Tenant.name))
    )
    return visit.context(tenants=tenants, counts=await counts_by_tenant(session, scope))


class TenantPagesController(Controller):
    path = TENANTS_PAGE

    @get("")
    async def tenants(
        self,
        request: Request[Any, Any, Any],
        console: NamedDependency[ConsoleServices],
    ) -> Template:
        async with (
            console_call(request, console, TENANTS_PAGE, require_admin) as (_, scope, visit),
            console.db() as session,
        ):
            context = await tenants_page(session, scope, visit)
        return Template("admin_tenants.html.jinja", context=context)

    @post("", status_code=303)
    async def create_tenant(
        self,
        request: Request[Any, Any, Any],
        console: NamedDependency[ConsoleServices],
    ) -> Response[Any]:
        """A new tenant (platform_admin), allowed every model until its access is set."""
        async with (
            console_call(request, console, TENANTS_PAGE, require_admin) as (intake, scope, _),
            console.db() as session,
        ):
            name = text_field(await request.form(), "name")
            await add_tenant(session, console.inference, intake, scope, name)
        return Redirect(TENANTS_PAGE, status_code=303)

    @post("/{tenant_id:str}/state", status_code=303)
    async def set_state(
        self,
        request: Request[Any, Any, Any],
        tenant_id: FromPath[str],
        console: NamedDependency[ConsoleServices],
    ) -> Response[Any]:
        """Disable a tenant (its keys and tokens stop at once) or enable it (platform_admin)."""
        async with (
            console_call(request, console, TENANT_PAGE, require_admin) as (intake, scope, _),
            console.db() as session,
        ):
            tenant = await tenant_to_change(session, scope, tenant_id, "change a tenant")
            body = TenantUpdate(is_disabled=yes_or_no(await request.form(), "is_disabled"))
            await apply_tenant_update(session, console.inference, intake, scope, tenant, body)
        return Redirect(TENANTS_PAGE, status_code=303)
