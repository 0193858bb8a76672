"""Users: listed, shown, disabled and granted roles by their admins.

GET   /admin/v1/users          list (?tenant_id=); a tenant_admin sees its own tenant only
GET   /admin/v1/users/{id}     one
PATCH /admin/v1/users/{id}     {is_disabled?, granted_roles?}

Users are not created here: they come from an identity provider on first sign-in, or from
``enclave keys create``. Roles sent by the provider (``idp_roles``) are the provider's to
change; only ``granted_roles`` are set here. Nobody disables themselves or changes their
own roles, only a platform_admin grants ``platform_admin``, and a user holding it is
managed by platform_admins only.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, patch
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.api.admin.bodies import MAX_BODY_BYTES, described_body, read_json
from gateway.api.admin.pages import DEFAULT_LIMIT, After, Limit, page
from gateway.api.admin.scope import BEARER, AdminScope, admin_call, user_in_scope
from gateway.api.intake import record_action
from gateway.auth.authenticator import Authenticator
from gateway.auth.claims import ROLES
from gateway.db.models import User
from gateway.errors import InvalidRequest
from gateway.inference import InferenceService
from gateway.schemas.identity import UserInfo, UserPage, UserUpdate

USERS = "/admin/v1/users"
USER = "/admin/v1/users/{id}"


def user_info(user: User) -> UserInfo:
    return UserInfo(
        id=user.id,
        tenant_id=user.tenant_id,
        name=user.name,
        issuer=user.issuer,
        subject=user.subject,
        is_disabled=user.is_disabled,
        idp_roles=list(user.idp_roles),
        granted_roles=list(user.granted_roles),
        roles=sorted(user.roles),
        created_at=user.created_at,
        last_seen_at=user.last_seen_at,
    )


def granted_roles(scope: AdminScope, roles: list[str]) -> list[str]:
    """The roles to store: known ones, sorted, without ``user`` (every user holds it)."""
    unknown = set(roles) - ROLES
    if unknown:
        raise InvalidRequest(
            f"Unknown roles {sorted(unknown)}; known roles are {sorted(ROLES)}.",
            param="granted_roles",
        )
    if "platform_admin" in roles:
        scope.require_platform_admin("grant platform_admin")
    return sorted(set(roles) - {"user"})


def user_changes(scope: AdminScope, user: User, body: UserUpdate) -> dict[str, Any]:
    """What ``body`` would change, field by field, as ``{"old": …, "new": …}``."""
    changes: dict[str, Any] = {}
    if body.is_disabled is not None and body.is_disabled != user.is_disabled:
        changes["is_disabled"] = {"old": user.is_disabled, "new": body.is_disabled}
    if body.granted_roles is not None:
        roles = granted_roles(scope, body.granted_roles)
        if roles != sorted(user.granted_roles):
            changes["granted_roles"] = {"old": list(user.granted_roles), "new": roles}
    return changes


class AdminUsersController(Controller):
    path = USERS
    tags = ("admin",)
    security = (BEARER,)
    request_max_body_size = MAX_BODY_BYTES

    @get("")
    async def list_users(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        tenant_id: FromQuery[str | None] = None,
        limit: Limit = DEFAULT_LIMIT,
        after: After = None,
    ) -> UserPage:
        """Users within the caller's reach, optionally of one tenant."""
        async with admin_call(request, inference, authenticator, USERS) as (_, scope):
            query = select(User).where(scope.restrict(User.tenant_id))
            if tenant_id is not None:
                query = query.where(User.tenant_id == tenant_id)
            async with sessions() as session:
                rows, has_more = await page(session, query, User, limit=limit, after=after)
        return UserPage(data=[user_info(row) for row in rows], has_more=has_more)

    @get("/{user_id:str}")
    async def get_user(
        self,
        user_id: FromPath[str],
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> UserInfo:
        """One user within the caller's reach."""
        async with (
            admin_call(request, inference, authenticator, USER) as (_, scope),
            sessions() as session,
        ):
            return user_info(await user_in_scope(session, scope, user_id))

    @patch("/{user_id:str}", dependencies=described_body(UserUpdate))
    async def update_user(
        self,
        user_id: FromPath[str],
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> UserInfo:
        """Disable or enable a user, or replace its granted roles; its keys follow at once."""
        async with (
            admin_call(request, inference, authenticator, USER) as (intake, scope),
            sessions() as session,
        ):
            user = await user_in_scope(session, scope, user_id, for_update=True)
            scope.require_may_manage(user)
            changes = user_changes(scope, user, await read_json(request, UserUpdate))
            if changes:
                if user.id == scope.principal.user_id:
                    scope.refuse_self_change("disable yourself or change your own roles")
                for field, values in changes.items():
                    setattr(user, field, values["new"])
                await record_action(
                    inference,
                    intake,
                    target=f"user:{user.id}",
                    change={"action": "update_user", "tenant_id": user.tenant_id, **changes},
                )
                await session.commit()
        return user_info(user)
