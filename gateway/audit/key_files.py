"""Secret keys kept in files, never in the database: read, or created on first start.

A key file holds the key in hex and must be readable by its owner only (mode 0600), or be
owned by root and readable by its group at most (see ``key_modes``). Two processes starting
together agree on one key: the file is created exclusively.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from gateway.audit.checkpointer import write_once
from gateway.audit.key_modes import too_open


def load_or_create_key(path: Path, size: int, what: str, *, exact: bool = False) -> bytes:
    """The key in ``path``, created (``size`` random bytes, mode 0600) when missing.

    Refuses a file others may read, and a key shorter than ``size`` bytes (or of another
    length, when ``exact``).
    """
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = secrets.token_hex(size)
        try:
            write_once(path, text + "\n", mode=0o600)
        except FileExistsError:  # another process created it meanwhile
            return load_or_create_key(path, size, what, exact=exact)
    if problem := too_open(path.stat()):
        raise ValueError(f"{what} {path} is readable by others: {problem}")
    key = bytes.fromhex(text)
    if len(key) < size or (exact and len(key) != size):
        amount = f"{size} bytes" if exact else f"at least {size} bytes"
        raise ValueError(f"{what} {path} must hold {amount} (hex)")
    return key
