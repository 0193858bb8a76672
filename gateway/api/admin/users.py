"""Users: listed, shown, disabled and granted roles by their admins.

POST  /admin/v1/users          a service account {name, tenant_id?} for scripts' keys
GET   /admin/v1/users          list (?tenant_id=); a tenant_admin sees its own tenant only
GET   /admin/v1/users/{id}     one
PATCH /admin/v1/users/{id}     {is_disabled?, granted_roles?}

People are not created here: they come from an identity provider on first sign-in.
Service accounts (local users) are created here or by ``enclave keys create``. Roles sent
by the provider (``idp_roles``) are the provider's to change; only ``granted_roles`` are
set here. Nobody disables themselves or changes their own roles, only a platform_admin
grants ``platform_admin``, and a user holding it is managed by platform_admins only.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.api.admin.bodies import MAX_BODY_BYTES, described_body, read_json
from gateway.api.admin.pages import DEFAULT_LIMIT, After, Limit, page
from gateway.api.admin.scope import (
    BEARER,
    AdminScope,
    admin_call,
    tenant_in_scope,
    user_in_scope,
)
from gateway.api.intake import Intake, record_action
from gateway.auth.authenticator import Authenticator
from gateway.auth.claims import ROLES
from gateway.db.models import User
from gateway.errors import Conflict, InvalidRequest
from gateway.inference import InferenceService
from gateway.schemas.identity import ServiceUserRequest, UserInfo, UserPage, UserUpdate

USERS = "/admin/v1/users"
USER = "/admin/v1/users/{id}"
MAX_USER_NAME_LENGTH = 255


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


def service_user_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_USER_NAME_LENGTH or not name.isprintable():
        raise InvalidRequest(
            f"name must be 1 to {MAX_USER_NAME_LENGTH} printable characters.", param="name"
        )
    return name


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


async def add_service_user(
    session: AsyncSession,
    inference: InferenceService,
    intake: Intake,
    scope: AdminScope,
    body: ServiceUserRequest,
) -> User:
    """A service account in a tenant within reach (a tenant_admin's own when none is named);
    recorded, then committed (the API and the console both create them with this)."""
    name = service_user_name(body.name)
    tenant_id = body.tenant_id or scope.tenant_id
    if tenant_id is None:
        raise InvalidRequest("tenant_id is required.", param="tenant_id")
    tenant = await tenant_in_scope(session, scope, tenant_id)
    user = User(
        id=str(uuid.uuid4()),
        tenant_id=tenant.id,
        name=name,
        created_at=datetime.now(UTC),
        is_disabled=False,
        idp_roles=[],
        granted_roles=[],
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(
            f"A service account named {name!r} exists in this tenant.", code="user_exists"
        ) from None
    await record_action(
        inference,
        intake,
        target=f"user:{user.id}",
        change={"action": "create_service_user", "tenant_id": tenant.id, "name": name},
        status=201,
    )
    await session.commit()
    return user


async def user_to_change(session: AsyncSession, scope: AdminScope, user_id: str) -> User:
    """A user within reach, locked for a change, once the caller may manage them: 404 out of
    reach, then 403 for a tenant_admin facing a platform_admin (before any body is read)."""
    user = await user_in_scope(session, scope, user_id, for_update=True)
    scope.require_may_manage(user)
    return user


async def apply_user_update(
    session: AsyncSession,
    inference: InferenceService,
    intake: Intake,
    scope: AdminScope,
    user: User,
    body: UserUpdate,
) -> None:
    """Apply ``body`` to a user from ``user_to_change``: recorded, then committed; nobody
    disables themselves or changes their own roles (sending what is there changes nothing)."""
    changes = user_changes(scope, user, body)
    if not changes:
        return
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


class AdminUsersController(Controller):
    path = USERS
    tags = ("admin",)
    security = (BEARER,)
    request_max_body_size = MAX_BODY_BYTES

    @post("", status_code=201, dependencies=described_body(ServiceUserRequest))
    async def create_service_user(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> UserInfo:
        """A service account in a tenant within reach, to hold service keys for scripts."""
        async with admin_call(request, inference, authenticator, USERS) as (intake, scope):
            body = await read_json(request, ServiceUserRequest)
            async with sessions() as session:
                user = await add_service_user(session, inference, intake, scope, body)
        return user_info(user)

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
            user = await user_to_change(session, scope, user_id)
            body = await read_json(request, UserUpdate)
            await apply_user_update(session, inference, intake, scope, user, body)
        return user_info(user)
