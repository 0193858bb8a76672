"""Pure pieces of the console: its public base URL, its issuers, the search form's query,
the key, model access and user forms' requests."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from litestar.datastructures import FormMultiDict
from pydantic import SecretStr, ValidationError

from gateway.auth.discovery import ProviderMetadata
from gateway.console.admin_pages import key_request
from gateway.console.audit_pages import (
    PAGE_SIZE,
    export_urls,
    first_page_url,
    next_page_url,
    search_query,
)
from gateway.console.integrity_pages import note_parts
from gateway.console.login import console_issuers, public_base, sign_out_origins, sign_out_url
from gateway.console.model_access_pages import model_access
from gateway.console.router import content_security_policy
from gateway.console.user_pages import granted_roles, user_state
from gateway.errors import InvalidRequest
from gateway.settings import ConsoleSettings, IssuerSettings, OidcSettings


def issuer(name: str, **fields: object) -> IssuerSettings:
    return IssuerSettings(
        issuer=f"https://{name}.example.org", audiences=["enclave"], tenant_claim="tenant", **fields
    )


@pytest.mark.parametrize(
    ("request_base", "public_url", "expected"),
    [
        ("http://127.0.0.1:8080/", None, "http://127.0.0.1:8080"),
        ("http://localhost:8080/", None, "http://localhost:8080"),
        ("https://enclave.example.org/", None, "https://enclave.example.org"),
        ("http://10.0.0.5:8080/", "https://enclave.example.org/", "https://enclave.example.org"),
    ],
)
def test_public_base_is_https_or_loopback(
    request_base: str, public_url: str | None, expected: str
) -> None:
    assert public_base(request_base, ConsoleSettings(public_url=public_url)) == expected


@pytest.mark.parametrize(
    ("request_base", "public_url"),
    [("http://10.0.0.5:8080/", None), ("http://127.0.0.1:8080/", "http://enclave.example.org")],
)
def test_plain_http_elsewhere_is_refused(request_base: str, public_url: str | None) -> None:
    with pytest.raises(InvalidRequest) as refused:
        public_base(request_base, ConsoleSettings(public_url=public_url))
    assert refused.value.code == "https_required"


def test_only_issuers_with_a_console_client_are_offered() -> None:
    oidc = OidcSettings(issuers=[issuer("a"), issuer("b", console_client_id="console")])
    assert [i.issuer for i in console_issuers(oidc)] == ["https://b.example.org"]


def test_a_console_secret_without_its_client_is_a_configuration_error() -> None:
    with pytest.raises(ValidationError, match="console_client_secret needs console_client_id"):
        issuer("a", console_client_secret=SecretStr("s"))


def test_search_query_keeps_filled_fields_and_sets_the_page_size() -> None:
    query = search_query({"model": " m ", "user": "", "request_id": "chatcmpl-1", "junk": "x"})
    assert query == {"model": "m", "request_id": "chatcmpl-1", "limit": str(PAGE_SIZE)}
    assert search_query({"limit": "7"}) == {"limit": "7"}  # the compliance API bounds it


def test_next_page_keeps_the_search_and_carries_the_cursor() -> None:
    query = {"model": "m&x", "cursor": "old", "limit": str(PAGE_SIZE)}
    assert next_page_url(query, "new") == "/console/audit/records?model=m%26x&cursor=new"
    assert next_page_url({**query, "limit": "1"}, "new") == (
        "/console/audit/records?model=m%26x&limit=1&cursor=new"
    )
    assert next_page_url(query, None) is None


def test_first_page_drops_the_cursor_only() -> None:
    query = {"event": "outcome", "cursor": "c", "limit": str(PAGE_SIZE)}
    assert first_page_url(query) == "/console/audit/records?event=outcome"
    assert first_page_url({"cursor": "c", "limit": str(PAGE_SIZE)}) == "/console/audit/records"


def test_key_form_becomes_the_admin_apis_request() -> None:
    body = key_request({"user_id": "u", "name": "n", "expires_in_days": "30"})
    assert (body.user_id, body.name, body.expires_in_days) == ("u", "n", 30)
    assert key_request({"user_id": "u", "name": "n", "expires_in_days": ""}).expires_in_days is None
    for days in ("-3", "\u00b2", "9" * 5000):  # "²" is a digit to str but not to int()
        with pytest.raises(InvalidRequest):
            key_request({"user_id": "u", "name": "n", "expires_in_days": days})


def test_exports_cover_the_whole_search_not_the_page_shown() -> None:
    query = {"model": "m", "cursor": "c", "limit": "7"}
    assert export_urls(query) == {
        "jsonl": "/console/audit/export?model=m&format=jsonl",
        "csv": "/console/audit/export?model=m&format=csv",
    }


def test_a_checkpoint_note_is_shown_as_its_text_and_its_signature_lines() -> None:
    note = "enclave.test\n4\nroot=\n\n\u2014 enclave.test AAAA\n\u2014 witness BBBB\n"
    assert note_parts(note) == (
        "enclave.test\n4\nroot=\n",
        ["\u2014 enclave.test AAAA", "\u2014 witness BBBB"],
    )


def test_sign_out_may_redirect_to_the_console_providers_only() -> None:
    oidc = OidcSettings(
        issuers=[
            issuer("sso", console_client_id="console", allowed_hosts=["logout.example.org"]),
            issuer("api-only"),  # no console client: never a sign-out target
        ]
    )
    origins = sign_out_origins(oidc)
    assert origins == ["https://logout.example.org:*", "https://sso.example.org"]
    policy = content_security_policy(origins)
    assert "form-action 'self' https://logout.example.org:* https://sso.example.org;" in policy
    assert "default-src 'self';" in policy
    assert "form-action 'self';" in content_security_policy([])


class Provider:
    """What sign_out_url asks of an identity provider: its metadata."""

    def __init__(self, end_session_endpoint: str | None) -> None:
        self.end_session_endpoint = end_session_endpoint

    async def metadata(self) -> ProviderMetadata:
        return ProviderMetadata(
            issuer="https://sso.example.org",
            jwks_uri="https://sso.example.org/certs",
            end_session_endpoint=self.end_session_endpoint,
        )


@pytest.mark.parametrize(
    ("endpoint", "id_token", "expected"),
    [
        (
            "https://sso.example.org/logout",
            "eyJ.a.b",
            "https://sso.example.org/logout?client_id=console&post_logout_redirect_uri="
            "https%3A%2F%2Fenclave.example.org%2Fconsole%2Fsigned-out&id_token_hint=eyJ.a.b",
        ),
        (
            "https://sso.example.org/logout?realm=x",
            "",
            "https://sso.example.org/logout?realm=x&client_id=console&post_logout_redirect_uri="
            "https%3A%2F%2Fenclave.example.org%2Fconsole%2Fsigned-out",
        ),
        (None, "eyJ.a.b", None),
    ],
)
async def test_sign_out_goes_to_the_providers_end_session_endpoint(
    endpoint: str | None, id_token: str, expected: str | None
) -> None:
    oidc = OidcSettings(issuers=[issuer("sso", console_client_id="console")])
    authenticator: Any = SimpleNamespace(providers={"https://sso.example.org": Provider(endpoint)})
    url = await sign_out_url(
        authenticator, oidc, "https://sso.example.org", id_token, "https://enclave.example.org"
    )
    assert url == expected
    assert await sign_out_url(authenticator, oidc, "https://other.example.org", "", "") is None


def form(*fields: tuple[str, str]) -> FormMultiDict:
    return FormMultiDict(list(fields))


def test_model_access_form_is_every_model_or_the_ticked_and_typed_ones() -> None:
    ticked = (("models", "a"), ("models", "b"))
    assert model_access(form(("access", "every"), *ticked)) is None  # ticks left behind
    assert model_access(form(("access", "listed"), *ticked, ("other_model", " c "))) == [
        "a",
        "b",
        "c",
    ]
    assert model_access(form(("access", "listed"), ("other_model", ""))) == []  # no model


@pytest.mark.parametrize("access", [(), (("access", "all"),), (("access", ""),)])
def test_model_access_form_without_a_known_choice_is_refused(
    access: tuple[tuple[str, str], ...],
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        model_access(form(*access, ("models", "a")))
    assert refused.value.param == "access"


def test_user_forms_become_the_admin_apis_update() -> None:
    roles = granted_roles(form(("granted_roles", "auditor"), ("granted_roles", "tenant_admin")))
    assert (roles.granted_roles, roles.is_disabled) == (["auditor", "tenant_admin"], None)
    assert granted_roles(form()).granted_roles == []  # nothing ticked: no granted role
    assert user_state(form(("is_disabled", "true"))).is_disabled is True
    assert user_state(form(("is_disabled", "false"))).is_disabled is False
    with pytest.raises(InvalidRequest):
        user_state(form(("is_disabled", "yes")))
