"""Access-token validation: the attack cases of issue 3, each refused with its reason."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from joserfc import jws, jwt
from joserfc.jwk import ECKey, RSAKey

from gateway.auth.access_tokens import InvalidToken, IssuerPolicy, validate_access_token
from gateway.auth.jwks import JwksCache
from gateway.errors import AuthenticationFailed
from tests.fakes.jwks import FakeClock, FakeJwksSource

ISSUER = "https://idp.example.com/realms/acme"
AUDIENCE = "enclave"
NOW = 1_800_000_000


@pytest.fixture(scope="module")
def rsa() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})


@pytest.fixture(scope="module")
def ec() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": "ec-1"})


@pytest.fixture
def source(rsa: RSAKey, ec: ECKey) -> FakeJwksSource:
    return FakeJwksSource(rsa, ec)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def keys(source: FakeJwksSource, clock: FakeClock) -> JwksCache:
    return JwksCache(source, refresh_cooldown_s=30, max_stale_s=3600, clock=clock)


@pytest.fixture
def policy() -> IssuerPolicy:
    return IssuerPolicy(
        issuer=ISSUER,
        audiences=frozenset({AUDIENCE}),
        algorithms=frozenset({"RS256", "ES256"}),
    )


def claims(**overrides: Any) -> dict[str, Any]:
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": NOW, "exp": NOW + 300}
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def sign(key: RSAKey | ECKey, payload: dict[str, Any], alg: str = "RS256", **header: Any) -> str:
    """A token really signed by ``key``; ``header`` adds to or overrides the JOSE header."""
    return jwt.encode({"alg": alg, "kid": key.kid, **header}, payload, key, algorithms=[alg])


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token assembled by hand, for headers no honest library would sign."""
    head = b64(json.dumps(header).encode())
    return f"{head}.{b64(json.dumps(payload).encode())}.{b64(signature)}"


async def refused(token: str, policy: IssuerPolicy, keys: JwksCache) -> str:
    with pytest.raises(InvalidToken) as caught:
        await validate_access_token(token, policy, keys, now=NOW)
    return caught.value.reason


# --- accepted ----------------------------------------------------------------------------


async def test_valid_rs256_token_is_accepted(
    rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    result = await validate_access_token(sign(rsa, claims()), policy, keys, now=NOW)
    assert result["sub"] == "alice"


async def test_valid_es256_token_is_accepted(
    ec: ECKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    token = sign(ec, claims(), alg="ES256")
    assert (await validate_access_token(token, policy, keys, now=NOW))["sub"] == "alice"


async def test_array_aud_containing_us_is_accepted(
    rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    token = sign(rsa, claims(aud=["other", AUDIENCE]))
    assert (await validate_access_token(token, policy, keys, now=NOW))["sub"] == "alice"


async def test_times_within_leeway_are_accepted(
    rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    token = sign(rsa, claims(exp=NOW - 30, nbf=NOW + 30, iat=NOW + 30))
    assert (await validate_access_token(token, policy, keys, now=NOW))["sub"] == "alice"


async def test_invalid_token_is_an_authentication_failure() -> None:
    error = InvalidToken("expired")
    assert isinstance(error, AuthenticationFailed)
    assert error.status == 401
    assert error.reason == "expired"
    assert "expired" not in error.message


# --- algorithm attacks -------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_alg_none_and_case_variants_are_refused(
    alg: str, rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache, source: FakeJwksSource
) -> None:
    token = craft({"alg": alg, "kid": rsa.kid, "typ": "JWT"}, claims())
    assert await refused(token, policy, keys) == "alg_not_allowed"
    assert source.fetches == 0


async def test_hs256_signed_with_the_rsa_public_key_is_refused(
    rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    head = b64(json.dumps({"alg": "HS256", "kid": rsa.kid, "typ": "JWT"}).encode())
    body = b64(json.dumps(claims()).encode())
    for secret in (rsa.as_pem(private=False), json.dumps(rsa.as_dict()).encode()):
        mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        assert await refused(f"{head}.{body}.{b64(mac)}", policy, keys) == "alg_not_allowed"


async def test_algorithm_outside_the_allow_list_is_refused(
    rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    assert await refused(sign(rsa, claims(), alg="RS384"), policy, keys) == "alg_not_allowed"


async def test_alg_of_the_wrong_key_family_is_refused(
    ec: ECKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    token = craft({"alg": "RS256", "kid": ec.kid}, claims(), b"x" * 256)
    assert await refused(token, policy, keys) == "alg_not_allowed"


async def test_alg_other_than_the_keys_own_alg_is_refused(
    policy: IssuerPolicy, clock: FakeClock
) -> None:
    pinned = RSAKey.generate_key(2048, parameters={"kid": "pinned"})
    source = FakeJwksSource()
    source.documents = [{**pinned.as_dict(private=False), "alg": "PS256"}]
    keys = JwksCache(source, clock=clock)
    assert await refused(sign(pinned, claims()), policy, keys) == "alg_not_allowed"


async def test_missing_alg_is_refused(rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache) -> None:
    assert await refused(craft({"kid": rsa.kid}, claims()), policy, keys) == "alg_not_allowed"


async def test_forged_signature_with_a_real_kid_is_refused(
    rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    rogue = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    assert await refused(sign(rogue, claims()), policy, keys) == "bad_signature"


async def test_tampered_claims_break_the_signature(
    rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    head, _, sig = sign(rsa, claims()).split(".")
    body = b64(json.dumps(claims(sub="admin")).encode())
    assert await refused(f"{head}.{body}.{sig}", policy, keys) == "bad_signature"


# --- kid and key-location headers --------------------------------------------------------


async def test_unknown_kid_flood_causes_at_most_one_fetch(
    rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache, source: FakeJwksSource, clock: FakeClock
) -> None:
    await validate_access_token(sign(rsa, claims()), policy, keys, now=NOW)
    clock.now += 31
    for _ in range(2):
        tokens = [sign(rsa, claims(), kid=f"random-{i}") for i in range(100)]
        reasons = await asyncio.gather(*(refused(t, policy, keys) for t in tokens))
        assert set(reasons) == {"unknown_kid"}
        assert source.fetches == 2  # one refresh for the first flood, none in the cooldown


@pytest.mark.parametrize(
    ("kid", "reason"),
    [
        ("../../etc/passwd", "unknown_kid"),
        ("' OR '1'='1' --", "unknown_kid"),
        ("k" * 129, "malformed"),
        ("k" * 10_240, "token_too_large"),
        ("rsa-1\x00", "malformed"),
        ("rsa-1\r\nX-Injected: 1", "malformed"),
        ("", "malformed"),
        (42, "malformed"),
        (["rsa-1"], "malformed"),
        ({"kid": "rsa-1"}, "malformed"),
        (None, "malformed"),
    ],
)
async def test_kid_injection_is_refused(
    kid: object, reason: str, rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    token = craft({"alg": "RS256", "kid": kid}, claims(), b"x" * 256)
    assert await refused(token, policy, keys) == reason


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("x5c", ["MIIBIjANBgkq"]),
        ("crit", ["exp"]),
    ],
)
async def test_key_location_headers_are_refused(
    name: str, value: object, rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    token = craft({"alg": "RS256", "kid": rsa.kid, name: value}, claims(), b"x" * 256)
    assert await refused(token, policy, keys) == "forbidden_header"


async def test_embedded_jwk_header_is_refused(
    policy: IssuerPolicy, keys: JwksCache, source: FakeJwksSource
) -> None:
    rogue = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
    token = craft({"alg": "RS256", "kid": "rsa-1", "jwk": rogue.as_dict()}, claims(), b"x" * 256)
    assert await refused(token, policy, keys) == "forbidden_header"
    assert source.fetches == 0


# --- claims ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (claims(exp=NOW - 61), "expired"),
        (claims(nbf=NOW + 61), "not_yet_valid"),
        (claims(iat=NOW + 61), "issued_in_future"),
        (claims(exp=None), "missing_exp"),
        (claims(exp="tomorrow"), "malformed"),
        (claims(exp=True), "malformed"),
        (claims(aud="someone-else"), "bad_audience"),
        (claims(aud=None), "bad_audience"),
        (claims(aud=["a", "b"]), "bad_audience"),
        (claims(aud=[]), "bad_audience"),
        (claims(aud={"enclave": 1}), "bad_audience"),
        (claims(iss="https://rogue.example.com/realms/acme"), "bad_issuer"),
        (claims(iss=ISSUER + "/"), "bad_issuer"),
        (claims(iss=None), "bad_issuer"),
    ],
    ids=[
        "expired",
        "nbf_in_the_future",
        "iat_in_the_future",
        "no_exp",
        "exp_not_a_number",
        "exp_boolean",
        "wrong_aud",
        "missing_aud",
        "array_aud_without_us",
        "empty_array_aud",
        "object_aud",
        "wrong_iss",
        "iss_with_trailing_slash",
        "missing_iss",
    ],
)
async def test_bad_claims_are_refused(
    payload: dict[str, Any], reason: str, rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    assert await refused(sign(rsa, payload), policy, keys) == reason


async def test_non_object_payload_is_refused(
    rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    token = jws.serialize_compact({"alg": "RS256", "kid": rsa.kid}, b"[1, 2]", rsa)
    assert await refused(token, policy, keys) == "malformed"


# --- typ and ID tokens -------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt"])
async def test_required_typ_is_accepted_in_its_spellings(
    typ: str, rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    strict = IssuerPolicy(ISSUER, policy.audiences, policy.algorithms, require_typ="at+jwt")
    token = sign(rsa, claims(), typ=typ)
    assert (await validate_access_token(token, strict, keys, now=NOW))["sub"] == "alice"


@pytest.mark.parametrize("typ", ["JWT", "jwt", None, 1])
async def test_typ_mismatch_is_refused_when_required(
    typ: object, rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    strict = IssuerPolicy(ISSUER, policy.audiences, policy.algorithms, require_typ="at+jwt")
    header: dict[str, Any] = {"alg": "RS256", "kid": rsa.kid}
    if typ is not None:
        header["typ"] = typ
    token = craft(header, claims(), b"x" * 256)
    assert await refused(token, strict, keys) == "bad_typ"


async def test_id_token_used_as_access_token_is_refused(
    rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    id_token = sign(rsa, claims(aud="enclave-web-client", nonce="n-0S6_WzA2Mj"), typ="JWT")
    assert await refused(id_token, policy, keys) == "bad_audience"
    strict = IssuerPolicy(ISSUER, policy.audiences, policy.algorithms, require_typ="at+jwt")
    assert await refused(sign(rsa, claims(), typ="JWT"), strict, keys) == "bad_typ"


# --- malformed and oversized -------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "a.b.c.d.e",
        "!!!.e30.sig",
        "eyJhbGciOiJSUzI1NiJ9=.e30.sig",
        b64(b"not json") + ".e30.sig",
        b64(b'["alg", "RS256"]') + ".e30.sig",
        b64(b'{"alg": "none", "alg": "RS256", "kid": "rsa-1"}') + ".e30.sig",
        "a" + ".e30.sig",
        "é" + ".e30.sig",
    ],
    ids=[
        "empty",
        "one_part",
        "two_parts",
        "four_parts",
        "five_parts_jwe",
        "bad_base64_chars",
        "padded_base64",
        "header_not_json",
        "header_not_object",
        "duplicate_alg",
        "bad_base64_length",
        "non_ascii",
    ],
)
async def test_malformed_tokens_are_refused(
    token: str, policy: IssuerPolicy, keys: JwksCache
) -> None:
    assert await refused(token, policy, keys) == "malformed"


async def test_truncated_token_is_refused(
    rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache
) -> None:
    token = sign(rsa, claims())
    for cut in (len(token) - 10, token.rindex(".") + 1, token.rindex("."), 20):
        assert await refused(token[:cut], policy, keys) in {"malformed", "bad_signature"}


async def test_oversized_token_is_refused_before_parsing(
    policy: IssuerPolicy, keys: JwksCache, source: FakeJwksSource
) -> None:
    assert await refused("x" * 8193, policy, keys) == "token_too_large"
    assert source.fetches == 0


# --- JWKS availability and rotation ------------------------------------------------------


async def test_key_rotation_accepts_new_key_and_refuses_removed_key(
    rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache, source: FakeJwksSource, clock: FakeClock
) -> None:
    await validate_access_token(sign(rsa, claims()), policy, keys, now=NOW)
    rotated = RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})
    source.publish(rotated)
    clock.now += 31
    await validate_access_token(sign(rotated, claims()), policy, keys, now=NOW)
    assert await refused(sign(rsa, claims()), policy, keys) == "unknown_kid"


async def test_jwks_down_serves_cache_then_refuses(
    rsa: RSAKey, policy: IssuerPolicy, keys: JwksCache, source: FakeJwksSource, clock: FakeClock
) -> None:
    token = sign(rsa, claims())
    await validate_access_token(token, policy, keys, now=NOW)
    source.is_down = True
    clock.now += 1800
    await validate_access_token(token, policy, keys, now=NOW)
    clock.now += 1801
    assert await refused(token, policy, keys) == "jwks_unavailable"


# --- policy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "algorithms",
    [{"HS256"}, {"RS256", "HS512"}, {"none"}, {"None"}, {"RS256", "NONE"}, {"rs256"}, set()],
)
def test_issuer_policy_refuses_symmetric_and_none_algorithms(algorithms: set[str]) -> None:
    with pytest.raises(ValueError, match="algorithm"):
        IssuerPolicy(ISSUER, frozenset({AUDIENCE}), frozenset(algorithms))


def test_issuer_policy_refuses_empty_issuer_or_audiences() -> None:
    with pytest.raises(ValueError, match="issuer"):
        IssuerPolicy("", frozenset({AUDIENCE}), frozenset({"RS256"}))
    with pytest.raises(ValueError, match="audience"):
        IssuerPolicy(ISSUER, frozenset(), frozenset({"RS256"}))
