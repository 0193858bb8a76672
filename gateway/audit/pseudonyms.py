"""The pseudonymisation key: HMAC key for user ids in the tamper-evident log.

Kept in a file, never in the database, so the log alone does not name people. Every
gateway replica must use the same key (mount one secret); the single-host default creates
one in the state directory on first start.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from gateway.audit.checkpointer import write_once

KEY_BYTES = 32


def load_or_create_pseudonym_key(path: Path) -> bytes:
    """The key in ``path`` (hex), created with mode 0600 when missing."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = secrets.token_hex(KEY_BYTES)
        try:
            write_once(path, text + "\n", mode=0o600)
        except FileExistsError:  # another process created it meanwhile
            return load_or_create_pseudonym_key(path)
    if path.stat().st_mode & 0o077:
        raise ValueError(f"pseudonym key {path} is readable by others; chmod 600 it")
    key = bytes.fromhex(text)
    if len(key) < KEY_BYTES:
        raise ValueError(f"pseudonym key {path} must hold at least {KEY_BYTES} bytes (hex)")
    return key
