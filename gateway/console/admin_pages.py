"""The console's admin pages, for ``tenant_admin`` (its tenant) and ``platform_admin``
(every tenant): the admin API's own reach and rules (``gateway.api.admin``), rendered.

GET  /console/admin/keys                 service keys within reach, and a form for a new one
POST /console/admin/keys                 create one; its secret is shown in this answer only
POST /console/admin/keys/{id}/revoke     revoke one
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin.keys import MAX_SERVICE_KEY_DAYS, create_service_key, revoke_in_scope
from gateway.api.admin.scope import AdminScope, require_admin
from gateway.console.access import ConsoleServices, Visit, console_call
from gateway.db.models import ApiKey, User
from gateway.errors import InvalidRequest
from gateway.schemas.identity import ServiceKeyRequest

KEYS_PAGE = "/console/admin/keys"
KEY_PAGE = "/console/admin/keys/{id}"
MAX_KEYS_SHOWN = 500


async def keys_page(
    session: AsyncSession, scope: AdminScope, visit: Visit, **page: Any
) -> dict[str, Any]:
    """The keys and service accounts within the admin's reach, newest keys first."""
    keys = list(
        await session.scalars(
            select(ApiKey)
            .where(scope.restrict(ApiKey.tenant_id))
            .order_by(ApiKey.created_at.desc(), ApiKey.id)
            .limit(MAX_KEYS_SHOWN)
        )
    )
    users = list(
        await session.scalars(
            select(User).where(scope.restrict(User.tenant_id)).order_by(User.name, User.id)
        )
    )
    names = {user.id: user.name for user in users}
    accounts = [u for u in users if u.issuer is None and not u.is_disabled]
    return visit.context(keys=keys, names=names, accounts=accounts, **page)


def key_request(form: dict[str, Any]) -> ServiceKeyRequest:
    """The form's fields as the admin API's request body."""
    days = str(form.get("expires_in_days") or "").strip()
    if days and not (days.isascii() and days.isdigit() and len(days) <= 6):
        raise InvalidRequest(
            f"Days until expiry must be a whole number from 1 to {MAX_SERVICE_KEY_DAYS}.",
            param="expires_in_days",
        )
    return ServiceKeyRequest(
        user_id=str(form.get("user_id") or ""),
        name=str(form.get("name") or ""),
        expires_in_days=int(days) if days else None,
    )


class AdminPagesController(Controller):
    path = "/console/admin"

    @get("/keys")
    async def keys(
        self,
        request: Request[Any, Any, Any],
        console: NamedDependency[ConsoleServices],
    ) -> Template:
        async with (
            console_call(request, console, KEYS_PAGE, require_admin) as (_, scope, visit),
            console.db() as session,
        ):
            context = await keys_page(session, scope, visit)
        return Template("admin_keys.html.jinja", context=context)

    @post("/keys", status_code=200)
    async def create_key(
        self,
        request: Request[Any, Any, Any],
        console: NamedDependency[ConsoleServices],
    ) -> Template:
        """A service key; the answer is the only place its secret is ever shown."""
        async with (
            console_call(request, console, KEYS_PAGE, require_admin) as (intake, scope, visit),
            console.db() as session,
        ):
            body = key_request(dict(await request.form()))
            new = await create_service_key(session, console.inference, intake, scope, body)
            context = await keys_page(session, scope, visit, created=new)
        return Template("admin_keys.html.jinja", context=context)

    @post("/keys/{key_id:str}/revoke", status_code=303)
    async def revoke_key(
        self,
        request: Request[Any, Any, Any],
        key_id: FromPath[str],
        console: NamedDependency[ConsoleServices],
    ) -> Response[Any]:
        async with (
            console_call(request, console, KEY_PAGE, require_admin) as (intake, scope, _),
            console.db() as session,
        ):
            await revoke_in_scope(session, console.inference, intake, scope, key_id)
        return Redirect(KEYS_PAGE, status_code=303)
