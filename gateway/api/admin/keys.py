"""API keys, seen by their admins: service keys made for a user, any key listed or revoked.

POST   /admin/v1/keys          a service key for a user; the secret is shown this once
GET    /admin/v1/keys          list (?user_id=, ?tenant_id=)
GET    /admin/v1/keys/{id}     one
DELETE /admin/v1/keys/{id}     revoke (idempotent)

Listings never carry a secret nor its digest. A key acts as its user, so a tenant_admin
may not make or revoke keys of a platform_admin, and no admin makes keys for a person of
an identity provider (that would let the admin act in the person's name): service keys
are for service accounts.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.api.admin.bodies import MAX_BODY_BYTES, described_body, read_json
from gateway.api.admin.pages import DEFAULT_LIMIT, After, Limit, page
from gateway.api.admin.scope import (
    BEARER,
    AdminScope,
    admin_call,
    key_in_scope,
    user_in_scope,
)
from gateway.api.intake import Intake, record_action
from gateway.api.personal_keys import created_key, key_info, key_name, revoke
from gateway.auth.api_keys import NewKey, add_key
from gateway.auth.authenticator import Authenticator
from gateway.db.models import ApiKey, User
from gateway.errors import InvalidRequest, PermissionDenied
from gateway.inference import InferenceService
from gateway.schemas.identity import CreatedKey, KeyInfo, KeyPage, ServiceKeyRequest

KEYS = "/admin/v1/keys"
KEY = "/admin/v1/keys/{id}"
MAX_SERVICE_KEY_DAYS = 3650


def service_key_expiry(days: int | None) -> datetime | None:
    if days is None:
        return None
    if not 1 <= days <= MAX_SERVICE_KEY_DAYS:
        raise InvalidRequest(
            f"expires_in_days must be between 1 and {MAX_SERVICE_KEY_DAYS}, or left out.",
            param="expires_in_days",
        )
    return datetime.now(UTC) + timedelta(days=days)


async def create_service_key(
    session: AsyncSession,
    inference: InferenceService,
    intake: Intake,
    scope: AdminScope,
    body: ServiceKeyRequest,
) -> NewKey:
    """A service key for a service account within reach; recorded, then committed (the
    API and the console both create keys with this)."""
    expires_at = service_key_expiry(body.expires_in_days)
    name = key_name(body.name)
    user = await user_in_scope(session, scope, body.user_id, param="user_id")
    scope.require_may_manage(user)
    if user.issuer is not None:
        raise PermissionDenied(
            "Service keys belong to service accounts (POST /admin/v1/users). "
            "A person makes their own key with `enclave login`, so that what is "
            "sent with it is theirs.",
            code="service_key_for_person",
            param="user_id",
        )
    new = await add_key(session, user, name=name, expires_at=expires_at, kind="service")
    await record_action(
        inference,
        intake,
        target=f"api_key:{new.key_id}",
        change={
            "action": "create_key",
            "kind": "service",
            "tenant_id": user.tenant_id,
            "user_id": user.id,
            "name": name,
            "prefix": new.prefix,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
        status=201,
    )
    await session.commit()
    return new


async def revoke_in_scope(
    session: AsyncSession,
    inference: InferenceService,
    intake: Intake,
    scope: AdminScope,
    key_id: str,
) -> ApiKey:
    """Revoke a key within reach (recorded before the commit); revoking again changes nothing."""
    key = await key_in_scope(session, scope, key_id, for_update=True)
    owner = await session.get(User, key.user_id)
    if owner is not None:
        scope.require_may_manage(owner)
    await revoke(session, key, inference, intake)
    return key


class AdminKeysController(Controller):
    path = KEYS
    tags = ("admin",)
    security = (BEARER,)
    request_max_body_size = MAX_BODY_BYTES

    @post("", status_code=201, dependencies=described_body(ServiceKeyRequest))
    async def create_key(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> CreatedKey:
        """A service key for a user within reach; ``key`` is shown in this answer only."""
        async with admin_call(request, inference, authenticator, KEYS) as (intake, scope):
            body = await read_json(request, ServiceKeyRequest)
            async with sessions() as session:
                new = await create_service_key(session, inference, intake, scope, body)
        return created_key(new.plaintext, new.record)

    @get("")
    async def list_keys(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        user_id: FromQuery[str | None] = None,
        tenant_id: FromQuery[str | None] = None,
        limit: Limit = DEFAULT_LIMIT,
        after: After = None,
    ) -> KeyPage:
        """Keys within the caller's reach, optionally of one user or one tenant."""
        async with admin_call(request, inference, authenticator, KEYS) as (_, scope):
            query = select(ApiKey).where(scope.restrict(ApiKey.tenant_id))
            if user_id is not None:
                query = query.where(ApiKey.user_id == user_id)
            if tenant_id is not None:
                query = query.where(ApiKey.tenant_id == tenant_id)
            async with sessions() as session:
                rows, has_more = await page(session, query, ApiKey, limit=limit, after=after)
        return KeyPage(data=[key_info(row) for row in rows], has_more=has_more)

    @get("/{key_id:str}")
    async def get_key(
        self,
        key_id: FromPath[str],
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> KeyInfo:
        """One key within the caller's reach (never its secret)."""
        async with (
            admin_call(request, inference, authenticator, KEY) as (_, scope),
            sessions() as session,
        ):
            return key_info(await key_in_scope(session, scope, key_id))

    @delete("/{key_id:str}", status_code=200)
    async def revoke_key(
        self,
        key_id: FromPath[str],
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> KeyInfo:
        """Revoke a key; it fails from its next request on. Revoking again changes nothing."""
        async with (
            admin_call(request, inference, authenticator, KEY) as (intake, scope),
            sessions() as session,
        ):
            key = await revoke_in_scope(session, inference, intake, scope, key_id)
        return key_info(key)
