"""An issuer's JWKS, cached: keys by ``kid``, single-flight refresh, cooldown, fail closed.

A refresh happens when the cache is empty, older than ``max_age_s``, or asked for an unknown
``kid``; it is bounded by ``fetch_timeout_s``, at most one is in flight (concurrent callers
await the same task) and at most one starts per ``refresh_cooldown_s``, so a flood of random
kids cannot cause a fetch storm. A refresh replaces the whole set, so keys removed at the
issuer are refused afterwards. When fetching fails, cached keys are served until
``max_stale_s`` after the last successful fetch; then every lookup raises
``JwksUnavailable``. Only asymmetric public signing keys (RSA, EC, OKP) are kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey

logger = logging.getLogger("enclave.auth.jwks")

PublicKey = RSAKey | ECKey | OKPKey
JwksFetch = Callable[[], Awaitable[dict[str, Any]]]

_ASYMMETRIC_KTYS = frozenset({"RSA", "EC", "OKP"})


class JwksError(Exception):
    """Base of the errors a key lookup raises."""


class UnknownKey(JwksError):
    """No key with this ``kid`` in the issuer's current JWKS, even after a refresh."""


class JwksUnavailable(JwksError):
    """The JWKS could not be fetched for longer than the stale limit: fail closed."""


def public_keys_of(document: object) -> dict[str, PublicKey]:
    """The usable keys of a JWKS document by kid: asymmetric, public, signing, with a kid."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS document is an object with a 'keys' array")
    keys: dict[str, PublicKey] = {}
    for data in document["keys"]:
        key = _public_key_of(data)
        if key is not None and key.kid is not None:
            keys.setdefault(key.kid, key)  # on a duplicate kid the first key wins
    return keys


def _public_key_of(data: object) -> PublicKey | None:
    """One JWK if it is an asymmetric public signing key with a string kid, else None."""
    if not isinstance(data, dict) or data.get("kty") not in _ASYMMETRIC_KTYS:
        return None
    if not isinstance(data.get("kid"), str) or data.get("use", "sig") != "sig":
        return None
    try:
        key = JWKRegistry.import_key(data)
    except (JoseError, ValueError, TypeError):
        logger.warning("ignoring an unreadable key in the JWKS (kid %r)", data.get("kid"))
        return None
    if not isinstance(key, RSAKey | ECKey | OKPKey) or key.is_private:
        return None
    return key


class JwksCache:
    """The keys of one issuer, refreshed on demand and never more often than the cooldown."""

    def __init__(
        self,
        fetch: JwksFetch,
        *,
        refresh_cooldown_s: float = 30.0,
        max_stale_s: float = 3600.0,
        max_age_s: float = 300.0,
        fetch_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._refresh_cooldown_s = refresh_cooldown_s
        self._max_stale_s = max_stale_s
        self._max_age_s = max_age_s
        self._fetch_timeout_s = fetch_timeout_s
        self._clock = clock
        self._keys: dict[str, PublicKey] = {}
        self._fetched_at: float | None = None
        self._attempted_at: float | None = None
        self._inflight: asyncio.Task[None] | None = None

    async def key_for(self, kid: str) -> PublicKey:
        """The key for ``kid``; raises ``UnknownKey``, or ``JwksUnavailable`` once too stale."""
        if self._is_due():
            await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            await self._refresh()
            key = self._keys.get(kid)
        if self._fetched_at is None or self._clock() - self._fetched_at > self._max_stale_s:
            raise JwksUnavailable("the issuer's JWKS could not be fetched")
        if key is None:
            raise UnknownKey(kid)
        return key

    def _is_due(self) -> bool:
        """True when the cache is empty or older than ``max_age_s``."""
        return self._fetched_at is None or self._clock() - self._fetched_at > self._max_age_s

    async def _refresh(self) -> None:
        """Join the refresh in flight, or start one if the cooldown allows; never raises."""
        if self._inflight is None:
            now = self._clock()
            if self._attempted_at is not None and (
                now - self._attempted_at < self._refresh_cooldown_s
            ):
                return
            self._attempted_at = now
            self._inflight = asyncio.create_task(self._fetch_and_replace())
        # shield: a caller that is cancelled must not cancel the refresh the others await
        await asyncio.shield(self._inflight)

    async def _fetch_and_replace(self) -> None:
        """Fetch the JWKS and replace the key set; on failure keep the old set."""
        try:
            async with asyncio.timeout(self._fetch_timeout_s):
                document = await self._fetch()
            keys = public_keys_of(document)
            if not keys:
                raise ValueError("the JWKS holds no usable public signing key")
        except Exception as exc:
            logger.warning("JWKS refresh failed (%s); serving cached keys", exc)
        else:
            self._keys = keys
            self._fetched_at = self._clock()
        finally:
            self._inflight = None
