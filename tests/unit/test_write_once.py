"""write_once: a file appears whole or not at all, never overwritten, with its mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gateway.audit import checkpointer
from gateway.audit.checkpointer import write_once


def test_the_file_is_written_once_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "key"
    write_once(path, "secret\n", mode=0o600)
    assert path.read_text() == "secret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(FileExistsError):
        write_once(path, "other\n", mode=0o600)
    assert path.read_text() == "secret\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]  # no temporary left


def test_nobody_sees_the_file_before_its_text_is_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "00000000000000000007.checkpoint"
    seen_while_writing: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        seen_while_writing.append(path.exists())
        real_fsync(fd)

    monkeypatch.setattr(checkpointer.os, "fsync", fsync)
    write_once(path, "note\n")
    assert seen_while_writing == [False]  # the text was synced before the name existed
    assert path.read_text() == "note\n"
