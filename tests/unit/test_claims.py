"""Claims → identity (issue 3, item 3): Keycloak, Entra ID and Okta token shapes."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.auth.claims import (
    ROLES,
    ClaimMapping,
    MappedIdentity,
    claim_at,
    entra_mapping,
    has_group_overage,
    keycloak_mapping,
    map_claims,
    okta_mapping,
)
from gateway.errors import AuthenticationFailed, PermissionDenied

KEYCLOAK_CLIENT = "enclave-gateway-prod"


def keycloak_claims(**extra: Any) -> dict[str, Any]:
    return {
        "iss": "https://sso.example.com/realms/acme",
        "sub": "f47ac10b-58cc-4372-a567-0e02b2c3d479",
        "aud": KEYCLOAK_CLIENT,
        "azp": "enclave-cli",
        "preferred_username": "jdoe",
        "email": "jdoe@acme.example",
        "name": "Jane Doe",
        "organization": "acme",
        "groups": ["/acme", "/acme/ml-team"],
        "realm_access": {"roles": ["offline_access", "uma_authorization", "default-roles-acme"]},
        "resource_access": {
            KEYCLOAK_CLIENT: {"roles": ["tenant_admin"]},
            "account": {"roles": ["manage-account", "view-profile"]},
        },
        **extra,
    }


def entra_claims(**extra: Any) -> dict[str, Any]:
    return {
        "iss": "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
        "aud": "api://enclave",
        "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "oid": "00000000-0000-0000-66f3-3332eca7ea81",
        "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "preferred_username": "jdoe@contoso.com",
        "name": "Jane Doe",
        "roles": ["Enclave.Auditor"],
        "groups": ["a1b2c3d4-0000-0000-0000-000000000001"],
        "ver": "2.0",
        **extra,
    }


def okta_claims(**extra: Any) -> dict[str, Any]:
    return {
        "iss": "https://acme.okta.com/oauth2/default",
        "aud": "api://enclave",
        "sub": "00uid4BxXw6I6TV4m0g3",
        "cid": "0oa1example",
        "uid": "00uid4BxXw6I6TV4m0g3",
        "scp": ["openid", "profile"],
        "groups": ["Everyone", "Enclave-Acme", "Enclave-Admins"],
        **extra,
    }


ENTRA_OVERAGE = {
    "_claim_names": {"groups": "src1"},
    "_claim_sources": {
        "src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/oid/getMemberObjects"}
    },
}


# claim_at


def test_claim_at_walks_nested_objects_with_dashed_client_id() -> None:
    assert claim_at(keycloak_claims(), f"resource_access.{KEYCLOAK_CLIENT}.roles") == [
        "tenant_admin"
    ]


@pytest.mark.parametrize(
    "path", ["missing", "realm_access.missing", "sub.deeper", "realm_access..roles", ""]
)
def test_claim_at_is_none_for_missing_or_non_object_steps(path: str) -> None:
    assert claim_at(keycloak_claims(), path) is None


# tenant


def test_keycloak_tenant_from_claim_and_client_roles_with_dashes() -> None:
    mapping = keycloak_mapping(KEYCLOAK_CLIENT, tenant_claim="organization")
    identity = map_claims(keycloak_claims(), mapping)
    assert identity == MappedIdentity(
        subject="f47ac10b-58cc-4372-a567-0e02b2c3d479",
        tenant="acme",
        roles=frozenset({"user", "tenant_admin"}),
        name="jdoe",
    )


def test_tenant_from_nested_claim_path() -> None:
    mapping = ClaimMapping(tenant_claim="enclave.tenant")
    claims = keycloak_claims(enclave={"tenant": "globex"})
    assert map_claims(claims, mapping).tenant == "globex"


def test_tenant_by_group_mapping_with_okta() -> None:
    mapping = okta_mapping(group_tenants={"Enclave-Acme": "acme", "Enclave-Globex": "globex"})
    assert map_claims(okta_claims(), mapping).tenant == "acme"


def test_tenant_by_keycloak_full_group_path() -> None:
    mapping = keycloak_mapping(KEYCLOAK_CLIENT, group_tenants={"/acme": "acme"})
    assert map_claims(keycloak_claims(), mapping).tenant == "acme"


def test_several_groups_of_one_tenant_are_not_ambiguous() -> None:
    mapping = okta_mapping(group_tenants={"Enclave-Acme": "acme", "Enclave-Admins": "acme"})
    assert map_claims(okta_claims(), mapping).tenant == "acme"


def test_groups_mapping_to_two_tenants_are_ambiguous() -> None:
    mapping = okta_mapping(group_tenants={"Enclave-Acme": "acme", "Enclave-Admins": "globex"})
    with pytest.raises(PermissionDenied) as info:
        map_claims(okta_claims(), mapping)
    assert info.value.code == "ambiguous_tenant"
    assert info.value.status == 403


@pytest.mark.parametrize(
    "groups", [["Everyone"], [], None, "Everyone", [42, None, {"x": 1}], {"Enclave-Acme": 1}]
)
def test_no_group_mapped_to_a_tenant_is_no_tenant(groups: Any) -> None:
    mapping = okta_mapping(group_tenants={"Enclave-Acme": "acme"})
    with pytest.raises(PermissionDenied, match="tenant") as info:
        map_claims(okta_claims(groups=groups), mapping)
    assert info.value.code == "no_tenant"


@pytest.mark.parametrize("tenant", [None, "", "   ", 42, ["acme"], {"name": "acme"}, True])
def test_tenant_claim_not_a_non_empty_string_is_no_tenant(tenant: Any) -> None:
    mapping = keycloak_mapping(KEYCLOAK_CLIENT, tenant_claim="organization")
    with pytest.raises(PermissionDenied) as info:
        map_claims(keycloak_claims(organization=tenant), mapping)
    assert info.value.code == "no_tenant"
    assert "organization" in info.value.message


def test_absent_tenant_claim_is_no_tenant() -> None:
    claims = keycloak_claims()
    del claims["organization"]
    with pytest.raises(PermissionDenied) as info:
        map_claims(claims, keycloak_mapping(KEYCLOAK_CLIENT, tenant_claim="organization"))
    assert info.value.code == "no_tenant"


# Entra group overage


@pytest.mark.parametrize(
    "marker", [ENTRA_OVERAGE, {"hasgroups": True}], ids=["claim_names", "hasgroups"]
)
def test_entra_group_overage_is_a_clear_403_when_groups_are_needed(
    marker: dict[str, Any],
) -> None:
    claims = entra_claims(**marker)
    del claims["groups"]  # Entra omits the claim when it sends the marker
    mapping = entra_mapping(group_tenants={"a1b2c3d4-0000-0000-0000-000000000001": "acme"})
    with pytest.raises(PermissionDenied) as info:
        map_claims(claims, mapping)
    assert info.value.code == "group_overage"
    assert info.value.status == 403
    assert "app roles" in info.value.message
    assert "filter" in info.value.message


def test_entra_group_overage_blocks_group_roles_too() -> None:
    mapping = entra_mapping(tenant_claim="tid", is_roles_from_groups=True)
    with pytest.raises(PermissionDenied) as info:
        map_claims(entra_claims(**ENTRA_OVERAGE), mapping)
    assert info.value.code == "group_overage"


def test_entra_group_overage_is_ignored_when_groups_are_not_needed() -> None:
    mapping = entra_mapping(tenant_claim="tid", role_map={"Enclave.Auditor": "auditor"})
    identity = map_claims(entra_claims(**ENTRA_OVERAGE, hasgroups=True), mapping)
    assert identity.roles == {"user", "auditor"}


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"_claim_names": {"groups": "src1"}}, True),
        ({"hasgroups": True}, True),
        ({"hasgroups": "true"}, False),
        ({"_claim_names": {"wids": "src1"}}, False),
        ({"_claim_names": ["groups"]}, False),
        ({}, False),
    ],
)
def test_has_group_overage(claims: dict[str, Any], expected: bool) -> None:
    assert has_group_overage(claims) is expected


# roles


def test_entra_app_roles_mapped_and_oid_is_the_subject() -> None:
    mapping = entra_mapping(
        tenant_claim="tid",
        role_map={"Enclave.Auditor": "auditor", "Enclave.Admin": "tenant_admin"},
    )
    identity = map_claims(entra_claims(), mapping)
    assert identity.subject == "00000000-0000-0000-66f3-3332eca7ea81"
    assert identity.tenant == "72f988bf-86f1-41af-91ab-2d7cd011db47"
    assert identity.roles == {"user", "auditor"}
    assert identity.name == "jdoe@contoso.com"


def test_entra_token_without_oid_is_missing_subject_even_with_sub() -> None:
    claims = entra_claims()
    del claims["oid"]
    with pytest.raises(AuthenticationFailed) as info:
        map_claims(claims, entra_mapping(tenant_claim="tid"))
    assert info.value.reason == "missing_subject"


def test_entra_group_roles_by_object_id() -> None:
    mapping = entra_mapping(
        tenant_claim="tid",
        is_roles_from_groups=True,
        role_map={"a1b2c3d4-0000-0000-0000-000000000001": "tenant_admin"},
    )
    assert map_claims(entra_claims(), mapping).roles == {"user", "tenant_admin"}


def test_keycloak_realm_and_client_roles_with_unknown_ones_ignored() -> None:
    claims = keycloak_claims(
        realm_access={"roles": ["offline_access", "auditor", "superuser"]},
    )
    mapping = keycloak_mapping(KEYCLOAK_CLIENT, tenant_claim="organization")
    assert map_claims(claims, mapping).roles == {"user", "auditor", "tenant_admin"}


def test_roles_of_another_keycloak_client_are_not_read() -> None:
    claims = keycloak_claims(resource_access={"other-app": {"roles": ["platform_admin"]}})
    mapping = keycloak_mapping(KEYCLOAK_CLIENT, tenant_claim="organization")
    assert map_claims(claims, mapping).roles == {"user"}


def test_platform_admin_via_role_map_from_okta_group() -> None:
    mapping = okta_mapping(
        group_tenants={"Enclave-Acme": "acme"},
        role_map={"Enclave-Admins": "platform_admin"},
    )
    assert map_claims(okta_claims(), mapping).roles == {"user", "platform_admin"}


def test_user_role_is_always_present_even_without_role_claims() -> None:
    claims = okta_claims(groups=["Enclave-Acme"])
    identity = map_claims(claims, okta_mapping(group_tenants={"Enclave-Acme": "acme"}))
    assert identity.roles == {"user"}


def test_role_map_wins_over_identity_for_known_names() -> None:
    mapping = ClaimMapping(
        tenant_claim="organization",
        role_claims=("roles",),
        role_map={"tenant_admin": "auditor"},
    )
    claims = {"sub": "u1", "organization": "acme", "roles": ["tenant_admin"]}
    assert map_claims(claims, mapping).roles == {"user", "auditor"}


@pytest.mark.parametrize(
    "realm_access",
    [
        {"roles": "auditor"},  # a lone string, as ADFS sends single values
        {"roles": ["auditor", 7, None, {"name": "tenant_admin"}, ["platform_admin"], ""]},
        {"roles": ("auditor",)},
    ],
)
def test_roles_of_wrong_types_are_ignored_element_wise(realm_access: Any) -> None:
    claims = keycloak_claims(realm_access=realm_access, resource_access=None)
    mapping = keycloak_mapping(KEYCLOAK_CLIENT, tenant_claim="organization")
    assert map_claims(claims, mapping).roles == {"user", "auditor"}


@pytest.mark.parametrize(
    "malformed",
    [
        {"realm_access": ["auditor"]},
        {"realm_access": "auditor"},
        {"realm_access": {"roles": {"auditor": True}}},
        {"resource_access": {KEYCLOAK_CLIENT: ["tenant_admin"]}},
        {"resource_access": {KEYCLOAK_CLIENT: {"roles": 1}}},
        {"resource_access": 12},
    ],
)
def test_malformed_role_containers_give_only_user(malformed: dict[str, Any]) -> None:
    claims = keycloak_claims(resource_access={}, realm_access={})
    claims.update(malformed)
    mapping = keycloak_mapping(KEYCLOAK_CLIENT, tenant_claim="organization")
    assert map_claims(claims, mapping).roles == {"user"}


# subject and name


@pytest.mark.parametrize("subject", [None, "", "  ", 12345, ["u1"], {"id": "u1"}])
def test_missing_or_unusable_subject_is_401_missing_subject(subject: Any) -> None:
    claims = okta_claims(sub=subject)
    with pytest.raises(AuthenticationFailed) as info:
        map_claims(claims, okta_mapping(group_tenants={"Enclave-Acme": "acme"}))
    assert info.value.reason == "missing_subject"
    assert info.value.status == 401


def test_absent_subject_is_checked_before_tenant() -> None:
    claims = okta_claims(groups=[])
    del claims["sub"]
    with pytest.raises(AuthenticationFailed) as info:
        map_claims(claims, okta_mapping(group_tenants={"Enclave-Acme": "acme"}))
    assert info.value.reason == "missing_subject"


def test_custom_subject_claim() -> None:
    mapping = okta_mapping(group_tenants={"Enclave-Acme": "acme"})
    custom = ClaimMapping(
        subject_claim="uid", group_tenants=mapping.group_tenants, role_claims=("groups",)
    )
    assert map_claims(okta_claims(sub="other"), custom).subject == "00uid4BxXw6I6TV4m0g3"


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        ({"preferred_username": "jdoe", "email": "j@x", "name": "Jane"}, "jdoe"),
        ({"preferred_username": "", "email": "j@x", "name": "Jane"}, "j@x"),
        ({"preferred_username": 5, "name": "Jane"}, "Jane"),
        ({"email": None}, "subject-1"),
        ({}, "subject-1"),
    ],
)
def test_name_fallback_order(present: dict[str, Any], expected: str) -> None:
    claims = {"sub": "subject-1", "organization": "acme", **present}
    assert map_claims(claims, ClaimMapping(tenant_claim="organization")).name == expected


# configuration


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"tenant_claim": "org", "group_tenants": {"g": "acme"}},
        {"tenant_claim": "org..name"},
        {"tenant_claim": "org", "subject_claim": ""},
        {"tenant_claim": "org", "role_claims": "roles"},
        {"tenant_claim": "org", "role_claims": ("roles", ".roles")},
        {"tenant_claim": "org", "role_map": {"Admins": "superuser"}},
        {"group_tenants": {"g": ""}},
    ],
)
def test_invalid_mapping_is_refused_at_configuration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        ClaimMapping(**kwargs)


@pytest.mark.parametrize("client_id", ["", "enclave.prod"])
def test_keycloak_client_id_with_dots_is_refused(client_id: str) -> None:
    with pytest.raises(ValueError, match="client id"):
        keycloak_mapping(client_id, tenant_claim="organization")


def test_mapping_is_immutable_even_if_the_source_dict_changes() -> None:
    source = {"Enclave-Acme": "acme"}
    mapping = okta_mapping(group_tenants=source)
    source["Everyone"] = "globex"
    assert dict(mapping.group_tenants) == {"Enclave-Acme": "acme"}
    with pytest.raises(TypeError):
        mapping.group_tenants["Everyone"] = "globex"  # type: ignore[index]


def test_presets_use_the_typical_claim_paths() -> None:
    assert keycloak_mapping("my-app", tenant_claim="t").role_claims == (
        "realm_access.roles",
        "resource_access.my-app.roles",
    )
    assert entra_mapping(tenant_claim="t").subject_claim == "oid"
    assert entra_mapping(tenant_claim="t").role_claims == ("roles",)
    assert okta_mapping(tenant_claim="t").role_claims == ("groups",)
    assert sorted(ROLES) == ["auditor", "platform_admin", "tenant_admin", "user"]
