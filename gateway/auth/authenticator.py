"""Bearer credentials → Principal: Enclave API keys, JWT access tokens, opaque tokens.

``enc_…`` is an API key. A token of three dot-separated segments, or starting ``eyJ``, is
a JWT (three segments, or refused):
its unverified ``iss`` only selects which configured issuer validates it (an unknown issuer
is refused before any key lookup). Anything else is an opaque token, introspected at the
issuers configured for it. The user is provisioned on first sight and refused at once when
disabled.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.auth.access_tokens import MAX_TOKEN_BYTES, InvalidToken, b64url_decode
from gateway.auth.api_keys import (
    KEY_SCHEME,
    ApiKeyAuthenticator,
    KeyRecord,
    incorrect_key,
    principal_of,
)
from gateway.auth.claims import map_claims
from gateway.auth.identity_providers import IdentityProvider
from gateway.auth.principal import Principal
from gateway.auth.provisioning import check_active, provision
from gateway.db.models import Tenant, User
from gateway.db.row_cache import RowCache
from gateway.errors import AuthenticationFailed

JWT_START = "eyJ"  # base64url of '{"': every JWS in compact form starts so


def unverified_issuer(token: str) -> str:
    """The ``iss`` claim of a JWT, read without verification to pick the issuer's policy."""
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken("token_too_large")
    payload = token.split(".")[1]
    try:
        claims = json.loads(b64url_decode(payload))
    except (ValueError, binascii.Error, RecursionError) as exc:
        raise InvalidToken("malformed") from exc
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    if not isinstance(issuer, str):
        raise InvalidToken("malformed")
    return issuer


class Authenticator:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        providers: Sequence[IdentityProvider] = (),
        *,
        create_tenants: bool = True,
        key_cache: RowCache[KeyRecord | None] | None = None,
    ) -> None:
        self._sessions = sessions
        self.api_keys = ApiKeyAuthenticator(sessions, key_cache)
        self.providers = {provider.issuer: provider for provider in providers}
        self._create_tenants = create_tenants

    async def authenticate(self, token: str) -> Principal:
        if token.startswith(f"{KEY_SCHEME}_") or not self.providers:
            return await self.api_keys.authenticate(token)
        if token.startswith(JWT_START) or token.count(".") == 2:
            if token.count(".") != 2:
                raise InvalidToken("malformed")
            provider = self.providers.get(unverified_issuer(token))
            if provider is None:
                raise InvalidToken("unknown_issuer")
            claims = await provider.validate(token)
        else:
            provider, claims = await self._introspect(token)
        identity = map_claims(claims, provider.mapping)
        async with self._sessions() as session:
            user, tenant = await provision(
                session, provider.issuer, identity, create_tenants=self._create_tenants
            )
        return principal_of(user, tenant)

    async def signed_in(self, user_id: str) -> Principal:
        """The principal of a user who signed in earlier (a console session), as they are
        now: current tenant and roles; refused at once when disabled or gone."""
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(User, Tenant)
                    .join(Tenant, Tenant.id == User.tenant_id)
                    .where(User.id == user_id)
                )
            ).first()
        if row is None:
            raise AuthenticationFailed("This user no longer exists.", reason="unknown_user")
        user, tenant = row
        check_active(user, tenant)
        return principal_of(user, tenant)

    async def _introspect(self, token: str) -> tuple[IdentityProvider, dict[str, Any]]:
        """The first issuer that finds the opaque token active, and its claims."""
        candidates = [p for p in self.providers.values() if p.accepts_opaque_tokens]
        if not candidates:
            raise incorrect_key(token)
        refusal = InvalidToken("inactive_token")
        for provider in candidates:
            try:
                return provider, await provider.introspect(token)
            except InvalidToken as exc:
                if exc.reason != "inactive_token":
                    refusal = exc
        raise refusal
