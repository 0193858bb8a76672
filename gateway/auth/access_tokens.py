"""JWT access tokens: validated against one issuer's policy and its cached JWKS.

Order: size (before any parsing), header (``alg`` pinned, no ``jku``/``x5u``/``jwk``/``x5c``/
``crit``, a sane ``kid``, optional ``typ``), the key by ``kid`` from the ``JwksCache`` only,
its ``kty`` matching the ``alg`` family (this blocks HS256 signed with the RSA public key),
the signature with joserfc restricted to that one algorithm, then the claims.

An ID token presented as an access token is refused: with ``require_typ`` set its ``typ``
(``JWT``) differs from ``at+jwt``, and in any case its ``aud`` is the client id, which must
not be among the policy's audiences.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError

from gateway.auth.jwks import JwksCache, JwksUnavailable, PublicKey, UnknownKey
from gateway.errors import AuthenticationFailed

MAX_TOKEN_BYTES = 8192
MAX_KID_LENGTH = 128
ALGORITHM_KEY_TYPES: dict[str, str] = {
    **dict.fromkeys(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), "RSA"),
    **dict.fromkeys(("ES256", "ES384", "ES512"), "EC"),
    **dict.fromkeys(("EdDSA", "Ed25519", "Ed448"), "OKP"),
}
FORBIDDEN_HEADERS = frozenset({"jku", "x5u", "jwk", "x5c", "crit"})
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")


class InvalidToken(AuthenticationFailed):
    """A refused access token; ``reason`` is a short machine word for the audit record."""

    def __init__(self, reason: str) -> None:
        super().__init__("invalid access token", reason=reason)


@dataclass(frozen=True)
class IssuerPolicy:
    """What one issuer's tokens must satisfy; only asymmetric algorithms can be pinned."""

    issuer: str
    audiences: frozenset[str]
    algorithms: frozenset[str]
    leeway_s: int = 60
    require_typ: str | None = None

    def __post_init__(self) -> None:
        """Refuse ``none``, HS* and anything not asymmetric, even if configured."""
        object.__setattr__(self, "audiences", frozenset(self.audiences))
        object.__setattr__(self, "algorithms", frozenset(self.algorithms))
        if not self.issuer:
            raise ValueError("issuer must not be empty")
        if not self.audiences:
            raise ValueError("at least one audience is required")
        if not self.algorithms:
            raise ValueError("at least one algorithm is required")
        refused = sorted(a for a in self.algorithms if a not in ALGORITHM_KEY_TYPES)
        if refused:
            raise ValueError(f"only asymmetric algorithms may be pinned, not {refused}")
        if self.leeway_s < 0:
            raise ValueError("leeway_s must not be negative")


async def validate_access_token(
    token: str, policy: IssuerPolicy, keys: JwksCache, *, now: float | None = None
) -> dict[str, Any]:
    """The claims of ``token`` if it is valid under ``policy``; raises ``InvalidToken``."""
    header = parse_header(token)
    alg, kid = check_header(header, policy)
    key = await _key_for(keys, kid)
    if key.key_type != ALGORITHM_KEY_TYPES[alg] or key.alg not in (None, alg):
        raise InvalidToken("alg_not_allowed")
    try:
        claims = jwt.decode(token, key, algorithms=[alg]).claims
    except BadSignatureError as exc:
        raise InvalidToken("bad_signature") from exc
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidToken("malformed") from exc
    check_claims(claims, policy, time.time() if now is None else now)
    return claims


def parse_header(token: str) -> dict[str, Any]:
    """The decoded JOSE header, refusing oversized tokens before parsing anything."""
    if len(token) > MAX_TOKEN_BYTES:
        raise InvalidToken("token_too_large")
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or not all(_SEGMENT.fullmatch(p) for p in parts):
        raise InvalidToken("malformed")
    try:
        header = json.loads(b64url_decode(parts[0]), object_pairs_hook=_no_duplicates)
    except (ValueError, binascii.Error, RecursionError) as exc:
        raise InvalidToken("malformed") from exc
    if not isinstance(header, dict):
        raise InvalidToken("malformed")
    return header


def check_header(header: dict[str, Any], policy: IssuerPolicy) -> tuple[str, str]:
    """The pinned ``alg`` and a sane ``kid``; no key-location headers; the ``typ`` if required."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in policy.algorithms:
        raise InvalidToken("alg_not_allowed")
    if FORBIDDEN_HEADERS & header.keys():
        raise InvalidToken("forbidden_header")
    kid = header.get("kid")
    if not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_LENGTH or not kid.isprintable():
        raise InvalidToken("malformed")
    if policy.require_typ is not None:
        typ = header.get("typ")
        if not isinstance(typ, str) or _media_type(typ) != _media_type(policy.require_typ):
            raise InvalidToken("bad_typ")
    return alg, kid


def check_claims(claims: dict[str, Any], policy: IssuerPolicy, now: float) -> None:
    """``iss`` exact, ``aud`` intersecting, ``exp`` required, ``nbf``/``iat`` with leeway."""
    if claims.get("iss") != policy.issuer:
        raise InvalidToken("bad_issuer")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(a, str) and a in policy.audiences for a in audiences):
        raise InvalidToken("bad_audience")
    if "exp" not in claims:
        raise InvalidToken("missing_exp")
    if _numeric_date(claims["exp"]) <= now - policy.leeway_s:
        raise InvalidToken("expired")
    if "nbf" in claims and _numeric_date(claims["nbf"]) > now + policy.leeway_s:
        raise InvalidToken("not_yet_valid")
    if "iat" in claims and _numeric_date(claims["iat"]) > now + policy.leeway_s:
        raise InvalidToken("issued_in_future")


async def _key_for(keys: JwksCache, kid: str) -> PublicKey:
    """The issuer's key for ``kid``, with lookup errors as token reasons."""
    try:
        return await keys.key_for(kid)
    except UnknownKey as exc:
        raise InvalidToken("unknown_kid") from exc
    except JwksUnavailable as exc:
        raise InvalidToken("jwks_unavailable") from exc


def b64url_decode(segment: str) -> bytes:
    """Decode one unpadded base64url segment."""
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing duplicate member names (which parser's ``alg`` wins?)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member in JOSE header")
    return obj


def _media_type(typ: str) -> str:
    """``typ`` compared case-insensitively, ``application/`` prefix optional (RFC 7515 4.1.9)."""
    typ = typ.lower()
    return typ.removeprefix("application/")


def _numeric_date(value: object) -> float:
    """A NumericDate claim as a float; anything else is malformed."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidToken("malformed")
    return float(value)
