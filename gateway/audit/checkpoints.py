"""Signed tree heads: C2SP tlog-checkpoint bodies in C2SP signed notes, signed with Ed25519.

The bytes are those of Go's golang.org/x/mod/sumdb/note and transparency-dev, so their tools
verify our checkpoints and we verify theirs. The signing key lives in a file outside the
database; the verifier key is public and may be handed to anyone who holds a checkpoint.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.audit.key_modes import too_open
from gateway.errors import EnclaveError, InvalidRequest

ED25519 = 0x01  # signature type byte (c2sp.org/signed-note)
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"
MAX_SIGNATURES = 100  # as Go's note.Open; the spec asks verifiers to accept at least 16
MAX_TREE_SIZE = 2**64 - 1
ROOT_HASH_BYTES = 32
MAX_KEY_FILE_BYTES = 4096
_KEY_BYTES = 32
_HEX32 = re.compile(r"[0-9a-fA-F]{8}")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")


class CheckpointError(InvalidRequest):
    """A note or checkpoint that does not verify or parse; ``reason`` names the failure.

    Reasons: malformed_key, malformed_note, unknown_key, bad_signature,
    malformed_checkpoint, wrong_origin.
    """

    default_code = "invalid_checkpoint"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class SigningKeyError(EnclaveError):
    """The checkpoint signing key (a server secret) is missing, malformed or exposed."""

    default_code = "signing_key_invalid"


class Verifier:
    """A public Ed25519 note key: ``<name>+<hex key hash>+<base64(0x01 || key)>``."""

    __slots__ = ("_key", "key_hash", "name", "public_key")

    def __init__(self, name: str, public_key: bytes) -> None:
        if not _is_valid_name(name) or len(public_key) != _KEY_BYTES:
            raise CheckpointError(
                "a verifier needs a name and a 32-byte key", reason="malformed_key"
            )
        self.name = name
        self.public_key = public_key
        self.key_hash = _key_hash(name, public_key)
        self._key = Ed25519PublicKey.from_public_bytes(public_key)

    @classmethod
    def from_key_string(cls, key: str) -> Verifier:
        try:
            name, key_hash, public_key = _parse_key(key)
        except ValueError as exc:
            raise CheckpointError(f"malformed verifier key: {exc}", reason="malformed_key") from exc
        verifier = cls(name, public_key)
        if verifier.key_hash != key_hash:
            raise CheckpointError("malformed verifier key: wrong key hash", reason="malformed_key")
        return verifier

    @property
    def key_string(self) -> str:
        return _key_string(self.name, self.key_hash, self.public_key)

    @property
    def key_id(self) -> str:
        return f"{self.name}+{self.key_hash:08x}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"Verifier({self.key_string!r})"


class Signer:
    """A private Ed25519 note key with its name; its repr never shows the key."""

    __slots__ = ("_key", "key_hash", "name", "public_key")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not _is_valid_name(name):
            raise SigningKeyError("a key name must be non-empty, without spaces, '+' or controls")
        self.name = name
        self.public_key = private_key.public_key().public_bytes_raw()
        self.key_hash = _key_hash(name, self.public_key)
        self._key = private_key

    @classmethod
    def from_key_string(cls, key: str) -> Signer:
        if not key.startswith(PRIVATE_KEY_PREFIX):
            raise SigningKeyError(f"a signing key string starts with {PRIVATE_KEY_PREFIX}")
        try:
            name, key_hash, seed = _parse_key(key.removeprefix(PRIVATE_KEY_PREFIX))
        except ValueError as exc:
            raise SigningKeyError(f"malformed signing key: {exc}") from exc
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        if signer.key_hash != key_hash:
            raise SigningKeyError("malformed signing key: wrong key hash")
        return signer

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def verifier(self) -> Verifier:
        return Verifier(self.name, self.public_key)

    def __repr__(self) -> str:
        return f"Signer({self.name}+{self.key_hash:08x})"


def generate_signer(name: str) -> tuple[str, str]:
    """A new key pair as (private key string, verifier key string)."""
    private_key = Ed25519PrivateKey.generate()
    signer = Signer(name, private_key)
    seed = private_key.private_bytes_raw()
    private = PRIVATE_KEY_PREFIX + _key_string(name, signer.key_hash, seed)
    return private, signer.verifier().key_string


def load_signer(path: str | os.PathLike[str]) -> Signer:
    """Read a private key file, refusing one that others may access (``key_modes``)."""
    try:
        with open(path, "rb") as file:
            mode = os.fstat(file.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise SigningKeyError(f"signing key {os.fspath(path)} is not a regular file")
            if problem := too_open(os.fstat(file.fileno())):
                raise SigningKeyError(f"signing key {os.fspath(path)}: {problem}")
            data = file.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise SigningKeyError(f"cannot read signing key {os.fspath(path)}: {exc.strerror}") from exc
    if len(data) > MAX_KEY_FILE_BYTES:
        raise SigningKeyError(f"signing key {os.fspath(path)} is too large to be a key")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SigningKeyError(f"signing key {os.fspath(path)} is not UTF-8 text") from exc
    return Signer.from_key_string(text.strip())


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin, number of leaves, RFC 6962 root hash, optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions))
        if not self.origin or not _is_line(self.origin):
            raise _bad_checkpoint("the origin must be one non-empty line of text")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise _bad_checkpoint("the tree size must be an integer")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise _bad_checkpoint(f"tree size {self.size} is outside 0..2^64-1")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != ROOT_HASH_BYTES:
            raise _bad_checkpoint(f"the root hash must be {ROOT_HASH_BYTES} bytes")
        if not all(extension and _is_line(extension) for extension in self.extensions):
            raise _bad_checkpoint("extension lines must be non-empty lines of text")

    def body(self) -> str:
        """The note text: one line each for origin, size, base64 root, then extensions."""
        root = base64.b64encode(self.root_hash).decode()
        lines = (self.origin, str(self.size), root, *self.extensions)
        return "".join(f"{line}\n" for line in lines)


def sign(checkpoint: Checkpoint, signer: Signer) -> str:
    """The whole signed note for checkpoint."""
    return sign_note(checkpoint.body(), signer)


def open_checkpoint(note_text: str, verifier: Verifier, expected_origin: str) -> Checkpoint:
    """The checkpoint in note_text, once verifier's signature holds and every line parses."""
    lines = open_note(note_text, verifier).split("\n")[:-1]  # the text ends in a newline
    if len(lines) < 3:
        raise _bad_checkpoint("a checkpoint has an origin, a tree size and a root hash line")
    origin, size, root, *extensions = lines
    if origin != expected_origin:
        raise CheckpointError(
            f"checkpoint origin {_excerpt(origin)} is not {_excerpt(expected_origin)}",
            reason="wrong_origin",
        )
    if not _DECIMAL.fullmatch(size):
        raise _bad_checkpoint(f"tree size {_excerpt(size)} is not decimal without leading zeros")
    if len(size) > len(str(MAX_TREE_SIZE)):
        raise _bad_checkpoint(f"tree size {_excerpt(size)} is outside 0..2^64-1")
    root_hash = _b64decode(root)
    if root_hash is None or base64.b64encode(root_hash).decode() != root:
        raise _bad_checkpoint(f"root hash {_excerpt(root)} is not canonical base64")
    return Checkpoint(origin, int(size), root_hash, tuple(extensions))


def sign_note(text: str, signer: Signer) -> str:
    """text followed by a blank line and signer's signature line."""
    if not text.endswith("\n") or not _is_note_text(text):
        raise _malformed("the text must be UTF-8 ending in a newline, without control characters")
    signature = signer.key_hash.to_bytes(4, "big") + signer.sign(text.encode())
    return f"{text}\n{SIGNATURE_PREFIX}{signer.name} {base64.b64encode(signature).decode()}\n"


def open_note(note: str, verifier: Verifier) -> str:
    """The text of a note that verifier signed; other keys' signatures are ignored."""
    text, signatures = _split_note(note)
    others: list[str] = []
    is_verified = False
    for name, key_hash, signature in signatures:
        if (name, key_hash) != (verifier.name, verifier.key_hash):
            others.append(f"{name}+{key_hash:08x}")
        elif verifier.verify(text.encode(), signature):
            is_verified = True
        else:
            raise CheckpointError(
                f"invalid signature for key {verifier.key_id}", reason="bad_signature"
            )
    if not is_verified:
        raise CheckpointError(
            f"the note carries no signature by key {verifier.key_id}"
            f" (signed by: {', '.join(others)})",
            reason="unknown_key",
        )
    return text


def _split_note(note: str) -> tuple[str, list[tuple[str, int, bytes]]]:
    if not _is_note_text(note):
        raise _malformed("a note is UTF-8 text without control characters other than newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise _malformed("no blank line separates the text from the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise _malformed("the signature lines must end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise _malformed(f"more than {MAX_SIGNATURES} signatures")
    return text, [_parse_signature_line(line) for line in lines]


def _parse_signature_line(line: str) -> tuple[str, int, bytes]:
    if not line.startswith(SIGNATURE_PREFIX):
        raise _malformed("a signature line starts with an em dash (U+2014) and a space")
    name, _, encoded = line.removeprefix(SIGNATURE_PREFIX).partition(" ")
    raw = _b64decode(encoded)
    if not _is_valid_name(name) or raw is None or len(raw) < 5:
        raise _malformed("a signature line is '\u2014 <key name> <base64(key hash, signature)>'")
    return name, int.from_bytes(raw[:4], "big"), raw[4:]


def _parse_key(key: str) -> tuple[str, int, bytes]:
    """``<name>+<hex hash>+<base64(0x01 || 32 bytes)>`` as (name, hash, key bytes)."""
    name, _, rest = key.partition("+")
    hash_hex, _, encoded = rest.partition("+")
    if not _is_valid_name(name):
        raise ValueError("the name must be non-empty, without spaces, '+' or controls")
    if not _HEX32.fullmatch(hash_hex):
        raise ValueError("the key hash must be 8 hexadecimal digits")
    raw = _b64decode(encoded)
    if raw is None or len(raw) != 1 + _KEY_BYTES:
        raise ValueError("the key must be base64 of a type byte and 32 key bytes")
    if raw[0] != ED25519:
        raise ValueError(f"unknown signature type {raw[0]:#04x} (only Ed25519, 0x01)")
    return name, int(hash_hex, 16), raw[1:]


def _key_string(name: str, key_hash: int, key: bytes) -> str:
    return f"{name}+{key_hash:08x}+{base64.b64encode(bytes([ED25519]) + key).decode()}"


def _key_hash(name: str, public_key: bytes) -> int:
    """First 4 bytes of SHA-256(name || 0x0A || 0x01 || public key), big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _is_valid_name(name: str) -> bool:
    """Non-empty, no Unicode space, no '+' (c2sp.org/signed-note)."""
    is_spaced = any(char.isspace() for char in name)
    return bool(name) and "+" not in name and not is_spaced and _is_note_text(name)


def _is_note_text(text: str) -> bool:
    """Encodable as UTF-8 (no lone surrogates), no ASCII control character but newline."""
    if _CONTROL.search(text):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_line(text: str) -> bool:
    return "\n" not in text and _is_note_text(text)


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _excerpt(text: str) -> str:
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def _malformed(detail: str) -> CheckpointError:
    return CheckpointError(f"malformed note: {detail}", reason="malformed_note")


def _bad_checkpoint(detail: str) -> CheckpointError:
    return CheckpointError(f"malformed checkpoint: {detail}", reason="malformed_checkpoint")
