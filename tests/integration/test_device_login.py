"""The device flow of ``enclave login`` against a real OpenID Provider (panva/oidc-provider).

``gateway.login`` asks the provider for a device code and prints its prompt on stderr; the
test reads the ``Open …`` line as a person would and approves (or denies) in the provider's
real pages from a thread, while ``gateway.login`` polls the token endpoint. The access token
is then checked with Enclave's own validator. The gateway half (``/v1/auth/login`` and
``/v1/auth/personal-keys``) is covered end to end with the real gateway elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from gateway.auth.access_tokens import IssuerPolicy, parse_header, validate_access_token
from gateway.auth.claims import ClaimMapping, map_claims
from gateway.auth.discovery import discover, jwks_fetcher
from gateway.auth.jwks import JwksCache
from gateway.login import (
    DeviceAuthorization,
    LoginError,
    LoginProvider,
    obtain_access_token,
    show_device_prompt,
)
from tests.oidc_provider import ENCLAVE_AUDIENCE, OidcProvider

pytestmark = pytest.mark.integration

FAST_POLL_S = 0.05  # the provider names no interval (so 5 s); tests need not wait that long
MAPPING = ClaimMapping(
    tenant_claim="tenant",
    role_claims=("groups",),
    role_map={"enclave-admins": "tenant_admin", "enclave-auditors": "auditor"},
)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


def login_provider(
    provider: OidcProvider, resource: str | None = ENCLAVE_AUDIENCE
) -> LoginProvider:
    """What the gateway's ``/v1/auth/login`` would name for this provider."""
    return LoginProvider(provider.issuer, provider.device_client_id, "openid", resource)


def open_line_uri(stderr: str) -> str:
    """The URI of the one ``Open <uri>`` line of the prompt."""
    lines = [line for line in stderr.splitlines() if line.startswith("Open ")]
    assert len(lines) == 1, stderr
    return lines[0].removeprefix("Open ").strip()


class Person:
    """Reads the printed prompt and answers at the provider in a thread, as a person at a
    browser would, while the login polls."""

    def __init__(self, capsys: pytest.CaptureFixture[str], answer: Callable[[str], None]) -> None:
        self.capsys = capsys
        self.answer = answer
        self.answered: asyncio.Future[None] | None = None
        self.prompt = ""

    def __call__(self, authorization: DeviceAuthorization) -> None:
        show_device_prompt(authorization)
        self.prompt = self.capsys.readouterr().err
        uri = open_line_uri(self.prompt)
        self.answered = asyncio.ensure_future(asyncio.to_thread(self.answer, uri))

    async def done(self) -> None:
        assert self.answered is not None, "the login never prompted"
        await self.answered  # a failure in the browser walk surfaces here


async def validated_claims(
    provider: OidcProvider, http: httpx.AsyncClient, token: str
) -> dict[str, object]:
    metadata = await discover(http, provider.issuer)
    policy = IssuerPolicy(
        issuer=provider.issuer,
        audiences=frozenset({ENCLAVE_AUDIENCE}),
        algorithms=frozenset({"RS256", "ES256"}),
        require_typ="at+jwt",
    )
    keys = JwksCache(jwks_fetcher(http, metadata.jwks_uri), refresh_cooldown_s=0)
    return await validate_access_token(token, policy, keys)


@pytest.mark.parametrize(
    ("login", "tenant", "roles"),
    [("alice", "cardiology", {"user"}), ("bob", "radiology", {"user", "tenant_admin"})],
)
async def test_approved_device_login_yields_the_persons_enclave_token(
    oidc_provider: OidcProvider,
    http: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
    login: str,
    tenant: str,
    roles: set[str],
) -> None:
    person = Person(capsys, lambda uri: oidc_provider.approve_device(uri, login))
    token = await obtain_access_token(
        http, login_provider(oidc_provider), on_prompt=person, interval_override_s=FAST_POLL_S
    )
    await person.done()

    assert "user_code=" in open_line_uri(person.prompt)
    assert parse_header(token)["typ"] == "at+jwt"
    claims = await validated_claims(oidc_provider, http, token)
    assert (claims["sub"], claims["aud"], claims["tenant"]) == (login, ENCLAVE_AUDIENCE, tenant)
    assert claims["client_id"] == oidc_provider.device_client_id
    identity = map_claims(claims, MAPPING)
    assert (identity.subject, identity.tenant, identity.roles) == (login, tenant, roles)
    captured = capsys.readouterr()
    assert token not in captured.out + captured.err + person.prompt


async def test_without_a_resource_indicator_the_token_is_opaque(
    oidc_provider: OidcProvider,
    http: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    person = Person(capsys, lambda uri: oidc_provider.approve_device(uri, "alice"))
    token = await obtain_access_token(
        http, login_provider(oidc_provider, None), on_prompt=person, interval_override_s=FAST_POLL_S
    )
    await person.done()
    assert token.count(".") == 0  # not a JWT: the gateway could not validate it locally


async def test_denied_device_login_fails_clearly(
    oidc_provider: OidcProvider,
    http: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    person = Person(capsys, oidc_provider.deny_device)
    with pytest.raises(LoginError, match="denied at the identity provider"):
        await obtain_access_token(
            http, login_provider(oidc_provider), on_prompt=person, interval_override_s=FAST_POLL_S
        )
    await person.done()


async def test_device_code_past_its_expiry_fails_clearly(
    oidc_provider: OidcProvider,
    http: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prompts: list[DeviceAuthorization] = []
    readings = iter([0.0])  # the deadline is set at 0; every later reading is past it

    def clock() -> float:
        return next(readings, prompts[0].expires_in_s + 1.0)

    login = obtain_access_token(
        http,
        login_provider(oidc_provider),
        on_prompt=prompts.append,
        interval_override_s=FAST_POLL_S,
        clock=clock,
    )
    with pytest.raises(LoginError, match="expired"):
        await asyncio.wait_for(login, timeout=10)  # a login blind to the deadline polls on
    assert prompts[0].expires_in_s > 0  # the provider's own expires_in set the deadline
