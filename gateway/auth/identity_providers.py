"""One configured identity provider at run time: discovery, keys, introspection.

Discovery happens on first use, not at start-up, so a gateway starts while its provider is
down; its result is kept, and dropped when a key fetch fails so a moved ``jwks_uri`` is
found again. Keys are cached by ``JwksCache`` (single-flight refresh, cooldown, stale limit).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from gateway.auth.access_tokens import InvalidToken, validate_access_token
from gateway.auth.discovery import DiscoveryError, ProviderMetadata, discover, fetch_json
from gateway.auth.introspection import Introspector
from gateway.auth.jwks import JwksCache
from gateway.settings import IssuerSettings, OidcSettings

logger = logging.getLogger("enclave.auth")


class IdentityProvider:
    def __init__(
        self, settings: IssuerSettings, client: httpx.AsyncClient, oidc: OidcSettings
    ) -> None:
        self.settings = settings
        self.issuer = settings.issuer
        self.policy = settings.policy()
        self.mapping = settings.mapping()
        self._client = client
        self._allowed_hosts = (
            frozenset(h.lower() for h in settings.allowed_hosts) if settings.allowed_hosts else None
        )
        self._metadata: ProviderMetadata | None = None
        self._discovery_failed = False
        self._lock = asyncio.Lock()
        self._introspector: Introspector | None = None
        self.keys = JwksCache(
            self._fetch_keys,
            refresh_cooldown_s=oidc.jwks_refresh_cooldown_s,
            max_age_s=oidc.jwks_max_age_s,
            max_stale_s=oidc.jwks_max_stale_s,
        )

    @property
    def accepts_opaque_tokens(self) -> bool:
        return self.settings.introspection_client_id is not None

    async def metadata(self) -> ProviderMetadata:
        """The provider's validated discovery document; raises DiscoveryError."""
        async with self._lock:
            if self._metadata is None:
                try:
                    self._metadata = await discover(self._client, self.issuer, self._allowed_hosts)
                except DiscoveryError as exc:
                    self._discovery_failed = True
                    logger.warning("discovery of %s failed: %s", self.issuer, exc)
                    raise
                self._discovery_failed = False
            return self._metadata

    async def _fetch_keys(self) -> dict[str, Any]:
        metadata = await self.metadata()
        try:
            return await fetch_json(self._client, metadata.jwks_uri)
        except DiscoveryError:
            self._metadata = None  # discover again next time
            raise

    async def validate(self, token: str) -> dict[str, Any]:
        """The claims of a valid JWT access token of this issuer; raises InvalidToken."""
        try:
            return await validate_access_token(token, self.policy, self.keys)
        except InvalidToken as exc:
            if exc.reason == "jwks_unavailable" and self._discovery_failed:
                raise InvalidToken("discovery_failed") from exc
            raise

    async def introspect(self, token: str) -> dict[str, Any]:
        """The claims of an active opaque token (RFC 7662); raises InvalidToken."""
        if self._introspector is None:
            try:
                metadata = await self.metadata()
            except DiscoveryError as exc:
                raise InvalidToken("introspection_unavailable") from exc
            secret = self.settings.introspection_client_secret
            if metadata.introspection_endpoint is None or secret is None:
                raise InvalidToken("introspection_unavailable")
            self._introspector = Introspector(
                self._client,
                metadata.introspection_endpoint,
                client_id=self.settings.introspection_client_id or "",
                client_secret=secret.get_secret_value(),
                issuer=self.issuer,
                audiences=self.policy.audiences,
            )
        claims = await self._introspector.introspect(token)
        if "sub" not in claims and isinstance(claims.get("client_id"), str):
            # A client-credentials token has no resource owner; as RFC 9068 2.2 has for JWT
            # access tokens, the client is the subject.
            claims = {**claims, "sub": claims["client_id"]}
        return claims
