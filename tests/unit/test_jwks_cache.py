"""JwksCache: single-flight refresh, cooldown, rotation, stale limit, public asymmetric keys."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from gateway.auth.jwks import JwksCache, JwksUnavailable, UnknownKey
from tests.fakes.jwks import FakeClock, FakeJwksSource


def rsa_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid})


@pytest.fixture(scope="module")
def old_key() -> RSAKey:
    return rsa_key("old")


@pytest.fixture(scope="module")
def new_key() -> RSAKey:
    return rsa_key("new")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_cache(source: FakeJwksSource, clock: FakeClock) -> JwksCache:
    return JwksCache(source, refresh_cooldown_s=30, max_stale_s=3600, max_age_s=300, clock=clock)


async def test_known_kid_is_served_from_one_fetch(old_key: RSAKey, clock: FakeClock) -> None:
    source = FakeJwksSource(old_key)
    cache = make_cache(source, clock)
    for _ in range(5):
        key = await cache.key_for("old")
    assert key.kid == "old"
    assert not key.is_private
    assert source.fetches == 1


async def test_unknown_kid_flood_causes_at_most_one_fetch(
    old_key: RSAKey, clock: FakeClock
) -> None:
    source = FakeJwksSource(old_key)
    cache = make_cache(source, clock)
    await cache.key_for("old")

    async def lookup(kid: str) -> None:
        with pytest.raises(UnknownKey):
            await cache.key_for(kid)

    clock.now += 31  # past the cooldown: the flood may cause exactly one refresh
    await asyncio.gather(*(lookup(uuid.uuid4().hex) for _ in range(100)))
    assert source.fetches == 2
    clock.now += 10  # within the cooldown: another flood causes none
    await asyncio.gather(*(lookup(uuid.uuid4().hex) for _ in range(100)))
    assert source.fetches == 2


async def test_concurrent_first_lookups_share_one_fetch(old_key: RSAKey, clock: FakeClock) -> None:
    source = FakeJwksSource(old_key)
    cache = make_cache(source, clock)
    keys = await asyncio.gather(*(cache.key_for("old") for _ in range(50)))
    assert {key.kid for key in keys} == {"old"}
    assert source.fetches == 1


async def test_rotation_accepts_new_key_and_refuses_removed_key(
    old_key: RSAKey, new_key: RSAKey, clock: FakeClock
) -> None:
    source = FakeJwksSource(old_key)
    cache = make_cache(source, clock)
    await cache.key_for("old")
    source.publish(new_key)
    clock.now += 31
    assert (await cache.key_for("new")).kid == "new"
    with pytest.raises(UnknownKey):
        await cache.key_for("old")
    assert source.fetches == 2


async def test_new_key_within_cooldown_waits_for_the_cooldown(
    old_key: RSAKey, new_key: RSAKey, clock: FakeClock
) -> None:
    source = FakeJwksSource(old_key)
    cache = make_cache(source, clock)
    await cache.key_for("old")
    source.publish(old_key, new_key)
    with pytest.raises(UnknownKey):
        await cache.key_for("new")
    clock.now += 30
    assert (await cache.key_for("new")).kid == "new"


async def test_removed_key_is_refused_after_max_age_refresh(
    old_key: RSAKey, new_key: RSAKey, clock: FakeClock
) -> None:
    source = FakeJwksSource(old_key)
    cache = make_cache(source, clock)
    await cache.key_for("old")
    source.publish(new_key)
    clock.now += 301
    with pytest.raises(UnknownKey):
        await cache.key_for("old")


async def test_source_down_serves_cache_within_max_stale_then_fails_closed(
    old_key: RSAKey, clock: FakeClock
) -> None:
    source = FakeJwksSource(old_key)
    cache = make_cache(source, clock)
    await cache.key_for("old")
    source.is_down = True
    clock.now += 3000  # past max_age: a refresh is tried, fails, the cache still serves
    assert (await cache.key_for("old")).kid == "old"
    assert source.fetches == 2
    clock.now += 601  # past max_stale since the last successful fetch
    with pytest.raises(JwksUnavailable):
        await cache.key_for("old")
    source.is_down = False
    clock.now += 30
    assert (await cache.key_for("old")).kid == "old"


async def test_source_down_from_the_start_fails_closed(old_key: RSAKey, clock: FakeClock) -> None:
    source = FakeJwksSource(old_key)
    source.is_down = True
    cache = make_cache(source, clock)
    with pytest.raises(JwksUnavailable):
        await cache.key_for("old")
    with pytest.raises(JwksUnavailable):
        await cache.key_for("old")
    assert source.fetches == 1  # the cooldown also protects a source that is down


async def test_symmetric_and_private_keys_are_ignored(old_key: RSAKey, clock: FakeClock) -> None:
    source = FakeJwksSource(old_key)
    secret = OctKey.generate_key(256, parameters={"kid": "oct"})
    private = ECKey.generate_key("P-256", parameters={"kid": "private-ec"})
    encryption = RSAKey.generate_key(2048, parameters={"kid": "enc", "use": "enc"})
    source.documents += [
        secret.as_dict(private=True),
        private.as_dict(private=True),
        encryption.as_dict(private=False),
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        {"kty": "EC", "kid": 42},
        "not a key",
    ]
    cache = make_cache(source, clock)
    assert (await cache.key_for("old")).kid == "old"
    for kid in ("oct", "private-ec", "enc", "broken"):
        clock.now += 30
        with pytest.raises(UnknownKey):
            await cache.key_for(kid)


async def test_okp_and_ec_public_keys_are_kept(clock: FakeClock) -> None:
    ed = OKPKey.generate_key("Ed25519", parameters={"kid": "ed"})
    ec = ECKey.generate_key("P-256", parameters={"kid": "ec"})
    cache = make_cache(FakeJwksSource(ed, ec), clock)
    assert (await cache.key_for("ed")).key_type == "OKP"
    assert (await cache.key_for("ec")).key_type == "EC"


async def test_empty_or_malformed_document_keeps_the_old_set(
    old_key: RSAKey, clock: FakeClock
) -> None:
    source = FakeJwksSource(old_key)
    cache = make_cache(source, clock)
    await cache.key_for("old")
    source.documents = []
    clock.now += 301
    assert (await cache.key_for("old")).kid == "old"
    assert source.fetches == 2


async def test_hanging_source_times_out_and_fails_closed(clock: FakeClock) -> None:
    async def hang() -> dict[str, Any]:
        await asyncio.sleep(3600)
        return {"keys": []}

    cache = JwksCache(hang, fetch_timeout_s=0.01, clock=clock)
    with pytest.raises(JwksUnavailable):
        await cache.key_for("old")
