"""Wire models of the identity endpoints: sign-in configuration, API keys, the admin API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec


class LoginProvider(msgspec.Struct, frozen=True):
    """An identity provider ``enclave login`` may use (OAuth 2.0 device grant)."""

    issuer: str
    client_id: str
    scope: str
    resource: str | None


class LoginConfig(msgspec.Struct, frozen=True):
    providers: list[LoginProvider]


class PersonalKeyRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str = ""
    expires_in_days: int | None = None


class CreatedKey(msgspec.Struct, frozen=True):
    """A new key; ``key`` is the secret, shown this once and never again."""

    id: str
    key: str
    prefix: str
    name: str
    user_id: str
    tenant_id: str
    kind: str
    created_at: datetime
    expires_at: datetime | None
    object: str = "api_key"


class KeyInfo(msgspec.Struct, frozen=True):
    id: str
    prefix: str
    name: str
    user_id: str
    tenant_id: str
    kind: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    object: str = "api_key"


class KeyList(msgspec.Struct, frozen=True):
    data: list[KeyInfo]
    object: str = "list"


# --- the admin API (/admin/v1) ---------------------------------------------------------


class TenantInfo(msgspec.Struct, frozen=True):
    """A tenant; ``allowed_models`` is null for "every model"."""

    id: str
    name: str
    is_disabled: bool
    allowed_models: list[str] | None
    created_at: datetime
    keep_content: bool = False
    content_retention_days: int | None = None
    legal_hold: bool = False
    priority: str = "interactive"
    weight: float = 1.0
    object: str = "tenant"


class TenantPage(msgspec.Struct, frozen=True):
    data: list[TenantInfo]
    has_more: bool
    object: str = "list"


class TenantRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str


class TenantUpdate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Fields left out (or null) stay as they are."""

    is_disabled: bool | None = None
    keep_content: bool | None = None
    """Keep prompts and answers in audit records, sealed per data subject."""
    content_retention_days: int | None = None
    """Shred sealed content this many days after its month ends (0: the default)."""
    legal_hold: bool | None = None
    priority: Literal["interactive", "batch"] | None = None
    """Scheduling class: a model's workers start interactive jobs before batch jobs."""
    weight: float | None = None
    """Share of a model's workers against the other tenants of its class (default 1)."""


class ModelAccess(msgspec.Struct, frozen=True):
    """The models a tenant may use; ``models`` is null for "every model"."""

    tenant_id: str
    models: list[str] | None
    object: str = "tenant.models"


class ModelAccessUpdate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``models`` is required: a list (possibly empty), or null for "every model"."""

    models: list[str] | None


class UserInfo(msgspec.Struct, frozen=True):
    """A user; ``roles`` is what the user holds now: ``user``, ``idp_roles`` and
    ``granted_roles``. ``issuer`` is null for a local user."""

    id: str
    tenant_id: str
    name: str
    issuer: str | None
    subject: str | None
    is_disabled: bool
    idp_roles: list[str]
    granted_roles: list[str]
    roles: list[str]
    created_at: datetime
    last_seen_at: datetime | None
    object: str = "user"


class UserPage(msgspec.Struct, frozen=True):
    data: list[UserInfo]
    has_more: bool
    object: str = "list"


class ServiceUserRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A service account (a local user, not of an identity provider) for scripts' keys;
    ``tenant_id`` is required of a platform_admin, a tenant_admin's own tenant otherwise."""

    name: str
    tenant_id: str | None = None


class UserUpdate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Fields left out (or null) stay as they are; ``granted_roles`` replaces the list."""

    is_disabled: bool | None = None
    granted_roles: list[str] | None = None


class ServiceKeyRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A service key for ``user_id``; without ``expires_in_days`` it does not expire."""

    user_id: str
    name: str
    expires_in_days: int | None = None


class KeyPage(msgspec.Struct, frozen=True):
    data: list[KeyInfo]
    has_more: bool
    object: str = "list"
