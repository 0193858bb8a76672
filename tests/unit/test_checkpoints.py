"""Signed checkpoints: byte-compatible with Go's sumdb/note and transparency-dev, and strict."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from gateway.audit.checkpoints import (
    Checkpoint,
    CheckpointError,
    Signer,
    SigningKeyError,
    Verifier,
    generate_signer,
    load_signer,
    open_checkpoint,
    open_note,
    sign,
    sign_note,
)

DASH = "\u2014 "  # em dash, space: the start of every signature line

# golang.org/x/mod/sumdb/note: the package doc example and note_test.go (TestSign, TestOpen).
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    DASH + "PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    DASH + "EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)

# transparency-dev/formats log/note_test.go: key pairs made by Go's note.GenerateKey.
TRANSPARENCY_DEV_KEYS = [
    (
        "PRIVATE+KEY+Log+2271c621+AdEIq9FLRQni54Wg68T96VJO+iayOaulswav2DUMKgvQ",
        "Log+2271c621+AemuH5ooBpEPcr+W8onrjA1NfuzBVHdezakU81Ekarvs",
    ),
    (
        "PRIVATE+KEY+Known+451c786d+AQPRoE2+Z+Ed1HaHBA9F/FfracvcZ2rDU39kCecMEoci",
        "Known+451c786d+AXAQ0T7lbwuY4ABJ9/MYY9bWV3hmSyOGVt2x42NkmdUH",
    ),
    (
        "PRIVATE+KEY+KnownAgain+4893b26c+ARhZda/l25zjGZswYLDZsLNRzNpmv5wYTN9IoTr1OJ2+",
        "KnownAgain+4893b26c+AQ+LR7BFF/F/dkpIBjBpSvT0crkteizuUkavAoGeaYMj",
    ),
    (
        "PRIVATE+KEY+Unknown+fdbb2e08+Aav2knTC6orbhXX8pMWuNiWgO+Wwk2DB+h1eU2Q1W1nU",
        "Unknown+fdbb2e08+AWgRIYZ+8x1Vl+1Q+sR8zciNHiYI1SdlBjNw+RV0rots",
    ),
]

# transparency-dev/formats log/note_test.go (TestSumDBNoteParsing): a real checkpoint of the
# Go checksum database, signed by sum.golang.org's published key.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_CHECKPOINT = (
    "go.sum database tree\n"
    "6476701\n"
    "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n"
    "\n" + DASH + "sum.golang.org "
    "Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu95949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n"
)

ORIGIN = "audit.example/enclave"


def _reason(excinfo: pytest.ExceptionInfo[CheckpointError]) -> str:
    return excinfo.value.reason


def make_signer(name: str = ORIGIN) -> Signer:
    return Signer.from_key_string(generate_signer(name)[0])


def make_checkpoint(size: int = 7, extensions: tuple[str, ...] = ()) -> Checkpoint:
    return Checkpoint(ORIGIN, size, hashlib.sha256(b"root").digest(), extensions)


# --- interoperability: the published vectors ---------------------------------------------


def test_go_signer_key_derives_the_go_verifier_key() -> None:
    signer = Signer.from_key_string(PETER_SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_hash == 0xC74F20A3
    assert signer.verifier().key_string == PETER_VKEY


@pytest.mark.parametrize(("skey", "vkey"), TRANSPARENCY_DEV_KEYS)
def test_transparency_dev_signer_keys_derive_their_verifier_keys(skey: str, vkey: str) -> None:
    assert Signer.from_key_string(skey).verifier().key_string == vkey
    assert Verifier.from_key_string(vkey).key_string == vkey


def test_signing_reproduces_the_go_signed_note_byte_for_byte() -> None:
    assert sign_note(TEXT, Signer.from_key_string(PETER_SKEY)) == TEXT + "\n" + PETER_SIG


def test_the_go_note_opens_with_its_verifier_key() -> None:
    assert open_note(TEXT + "\n" + PETER_SIG, Verifier.from_key_string(PETER_VKEY)) == TEXT


@pytest.mark.parametrize("vkey", [PETER_VKEY, ENOCH_VKEY])
def test_a_doubly_signed_go_note_opens_with_either_key(vkey: str) -> None:
    note = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert open_note(note, Verifier.from_key_string(vkey)) == TEXT


def test_a_real_sum_golang_org_checkpoint_opens() -> None:
    verifier = Verifier.from_key_string(SUMDB_VKEY)
    checkpoint = open_checkpoint(SUMDB_CHECKPOINT, verifier, "go.sum database tree")
    assert checkpoint.origin == "go.sum database tree"
    assert checkpoint.size == 6476701
    assert checkpoint.root_hash == base64.b64decode("mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=")
    assert checkpoint.extensions == ()
    assert checkpoint.body() == SUMDB_CHECKPOINT.split("\n\n")[0] + "\n"


def test_the_sum_golang_org_checkpoint_is_refused_for_another_origin() -> None:
    verifier = Verifier.from_key_string(SUMDB_VKEY)
    with pytest.raises(CheckpointError) as excinfo:
        open_checkpoint(SUMDB_CHECKPOINT, verifier, "Go rocks but I might have the wrong ID")
    assert _reason(excinfo) == "wrong_origin"


def _manglings(key: str) -> list[str]:
    """Every proper substring and every one-character increment (Go's TestNewVerifier)."""
    substrings = [
        key[i:j]
        for i in range(len(key) + 1)
        for j in range(i + 1, len(key) + 1)
        if (i, j) != (0, len(key))
    ]
    increments = [key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :] for i in range(len(key))]
    return substrings + increments


def test_every_mangled_verifier_key_is_refused() -> None:
    accepted, reasons = [], set()
    for mangled in _manglings(PETER_VKEY):
        try:
            Verifier.from_key_string(mangled)
        except CheckpointError as exc:
            reasons.add(exc.reason)
        else:
            accepted.append(mangled)
    assert accepted == []
    assert reasons == {"malformed_key"}


def test_every_mangled_signer_key_is_refused() -> None:
    accepted = []
    for mangled in _manglings(PETER_SKEY):
        try:
            Signer.from_key_string(mangled)
        except SigningKeyError:
            pass
        else:
            accepted.append(mangled)
    assert accepted == []


@pytest.mark.parametrize(
    "vkey",
    [
        # From Go's TestNewVerifier: key hash adjusted, but the key is 36 bytes / type 0x65.
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_wrong_length_and_unknown_type_keys_are_refused(vkey: str) -> None:
    with pytest.raises(CheckpointError, match="malformed verifier key"):
        Verifier.from_key_string(vkey)


def test_the_private_key_quoted_in_the_brief_is_not_the_go_example() -> None:
    # 43 base64 characters cannot carry a type byte and a 32-byte seed.
    with pytest.raises(SigningKeyError, match="type byte and 32 key bytes"):
        Signer.from_key_string(
            "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxEXUKTQ"
        )


# --- note syntax and signature rules -----------------------------------------------------


@pytest.mark.parametrize(
    "note",
    [  # Go's TestOpen badMsgs, then a few of our own
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        "\udcff" + TEXT + "\n" + PETER_SIG,  # an undecodable byte, as Python surrogate-escapes it
        TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name")[:-1],
        TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name"),
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + PETER_SIG.replace(DASH, "- "),
        TEXT + "\n" + PETER_SIG.replace("=\n", "\n"),
        TEXT + "\n" + DASH + "PeterNeumann AAAA\n",
        TEXT + "\n" + PETER_SIG * 101,
    ],
)
def test_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(CheckpointError) as excinfo:
        open_note(note, Verifier.from_key_string(PETER_VKEY))
    assert _reason(excinfo) == "malformed_note"


def test_a_corrupted_go_signature_is_refused() -> None:
    note = TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]  # Go's TestOpen
    with pytest.raises(CheckpointError, match=r"invalid signature for key PeterNeumann\+c74f20a3"):
        open_note(note, Verifier.from_key_string(PETER_VKEY))


@pytest.mark.parametrize(
    "signature",
    [PETER_SIG.replace("PeterNeumann", "CarmenSandiego"), PETER_SIG.replace("x08g", "xxxx")],
    ids=["other-name", "other-key-hash"],
)
def test_a_signature_by_another_key_is_not_enough(signature: str) -> None:
    with pytest.raises(CheckpointError) as excinfo:
        open_note(TEXT + "\n" + signature, Verifier.from_key_string(PETER_VKEY))
    assert _reason(excinfo) == "unknown_key"


def test_repeated_valid_signatures_are_accepted() -> None:
    note = TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG
    assert open_note(note, Verifier.from_key_string(PETER_VKEY)) == TEXT


def test_a_bad_signature_by_the_verifier_key_is_refused_even_after_a_good_one() -> None:
    note = TEXT + "\n" + PETER_SIG + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(CheckpointError) as excinfo:
        open_note(note, Verifier.from_key_string(PETER_VKEY))
    assert _reason(excinfo) == "bad_signature"


def test_sign_note_refuses_text_without_final_newline_or_with_controls() -> None:
    signer = Signer.from_key_string(PETER_SKEY)
    for text in ["abc", "a\tb\n", "a\rb\n"]:
        with pytest.raises(CheckpointError):
            sign_note(text, signer)


# --- checkpoints: round trip, tampering, strict parsing ----------------------------------


def test_body_is_origin_size_base64_root_and_extensions() -> None:
    checkpoint = Checkpoint("example.com/log", 5, bytes(32), ("ext one", "ext two"))
    assert checkpoint.body() == (
        "example.com/log\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\next one\next two\n"
    )


@pytest.mark.parametrize("extensions", [(), ("timestamp 1700000000", "x")])
def test_signed_checkpoints_open_to_the_same_checkpoint(extensions: tuple[str, ...]) -> None:
    signer = make_signer()
    checkpoint = make_checkpoint(size=1234, extensions=extensions)
    note = sign(checkpoint, signer)
    assert note.startswith(checkpoint.body() + "\n" + DASH + ORIGIN + " ")
    assert open_checkpoint(note, signer.verifier(), ORIGIN) == checkpoint


def test_an_empty_tree_has_size_zero() -> None:
    signer = make_signer()
    checkpoint = Checkpoint(ORIGIN, 0, hashlib.sha256(b"").digest())
    assert open_checkpoint(sign(checkpoint, signer), signer.verifier(), ORIGIN).size == 0


@pytest.mark.parametrize(
    ("old", "new"),
    [("\n1234\n", "\n1235\n"), (ORIGIN + "\n", ORIGIN + "x\n"), ("=\n\n", "=\nextra\n\n")],
    ids=["size", "origin", "added-extension"],
)
def test_an_edited_body_is_refused(old: str, new: str) -> None:
    signer = make_signer()
    note = sign(make_checkpoint(size=1234), signer)
    assert old in note
    with pytest.raises(CheckpointError) as excinfo:
        open_checkpoint(note.replace(old, new, 1), signer.verifier(), ORIGIN)
    assert _reason(excinfo) == "bad_signature"


def test_an_edited_root_hash_is_refused() -> None:
    signer = make_signer()
    checkpoint = make_checkpoint()
    forged = Checkpoint(ORIGIN, checkpoint.size, hashlib.sha256(b"other").digest())
    signature_lines = sign(checkpoint, signer).split("\n\n")[1]
    with pytest.raises(CheckpointError) as excinfo:
        open_checkpoint(forged.body() + "\n" + signature_lines, signer.verifier(), ORIGIN)
    assert _reason(excinfo) == "bad_signature"


def test_an_edited_signature_is_refused() -> None:
    signer = make_signer()
    text, signature_line = sign(make_checkpoint(), signer).split("\n\n")
    name, encoded = signature_line.removeprefix(DASH).rstrip("\n").split(" ")
    raw = bytearray(base64.b64decode(encoded))
    raw[10] ^= 0x01  # inside the Ed25519 signature, after the 4-byte key hash
    edited = f"{text}\n\n{DASH}{name} {base64.b64encode(raw).decode()}\n"
    with pytest.raises(CheckpointError) as excinfo:
        open_checkpoint(edited, signer.verifier(), ORIGIN)
    assert _reason(excinfo) == "bad_signature"


def test_a_checkpoint_signed_by_another_key_of_the_same_name_is_refused() -> None:
    note = sign(make_checkpoint(), make_signer())
    with pytest.raises(CheckpointError) as excinfo:
        open_checkpoint(note, make_signer().verifier(), ORIGIN)
    assert _reason(excinfo) == "unknown_key"


def test_a_forger_cannot_borrow_the_key_hash_of_the_verifier() -> None:
    signer, forger = make_signer(), make_signer()
    text = make_checkpoint().body()
    forged = signer.key_hash.to_bytes(4, "big") + forger.sign(text.encode())
    note = f"{text}\n{DASH}{ORIGIN} {base64.b64encode(forged).decode()}\n"
    with pytest.raises(CheckpointError) as excinfo:
        open_checkpoint(note, signer.verifier(), ORIGIN)
    assert _reason(excinfo) == "bad_signature"


def test_a_checkpoint_for_another_origin_is_refused() -> None:
    signer = make_signer()
    with pytest.raises(CheckpointError, match="origin") as excinfo:
        open_checkpoint(sign(make_checkpoint(), signer), signer.verifier(), "other.example/log")
    assert _reason(excinfo) == "wrong_origin"


def test_unknown_cosigners_are_ignored_wherever_they_sign() -> None:
    signer, witness = make_signer(), make_signer("witness.example/w1")
    text = make_checkpoint().body()
    ours = sign_note(text, signer).split("\n\n")[1]
    theirs = sign_note(text, witness).split("\n\n")[1]
    for lines in (ours + theirs, theirs + ours):
        assert open_checkpoint(f"{text}\n{lines}", signer.verifier(), ORIGIN) == make_checkpoint()


@pytest.mark.parametrize(
    "size",
    ["007", "-1", "+5", "1_000", " 5", "5 ", "0x10", "\u0663", "1.0", "", "18446744073709551616"],
)
def test_tree_sizes_that_are_not_plain_decimal_are_refused(size: str) -> None:
    signer = make_signer()
    root = base64.b64encode(bytes(32)).decode()
    note = sign_note(f"{ORIGIN}\n{size}\n{root}\n", signer)
    with pytest.raises(CheckpointError) as excinfo:
        open_checkpoint(note, signer.verifier(), ORIGIN)
    assert _reason(excinfo) == "malformed_checkpoint"


def test_the_largest_tree_size_is_accepted() -> None:
    signer = make_signer()
    root = base64.b64encode(bytes(32)).decode()
    note = sign_note(f"{ORIGIN}\n18446744073709551615\n{root}\n", signer)
    assert open_checkpoint(note, signer.verifier(), ORIGIN).size == 2**64 - 1


@pytest.mark.parametrize(
    "root",
    [
        base64.b64encode(bytes(31)).decode(),
        base64.b64encode(bytes(33)).decode(),
        base64.b64encode(bytes(32)).decode().rstrip("="),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB=",  # non-canonical: stray low bits
        "not base64!",
        "",
    ],
)
def test_root_hashes_that_are_not_32_canonical_bytes_are_refused(root: str) -> None:
    signer = make_signer()
    note = sign_note(f"{ORIGIN}\n1\n{root}\n", signer)
    with pytest.raises(CheckpointError) as excinfo:
        open_checkpoint(note, signer.verifier(), ORIGIN)
    assert _reason(excinfo) == "malformed_checkpoint"


@pytest.mark.parametrize(
    "text",
    [f"{ORIGIN}\n1\n", f"{ORIGIN}\n", f"{ORIGIN}\n1\n{'A' * 43}=\n\nextension after blank\n"],
    ids=["no-root", "origin-only", "empty-extension-line"],
)
def test_bodies_with_missing_or_empty_lines_are_refused(text: str) -> None:
    signer = make_signer()
    with pytest.raises(CheckpointError) as excinfo:
        open_checkpoint(sign_note(text, signer), signer.verifier(), ORIGIN)
    assert _reason(excinfo) == "malformed_checkpoint"


@pytest.mark.parametrize(
    ("origin", "size", "root_hash", "extensions"),
    [
        ("", 1, bytes(32), ()),
        ("a\nb", 1, bytes(32), ()),
        ("a", -1, bytes(32), ()),
        ("a", 2**64, bytes(32), ()),
        ("a", True, bytes(32), ()),
        ("a", 1, bytes(20), ()),
        ("a", 1, bytes(32), ("",)),
        ("a", 1, bytes(32), ("x\ny",)),
        ("a", 1, bytes(32), ("tab\there",)),
    ],
)
def test_checkpoints_with_invalid_fields_cannot_be_built(
    origin: str, size: int, root_hash: bytes, extensions: tuple[str, ...]
) -> None:
    with pytest.raises(CheckpointError) as excinfo:
        Checkpoint(origin, size, root_hash, extensions)
    assert _reason(excinfo) == "malformed_checkpoint"


# --- keys --------------------------------------------------------------------------------


def test_generated_keys_are_go_formatted_and_work_together() -> None:
    private, public = generate_signer(ORIGIN)
    assert private.startswith(f"PRIVATE+KEY+{ORIGIN}+")
    signer, verifier = Signer.from_key_string(private), Verifier.from_key_string(public)
    key = base64.b64encode(b"\x01" + verifier.public_key).decode()
    assert public == f"{ORIGIN}+{verifier.key_hash:08x}+{key}"
    assert signer.key_hash == verifier.key_hash
    assert verifier.verify(b"hi", signer.sign(b"hi"))
    assert not verifier.verify(b"ho", signer.sign(b"hi"))


def test_key_hash_is_sha256_of_name_newline_type_and_key() -> None:
    verifier = Verifier.from_key_string(PETER_VKEY)
    digest = hashlib.sha256(b"PeterNeumann\n\x01" + verifier.public_key).digest()
    assert verifier.key_hash == int.from_bytes(digest[:4], "big")


@pytest.mark.parametrize("name", ["", "has space", "a+b", "tab\tname", "nbsp\u00a0name"])
def test_key_names_with_spaces_or_plus_are_refused(name: str) -> None:
    with pytest.raises(SigningKeyError):
        generate_signer(name)


def test_signer_repr_does_not_show_the_private_key() -> None:
    private, _ = generate_signer(ORIGIN)
    seed_b64 = private.rsplit("+", 1)[-1]
    assert seed_b64 not in repr(Signer.from_key_string(private))
    assert seed_b64[:8] not in repr(Signer.from_key_string(private))


def test_a_verifier_key_is_not_a_signing_key() -> None:
    with pytest.raises(SigningKeyError, match="PRIVATE"):
        Signer.from_key_string(PETER_VKEY)


def _write_key(path: Path, content: str, mode: int) -> Path:
    path.write_text(content)
    os.chmod(path, mode)
    return path


def test_load_signer_reads_an_owner_only_key_file(tmp_path: Path) -> None:
    path = _write_key(tmp_path / "checkpoint.key", PETER_SKEY + "\n", 0o600)
    signer = load_signer(path)
    assert signer.verifier().key_string == PETER_VKEY
    assert sign_note(TEXT, signer) == TEXT + "\n" + PETER_SIG


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o660])
def test_load_signer_refuses_a_key_file_others_can_access(tmp_path: Path, mode: int) -> None:
    path = _write_key(tmp_path / "checkpoint.key", PETER_SKEY, mode)
    with pytest.raises(SigningKeyError, match=f"permissions {mode:04o} .* too open"):
        load_signer(path)


@pytest.mark.parametrize(
    "content",
    ["", PETER_VKEY, "PRIVATE+KEY+garbage", PETER_SKEY[:-2]],
    ids=["empty", "vkey", "junk", "cut"],
)
def test_load_signer_refuses_a_file_without_a_signing_key(tmp_path: Path, content: str) -> None:
    with pytest.raises(SigningKeyError):
        load_signer(_write_key(tmp_path / "checkpoint.key", content, 0o600))


def test_load_signer_reports_a_missing_file_or_a_directory(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="cannot read signing key"):
        load_signer(tmp_path / "absent.key")
    os.chmod(tmp_path, 0o700)
    with pytest.raises(SigningKeyError):
        load_signer(tmp_path)
