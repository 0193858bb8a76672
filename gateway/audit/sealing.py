"""Sealed content: prompts and answers encrypted (AES-256-GCM) under a key per data subject
and month, each key wrapped by a master key that lives in a file, never in the database.

Destroying a subject's wrapped keys (crypto-shredding) makes their sealed text unreadable
while the records holding the ciphertext, and so the chain and the tree, stay intact.
The associated data binds each ciphertext to its record (request id and field) and each
wrapped key to its subject and period, so neither can be moved to another.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.audit.key_files import load_or_create_key

KEY_BYTES = 32
NONCE_BYTES = 12
ALGORITHM = "A256GCM"


class SealError(Exception):
    """A key or a ciphertext did not open: wrong key, shredded key, or altered bytes."""


def load_or_create_master_key(path: Path) -> bytes:
    """The master key in ``path`` (hex), created with mode 0600 when missing."""
    return load_or_create_key(path, KEY_BYTES, "content master key", exact=True)


def _encrypt(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def _decrypt(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except (InvalidTag, ValueError) as exc:
        raise SealError("the ciphertext does not open with this key") from exc


def _key_context(subject: str, period: str) -> bytes:
    return f"enclave subject key\n{subject}\n{period}".encode()


def new_wrapped_key(master: bytes, subject: str, period: str) -> bytes:
    """A fresh subject key, wrapped for storage."""
    return _encrypt(master, secrets.token_bytes(KEY_BYTES), _key_context(subject, period))


def unwrap_key(master: bytes, subject: str, period: str, wrapped: bytes) -> bytes:
    return _decrypt(master, wrapped, _key_context(subject, period))


def seal(key: bytes, key_id: str, text: str, context: str) -> dict[str, Any]:
    """``text`` sealed for a record: the JSON object that goes into the record's fields."""
    ciphertext = _encrypt(key, text.encode(), context.encode())
    return {"alg": ALGORITHM, "kid": key_id, "ct": base64.b64encode(ciphertext).decode()}


def open_sealed(key: bytes, sealed: dict[str, Any], context: str) -> str:
    if sealed.get("alg") != ALGORITHM or not isinstance(sealed.get("ct"), str):
        raise SealError("not a sealed value")
    try:
        ciphertext = base64.b64decode(sealed["ct"], validate=True)
    except ValueError as exc:
        raise SealError("the ciphertext is not base64") from exc
    return _decrypt(key, ciphertext, context.encode()).decode()
