"""Key file permissions: PostgreSQL's rule, as a Kubernetes Secret volume with fsGroup needs."""

from __future__ import annotations

import os

import pytest

from gateway.audit import key_modes

ME = 10001


def status(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((0o100000 | mode, 1, 1, 1, uid, 10001, 64, 0, 0, 0))


@pytest.fixture(autouse=True)
def unprivileged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(key_modes.os, "geteuid", lambda: ME)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_my_own_key_file_readable_by_me_only_is_accepted(mode: int) -> None:
    assert key_modes.too_open(status(mode, ME)) is None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_my_own_key_file_readable_by_anyone_else_is_refused(mode: int) -> None:
    problem = key_modes.too_open(status(mode, ME))
    assert problem is not None
    assert f"{mode:04o}" in problem
    assert "chmod 600" in problem


@pytest.mark.parametrize("mode", [0o440, 0o400, 0o640, 0o600])
def test_a_root_owned_key_file_readable_by_its_group_is_accepted(mode: int) -> None:
    """What a Kubernetes Secret volume with defaultMode 0440 and fsGroup looks like."""
    assert key_modes.too_open(status(mode, 0)) is None


@pytest.mark.parametrize("mode", [0o444, 0o404, 0o460, 0o644])
def test_a_root_owned_key_file_others_may_read_or_its_group_write_is_refused(mode: int) -> None:
    problem = key_modes.too_open(status(mode, 0))
    assert problem is not None
    assert "0640" in problem


def test_a_key_file_of_another_unprivileged_user_is_refused() -> None:
    problem = key_modes.too_open(status(0o400, 1000))
    assert problem is not None
    assert "uid 1000" in problem


def test_root_itself_gets_the_strict_rule_for_its_own_files(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(key_modes.os, "geteuid", lambda: 0)
    assert key_modes.too_open(status(0o440, 0)) is not None
    assert key_modes.too_open(status(0o400, 0)) is None
