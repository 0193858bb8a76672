"""Audit exports: a signed checkpoint and proven records, verified offline; tampering is found."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.chain import GENESIS_PREV, ChainedRecord, chain_fields, envelope
from gateway.audit.checkpoints import Checkpoint, Signer, generate_signer, sign
from gateway.audit.export import (
    ExportFault,
    ExportReport,
    export_header,
    export_line,
    verify_export,
)
from gateway.audit.merkle import inclusion_proof, leaf_hash, root
from gateway.cli import main

ORIGIN = "hospital.example/enclave"
SIZE = 7
Lines = list[str]


def make_signer(name: str = ORIGIN) -> Signer:
    return Signer.from_key_string(generate_signer(name)[0])


def build_log(n: int = SIZE, user: str = "Zoë") -> list[bytes]:
    """The stored bytes of a chain of ``n`` records."""
    records: list[ChainedRecord] = []
    for seq in range(n):
        prev = records[-1].leaf if records else None
        fields = {"event": "accepted", "request_id": f"chatcmpl-{seq}", "user": user}
        records.append(chain_fields(seq, prev, fields))
    return [record.data for record in records]


def make_export(
    log: Sequence[bytes],
    signer: Signer,
    seqs: Sequence[int] | None = None,
    *,
    size: int | None = None,
    origin: str = ORIGIN,
) -> Lines:
    """An export of records ``seqs`` (default: all) under a checkpoint of ``size`` records."""
    leaves = [leaf_hash(data) for data in log][:size]
    note = sign(Checkpoint(origin, len(leaves), root(leaves)), signer)
    lines = [export_header(ORIGIN, note)]
    for seq in range(len(leaves)) if seqs is None else seqs:
        lines.append(export_line(seq, log[seq], inclusion_proof(leaves, seq)))
    return lines


def edit(lines: Lines, number: int, **changes: Any) -> Lines:
    """A copy of ``lines`` with JSON members of (1-based) line ``number`` replaced."""
    value = json.loads(lines[number - 1])
    value.update(changes)
    edited = list(lines)
    edited[number - 1] = json.dumps(value, ensure_ascii=False) + "\n"
    return edited


def member(lines: Lines, number: int, name: str) -> Any:
    return json.loads(lines[number - 1])[name]


def where(report: ExportReport) -> tuple[int, int | None, str]:
    assert report.fault is not None, report
    return report.fault.line, report.fault.seq, report.fault.reason


@pytest.fixture(scope="module")
def signer() -> Signer:
    return make_signer()


@pytest.fixture(scope="module")
def log() -> list[bytes]:
    return build_log()


# --- what verifies --------------------------------------------------------------------


def test_an_export_of_the_whole_log_verifies(log: list[bytes], signer: Signer) -> None:
    lines = make_export(log, signer)

    assert len(lines) == 1 + SIZE
    assert all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    assert verify_export(lines, signer.verifier(), ORIGIN) == ExportReport(SIZE, SIZE, None)


@pytest.mark.parametrize("seqs", [[0, 2, 3, 6], [4, 5], [6], [1, 3, 5]])
def test_an_export_with_gaps_verifies(log: list[bytes], signer: Signer, seqs: list[int]) -> None:
    lines = make_export(log, signer, seqs)

    assert [member(lines, n, "seq") for n in range(2, len(lines) + 1)] == seqs
    assert verify_export(lines, signer.verifier(), ORIGIN) == ExportReport(len(seqs), SIZE, None)


def test_a_header_without_records_verifies(log: list[bytes], signer: Signer) -> None:
    lines = make_export(log, signer, [])

    assert verify_export(lines, signer.verifier(), ORIGIN) == ExportReport(0, SIZE, None)


def test_the_export_carries_the_exact_stored_bytes(log: list[bytes], signer: Signer) -> None:
    lines = make_export(log, signer)

    assert "Zoë" in lines[1]  # not \u00eb: the text is the record's own UTF-8
    assert member(lines, 2, "record").encode() == log[0]
    assert member(lines, 2, "leaf") == leaf_hash(log[0]).hex()
    assert member(lines, 1, "checkpoint").startswith(f"{ORIGIN}\n{SIZE}\n")


def test_reformatted_record_text_does_not_verify(log: list[bytes], signer: Signer) -> None:
    """The same JSON value in other bytes is another record: the verifier never re-serialises."""
    lines = make_export(log, signer)
    spaced = json.dumps(json.loads(log[2]), ensure_ascii=True)  # same value, other bytes
    assert json.loads(spaced) == json.loads(log[2])

    report = verify_export(edit(lines, 4, record=spaced), signer.verifier(), ORIGIN)

    assert where(report) == (4, 2, "not_a_record")


def test_export_line_refuses_bytes_that_are_not_utf8() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        export_line(
            0, b'{"fields":{"x":"\xff"},"prev":"' + GENESIS_PREV.encode() + b'","seq":0}', []
        )


# --- tampered records -----------------------------------------------------------------


def change_one_byte(lines: Lines) -> Lines:
    text = member(lines, 5, "record")
    assert "chatcmpl-3" in text
    return edit(lines, 5, record=text.replace("chatcmpl-3", "chatcmpl-8"))


def change_one_byte_and_its_leaf(lines: Lines) -> Lines:
    edited = change_one_byte(lines)
    return edit(edited, 5, leaf=leaf_hash(member(edited, 5, "record").encode()).hex())


def alter_a_proof_hash(lines: Lines) -> Lines:
    proof = member(lines, 4, "proof")
    proof[1] = ("0" if proof[1][0] != "0" else "1") + proof[1][1:]
    return edit(lines, 4, proof=proof)


def drop_a_proof_hash(lines: Lines) -> Lines:
    return edit(lines, 4, proof=member(lines, 4, "proof")[:-1])


def swap_two_records(lines: Lines) -> Lines:
    return [*lines[:4], lines[5], lines[4], *lines[6:]]


def repeat_a_record(lines: Lines) -> Lines:
    return [*lines[:5], lines[4], *lines[5:]]


def edit_a_seq(lines: Lines) -> Lines:
    return edit(lines, 5, seq=5)


def edit_the_seq_inside_a_record(lines: Lines) -> Lines:
    text = member(lines, 5, "record")
    assert text.endswith('"seq":3}')
    forged = text.removesuffix('"seq":3}') + '"seq":5}'
    return edit(lines, 5, seq=5, record=forged, leaf=leaf_hash(forged.encode()).hex())


def replace_with_non_json(lines: Lines) -> Lines:
    return [*lines[:3], "{not json\n", *lines[4:]]


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (change_one_byte, (5, 3, "leaf_mismatch")),
        (change_one_byte_and_its_leaf, (5, 3, "bad_proof")),
        (alter_a_proof_hash, (4, 2, "bad_proof")),
        (drop_a_proof_hash, (4, 2, "bad_proof")),
        (swap_two_records, (6, 3, "seq_out_of_order")),
        (repeat_a_record, (6, 3, "seq_out_of_order")),
        (edit_a_seq, (5, 5, "seq_mismatch")),
        (edit_the_seq_inside_a_record, (5, 5, "bad_proof")),
        (replace_with_non_json, (4, None, "malformed_line")),
    ],
)
def test_a_tampered_record_is_found_on_its_line(
    log: list[bytes],
    signer: Signer,
    tamper: Callable[[Lines], Lines],
    expected: tuple[int, int | None, str],
) -> None:
    lines = make_export(log, signer)
    tampered = tamper(lines)
    assert tampered != lines

    report = verify_export(tampered, signer.verifier(), ORIGIN)

    assert where(report) == expected
    assert report.records == expected[0] - 2  # the record lines before the fault held
    assert report.tree_size == SIZE


@pytest.mark.parametrize(
    "changes",
    [
        {"leaf": "AB" * 32},  # hex, but not lowercase
        {"leaf": "ab" * 31},
        {"proof": "ab" * 32},
        {"proof": [1]},
        {"seq": True},
        {"seq": "3"},
        {"seq": -1},
        {"seq": 3.0},
        {"record": {"fields": {}}},
        {"type": "header"},
        {"extra": 1},
        {"record": "\ud800"},  # a lone surrogate: no UTF-8 bytes to hash
    ],
)
def test_a_malformed_record_line_is_a_fault(
    log: list[bytes], signer: Signer, changes: dict[str, Any]
) -> None:
    lines = edit(make_export(log, signer), 5, **changes)

    report = verify_export(lines, signer.verifier(), ORIGIN)

    assert report.fault is not None
    assert (report.fault.line, report.fault.reason) == (5, "malformed_line")


def test_a_record_beyond_the_checkpoint_is_a_fault(log: list[bytes], signer: Signer) -> None:
    lines = make_export(log, signer, size=5)
    full_tree = [leaf_hash(data) for data in log]
    lines.append(export_line(5, log[5], inclusion_proof(full_tree, 5)))

    report = verify_export(lines, signer.verifier(), ORIGIN)

    assert (report.records, report.tree_size) == (5, 5)
    assert where(report) == (7, 5, "seq_beyond_checkpoint")


def test_a_record_of_another_tree_does_not_verify(log: list[bytes], signer: Signer) -> None:
    other = build_log(SIZE, user="Ana")  # another history of the same length
    lines = make_export(log, signer, [1, 2])
    other_leaves = [leaf_hash(data) for data in other]
    lines.append(export_line(5, other[5], inclusion_proof(other_leaves, 5)))
    assert other[5] != log[5]

    assert where(verify_export(lines, signer.verifier(), ORIGIN)) == (4, 5, "bad_proof")


# --- a signed log that breaks the chain rules ---------------------------------------------


def test_a_signed_record_that_breaks_the_chain_is_found(log: list[bytes], signer: Signer) -> None:
    forged = chain_fields(3, leaf_hash(log[1]), {"event": "accepted"}).data
    broken = [*log[:3], forged, *log[4:]]

    full = verify_export(make_export(broken, signer), signer.verifier(), ORIGIN)
    with_gap = verify_export(make_export(broken, signer, [0, 1, 3]), signer.verifier(), ORIGIN)

    assert where(full) == (5, 3, "broken_link")
    assert with_gap == ExportReport(3, SIZE, None)  # without record 2 there is no link to check


def test_a_first_record_must_follow_genesis(signer: Signer) -> None:
    first = envelope(0, "ab" * 32, b'{"event":"accepted"}')

    report = verify_export(make_export([first], signer), signer.verifier(), ORIGIN)

    assert where(report) == (2, 0, "broken_link")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (envelope(2, GENESIS_PREV, b'{"b":1,"a":2}'), "not_a_record"),  # not canonical
        (b'{"fields":{},"prev":"' + GENESIS_PREV.encode() + b'","seq":2,"x":1}', "not_a_record"),
        (b'{"fields":{},"prev":"zz","seq":2}', "not_a_record"),
        (b'{"fields":[],"prev":"' + GENESIS_PREV.encode() + b'","seq":2}', "not_a_record"),
        (b"[2]", "not_a_record"),
        (b"not json", "not_a_record"),
        (envelope(3, GENESIS_PREV, b"{}"), "seq_mismatch"),
        (b'{"fields":{},"prev":"' + GENESIS_PREV.encode() + b'","seq":"2"}', "seq_mismatch"),
    ],
)
def test_signed_bytes_that_are_no_chained_record_are_found(
    log: list[bytes], signer: Signer, data: bytes, reason: str
) -> None:
    odd = [*log[:2], data, *log[3:]]

    report = verify_export(make_export(odd, signer), signer.verifier(), ORIGIN)

    assert where(report) == (4, 2, reason)


# --- the header and the checkpoint --------------------------------------------------------


def edit_the_checkpoint_size(lines: Lines) -> Lines:
    note = member(lines, 1, "checkpoint")
    assert f"\n{SIZE}\n" in note
    return edit(lines, 1, checkpoint=note.replace(f"\n{SIZE}\n", f"\n{SIZE - 1}\n", 1))


def edit_the_checkpoint_root(lines: Lines) -> Lines:
    note = member(lines, 1, "checkpoint")
    origin, size, root_b64, rest = note.split("\n", 3)
    flipped = ("B" if root_b64[0] != "B" else "C") + root_b64[1:]
    return edit(lines, 1, checkpoint="\n".join([origin, size, flipped, rest]))


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (edit_the_checkpoint_size, "bad_signature"),
        (edit_the_checkpoint_root, "bad_signature"),
        (lambda lines: edit(lines, 1, origin="clinic.example/enclave"), "wrong_origin"),
        (lambda lines: edit(lines, 1, checkpoint="no note\n"), "malformed_note"),
        (lambda lines: edit(lines, 1, version=2), "bad_header"),
        (lambda lines: edit(lines, 1, version=True), "bad_header"),
        (lambda lines: edit(lines, 1, type="something-else"), "bad_header"),
        (lambda lines: edit(lines, 1, checkpoint=None), "bad_header"),
        (lambda lines: ["{", *lines[1:]], "bad_header"),
        (lambda lines: lines[1:], "bad_header"),  # no header: a record line first
    ],
)
def test_a_bad_header_is_found_on_line_1(
    log: list[bytes], signer: Signer, tamper: Callable[[Lines], Lines], reason: str
) -> None:
    tampered = tamper(make_export(log, signer))

    report = verify_export(tampered, signer.verifier(), ORIGIN)

    assert report == ExportReport(0, None, report.fault)
    assert where(report) == (1, None, reason)


def test_a_checkpoint_by_another_key_is_refused(log: list[bytes], signer: Signer) -> None:
    impostor = make_signer()  # same name, another key
    lines = make_export(log, impostor)

    assert where(verify_export(lines, signer.verifier(), ORIGIN)) == (1, None, "bad_signature")
    assert verify_export(lines, impostor.verifier(), ORIGIN).fault is None


def test_the_trusted_origin_decides_not_the_file(log: list[bytes], signer: Signer) -> None:
    lines = make_export(log, signer)
    other_log = make_export(log, signer, origin="clinic.example/enclave")  # header still ORIGIN

    assert where(verify_export(lines, signer.verifier(), "clinic.example/enclave")) == (
        1,
        None,
        "wrong_origin",
    )
    assert where(verify_export(other_log, signer.verifier(), ORIGIN)) == (1, None, "wrong_origin")


def test_an_empty_export_is_a_fault(signer: Signer) -> None:
    report = verify_export([], signer.verifier(), ORIGIN)

    assert report == ExportReport(
        0, None, ExportFault(1, None, "bad_header", "the export is empty")
    )


# --- the command ------------------------------------------------------------------------------


def run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """Exit code and standard output of ``enclave audit verify-export ARGS``."""
    monkeypatch.setenv("ENCLAVE_AUDIT__ORIGIN", ORIGIN)
    code = main(["audit", "verify-export", *args])
    return code, capsys.readouterr().out


def test_the_command_verifies_an_export_file(
    log: list[bytes],
    signer: Signer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text("".join(make_export(log, signer, [0, 2, 5])), encoding="utf-8")
    key = signer.verifier().key_string

    assert run_cli(monkeypatch, capsys, str(path), "--key", key) == (
        0,
        "ok: 3 records verified against checkpoint 7\n",
    )
    monkeypatch.setenv("ENCLAVE_AUDIT__VERIFIER_KEY", key)  # without --key: the configured one
    assert run_cli(monkeypatch, capsys, str(path))[0] == 0


def test_the_command_names_the_first_fault(
    log: list[bytes],
    signer: Signer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text("".join(change_one_byte(make_export(log, signer))), encoding="utf-8")
    key = signer.verifier().key_string

    code, out = run_cli(monkeypatch, capsys, str(path), "--key", key)

    assert code == 1
    assert out.startswith("FAILED: leaf_mismatch at line 5 (record 3): ")
    other_key = make_signer().verifier().key_string
    code, out = run_cli(monkeypatch, capsys, str(path), "--key", other_key)
    assert (code, out.split(":")[:2]) == (1, ["FAILED", " bad_signature at line 1"])


def test_the_command_reports_bytes_that_are_not_utf8(
    log: list[bytes],
    signer: Signer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = make_export(log, signer)
    path = tmp_path / "export.jsonl"
    path.write_bytes("".join(lines).encode().replace("Zoë".encode(), b"Zo\xff", 1))

    code, out = run_cli(monkeypatch, capsys, str(path), "--key", signer.verifier().key_string)

    assert (code, out.split(":")[0:2]) == (1, ["FAILED", " malformed_line at line 2 (record 0)"])


def test_the_command_refuses_a_missing_file_or_a_bad_key(
    signer: Signer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text("".join(make_export(build_log(2), signer)), encoding="utf-8")
    key = signer.verifier().key_string
    monkeypatch.setenv("ENCLAVE_AUDIT__ORIGIN", ORIGIN)

    assert main(["audit", "verify-export", str(tmp_path / "missing.jsonl"), "--key", key]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["audit", "verify-export", str(path), "--key", key[:-4]]) == 2
    assert "malformed verifier key" in capsys.readouterr().err
    assert main(["audit", "verify-export", str(path), "--key", key]) == 0
