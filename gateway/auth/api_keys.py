"""API keys: ``enc_<prefix>_<secret>``; stored as SHA-256 of the whole key, found by prefix.

The prefix is public (shown in listings, logged); the secret never is. 32 random bytes make
a salted slow hash unnecessary: SHA-256 of a high-entropy secret cannot be brute-forced.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.auth.principal import Principal
from gateway.auth.provisioning import check_active
from gateway.db.models import ApiKey, Tenant, User
from gateway.db.row_cache import RowCache
from gateway.errors import AuthenticationFailed

KEY_SCHEME = "enc"
PREFIX_LENGTH = 10
_PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
MAX_KEY_LENGTH = 128


@dataclass(frozen=True)
class NewKey:
    plaintext: str
    key_id: str
    prefix: str
    record: ApiKey


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_key() -> tuple[str, str]:
    """Return (plaintext, prefix)."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    return f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}", prefix


def parse_prefix(token: str) -> str | None:
    """The public prefix of a well-formed key, else None."""
    if len(token) > MAX_KEY_LENGTH:
        return None
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[1]) != PREFIX_LENGTH:
        return None
    return parts[1]


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
            reason="missing_api_key",
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed(
            "Malformed Authorization header; expected 'Bearer YOUR_KEY'.", reason="malformed_header"
        )
    return token.strip()


def incorrect_key(token: str) -> AuthenticationFailed:
    shown = token[:8] + "…" if len(token) > 12 else "…"
    return AuthenticationFailed(f"Incorrect API key provided: {shown}", reason="invalid_api_key")


async def create_key(
    session: AsyncSession,
    *,
    tenant: str,
    user: str,
    name: str = "",
    expires_at: datetime | None = None,
    roles: frozenset[str] = frozenset(),
) -> NewKey:
    """Create tenant and local user when new (granting ``roles``), then a key. Commits."""
    now = datetime.now(UTC)
    tenant_row = await session.scalar(select(Tenant).where(Tenant.name == tenant))
    if tenant_row is None:
        tenant_row = Tenant(id=str(uuid.uuid4()), name=tenant, created_at=now)
        session.add(tenant_row)
        await session.flush()
    user_row = await session.scalar(
        select(User).where(
            User.tenant_id == tenant_row.id, User.name == user, User.issuer.is_(None)
        )
    )
    if user_row is None:
        user_row = User(
            id=str(uuid.uuid4()),
            tenant_id=tenant_row.id,
            name=user,
            created_at=now,
            idp_roles=[],
            granted_roles=[],
        )
        session.add(user_row)
        await session.flush()
    if roles - set(user_row.granted_roles):
        user_row.granted_roles = sorted(roles | set(user_row.granted_roles))
    new = await add_key(session, user_row, name=name, expires_at=expires_at, kind="service")
    await session.commit()
    return new


async def add_key(
    session: AsyncSession, user: User, *, name: str, expires_at: datetime | None, kind: str
) -> NewKey:
    """A new key for ``user`` in the user's tenant, flushed, not committed (the caller audits
    first). The plaintext exists only in the returned value."""
    now = datetime.now(UTC)
    plaintext, prefix = generate_key()
    key = ApiKey(
        id=str(uuid.uuid4()),
        prefix=prefix,
        secret_sha256=hash_key(plaintext),
        tenant_id=user.tenant_id,
        user_id=user.id,
        name=name,
        created_at=now,
        expires_at=expires_at,
        kind=kind,
    )
    session.add(key)
    await session.flush()
    return NewKey(plaintext=plaintext, key_id=key.id, prefix=prefix, record=key)


async def revoke_key(session: AsyncSession, prefix: str) -> bool:
    key = await session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None:
        return False
    key.revoked_at = datetime.now(UTC)
    await session.commit()
    return True


@dataclass(frozen=True)
class KeyRecord:
    """What authenticating by a key needs of its key, user and tenant rows."""

    secret_sha256: str
    revoked: bool
    expires_at: datetime | None
    inactive: tuple[str, str] | None
    """Why the user or tenant may not act now, if so: message and reason."""
    principal: Principal


class ApiKeyAuthenticator:
    """Turns a bearer API key into a Principal, or raises AuthenticationFailed.

    The key acts as its user: the user's current tenant and roles, so disabling the user or
    the tenant stops the key at once. The rows are read on every request unless ``cache``
    keeps them (``gateway.db.row_cache``: only until any of them changes).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        cache: RowCache[KeyRecord | None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._cache = cache

    async def authenticate(self, token: str) -> Principal:
        prefix = parse_prefix(token)
        if prefix is None:
            raise incorrect_key(token)
        if self._cache is None:
            record = await self._read(prefix)
        else:
            record = await self._cache.get(prefix, lambda: self._read(prefix))
        if record is None or not hmac.compare_digest(record.secret_sha256, hash_key(token)):
            raise incorrect_key(token)
        # Only a caller holding the whole key learns why it no longer works.
        if record.revoked:
            raise AuthenticationFailed("This API key has been revoked.", reason="revoked_api_key")
        if record.expires_at is not None and record.expires_at <= datetime.now(UTC):
            raise AuthenticationFailed("This API key has expired.", reason="expired_api_key")
        if record.inactive is not None:
            message, reason = record.inactive
            raise AuthenticationFailed(message, reason=reason)
        return record.principal

    async def _read(self, prefix: str) -> KeyRecord | None:
        async with self._sessions() as session:
            row = (
                await session.execute(
                    select(ApiKey, User, Tenant)
                    .join(User, User.id == ApiKey.user_id)
                    .join(Tenant, Tenant.id == User.tenant_id)
                    .where(ApiKey.prefix == prefix)
                )
            ).first()
        if row is None:
            return None
        key, user, tenant = row
        try:
            check_active(user, tenant)
            inactive = None
        except AuthenticationFailed as exc:
            inactive = (exc.message, exc.reason)
        return KeyRecord(
            secret_sha256=key.secret_sha256,
            revoked=key.revoked_at is not None,
            expires_at=key.expires_at,
            inactive=inactive,
            principal=principal_of(user, tenant, key_id=key.id),
        )


def principal_of(user: User, tenant: Tenant, *, key_id: str | None = None) -> Principal:
    """The principal a user acts as, by key (``key_id``) or by token (``user.issuer``)."""
    return Principal(
        user_id=user.id,
        tenant_id=tenant.id,
        tenant_name=tenant.name,
        user_name=user.name,
        roles=user.roles,
        auth_method="api_key" if key_id is not None else "oidc",
        key_id=key_id,
        allowed_models=None if tenant.allowed_models is None else frozenset(tenant.allowed_models),
        issuer=user.issuer,
        keep_content=tenant.keep_content,
        priority="batch" if tenant.priority == "batch" else "interactive",
        weight=tenant.weight,
    )
