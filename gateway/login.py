"""``enclave login``: a personal API key through the OAuth 2.0 Device Authorization Grant.

The gateway names its identity providers (``GET /v1/auth/login``); the device flow (RFC 8628)
runs against the chosen one, its token polling through Authlib; the access token buys a
personal key (``POST /v1/auth/personal-keys``), stored in a 0600 credentials file keyed by
gateway URL. The IdP access token is never printed; the key is shown once on stdout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from authlib.integrations.httpx_client import (  # type: ignore[import-untyped]
    AsyncOAuth2Client,
    OAuthError,
)
from authlib.integrations.httpx_client import oauth2_client as authlib_httpx
from authlib.oauth2.rfc8628 import DEVICE_CODE_GRANT_TYPE  # type: ignore[import-untyped]

from gateway.auth.discovery import DiscoveryError, discover

HTTP_TIMEOUT_S = 30.0
DEFAULT_INTERVAL_S = 5.0  # RFC 8628 section 3.2, when the IdP names none
SLOW_DOWN_STEP_S = 5.0  # RFC 8628 section 3.5
PUBLIC_CLIENT_AUTH_METHOD = "none"  # the CLI is a public client: client_id, no secret
CREDENTIALS_FILE = Path("enclave") / "credentials.json"
DENIED = "sign-in was denied at the identity provider"
EXPIRED = "the sign-in code expired before anyone signed in: run enclave login again"
# Authlib's client runs on httpx2 when that is installed, else on httpx: its transport errors
# are those of whichever module it imported. ValueError: a token answer that is not JSON.
TOKEN_ENDPOINT_FAILURES = (httpx.HTTPError, authlib_httpx.httpx2.HTTPError, ValueError)


class LoginError(Exception):
    """Why ``enclave login`` failed, in one line for the terminal."""


@dataclass(frozen=True)
class LoginProvider:
    """One identity provider the gateway accepts device-flow tokens from."""

    issuer: str
    client_id: str
    scope: str
    resource: str | None  # RFC 8707 resource indicator, sent in both device-flow requests


@dataclass(frozen=True)
class DeviceEndpoints:
    device_authorization: str
    token: str


@dataclass(frozen=True)
class DeviceAuthorization:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in_s: float
    interval_s: float


@dataclass(frozen=True)
class PersonalKey:
    id: str
    key: str
    prefix: str
    name: str
    expires_at: str | None


# --- the gateway ----------------------------------------------------------------------


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_gateway_url(url: str, *, is_insecure_http_allowed: bool = False) -> str:
    """The gateway's base URL without a trailing slash; plain http only on loopback."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoginError(f"the gateway URL must be http(s)://host[:port][/path], not {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise LoginError("the gateway URL must not carry credentials, a query or a fragment")
    if parts.scheme == "http" and not (
        is_insecure_http_allowed or is_loopback_host(parts.hostname)
    ):
        raise LoginError(
            f"{url} uses plain http, so the key would travel unencrypted: use https "
            "(or --insecure-http on a trusted network)"
        )
    return urlunsplit((parts.scheme, parts.netloc.lower(), parts.path.rstrip("/"), "", ""))


def _error_message(response: httpx.Response) -> str:
    """The message of an OpenAI-style error envelope, else the HTTP status."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = None
    return message if isinstance(message, str) else f"HTTP {response.status_code}"


async def _call_gateway(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> Any:
    """One JSON request to the gateway; its errors become LoginError with its message."""
    try:
        response = await http.request(method, url, follow_redirects=False, **kwargs)
    except httpx.HTTPError as exc:
        raise LoginError(f"{url} unreachable: {type(exc).__name__}") from exc
    if not response.is_success:
        raise LoginError(f"{method} {url} failed: {_error_message(response)}")
    try:
        return response.json()
    except ValueError as exc:
        raise LoginError(f"{url} did not answer JSON") from exc


def parse_login_providers(document: object) -> list[LoginProvider]:
    """The providers of a ``/v1/auth/login`` answer."""
    entries = document.get("providers") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise LoginError("the gateway's login configuration has no provider list")
    providers = []
    for entry in entries:
        fields = entry if isinstance(entry, dict) else {}
        issuer, client_id = fields.get("issuer"), fields.get("client_id")
        scope, resource = fields.get("scope", "openid"), fields.get("resource")
        if not (isinstance(issuer, str) and isinstance(client_id, str) and isinstance(scope, str)):
            raise LoginError(f"the gateway's login configuration is malformed: {entry!r}")
        if resource is not None and not isinstance(resource, str):
            raise LoginError(f"the gateway's login configuration is malformed: {entry!r}")
        providers.append(LoginProvider(issuer, client_id, scope, resource or None))
    return providers


async def fetch_login_providers(http: httpx.AsyncClient, gateway: str) -> list[LoginProvider]:
    return parse_login_providers(await _call_gateway(http, "GET", f"{gateway}/v1/auth/login"))


def choose_provider(providers: list[LoginProvider], issuer: str | None) -> LoginProvider:
    """The only provider, or the one whose issuer is exactly ``issuer``."""
    if not providers:
        raise LoginError("the gateway has no device login configured")
    issuers = ", ".join(p.issuer for p in providers)
    if issuer is None:
        if len(providers) > 1:
            raise LoginError(
                f"the gateway offers several identity providers, pick one with --issuer: {issuers}"
            )
        return providers[0]
    matches = [p for p in providers if p.issuer == issuer]
    if len(matches) != 1:
        found = "no" if not matches else "more than one"
        raise LoginError(
            f"{found} provider of the gateway has the issuer {issuer!r} (offered: {issuers})"
        )
    return matches[0]


async def create_personal_key(
    http: httpx.AsyncClient,
    gateway: str,
    access_token: str,
    *,
    name: str,
    expires_in_days: int | None = None,
) -> PersonalKey:
    """Trade the IdP access token for a personal API key at the gateway."""
    body: dict[str, Any] = {"name": name}
    if expires_in_days is not None:
        body["expires_in_days"] = expires_in_days
    url = f"{gateway}/v1/auth/personal-keys"
    headers = {"Authorization": f"Bearer {access_token}"}
    answer = await _call_gateway(http, "POST", url, json=body, headers=headers)
    try:
        key = PersonalKey(**{f: answer[f] for f in ("id", "key", "prefix", "name", "expires_at")})
    except (TypeError, KeyError) as exc:
        raise LoginError("the gateway's personal key answer is malformed") from exc
    if not all(isinstance(v, str) for v in (key.id, key.key, key.prefix, key.name)):
        raise LoginError("the gateway's personal key answer is malformed")
    return key


# --- the identity provider ------------------------------------------------------------


async def discover_device_endpoints(http: httpx.AsyncClient, issuer: str) -> DeviceEndpoints:
    try:
        metadata = await discover(http, issuer)
    except DiscoveryError as exc:
        raise LoginError(f"identity provider {issuer}: {exc}") from exc
    if metadata.device_authorization_endpoint is None or metadata.token_endpoint is None:
        raise LoginError(f"identity provider {issuer} does not offer the device flow")
    return DeviceEndpoints(metadata.device_authorization_endpoint, metadata.token_endpoint)


def _is_printable(value: object) -> bool:
    """A non-empty string that cannot smuggle terminal control sequences."""
    return isinstance(value, str) and bool(value) and value.isprintable()


def _is_positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def parse_device_authorization(answer: Mapping[str, Any]) -> DeviceAuthorization:
    """A device authorization response (RFC 8628 section 3.2); its texts are printable."""
    fields = [answer.get(f) for f in ("device_code", "user_code", "verification_uri")]
    complete = answer.get("verification_uri_complete")
    expires_in, interval = answer.get("expires_in", 0), answer.get("interval", DEFAULT_INTERVAL_S)
    if not (
        all(_is_printable(v) for v in fields)
        and (complete is None or _is_printable(complete))
        and _is_positive(expires_in)
        and _is_positive(interval)
    ):
        raise LoginError("the identity provider's device authorization answer is malformed")
    device_code, user_code, uri = (str(v) for v in fields)
    return DeviceAuthorization(
        device_code, user_code, uri, complete, float(expires_in), float(interval)
    )


async def request_device_authorization(
    http: httpx.AsyncClient, endpoints: DeviceEndpoints, provider: LoginProvider
) -> DeviceAuthorization:
    data = {"client_id": provider.client_id, "scope": provider.scope}
    if provider.resource:
        data["resource"] = provider.resource
    try:
        response = await http.post(endpoints.device_authorization, data=data)
        answer = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise LoginError(f"device authorization at {provider.issuer} failed: {exc!r}") from exc
    if not isinstance(answer, dict):
        raise LoginError(f"device authorization at {provider.issuer} did not answer an object")
    if response.status_code != 200:
        error = f"{answer.get('error')}: {answer.get('error_description', '')}"
        raise LoginError(f"the identity provider refused the device authorization: {error}")
    return parse_device_authorization(answer)


def show_device_prompt(authorization: DeviceAuthorization) -> None:
    """What the person must do, on stderr; a line ``Open <uri>`` when the IdP gave one."""
    where = f"{authorization.verification_uri} and enter the code {authorization.user_code}"
    if authorization.verification_uri_complete:
        lines = [
            f"To sign in, confirm the code {authorization.user_code} at your identity provider:",
            f"Open {authorization.verification_uri_complete}",
            f"(or open {where})",
        ]
    else:
        lines = [f"To sign in, open {where}"]
    minutes = max(1, round(authorization.expires_in_s / 60))
    lines.append(f"Waiting for you to sign in (the code expires in {minutes} min)...")
    for line in lines:
        print(line, file=sys.stderr, flush=True)


def interval_after(error: str, description: str | None, interval_s: float) -> float:
    """The wait before the next poll after a token error (RFC 8628 section 3.5), or raise."""
    if error == "authorization_pending":
        return interval_s
    if error == "slow_down":
        return interval_s + SLOW_DOWN_STEP_S
    if error == "access_denied":
        raise LoginError(DENIED)
    if error == "expired_token":
        raise LoginError(EXPIRED)
    raise LoginError(f"the identity provider refused the token request: {error}: {description}")


async def _fetch_device_token(
    oauth: Any, url: str, provider: LoginProvider, authorization: DeviceAuthorization
) -> str:
    """One token request; OAuthError carries the IdP's error code."""
    extra = {"resource": provider.resource} if provider.resource else {}
    try:
        token = await oauth.fetch_token(
            url, grant_type=DEVICE_CODE_GRANT_TYPE, device_code=authorization.device_code, **extra
        )
    except TOKEN_ENDPOINT_FAILURES as exc:
        raise LoginError(f"the token endpoint of {provider.issuer} failed: {exc!r}") from exc
    access_token, token_type = token.get("access_token"), str(token.get("token_type", ""))
    if not isinstance(access_token, str) or not access_token:
        raise LoginError(f"{provider.issuer} issued no access token")
    if token_type.lower() != "bearer":
        raise LoginError(f"{provider.issuer} issued a {token_type!r} token, not a bearer token")
    return access_token


async def poll_for_token(
    endpoints: DeviceEndpoints,
    provider: LoginProvider,
    authorization: DeviceAuthorization,
    *,
    interval_override_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Poll until the person signs in; the access token. ``interval_override_s`` is for
    tests only (the CLI always honours the IdP's interval)."""
    deadline = clock() + authorization.expires_in_s
    interval_s = (
        interval_override_s if interval_override_s is not None else authorization.interval_s
    )
    async with AsyncOAuth2Client(
        client_id=provider.client_id,
        token_endpoint_auth_method=PUBLIC_CLIENT_AUTH_METHOD,
        timeout=HTTP_TIMEOUT_S,
    ) as oauth:
        while True:
            await asyncio.sleep(interval_s)
            if clock() >= deadline:
                raise LoginError(EXPIRED)
            try:
                return await _fetch_device_token(oauth, endpoints.token, provider, authorization)
            except OAuthError as exc:
                interval_s = interval_after(str(exc.error), exc.description, interval_s)


async def obtain_access_token(
    http: httpx.AsyncClient,
    provider: LoginProvider,
    *,
    on_prompt: Callable[[DeviceAuthorization], None] = show_device_prompt,
    interval_override_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """The device flow at ``provider``: discover, authorize, prompt the person, poll."""
    endpoints = await discover_device_endpoints(http, provider.issuer)
    authorization = await request_device_authorization(http, endpoints, provider)
    on_prompt(authorization)
    return await poll_for_token(
        endpoints, provider, authorization, interval_override_s=interval_override_s, clock=clock
    )


# --- the credentials file --------------------------------------------------------------


def credentials_path(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/enclave/credentials.json``, by default under ``~/.config``."""
    config_home = environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(config_home):  # the XDG spec says to ignore relative paths
        config_home = str(Path.home() / ".config")
    return Path(config_home) / CREDENTIALS_FILE


def load_credentials(path: Path) -> dict[str, Any]:
    """The stored keys by gateway URL; none when the file does not exist."""
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise LoginError(f"cannot read {path}: {exc}") from exc
    if not isinstance(entries, dict):
        raise LoginError(f"{path} is not a JSON object: move it away and log in again")
    return entries


def store_credentials(path: Path, gateway: str, key: PersonalKey, issuer: str) -> None:
    """Add or replace the gateway's entry: a 0600 temporary file renamed over the old one."""
    entries = load_credentials(path)
    entries[gateway] = {**asdict(key), "issuer": issuer}
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".credentials.")
    except OSError as exc:
        raise LoginError(f"cannot write {path}: {exc}") from exc
    try:
        with os.fdopen(descriptor, "w") as file:  # mkstemp made it 0600
            json.dump(entries, file, indent=2)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise LoginError(f"cannot write {path}: {exc}") from exc


# --- the command -----------------------------------------------------------------------


def show_key(gateway: str, key: PersonalKey) -> None:
    """The key, once, as shell lines a person can paste (or ``eval``)."""
    print(f"export OPENAI_BASE_URL={shlex.quote(gateway + '/v1')}")
    print(f"export OPENAI_API_KEY={shlex.quote(key.key)}")
    print(f"# Ollama clients: host {gateway}, header 'Authorization: Bearer $OPENAI_API_KEY'")
    sys.stdout.flush()


async def login(
    gateway: str,
    *,
    name: str,
    issuer: str | None = None,
    expires_in_days: int | None = None,
    is_quiet: bool = False,
    is_insecure_http_allowed: bool = False,
    credentials_file: Path | None = None,
) -> PersonalKey:
    """The whole ``enclave login``: device flow, personal key, credentials file."""
    base_url = check_gateway_url(gateway, is_insecure_http_allowed=is_insecure_http_allowed)
    if expires_in_days is not None and expires_in_days < 1:
        raise LoginError("--days must be at least 1")
    path = credentials_file or credentials_path()
    load_credentials(path)  # fail before signing in, not after
    async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_S) as http:
        provider = choose_provider(await fetch_login_providers(http, base_url), issuer)
        access_token = await obtain_access_token(http, provider)
        key = await create_personal_key(
            http, base_url, access_token, name=name, expires_in_days=expires_in_days
        )
    if not is_quiet:
        show_key(base_url, key)
    try:
        store_credentials(path, base_url, key, provider.issuer)
    except LoginError as exc:
        raise LoginError(f"key {key.prefix} was created but not saved: {exc}") from exc
    if not is_quiet:
        expiry = f", expires {key.expires_at}" if key.expires_at else ""
        print(f"Key {key.prefix} ({key.name}{expiry}) saved in {path}", file=sys.stderr, flush=True)
    return key
