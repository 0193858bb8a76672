"""The pseudonymisation key: HMAC key for user ids in the tamper-evident log.

Kept in a file, never in the database, so the log alone does not name people. Every
gateway replica must use the same key (mount one secret); the single-host default creates
one in the state directory on first start.
"""

from __future__ import annotations

from pathlib import Path

from gateway.audit.key_files import load_or_create_key

KEY_BYTES = 32


def load_or_create_pseudonym_key(path: Path) -> bytes:
    """The key in ``path`` (hex), created with mode 0600 when missing."""
    return load_or_create_key(path, KEY_BYTES, "pseudonym key")
