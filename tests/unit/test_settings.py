"""Settings: environment parsing, and bad configuration stops the process with status 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gateway.settings import ConfigurationError, Settings, load_settings


def test_nested_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_HTTP__PORT", "9123")
    monkeypatch.setenv("ENCLAVE_QUEUE__LEASE_TIMEOUT_S", "2.5")
    monkeypatch.setenv("ENCLAVE_DATABASE__URL", "postgresql+asyncpg://u:p@db/enclave")
    settings = load_settings()
    assert settings.http.port == 9123
    assert settings.queue.lease_timeout_s == 2.5
    assert settings.database_url == "postgresql+asyncpg://u:p@db/enclave"
    assert "u:p" not in repr(settings)  # secrets stay out of logs


def test_defaults_are_the_embedded_ones(tmp_path: object) -> None:
    settings = Settings(state_dir=tmp_path)
    assert settings.database_url.startswith("sqlite+aiosqlite:///")
    assert settings.audit_database_url == settings.database_url


def test_sequencer_database_url_defaults_to_the_audit_one_and_can_be_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ENCLAVE_AUDIT__DATABASE_URL", "postgresql+asyncpg://gw:p@db/audit")
    assert load_settings().sequencer_database_url == "postgresql+asyncpg://gw:p@db/audit"

    monkeypatch.setenv(
        "ENCLAVE_AUDIT__SEQUENCER_DATABASE_URL", "postgresql+asyncpg://seq:s3cret@db/audit"
    )
    settings = load_settings()
    assert settings.sequencer_database_url == "postgresql+asyncpg://seq:s3cret@db/audit"
    assert settings.audit_database_url == "postgresql+asyncpg://gw:p@db/audit"
    assert "s3cret" not in repr(settings)


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCLAVE_HTTP__PORT", "not-a-port")
    with pytest.raises(ConfigurationError, match="ENCLAVE_HTTP__PORT"):
        load_settings()


def test_cli_exits_2_with_one_line_on_bad_configuration() -> None:
    env = dict(os.environ, ENCLAVE_QUEUE__LEASE_TIMEOUT_S="-1")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "ENCLAVE_QUEUE__LEASE_TIMEOUT_S" in lines[0]


def test_audit_metadata_is_kept_at_least_six_months(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().audit.metadata_retention_days == 6 * 365
    monkeypatch.setenv("ENCLAVE_AUDIT__METADATA_RETENTION_DAYS", "90")
    with pytest.raises(ConfigurationError, match="ENCLAVE_AUDIT__METADATA_RETENTION_DAYS"):
        load_settings()
    monkeypatch.setenv("ENCLAVE_AUDIT__METADATA_RETENTION_DAYS", "183")
    assert load_settings().audit.metadata_retention_days == 183
