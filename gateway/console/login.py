"""Console sign-in: the OAuth 2.0 authorization code flow with PKCE (RFC 7636, S256), through
Authlib, at an issuer configured with ``console_client_id``.

The flow is bound three ways: the ``state`` names a sign-in kept server-side (taken once,
expiring), that sign-in is bound to a random cookie of the browser that began it (a code
and state replayed into another browser are refused), and the code is useless without the
PKCE verifier, which never leaves the server. An ``iss`` in the answer (RFC 9207) must be
the issuer the sign-in went to. The access token the code buys is then checked exactly as
an API call's token is (``Authenticator.authenticate``: discovery, pinned keys, audience,
expiry; the user provisioned, tenant and roles mapped), so the console trusts no second
validator. The ID token is not read for who signed in: it is kept with the session only as
the hint the provider's sign-out endpoint takes (OpenID Connect RP-Initiated Logout), so
signing out of the console also ends the session at the provider.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
    AsyncOAuth2Client,
    OAuthError,
)
from authlib.integrations.httpx_client import oauth2_client as authlib_httpx

from gateway.auth.authenticator import Authenticator
from gateway.auth.discovery import DiscoveryError, ProviderMetadata
from gateway.auth.principal import Principal
from gateway.console.sessions import PendingLogin, SessionStore, new_token
from gateway.errors import AuthenticationFailed, InvalidRequest
from gateway.login import is_loopback_host
from gateway.settings import ConsoleSettings, IssuerSettings, OidcSettings

CALLBACK_PATH = "/console/callback"
SIGNED_OUT_PATH = "/console/signed-out"
HTTP_TIMEOUT_S = 10.0
MAX_ERROR_LENGTH = 100
# Authlib's client runs on httpx2 when installed, else httpx (see gateway.login).
TOKEN_ENDPOINT_FAILURES = (httpx.HTTPError, authlib_httpx.httpx2.HTTPError, ValueError)


class SignInFailed(AuthenticationFailed):
    """The sign-in could not be completed; ``reason`` goes to the audit record."""


@dataclass(frozen=True)
class SignedIn:
    principal: Principal
    id_token: str
    """Empty when the provider sent none (no ``openid`` scope)."""


def console_issuers(oidc: OidcSettings) -> list[IssuerSettings]:
    """The issuers people may sign in to the console with."""
    return [issuer for issuer in oidc.issuers if issuer.console_client_id is not None]


def public_base(request_base: str, settings: ConsoleSettings) -> str:
    """The console's external base URL: the setting, else where the request came in.
    Plain http only on a loopback host: the session cookie must not travel in clear."""
    base = (settings.public_url or request_base).rstrip("/")
    parts = urlsplit(base)
    if parts.scheme != "https" and not is_loopback_host(parts.hostname or ""):
        raise InvalidRequest(
            "The console signs people in over HTTPS only; set ENCLAVE_CONSOLE__PUBLIC_URL "
            "to the https address of this gateway.",
            code="https_required",
        )
    return base


def _oauth_client(issuer: IssuerSettings, redirect_uri: str) -> Any:
    secret = issuer.console_client_secret
    return AsyncOAuth2Client(
        client_id=issuer.console_client_id,
        client_secret=secret.get_secret_value() if secret else None,
        token_endpoint_auth_method="client_secret_basic" if secret else "none",
        scope=issuer.console_scope,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        timeout=HTTP_TIMEOUT_S,
        follow_redirects=False,
        trust_env=False,
    )


def _resource(issuer: IssuerSettings) -> dict[str, str]:
    return {"resource": issuer.console_resource} if issuer.console_resource else {}


async def begin(
    store: SessionStore,
    authenticator: Authenticator,
    issuer: IssuerSettings,
    base: str,
) -> tuple[str, str]:
    """Start a sign-in at ``issuer``: the authorization URL to send the browser to, and
    the value of the cookie that binds the sign-in to this browser."""
    endpoint = (await _metadata(authenticator, issuer.issuer)).authorization_endpoint
    if endpoint is None:
        raise SignInFailed(
            "The identity provider names no usable authorization endpoint.",
            reason="no_authorization_endpoint",
        )
    browser, verifier, redirect_uri = new_token(), new_token(), base + CALLBACK_PATH
    state = await store.begin_login(PendingLogin(issuer.issuer, verifier, browser, redirect_uri))
    async with _oauth_client(issuer, redirect_uri) as oauth:
        url, _ = oauth.create_authorization_url(
            endpoint, state=state, code_verifier=verifier, **_resource(issuer)
        )
    return str(url), browser


async def finish(
    store: SessionStore,
    authenticator: Authenticator,
    oidc: OidcSettings,
    query: dict[str, str],
    browser: str | None,
) -> SignedIn:
    """Complete the sign-in the provider sent the browser back from: who signed in."""
    pending = await _pending(store, query, browser)
    if "error" in query:
        error = query["error"][:MAX_ERROR_LENGTH]
        raise SignInFailed(
            f"The identity provider did not sign you in ({error}).", reason="idp_refused"
        )
    if query.get("iss", pending.issuer) != pending.issuer:
        raise SignInFailed("The answer came from another identity provider.", reason="iss_mixup")
    issuer = next((i for i in console_issuers(oidc) if i.issuer == pending.issuer), None)
    code = query.get("code")
    if issuer is None or not code:
        raise SignInFailed("The identity provider sent no sign-in code.", reason="no_code")
    access_token, id_token = await _exchange(authenticator, issuer, pending, code)
    principal = await authenticator.authenticate(access_token)
    if principal.issuer != pending.issuer:
        raise SignInFailed("The token is of another identity provider.", reason="iss_mixup")
    return SignedIn(principal, id_token)


async def sign_out_url(
    authenticator: Authenticator, oidc: OidcSettings, issuer_url: str, id_token: str, base: str
) -> str | None:
    """Where to send the browser to end its session at the provider it signed in with, and
    come back to the console's signed-out page; None if the provider offers no sign-out
    endpoint (or cannot be reached now: the console's own session has ended regardless)."""
    issuer = next((i for i in console_issuers(oidc) if i.issuer == issuer_url), None)
    provider = authenticator.providers.get(issuer_url)
    if issuer is None or provider is None:
        return None
    try:
        endpoint = (await provider.metadata()).end_session_endpoint
    except DiscoveryError:
        return None
    if endpoint is None:
        return None
    query = {
        "client_id": issuer.console_client_id,
        "post_logout_redirect_uri": base + SIGNED_OUT_PATH,
    }
    if id_token:
        query["id_token_hint"] = id_token
    separator = "&" if urlsplit(endpoint).query else "?"
    return endpoint + separator + urlencode(query)


def sign_out_origins(oidc: OidcSettings) -> list[str]:
    """The origins of the console's identity providers, which the sign-out form's redirect
    goes to (the console's ``form-action`` policy must allow them)."""
    origins = set()
    for issuer in console_issuers(oidc):
        parts = urlsplit(issuer.issuer)
        origins.add(f"{parts.scheme}://{parts.netloc}")
        origins.update(f"https://{host}:*" for host in issuer.allowed_hosts)
    return sorted(origins)


async def _pending(store: SessionStore, query: dict[str, str], browser: str | None) -> PendingLogin:
    state = query.get("state")
    pending = await store.take_login(state) if state else None
    if (
        pending is None
        or browser is None
        or not hmac.compare_digest(pending.browser.encode(), browser.encode())
    ):
        raise SignInFailed(
            "This sign-in expired, was already used, or began in another browser; sign in again.",
            reason="unknown_state",
        )
    return pending


async def _metadata(authenticator: Authenticator, issuer: str) -> ProviderMetadata:
    provider = authenticator.providers.get(issuer)
    if provider is None:
        raise SignInFailed("This identity provider is not trusted.", reason="unknown_issuer")
    try:
        return await provider.metadata()
    except DiscoveryError as exc:
        raise SignInFailed(
            "The identity provider cannot be reached; try again later.",
            reason="discovery_failed",
        ) from exc


async def _exchange(
    authenticator: Authenticator, issuer: IssuerSettings, pending: PendingLogin, code: str
) -> tuple[str, str]:
    """The access token (and ID token, if any) the code and the PKCE verifier buy at the
    token endpoint."""
    endpoint = (await _metadata(authenticator, issuer.issuer)).token_endpoint
    if endpoint is None:
        raise SignInFailed("The identity provider names no token endpoint.", reason="no_token")
    try:
        async with _oauth_client(issuer, pending.redirect_uri) as oauth:
            token = await oauth.fetch_token(
                endpoint,
                grant_type="authorization_code",
                code=code,
                code_verifier=pending.code_verifier,
                **_resource(issuer),
            )
    except OAuthError as exc:
        raise SignInFailed(
            "The identity provider refused the sign-in code.", reason="code_refused"
        ) from exc
    except TOKEN_ENDPOINT_FAILURES as exc:
        raise SignInFailed(
            "The identity provider's token endpoint failed; try again.", reason="token_failed"
        ) from exc
    access_token = token.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise SignInFailed("The identity provider issued no access token.", reason="no_token")
    id_token = token.get("id_token")
    return access_token, id_token if isinstance(id_token, str) else ""
