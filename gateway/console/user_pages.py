"""The console's users and roles pages, for ``tenant_admin`` (its tenant) and
``platform_admin`` (every tenant): where each user comes from, the roles their identity
provider sends and those granted in Enclave; service accounts created, roles granted,
users disabled and enabled with the admin API's rules and ``admin`` records
(``gateway.api.admin.users``).

GET  /console/admin/users              users within reach (?tenant=ID: of one tenant)
POST /console/admin/users              create a service account (a name; a platform_admin
                                       names its tenant)
GET  /console/admin/users/{id}         one user, and what the viewer may change of them
POST /console/admin/users/{id}/roles   replace the roles granted in Enclave (the ticked ones)
POST /console/admin/users/{id}/state   disable or enable (is_disabled: true or false)

Roles sent by the provider are refreshed at each sign-in: the page shows them and offers no
edit of them (an edit would be undone at the next token).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import FormMultiDict
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.api.admin.scope import AdminScope, require_admin, tenant_in_scope, user_in_scope
from gateway.api.admin.users import add_service_user, apply_user_update, user_to_change
from gateway.auth.claims import ROLES
from gateway.console.access import ConsoleServices, Visit, console_call
from gateway.console.forms import text_field, ticked, yes_or_no
from gateway.db.models import Tenant, User
from gateway.schemas.identity import ServiceUserRequest, UserUpdate

USERS_PAGE = "/console/admin/users"
USER_PAGE = "/console/admin/users/{id}"
MAX_USERS_SHOWN = 500
GRANTABLE_ROLES = tuple(sorted(ROLES - {"user"}))


def user_page_url(user_id: str) -> str:
    return USER_PAGE.replace("{id}", user_id)


async def users_page(
    session: AsyncSession, scope: AdminScope, visit: Visit, tenant_id: str | None
) -> dict[str, Any]:
    """The users within reach (of one tenant, if named), by name, and the tenants a new
    service account may go to."""
    tenant = await tenant_in_scope(session, scope, tenant_id) if tenant_id else None
    query = select(User).where(scope.restrict(User.tenant_id))
    if tenant is not None:
        query = query.where(User.tenant_id == tenant.id)
    users = list(
        await session.scalars(query.order_by(User.name, User.id).limit(MAX_USERS_SHOWN + 1))
    )
    tenants = list(
        await session.scalars(select(Tenant).where(scope.restrict(Tenant.id)).order_by(Tenant.name))
    )
    return visit.context(
        users=users[:MAX_USERS_SHOWN],
        is_truncated=len(users) > MAX_USERS_SHOWN,
        tenant=tenant,
        tenants=tenants,
        tenant_names={t.id: t.name for t in tenants},
    )


async def user_page(
    session: AsyncSession, scope: AdminScope, visit: Visit, user: User
) -> dict[str, Any]:
    """One user, and what the admin may change of them: nothing of themselves, nothing of a
    platform_admin unless a platform_admin too; ``platform_admin`` granted by one only."""
    tenant = await session.get(Tenant, user.tenant_id)
    is_self = user.id == scope.principal.user_id
    grantable = [
        role
        for role in GRANTABLE_ROLES
        if role != "platform_admin" or scope.principal.is_platform_admin
    ]
    return visit.context(
        user=user,
        tenant_name=tenant.name if tenant else user.tenant_id,
        is_self=is_self,
        may_manage=scope.may_manage(user),
        may_change=scope.may_manage(user) and not is_self,
        grantable=grantable,
    )


def granted_roles(form: FormMultiDict) -> UserUpdate:
    """The roles form: the ticked roles replace those granted (none ticked: none)."""
    return UserUpdate(granted_roles=ticked(form, "granted_roles"))


def user_state(form: FormMultiDict) -> UserUpdate:
    return UserUpdate(is_disabled=yes_or_no(form, "is_disabled"))


async def change_user(
    request: Request[Any, Any, Any],
    console: ConsoleServices,
    user_id: str,
    read: Callable[[FormMultiDict], UserUpdate],
) -> Response[Any]:
    """The admin API's change of a user, read from the form once the admin may make it;
    the user's page next."""
    call = console_call(request, console, USER_PAGE, require_admin)
    async with call as (intake, scope, _), console.db() as session:
        user = await user_to_change(session, scope, user_id)
        body = read(await request.form())
        await apply_user_update(session, console.inference, intake, scope, user, body)
    return Redirect(user_page_url(user.id), status_code=303)


class UserPagesController(Controller):
    path = USERS_PAGE

    @get("")
    async def users(
        self,
        request: Request[Any, Any, Any],
        console: NamedDependency[ConsoleServices],
        tenant: FromQuery[str | None] = None,
    ) -> Template:
        async with (
            console_call(request, console, USERS_PAGE, require_admin) as (_, scope, visit),
            console.db() as session,
        ):
            context = await users_page(session, scope, visit, tenant or None)
        return Template("admin_users.html.jinja", context=context)

    @post("", status_code=303)
    async def create_service_user(
        self,
        request: Request[Any, Any, Any],
        console: NamedDependency[ConsoleServices],
    ) -> Response[Any]:
        """A service account, to hold service keys; its page next."""
        async with (
            console_call(request, console, USERS_PAGE, require_admin) as (intake, scope, _),
            console.db() as session,
        ):
            form = await request.form()
            body = ServiceUserRequest(
                name=text_field(form, "name"), tenant_id=text_field(form, "tenant_id") or None
            )
            user = await add_service_user(session, console.inference, intake, scope, body)
        return Redirect(user_page_url(user.id), status_code=303)

    @get("/{user_id:str}")
    async def user(
        self,
        request: Request[Any, Any, Any],
        user_id: FromPath[str],
        console: NamedDependency[ConsoleServices],
    ) -> Template:
        async with (
            console_call(request, console, USER_PAGE, require_admin) as (_, scope, visit),
            console.db() as session,
        ):
            user = await user_in_scope(session, scope, user_id)
            context = await user_page(session, scope, visit, user)
        return Template("admin_user.html.jinja", context=context)

    @post("/{user_id:str}/roles", status_code=303)
    async def set_roles(
        self,
        request: Request[Any, Any, Any],
        user_id: FromPath[str],
        console: NamedDependency[ConsoleServices],
    ) -> Response[Any]:
        """Replace the roles granted in Enclave."""
        return await change_user(request, console, user_id, granted_roles)

    @post("/{user_id:str}/state", status_code=303)
    async def set_state(
        self,
        request: Request[Any, Any, Any],
        user_id: FromPath[str],
        console: NamedDependency[ConsoleServices],
    ) -> Response[Any]:
        """Disable a user (their keys and console sessions stop at once) or enable them."""
        return await change_user(request, console, user_id, user_state)
