"""The pure parts of ``enclave login``: URL checks, provider choice, poll decisions, output,
and the credentials file (0600, replaced atomically)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from gateway.login import (
    DEFAULT_INTERVAL_S,
    DeviceAuthorization,
    LoginError,
    LoginProvider,
    PersonalKey,
    check_gateway_url,
    choose_provider,
    credentials_path,
    interval_after,
    load_credentials,
    parse_device_authorization,
    parse_login_providers,
    show_device_prompt,
    show_key,
    store_credentials,
)

ISSUER_A = "https://idp.example/realms/a"
ISSUER_B = "https://idp.example/realms/b"
GATEWAY = "https://enclave.example"


def provider(issuer: str = ISSUER_A, client_id: str = "enclave-cli") -> LoginProvider:
    return LoginProvider(issuer, client_id, "openid", "urn:enclave")


def personal_key(key: str = "enc_secret1", name: str = "laptop") -> PersonalKey:
    return PersonalKey("k1", key, key[:8], name, "2030-01-01T00:00:00Z")


def authorization(
    complete: str | None = "https://idp.example/device?user_code=WDJB-MJHT",
) -> DeviceAuthorization:
    return DeviceAuthorization(
        "device-code", "WDJB-MJHT", "https://idp.example/device", complete, 600.0, 5.0
    )


# --- the gateway URL ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("https://enclave.example/", "https://enclave.example"),
        ("https://Enclave.Example:8443/llm/", "https://enclave.example:8443/llm"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:8080/", "http://localhost:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
    ],
)
def test_gateway_url_https_or_loopback_http(url: str, base: str) -> None:
    assert check_gateway_url(url) == base


@pytest.mark.parametrize("url", ["http://enclave.example", "http://10.0.0.5:8080"])
def test_plain_http_off_loopback_needs_the_flag(url: str) -> None:
    with pytest.raises(LoginError, match="--insecure-http"):
        check_gateway_url(url)
    assert check_gateway_url(url, is_insecure_http_allowed=True) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://enclave.example",
        "enclave.example",
        "https://",
        "https://user:pw@enclave.example",
        "https://enclave.example/?x=1",
        "https://enclave.example/#top",
    ],
)
def test_gateway_url_that_is_not_a_plain_web_base_is_refused(url: str) -> None:
    with pytest.raises(LoginError):
        check_gateway_url(url, is_insecure_http_allowed=True)


# --- the gateway's providers --------------------------------------------------------------


def test_login_providers_parsed_with_null_resource() -> None:
    document = {
        "providers": [
            {"issuer": ISSUER_A, "client_id": "cli", "scope": "openid", "resource": None},
            {"issuer": ISSUER_B, "client_id": "cli", "scope": "openid", "resource": "urn:x"},
        ]
    }
    assert parse_login_providers(document) == [
        LoginProvider(ISSUER_A, "cli", "openid", None),
        LoginProvider(ISSUER_B, "cli", "openid", "urn:x"),
    ]


@pytest.mark.parametrize(
    "document",
    [
        [],
        {},
        {"providers": [{"client_id": "cli"}]},
        {"providers": [{"issuer": ISSUER_A, "client_id": 3}]},
        {"providers": [{"issuer": ISSUER_A, "client_id": "cli", "resource": ["a"]}]},
    ],
)
def test_malformed_login_configuration_is_refused(document: Any) -> None:
    with pytest.raises(LoginError, match="login configuration"):
        parse_login_providers(document)


def test_the_only_provider_is_chosen() -> None:
    assert choose_provider([provider()], None) == provider()


def test_no_provider_means_no_device_login() -> None:
    with pytest.raises(LoginError, match="no device login configured"):
        choose_provider([], None)


def test_several_providers_need_an_issuer() -> None:
    with pytest.raises(LoginError, match="--issuer") as refused:
        choose_provider([provider(ISSUER_A), provider(ISSUER_B)], None)
    assert ISSUER_A in str(refused.value)
    assert ISSUER_B in str(refused.value)
    assert choose_provider([provider(ISSUER_A), provider(ISSUER_B)], ISSUER_B) == provider(ISSUER_B)


@pytest.mark.parametrize("issuer", [ISSUER_A + "/", "https://idp.example/realms", "a"])
def test_issuer_must_match_exactly(issuer: str) -> None:
    with pytest.raises(LoginError, match="no provider"):
        choose_provider([provider(ISSUER_A)], issuer)


def test_an_ambiguous_issuer_is_refused() -> None:
    with pytest.raises(LoginError, match="more than one"):
        choose_provider([provider(client_id="a"), provider(client_id="b")], ISSUER_A)


# --- the device flow's decisions ----------------------------------------------------------


def test_device_authorization_defaults_to_a_five_second_interval() -> None:
    answer = {
        "device_code": "dc",
        "user_code": "WDJB-MJHT",
        "verification_uri": "https://idp.example/device",
        "expires_in": 600,
    }
    parsed = parse_device_authorization(answer)
    assert (parsed.interval_s, parsed.expires_in_s) == (DEFAULT_INTERVAL_S, 600.0)
    assert parsed.verification_uri_complete is None
    assert parse_device_authorization({**answer, "interval": 2}).interval_s == 2.0


@pytest.mark.parametrize(
    "change",
    [
        {"expires_in": None},
        {"expires_in": 0},
        {"expires_in": True},
        {"interval": -1},
        {"user_code": ""},
        {"user_code": "WDJB\x1b[2J"},  # a terminal escape from a hostile answer
        {"verification_uri_complete": "https://idp.example/\n"},
        {"device_code": 42},
    ],
)
def test_malformed_device_authorization_is_refused(change: dict[str, Any]) -> None:
    answer = {
        "device_code": "dc",
        "user_code": "WDJB-MJHT",
        "verification_uri": "https://idp.example/device",
        "expires_in": 600,
        **change,
    }
    with pytest.raises(LoginError, match="malformed"):
        parse_device_authorization(answer)


def test_pending_keeps_and_slow_down_lengthens_the_interval() -> None:
    assert interval_after("authorization_pending", None, 5.0) == 5.0
    assert interval_after("slow_down", None, 5.0) == 10.0


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ("access_denied", "denied"),
        ("expired_token", "expired"),
        ("invalid_grant", "invalid_grant: replayed"),
    ],
)
def test_other_token_errors_end_the_login(error: str, message: str) -> None:
    with pytest.raises(LoginError, match=message):
        interval_after(error, "replayed", 5.0)


# --- what is printed ----------------------------------------------------------------------


def test_prompt_has_an_open_line_with_the_complete_uri(capsys: pytest.CaptureFixture[str]) -> None:
    show_device_prompt(authorization())
    captured = capsys.readouterr()
    assert captured.out == ""
    opens = [line for line in captured.err.splitlines() if line.startswith("Open ")]
    assert opens == ["Open https://idp.example/device?user_code=WDJB-MJHT"]
    assert "WDJB-MJHT" in captured.err.replace(opens[0], "")


def test_prompt_without_a_complete_uri_has_no_open_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    show_device_prompt(authorization(complete=None))
    err = capsys.readouterr().err
    assert not any(line.startswith("Open ") for line in err.splitlines())
    assert "https://idp.example/device and enter the code WDJB-MJHT" in err


def test_key_is_printed_once_with_usage_hints(capsys: pytest.CaptureFixture[str]) -> None:
    show_key(GATEWAY, personal_key())
    out = capsys.readouterr().out
    assert out.count("enc_secret1") == 1
    assert f"export OPENAI_BASE_URL={GATEWAY}/v1\n" in out
    assert "export OPENAI_API_KEY=enc_secret1\n" in out
    assert f"Ollama clients: host {GATEWAY}" in out


# --- the credentials file -----------------------------------------------------------------


def test_credentials_path_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "cfg" / "enclave" / "credentials.json"
    assert credentials_path({"XDG_CONFIG_HOME": str(tmp_path / "cfg")}) == expected
    default = tmp_path / "home" / ".config" / "enclave" / "credentials.json"
    assert credentials_path({}) == default
    assert credentials_path({"XDG_CONFIG_HOME": "relative/dir"}) == default


def test_credentials_file_is_private_and_keyed_by_gateway(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "enclave" / "credentials.json"
    store_credentials(path, GATEWAY, personal_key(), ISSUER_A)
    store_credentials(path, "https://other.example", personal_key("enc_other"), ISSUER_B)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    entries = json.loads(path.read_text())
    assert entries[GATEWAY] == {
        "key": "enc_secret1",
        "id": "k1",
        "prefix": "enc_secr",
        "name": "laptop",
        "expires_at": "2030-01-01T00:00:00Z",
        "issuer": ISSUER_A,
    }
    assert entries["https://other.example"]["key"] == "enc_other"
    assert sorted(p.name for p in path.parent.iterdir()) == ["credentials.json"]


def test_a_new_login_replaces_the_file_by_rename(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    store_credentials(path, GATEWAY, personal_key(), ISSUER_A)
    path.chmod(0o644)  # even a file loosened by hand comes back private
    before = path.stat().st_ino
    store_credentials(path, GATEWAY, personal_key("enc_newer"), ISSUER_A)
    assert path.stat().st_ino != before  # a new file renamed over, never rewritten in place
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_credentials(path)[GATEWAY]["key"] == "enc_newer"


def test_a_failed_write_leaves_the_old_file_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "credentials.json"
    store_credentials(path, GATEWAY, personal_key(), ISSUER_A)
    old = path.read_bytes()

    def refuse(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(LoginError, match="No space left"):
        store_credentials(path, GATEWAY, personal_key("enc_lost"), ISSUER_A)
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["credentials.json"]


@pytest.mark.parametrize("content", ["not json", "[1, 2]"])
def test_an_unreadable_credentials_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "credentials.json"
    path.write_text(content)
    with pytest.raises(LoginError, match=str(path)):
        load_credentials(path)
    assert load_credentials(tmp_path / "missing.json") == {}
