"""OpenID Provider discovery and JWKS fetching, refusing documents that point elsewhere.

The discovery document's ``issuer`` must equal the configured issuer exactly (OpenID
Connect Discovery 1.0, section 4.3), and its ``jwks_uri`` must be served over HTTPS from
an allowed host (by default the issuer's own), so a tampered document cannot substitute
an attacker's keys. Fetches follow no redirects, time out, and read at most 1 MiB.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway.auth.jwks import JwksFetch

MAX_DOCUMENT_BYTES = 1024 * 1024
WELL_KNOWN = "/.well-known/openid-configuration"


class DiscoveryError(Exception):
    """The provider's metadata or keys could not be fetched, or are not to be trusted."""


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    jwks_uri: str
    token_endpoint: str | None = None
    introspection_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    authorization_endpoint: str | None = None
    end_session_endpoint: str | None = None
    """Where a browser is sent to end its session at the provider (RP-Initiated Logout)."""


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + WELL_KNOWN


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint(url: str, allowed_hosts: frozenset[str], *, what: str) -> str:
    """HTTPS on an allowed host (plain HTTP only on loopback, for tests and sidecars)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host not in allowed_hosts:
        raise DiscoveryError(f"{what} {url!r} is not on an allowed host")
    if parts.scheme != "https" and not (parts.scheme == "http" and _is_loopback(host)):
        raise DiscoveryError(f"{what} {url!r} must use https")
    return url


def parse_discovery(
    document: Mapping[str, Any],
    *,
    configured_issuer: str,
    allowed_hosts: frozenset[str] | None = None,
) -> ProviderMetadata:
    """Validate a discovery document against the configured issuer."""
    if document.get("issuer") != configured_issuer:
        raise DiscoveryError(
            f"discovery issuer {document.get('issuer')!r} is not {configured_issuer!r}"
        )
    hosts = allowed_hosts or frozenset({(urlsplit(configured_issuer).hostname or "").lower()})
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise DiscoveryError("discovery document has no jwks_uri")

    def optional(name: str) -> str | None:
        value = document.get(name)
        return check_endpoint(value, hosts, what=name) if isinstance(value, str) else None

    return ProviderMetadata(
        issuer=configured_issuer,
        jwks_uri=check_endpoint(jwks_uri, hosts, what="jwks_uri"),
        token_endpoint=optional("token_endpoint"),
        introspection_endpoint=optional("introspection_endpoint"),
        device_authorization_endpoint=optional("device_authorization_endpoint"),
        authorization_endpoint=_browser_endpoint(document, hosts, "authorization_endpoint"),
        end_session_endpoint=_browser_endpoint(document, hosts, "end_session_endpoint"),
    )


def _browser_endpoint(document: Mapping[str, Any], hosts: frozenset[str], name: str) -> str | None:
    """An endpoint browsers are sent to, when it passes the same checks, else None: only
    the console's sign-in and sign-out need these, so a provider's odd one must not stop
    token validation."""
    value = document.get(name)
    if not isinstance(value, str):
        return None
    try:
        return check_endpoint(value, hosts, what=name)
    except DiscoveryError:
        return None


async def fetch_json(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    """GET a JSON object: no redirects, a size cap, errors wrapped as DiscoveryError."""
    try:
        async with client.stream("GET", url, follow_redirects=False) as response:
            if response.status_code != 200:
                raise DiscoveryError(f"{url} answered {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise DiscoveryError(f"{url} sent more than {MAX_DOCUMENT_BYTES} bytes")
    except httpx.HTTPError as exc:
        raise DiscoveryError(f"{url} unreachable: {type(exc).__name__}") from exc
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise DiscoveryError(f"{url} did not send JSON") from exc
    if not isinstance(document, dict):
        raise DiscoveryError(f"{url} did not send a JSON object")
    return document


async def discover(
    client: httpx.AsyncClient, issuer: str, allowed_hosts: frozenset[str] | None = None
) -> ProviderMetadata:
    document = await fetch_json(client, discovery_url(issuer))
    return parse_discovery(document, configured_issuer=issuer, allowed_hosts=allowed_hosts)


def jwks_fetcher(client: httpx.AsyncClient, jwks_uri: str) -> JwksFetch:
    """The fetch function a JwksCache calls to refresh an issuer's keys."""

    async def fetch() -> dict[str, Any]:
        return await fetch_json(client, jwks_uri)

    return fetch
