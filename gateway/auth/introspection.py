"""RFC 7662 introspection of opaque access tokens: fail closed, cached by token hash.

The POST follows no redirects, has a total deadline and reads at most ``MAX_ANSWER_BYTES``,
like ``discovery.fetch_json``. Plain httpx rather than Authlib: Authlib 1.9's
``client_secret_basic`` does not form-urlencode the client id and secret (RFC 6749 2.3.1),
and its client would have to replace the injected ``httpx.AsyncClient`` and its stream.

An unreachable, slow, non-200, oversized or non-JSON endpoint refuses the token
(``introspection_unavailable``) and is never cached. Answers are cached under the SHA-256 of
the token: a usable token until ``min(exp, now + max_cache_s)``, a refused one for at most
``REFUSAL_CACHE_S`` (an inactive token never becomes active). Concurrent introspections of
one token share one request.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlsplit

import httpx

from gateway.auth.access_tokens import MAX_TOKEN_BYTES, InvalidToken
from gateway.auth.discovery import check_endpoint

MAX_ANSWER_BYTES = 64 * 1024
REFUSAL_CACHE_S = 10.0
UNAVAILABLE = "introspection_unavailable"
# RFC 6750 2.1 b64token: what a bearer token may contain (also keeps it ASCII: chars == bytes).
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

logger = logging.getLogger("enclave.auth.introspection")


@dataclass(frozen=True, slots=True)
class _Verdict:
    """The claims of a usable token, or why it is refused; cacheable until ``expires_at``."""

    claims: dict[str, Any] | None
    reason: str | None
    expires_at: float
    cause: BaseException | None = None


class Introspector:
    """Asks one provider's introspection endpoint about opaque tokens, as one client."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        endpoint: str,
        *,
        client_id: str,
        client_secret: str,
        issuer: str,
        audiences: frozenset[str],
        max_cache_s: float = 60.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 5.0,
    ) -> None:
        """Refuse a configuration that would send the secret in clear text or accept anything."""
        host = (urlsplit(endpoint).hostname or "").lower()
        check_endpoint(endpoint, frozenset({host}), what="introspection_endpoint")
        if not issuer or not audiences:
            raise ValueError("an issuer and at least one audience are required")
        if max_cache_s < 0 or max_entries < 1 or timeout_s <= 0:
            raise ValueError("max_cache_s >= 0, max_entries >= 1 and timeout_s > 0 are required")
        self._client = client
        self._endpoint = endpoint
        self._authorization = basic_authorization(client_id, client_secret)
        self._issuer = issuer
        self._audiences = frozenset(audiences)
        self._max_cache_s = max_cache_s
        self._max_entries = max_entries
        self._clock = clock
        self._timeout_s = timeout_s
        self._cache: OrderedDict[bytes, _Verdict] = OrderedDict()  # oldest first
        self._in_flight: dict[bytes, asyncio.Task[_Verdict]] = {}

    async def introspect(self, token: str) -> dict[str, Any]:
        """The claims of an active token, or raise InvalidToken."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("token_too_large")
        if not _B64TOKEN.fullmatch(token):
            raise InvalidToken("malformed")
        key = hashlib.sha256(token.encode("ascii")).digest()
        verdict = self._cached(key)
        if verdict is None:
            task = self._in_flight.get(key)
            if task is None:
                task = asyncio.create_task(self._look_up(key, token))
                self._in_flight[key] = task
            # A cancelled caller must not cancel the request other callers are waiting for.
            verdict = await asyncio.shield(task)
        if verdict.reason is not None:
            raise InvalidToken(verdict.reason) from verdict.cause
        assert verdict.claims is not None
        return copy.deepcopy(verdict.claims)  # callers must not edit the cached claims

    def _cached(self, key: bytes) -> _Verdict | None:
        verdict = self._cache.get(key)
        if verdict is not None and verdict.expires_at <= self._clock():
            del self._cache[key]
            return None
        return verdict

    async def _look_up(self, key: bytes, token: str) -> _Verdict:
        """One request for every caller waiting on ``key``; cache what may be cached."""
        try:
            verdict = await self._ask(token)
            if verdict.expires_at > self._clock():
                self._store(key, verdict)
            return verdict
        finally:
            del self._in_flight[key]

    async def _ask(self, token: str) -> _Verdict:
        try:
            async with asyncio.timeout(self._timeout_s):
                answer = await self._post(token)
        except (httpx.HTTPError, TimeoutError, _Unanswered) as exc:
            logger.warning("introspection endpoint unavailable: %s", type(exc).__name__)
            return _Verdict(None, UNAVAILABLE, expires_at=0.0, cause=exc)
        now = self._clock()
        try:
            claims = check_answer(answer, issuer=self._issuer, audiences=self._audiences, now=now)
        except InvalidToken as exc:
            refused_until = now + min(self._max_cache_s, REFUSAL_CACHE_S)
            return _Verdict(None, exc.reason, expires_at=refused_until)
        expires_at = now + self._max_cache_s
        if "exp" in claims:
            expires_at = min(expires_at, float(claims["exp"]))
        return _Verdict(claims, None, expires_at=expires_at)

    async def _post(self, token: str) -> dict[str, Any]:
        """The endpoint's answer as a JSON object; ``_Unanswered`` if it is anything else."""
        async with self._client.stream(
            "POST",
            self._endpoint,
            data={"token": token, "token_type_hint": "access_token"},
            headers={"Authorization": self._authorization, "Accept": "application/json"},
            follow_redirects=False,
            timeout=self._timeout_s,
        ) as response:
            if response.status_code != 200:
                raise _Unanswered(f"status {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) > MAX_ANSWER_BYTES:
                    raise _Unanswered(f"more than {MAX_ANSWER_BYTES} bytes")
        try:
            answer = json.loads(body, object_pairs_hook=_no_duplicates)
        except (ValueError, RecursionError) as exc:  # deep nesting overflows the parser
            raise _Unanswered("not JSON") from exc
        if not isinstance(answer, dict):
            raise _Unanswered("not a JSON object")
        return answer

    def _store(self, key: bytes, verdict: _Verdict) -> None:
        """Cache ``verdict``, dropping expired entries, then the oldest, to stay bounded."""
        now = self._clock()
        self._cache.pop(key, None)
        while self._cache and next(iter(self._cache.values())).expires_at <= now:
            self._cache.popitem(last=False)
        if len(self._cache) >= self._max_entries:
            for stale in [k for k, v in self._cache.items() if v.expires_at <= now]:
                del self._cache[stale]
        while len(self._cache) >= self._max_entries:
            self._cache.popitem(last=False)
        self._cache[key] = verdict


class _Unanswered(Exception):
    """The endpoint answered, but not with a JSON object and status 200."""


def check_answer(
    answer: dict[str, Any], *, issuer: str, audiences: frozenset[str], now: float
) -> dict[str, Any]:
    """The claims of an active answer for us; ``iss``, ``aud``, ``exp`` checked if present."""
    if answer.get("active") is not True:
        raise InvalidToken("inactive_token")
    if "iss" in answer and answer["iss"] != issuer:
        raise InvalidToken("bad_issuer")
    if "aud" in answer:
        aud = answer["aud"]
        named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(a, str) and a in audiences for a in named):
            raise InvalidToken("bad_audience")
    if "exp" in answer:
        exp = answer["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
            raise InvalidToken("malformed")
        if exp <= now:
            raise InvalidToken("expired")
    token_type = answer.get("token_type")
    if isinstance(token_type, str) and token_type.lower() == "refresh_token":
        raise InvalidToken("not_an_access_token")
    return answer


def basic_authorization(client_id: str, client_secret: str) -> str:
    """``client_secret_basic``: id and secret form-urlencoded (RFC 6749 2.3.1), then Basic."""
    pair = f"{quote_plus(client_id, safe='')}:{quote_plus(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode("ascii")).decode("ascii")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing duplicate member names (which ``active`` would win?)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member in introspection answer")
    return obj
