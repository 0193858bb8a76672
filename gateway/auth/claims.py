"""Validated access-token claims → who the caller is, which tenant, which roles (pure logic).

Each issuer has a ``ClaimMapping``: the subject claim, how the tenant is found (a claim whose
value is the tenant name, or IdP groups mapped to tenant names) and the claim paths where
role names live. Paths are dot-separated, each segment a literal key of a nested object:
``resource_access.enclave-api.roles`` reads ``claims["resource_access"]["enclave-api"]
["roles"]``. Values of the wrong type are ignored element by element, never trusted and
never a crash. Every mapped identity holds the ``user`` role.

Microsoft Entra ID replaces a long ``groups`` claim by an overage marker (``_claim_names``
/ ``_claim_sources``, or ``hasgroups: true``); following it would need a Graph API call,
so when groups are needed the caller gets a 403 telling the operator how to fix the app.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeGuard

from gateway.errors import AuthenticationFailed, PermissionDenied

ROLES = frozenset({"user", "tenant_admin", "auditor", "platform_admin"})
NAME_CLAIMS = ("preferred_username", "email", "name")


@dataclass(frozen=True)
class ClaimMapping:
    """How one issuer's claims become an identity; checked once, at configuration time."""

    subject_claim: str = "sub"
    tenant_claim: str | None = None
    group_tenants: Mapping[str, str] = field(default_factory=dict)
    groups_claim: str = "groups"
    role_claims: tuple[str, ...] = ()
    role_map: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse a mapping that could never work, or that grants a role that does not exist."""
        if isinstance(self.role_claims, str):
            raise ValueError("role_claims must be a sequence of claim paths, not one string")
        object.__setattr__(self, "role_claims", tuple(self.role_claims))
        object.__setattr__(self, "group_tenants", MappingProxyType(dict(self.group_tenants)))
        object.__setattr__(self, "role_map", MappingProxyType(dict(self.role_map)))
        for path in (self.subject_claim, self.groups_claim, *self.role_claims):
            _check_path(path)
        if (self.tenant_claim is None) == (not self.group_tenants):
            raise ValueError("configure exactly one of tenant_claim and group_tenants")
        if self.tenant_claim is not None:
            _check_path(self.tenant_claim)
        for group, tenant in self.group_tenants.items():
            if not _is_name(group) or not _is_name(tenant):
                raise ValueError(f"group_tenants: {group!r} -> {tenant!r} is not name -> name")
        unknown = {role for role in self.role_map.values() if role not in ROLES}
        if unknown:
            raise ValueError(f"role_map grants unknown roles {sorted(unknown)}; known: {ROLES}")

    @property
    def needs_groups(self) -> bool:
        """Whether the groups claim is read at all (for tenants or for roles)."""
        return bool(self.group_tenants) or self.groups_claim in self.role_claims


@dataclass(frozen=True)
class MappedIdentity:
    """The caller as the issuer describes it; provisioning turns it into a ``Principal``."""

    subject: str
    tenant: str
    roles: frozenset[str]
    name: str


def claim_at(claims: Mapping[str, Any], path: str) -> Any | None:
    """The value at a dot-separated claim path, or None if any step is missing or not an object."""
    value: Any = claims
    for segment in path.split("."):
        if not segment or not isinstance(value, Mapping) or segment not in value:
            return None
        value = value[segment]
    return value


def map_claims(claims: Mapping[str, Any], mapping: ClaimMapping) -> MappedIdentity:
    """Map validated claims to an identity: 401 without a subject, 403 without one tenant."""
    subject = claim_at(claims, mapping.subject_claim)
    if not _is_name(subject):
        raise AuthenticationFailed(
            f"access token has no usable {mapping.subject_claim!r} claim", reason="missing_subject"
        )
    if mapping.needs_groups and has_group_overage(claims):
        raise PermissionDenied(
            "The identity provider sent a group overage marker instead of the user's groups "
            "(too many groups for the token). Operator: assign app roles to the Enclave "
            "application in Entra ID and map them via role claim 'roles', or filter the groups "
            "claim to groups assigned to the application.",
            code="group_overage",
        )
    return MappedIdentity(
        subject=subject,
        tenant=_tenant(claims, mapping),
        roles=_roles(claims, mapping),
        name=_display_name(claims, subject),
    )


def has_group_overage(claims: Mapping[str, Any]) -> bool:
    """Whether Entra ID left the groups out of the token (``_claim_names`` or ``hasgroups``)."""
    claim_names = claims.get("_claim_names")
    is_overage = isinstance(claim_names, Mapping) and "groups" in claim_names
    return is_overage or claims.get("hasgroups") is True


def keycloak_mapping(
    client_id: str,
    *,
    tenant_claim: str | None = None,
    group_tenants: Mapping[str, str] | None = None,
    role_map: Mapping[str, str] | None = None,
) -> ClaimMapping:
    """Keycloak: realm roles and this client's roles; groups need a "Group Membership" mapper."""
    if not client_id or "." in client_id:
        raise ValueError(f"Keycloak client id {client_id!r} must be non-empty and without dots")
    return ClaimMapping(
        tenant_claim=tenant_claim,
        group_tenants=group_tenants or {},
        role_claims=("realm_access.roles", f"resource_access.{client_id}.roles"),
        role_map=role_map or {},
    )


def entra_mapping(
    *,
    tenant_claim: str | None = None,
    group_tenants: Mapping[str, str] | None = None,
    role_map: Mapping[str, str] | None = None,
    is_roles_from_groups: bool = False,
) -> ClaimMapping:
    """Microsoft Entra ID: app roles in ``roles``, optionally groups (object ids) too.

    The subject is ``oid``, the user's object id: stable across applications, whereas ``sub``
    is pairwise (different per application). A token without ``oid`` is refused with
    ``missing_subject`` rather than keyed by ``sub``, so one user never becomes two.
    ``tid`` is the Entra directory, not an Enclave tenant name; map it only deliberately.
    """
    role_claims = ("roles", "groups") if is_roles_from_groups else ("roles",)
    return ClaimMapping(
        subject_claim="oid",
        tenant_claim=tenant_claim,
        group_tenants=group_tenants or {},
        role_claims=role_claims,
        role_map=role_map or {},
    )


def okta_mapping(
    *,
    tenant_claim: str | None = None,
    group_tenants: Mapping[str, str] | None = None,
    role_map: Mapping[str, str] | None = None,
) -> ClaimMapping:
    """Okta: roles from ``groups`` (add a groups claim to the authorization server)."""
    return ClaimMapping(
        tenant_claim=tenant_claim,
        group_tenants=group_tenants or {},
        role_claims=("groups",),
        role_map=role_map or {},
    )


def _tenant(claims: Mapping[str, Any], mapping: ClaimMapping) -> str:
    if mapping.tenant_claim is not None:
        tenant = claim_at(claims, mapping.tenant_claim)
        if not _is_name(tenant):
            raise PermissionDenied(
                f"No Enclave tenant: the access token has no usable {mapping.tenant_claim!r} "
                "claim.",
                code="no_tenant",
            )
        return tenant
    groups = _strings(claim_at(claims, mapping.groups_claim))
    tenants = {mapping.group_tenants[group] for group in groups if group in mapping.group_tenants}
    if not tenants:
        raise PermissionDenied(
            "No Enclave tenant: none of your identity provider groups is mapped to a tenant.",
            code="no_tenant",
        )
    if len(tenants) > 1:
        raise PermissionDenied(
            "Your identity provider groups map to more than one Enclave tenant; "
            "an administrator must make the mapping unambiguous.",
            code="ambiguous_tenant",
        )
    return tenants.pop()


def _roles(claims: Mapping[str, Any], mapping: ClaimMapping) -> frozenset[str]:
    roles = {"user"}
    for path in mapping.role_claims:
        for name in _strings(claim_at(claims, path)):
            if name in mapping.role_map:
                roles.add(mapping.role_map[name])
            elif name in ROLES:
                roles.add(name)
    return frozenset(roles)


def _display_name(claims: Mapping[str, Any], subject: str) -> str:
    for claim in NAME_CLAIMS:
        value = claims.get(claim)
        if _is_name(value):
            return value
    return subject


def _strings(value: Any) -> Iterator[str]:
    """The strings in a list claim; a lone string counts as a list of one (as ADFS sends it)."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list | tuple):
        yield from (item for item in value if isinstance(item, str) and item)


def _is_name(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip())


def _check_path(path: Any) -> None:
    if not isinstance(path, str) or not all(path.split(".")):
        raise ValueError(f"claim path {path!r} must be non-empty dot-separated segments")
