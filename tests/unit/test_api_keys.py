"""API key format: public prefix, secret never stored."""

from __future__ import annotations

import pytest

from gateway.auth.api_keys import bearer_token, generate_key, hash_key, parse_prefix
from gateway.errors import AuthenticationFailed


def test_generated_keys_parse_back_to_their_prefix() -> None:
    plaintext, prefix = generate_key()
    assert parse_prefix(plaintext) == prefix
    assert len(plaintext) > 50


def test_keys_are_unique_and_hashes_hide_the_secret() -> None:
    keys = {generate_key()[0] for _ in range(200)}
    assert len(keys) == 200
    key = next(iter(keys))
    assert key.split("_", 2)[2] not in hash_key(key)
    assert len(hash_key(key)) == 64


@pytest.mark.parametrize(
    "token",
    ["", "sk-abc", "enc_short_x", "enc_" + "a" * 10, "xyz_aaaaaaaaaa_s", "enc_" + "a" * 200],
)
def test_malformed_keys_have_no_prefix(token: str) -> None:
    assert parse_prefix(token) is None


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer"])
def test_missing_or_malformed_authorization_is_refused(header: str | None) -> None:
    with pytest.raises(AuthenticationFailed):
        bearer_token(header)


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token("bearer enc_x") == "enc_x"
