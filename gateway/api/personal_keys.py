"""Sign-in for tools: which identity providers ``enclave login`` may use, and personal keys.

GET  /v1/auth/login                   the device-login providers (no authentication)
POST /v1/auth/personal-keys           an IdP access token buys a key bound to its user
GET  /v1/auth/personal-keys           the caller's own keys
DELETE /v1/auth/personal-keys/{id}    revoke one of the caller's own keys

Only an identity provider's token can create a personal key; a key cannot mint keys. The
key acts with its user's current tenant and roles, so disabling the user stops it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.api.intake import (
    Intake,
    audited,
    authenticate,
    new_request_id,
    read_body,
    record_action,
)
from gateway.auth.api_keys import add_key
from gateway.auth.authenticator import Authenticator
from gateway.db.models import ApiKey, User
from gateway.errors import InvalidRequest, NotFound, PermissionDenied
from gateway.inference import InferenceService
from gateway.schemas.decoding import decode_body
from gateway.schemas.identity import (
    CreatedKey,
    KeyInfo,
    KeyList,
    LoginConfig,
    LoginProvider,
    PersonalKeyRequest,
)
from gateway.settings import OidcSettings

KEYS_ENDPOINT = "/v1/auth/personal-keys"
MAX_BODY_BYTES = 4096
MAX_NAME_LENGTH = 255


def created_key(plaintext: str, key: ApiKey) -> CreatedKey:
    return CreatedKey(
        id=key.id,
        key=plaintext,
        prefix=key.prefix,
        name=key.name,
        user_id=key.user_id,
        tenant_id=key.tenant_id,
        kind=key.kind,
        created_at=key.created_at,
        expires_at=key.expires_at,
    )


def key_info(key: ApiKey) -> KeyInfo:
    return KeyInfo(
        id=key.id,
        prefix=key.prefix,
        name=key.name,
        user_id=key.user_id,
        tenant_id=key.tenant_id,
        kind=key.kind,
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
    )


async def revoke(
    session: AsyncSession, key: ApiKey, inference: InferenceService, intake: Intake
) -> None:
    """Revoke ``key`` (audited before the commit); a revoked key stays as it is."""
    if key.revoked_at is not None:
        return
    key.revoked_at = datetime.now(UTC)
    await record_action(
        inference,
        intake,
        target=f"api_key:{key.id}",
        change={
            "action": "revoke_key",
            "tenant_id": key.tenant_id,
            "user_id": key.user_id,
            "prefix": key.prefix,
        },
    )
    await session.commit()


def key_expiry(days: int | None, oidc: OidcSettings) -> datetime:
    """The expiry of a personal key: the default, or ``days`` within the configured maximum."""
    days = oidc.personal_key_days if days is None else days
    if not 1 <= days <= oidc.personal_key_max_days:
        raise InvalidRequest(
            f"expires_in_days must be between 1 and {oidc.personal_key_max_days}.",
            param="expires_in_days",
        )
    return datetime.now(UTC) + timedelta(days=days)


def key_name(name: str) -> str:
    name = name.strip()
    if len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise InvalidRequest(
            f"name must be printable and at most {MAX_NAME_LENGTH} characters.", param="name"
        )
    return name


class PersonalKeysController(Controller):
    path = "/v1/auth"

    @get("/login")
    async def login_config(self, oidc_settings: NamedDependency[OidcSettings]) -> LoginConfig:
        return LoginConfig(
            providers=[
                LoginProvider(
                    issuer=issuer.issuer,
                    client_id=issuer.login_client_id,
                    scope=issuer.login_scope,
                    resource=issuer.login_resource,
                )
                for issuer in oidc_settings.issuers
                if issuer.login_client_id is not None
            ]
        )

    @post("/personal-keys", status_code=201, request_max_body_size=MAX_BODY_BYTES)
    async def create_personal_key(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
        oidc_settings: NamedDependency[OidcSettings],
    ) -> CreatedKey:
        async with audited(inference, new_request_id("auth"), KEYS_ENDPOINT) as intake:
            principal = await authenticate(request, authenticator, intake)
            if principal.auth_method != "oidc":
                raise PermissionDenied(
                    "Personal keys are issued for an identity provider's access token; "
                    "an API key cannot create keys. Run `enclave login --gateway URL`.",
                    code="oidc_token_required",
                )
            body = decode_body(await read_body(request, MAX_BODY_BYTES), PersonalKeyRequest)
            expires_at = key_expiry(body.expires_in_days, oidc_settings)
            name = key_name(body.name)
            async with sessions() as session:
                user = await session.get(User, principal.user_id)
                if user is None:  # deleted between authentication and now
                    raise NotFound("The user no longer exists.")
                new = await add_key(
                    session, user, name=name, expires_at=expires_at, kind="personal"
                )
                await record_action(
                    inference,
                    intake,
                    target=f"api_key:{new.key_id}",
                    change={"action": "create_personal_key", "name": name, "prefix": new.prefix},
                    status=201,
                )
                await session.commit()
        return created_key(new.plaintext, new.record)

    @get("/personal-keys")
    async def list_personal_keys(
        self,
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> KeyList:
        async with audited(inference, new_request_id("auth"), KEYS_ENDPOINT) as intake:
            principal = await authenticate(request, authenticator, intake)
            async with sessions() as session:
                keys = await session.scalars(
                    select(ApiKey)
                    .where(ApiKey.user_id == principal.user_id)
                    .order_by(ApiKey.created_at)
                )
                return KeyList(data=[key_info(key) for key in keys])

    @delete("/personal-keys/{key_id:str}", status_code=200)
    async def revoke_personal_key(
        self,
        key_id: FromPath[str],
        request: Request[Any, Any, Any],
        inference: NamedDependency[InferenceService],
        authenticator: NamedDependency[Authenticator],
        sessions: NamedDependency[async_sessionmaker[AsyncSession]],
    ) -> KeyInfo:
        async with audited(inference, new_request_id("auth"), KEYS_ENDPOINT) as intake:
            principal = await authenticate(request, authenticator, intake)
            async with sessions() as session:
                key = await session.scalar(
                    select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == principal.user_id)
                )
                if key is None:
                    raise NotFound(f"No API key {key_id!r}.", code="key_not_found")
                await revoke(session, key, inference, intake)
                return key_info(key)
