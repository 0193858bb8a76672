"""Identity-provider settings: presets, overrides, and configurations refused at start-up."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from gateway.settings import ConfigurationError, IssuerSettings, OidcSettings, load_settings

KEYCLOAK = "https://sso.example.org/realms/hospital"


def keycloak(**overrides: object) -> IssuerSettings:
    fields: dict[str, object] = {
        "issuer": KEYCLOAK,
        "audiences": ["enclave"],
        "preset": "keycloak",
        "client_id": "enclave",
        "tenant_claim": "department",
    }
    return IssuerSettings(**(fields | overrides))  # type: ignore[arg-type]


def test_issuers_are_read_from_one_json_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    issuers = [
        {
            "issuer": KEYCLOAK,
            "audiences": ["enclave"],
            "preset": "keycloak",
            "client_id": "enclave",
            "group_tenants": {"/cardiology": "cardiology"},
            "role_map": {"enclave-admin": "tenant_admin"},
        }
    ]
    monkeypatch.setenv("ENCLAVE_OIDC__ISSUERS", json.dumps(issuers))
    monkeypatch.setenv("ENCLAVE_OIDC__PERSONAL_KEY_DAYS", "30")

    settings = load_settings()

    (issuer,) = settings.oidc.issuers
    assert issuer.mapping().group_tenants == {"/cardiology": "cardiology"}
    assert issuer.policy().algorithms == {"RS256"}
    assert settings.oidc.personal_key_days == 30


@pytest.mark.parametrize(
    ("preset", "extra", "subject", "role_claims"),
    [
        (
            "keycloak",
            {"client_id": "enclave"},
            "sub",
            ("realm_access.roles", "resource_access.enclave.roles"),
        ),
        ("entra", {}, "oid", ("roles",)),
        ("okta", {}, "sub", ("groups",)),
        ("generic", {}, "sub", ("roles",)),
    ],
)
def test_presets_fill_the_claim_layout(
    preset: str, extra: dict[str, str], subject: str, role_claims: tuple[str, ...]
) -> None:
    settings = IssuerSettings(
        issuer=KEYCLOAK,
        audiences=["enclave"],
        preset=preset,  # type: ignore[arg-type]
        tenant_claim="tenant",
        **extra,  # type: ignore[arg-type]
    )
    mapping = settings.mapping()
    assert (mapping.subject_claim, mapping.role_claims) == (subject, role_claims)


def test_explicit_claims_override_the_preset() -> None:
    mapping = keycloak(subject_claim="preferred_username", role_claims=["roles"]).mapping()
    assert (mapping.subject_claim, mapping.role_claims) == ("preferred_username", ("roles",))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algorithms": ["HS256"]}, "asymmetric"),
        ({"algorithms": ["none"]}, "asymmetric"),
        ({"audiences": []}, "audiences"),
        ({"client_id": None}, "client_id"),
        ({"tenant_claim": None}, "exactly one"),
        ({"group_tenants": {"g": "t"}}, "exactly one"),
        ({"role_map": {"admins": "root"}}, "unknown roles"),
        ({"introspection_client_id": "enclave"}, "introspection_client_secret"),
    ],
    ids=[
        "hs256",
        "none",
        "no_audience",
        "keycloak_without_client",
        "no_tenant_source",
        "two_tenant_sources",
        "unknown_role",
        "half_introspection",
    ],
)
def test_bad_issuer_configuration_is_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        keycloak(**overrides)


def test_an_issuer_may_be_configured_once() -> None:
    with pytest.raises(ValidationError, match="once"):
        OidcSettings(issuers=[keycloak(), keycloak()])


def test_stale_limit_below_key_age_is_refused() -> None:
    with pytest.raises(ValidationError, match="jwks_max_stale_s"):
        OidcSettings(jwks_max_age_s=600, jwks_max_stale_s=60)


def test_bad_issuer_in_the_environment_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = [{"issuer": KEYCLOAK, "audiences": ["enclave"], "algorithms": ["HS256"]}]
    monkeypatch.setenv("ENCLAVE_OIDC__ISSUERS", json.dumps(bad))
    with pytest.raises(ConfigurationError, match="ENCLAVE_OIDC__ISSUERS"):
        load_settings()
