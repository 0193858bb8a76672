"""Users of an identity provider: provisioned on first sight, kept in step with their tokens.

A user is keyed by ``(issuer, subject)``. Each token refreshes the tenant and the roles the
provider asserts; roles granted in Enclave are kept. A disabled user, or a user of a
disabled tenant, is refused before anything is written. Concurrent first requests of one
user race on the unique constraints; the loser reads the winner's row.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.auth.claims import MappedIdentity
from gateway.db.models import ApiKey, Tenant, User
from gateway.errors import AuthenticationFailed, PermissionDenied

LAST_SEEN_RESOLUTION = timedelta(minutes=5)


def check_active(user: User, tenant: Tenant) -> None:
    """Refuse a disabled user or tenant (the reason goes to the audit record only)."""
    if user.is_disabled:
        raise AuthenticationFailed("This user is disabled.", reason="user_disabled")
    if tenant.is_disabled:
        raise AuthenticationFailed("This tenant is disabled.", reason="tenant_disabled")


async def find_or_create_tenant(session: AsyncSession, name: str, *, create: bool) -> Tenant:
    tenant = await session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is not None:
        return tenant
    if not create:
        raise PermissionDenied(
            f"Tenant {name!r} named by your identity provider does not exist in Enclave; "
            "an administrator must create it.",
            code="unknown_tenant",
        )
    try:
        async with session.begin_nested():
            tenant = Tenant(id=str(uuid.uuid4()), name=name, created_at=datetime.now(UTC))
            session.add(tenant)
    except IntegrityError:  # created meanwhile by a concurrent request
        tenant = await session.scalar(select(Tenant).where(Tenant.name == name))
        if tenant is None:
            raise
    return tenant


async def provision(
    session: AsyncSession, issuer: str, identity: MappedIdentity, *, create_tenants: bool
) -> tuple[User, Tenant]:
    """The user behind ``identity``, created or updated, and its current tenant. Commits."""
    now = datetime.now(UTC)
    user = await session.scalar(
        select(User).where(User.issuer == issuer, User.subject == identity.subject)
    )
    if user is not None and user.is_disabled:
        raise AuthenticationFailed("This user is disabled.", reason="user_disabled")
    tenant = await find_or_create_tenant(session, identity.tenant, create=create_tenants)
    idp_roles = sorted(identity.roles - {"user"})
    if user is None:
        user = await _create(session, issuer, identity, tenant, idp_roles, now)
    elif (
        user.tenant_id != tenant.id
        or user.idp_roles != idp_roles
        or user.name != identity.name
        or user.last_seen_at is None
        or now - user.last_seen_at > LAST_SEEN_RESOLUTION
    ):
        if user.tenant_id != tenant.id:  # the user's keys act in the new tenant
            await session.execute(
                update(ApiKey).where(ApiKey.user_id == user.id).values(tenant_id=tenant.id)
            )
        user.tenant_id = tenant.id
        user.idp_roles = idp_roles
        user.name = identity.name
        user.last_seen_at = now
    check_active(user, tenant)
    await session.commit()
    return user, tenant


async def _create(
    session: AsyncSession,
    issuer: str,
    identity: MappedIdentity,
    tenant: Tenant,
    idp_roles: list[str],
    now: datetime,
) -> User:
    try:
        async with session.begin_nested():
            user = User(
                id=str(uuid.uuid4()),
                tenant_id=tenant.id,
                name=identity.name,
                issuer=issuer,
                subject=identity.subject,
                idp_roles=idp_roles,
                granted_roles=[],
                is_disabled=False,
                created_at=now,
                last_seen_at=now,
            )
            session.add(user)
    except IntegrityError:  # provisioned meanwhile by a concurrent request
        existing = await session.scalar(
            select(User).where(User.issuer == issuer, User.subject == identity.subject)
        )
        if existing is None:
            raise
        return existing
    return user
