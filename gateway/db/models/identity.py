"""Tenants, users and API keys. Keys are stored as SHA-256 digests, found by public prefix.

Users come from two places: local users made by ``enclave keys create`` (``issuer`` is
NULL; unique by name within their tenant) and users of an identity provider, provisioned
on first sight and keyed by ``(issuer, subject)``. Their roles are those the provider sent
last (``idp_roles``, refreshed on every token) plus those granted in Enclave
(``granted_roles``). A tenant's ``allowed_models`` is NULL for "every model".
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.models.base import Base, UtcDateTime


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    is_disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    keep_content: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    """Opt-in: audit records keep prompts and answers, sealed per data subject."""
    content_retention_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """Sealed content is shredded this long after its month ends; None: the default."""
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    """Blocks shredding of this tenant's content."""
    priority: Mapped[str] = mapped_column(
        String(16), default="interactive", server_default=text("'interactive'")
    )
    """Scheduling class: ``interactive`` jobs start before ``batch`` jobs."""
    weight: Mapped[float] = mapped_column(Float, default=1.0, server_default=text("1"))
    """Share of a model's workers against other tenants of its class (fair scheduling)."""


class User(Base):
    """A person or service within a tenant: local, or an identity provider's subject."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("issuer", "subject"),
        Index(
            "uq_users_local_name",
            "tenant_id",
            "name",
            unique=True,
            sqlite_where=text("issuer IS NULL"),
            postgresql_where=text("issuer IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    is_disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    issuer: Mapped[str | None] = mapped_column(String(512), nullable=True)
    subject: Mapped[str | None] = mapped_column(String(255), nullable=True)
    idp_roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    granted_roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    @property
    def roles(self) -> frozenset[str]:
        """Every user holds ``user``; the rest come from the provider and from Enclave."""
        return frozenset({"user", *self.idp_roles, *self.granted_roles})


class ApiKey(Base):
    """A key acts as its user, with the user's current tenant and roles.

    ``kind`` is ``service`` (made by an operator or a tenant admin) or ``personal`` (made
    by the user through ``enclave login``); ``tenant_id`` follows the user's tenant.
    """

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    kind: Mapped[str] = mapped_column(String(16), default="service", server_default="service")
