"""Sealed content: AES-256-GCM under subject keys wrapped by a master key; every binding
(record context, subject, period, key) is checked."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest

from gateway.audit.content import period_end, period_of
from gateway.audit.sealing import (
    SealError,
    load_or_create_master_key,
    new_wrapped_key,
    open_sealed,
    seal,
    unwrap_key,
)

MASTER = secrets.token_bytes(32)


def test_a_sealed_text_opens_with_its_key_and_context_only() -> None:
    key = unwrap_key(MASTER, "subj", "2026-11", new_wrapped_key(MASTER, "subj", "2026-11"))
    sealed = seal(key, "subj/2026-11", "Grüße, Herz", "req-1:prompt")
    assert sealed["kid"] == "subj/2026-11"
    assert "Herz" not in sealed["ct"]
    assert open_sealed(key, sealed, "req-1:prompt") == "Grüße, Herz"
    with pytest.raises(SealError):
        open_sealed(key, sealed, "req-2:prompt")  # moved to another record
    with pytest.raises(SealError):
        open_sealed(key, sealed, "req-1:answer")  # moved to another field
    with pytest.raises(SealError):
        open_sealed(secrets.token_bytes(32), sealed, "req-1:prompt")


def test_an_altered_ciphertext_does_not_open() -> None:
    key = secrets.token_bytes(32)
    sealed = seal(key, "k", "text", "c")
    raw = bytearray(base64.b64decode(sealed["ct"]))
    raw[-1] ^= 1
    with pytest.raises(SealError):
        open_sealed(key, sealed | {"ct": base64.b64encode(bytes(raw)).decode()}, "c")
    with pytest.raises(SealError):
        open_sealed(key, sealed | {"ct": "not base64!"}, "c")
    with pytest.raises(SealError):
        open_sealed(key, sealed | {"alg": "none"}, "c")


def test_a_wrapped_key_is_bound_to_its_subject_period_and_master() -> None:
    wrapped = new_wrapped_key(MASTER, "subj", "2026-11")
    assert len(unwrap_key(MASTER, "subj", "2026-11", wrapped)) == 32
    for subject, period, master in (
        ("other", "2026-11", MASTER),
        ("subj", "2026-12", MASTER),
        ("subj", "2026-11", secrets.token_bytes(32)),
    ):
        with pytest.raises(SealError):
            unwrap_key(master, subject, period, wrapped)


def test_the_master_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "content.key"
    key = load_or_create_master_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_create_master_key(path) == key
    path.chmod(0o644)
    with pytest.raises(ValueError, match="readable by others"):
        load_or_create_master_key(path)


def test_a_short_master_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "content.key"
    path.write_text("00" * 16)
    path.chmod(0o600)
    with pytest.raises(ValueError, match="32 bytes"):
        load_or_create_master_key(path)


def test_periods_are_calendar_months_in_utc() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    late = datetime(2026, 11, 30, 23, 30, tzinfo=timezone(timedelta(hours=-2)))
    assert period_of(late) == "2026-12"  # 01:30 UTC on 1 December
    assert period_end("2026-11") == datetime(2026, 12, 1, tzinfo=UTC)
    assert period_end("2026-12") == datetime(2027, 1, 1, tzinfo=UTC)
