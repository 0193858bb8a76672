"""Audit exports: records with inclusion proofs under one signed checkpoint, checked offline.

An export is JSON Lines. Line 1 is the header ``{"type": "enclave-audit-export", "version":
1, "origin", "checkpoint"}`` holding the whole signed note of a checkpoint over N records.
Each further line is ``{"type": "record", "seq", "record", "leaf", "proof"}``: a record's
exact canonical text, its hex leaf hash and its RFC 6962 inclusion proof in the tree of
size N. Records ascend by seq and may have gaps (an export of a search result). With only
the verifier key and the origin, anyone can check that every record is in the signed log,
and, where the export holds consecutive records, that they link (a signed log could still
hold a broken chain).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.audit.chain import ENVELOPE_KEYS, GENESIS_PREV, check_next
from gateway.audit.checkpoints import Checkpoint, CheckpointError, Verifier, open_checkpoint
from gateway.audit.merkle import leaf_hash, verify_inclusion

FORMAT = "enclave-audit-export"
VERSION = 1
HEADER_KEYS = frozenset({"type", "version", "origin", "checkpoint"})
RECORD_KEYS = frozenset({"type", "seq", "record", "leaf", "proof"})
_HEX_HASH = re.compile(r"[0-9a-f]{64}")
_CHECKPOINT_REASONS = {"unknown_key": "bad_signature"}
"""CheckpointError reasons renamed for an export (no signature of the trusted key holds)."""


@dataclass(frozen=True)
class ExportFault:
    """The first thing wrong in an export: 1-based line, record seq when known, and why."""

    line: int
    seq: int | None
    reason: str
    detail: str


@dataclass(frozen=True)
class ExportReport:
    """What verify_export found: the first fault, or None when every line held."""

    records: int
    """Record lines verified (before the fault, if any)."""
    tree_size: int | None
    """The size of the checkpoint in the header, once its signature held."""
    fault: ExportFault | None


def export_header(origin: str, checkpoint_note: str) -> str:
    """The first line of an export: the log's origin and its signed checkpoint note."""
    header = {"type": FORMAT, "version": VERSION, "origin": origin, "checkpoint": checkpoint_note}
    return _json_line(header)


def export_line(seq: int, data: bytes, proof: Sequence[bytes]) -> str:
    """One record line: the stored bytes as text, their leaf hash and inclusion proof."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"record {seq} is not UTF-8 text") from exc
    line = {
        "type": "record",
        "seq": seq,
        "record": text,
        "leaf": leaf_hash(data).hex(),
        "proof": [sibling.hex() for sibling in proof],
    }
    return _json_line(line)


def _json_line(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"


class _Fault(Exception):
    """Stops the check at the first fault; verify_export adds the line number."""

    def __init__(self, reason: str, detail: str, seq: int | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.seq = reason, detail, seq

    def at(self, line: int) -> ExportFault:
        return ExportFault(line, self.seq, self.reason, self.detail)


@dataclass(frozen=True)
class _Entry:
    seq: int
    data: bytes
    leaf: bytes
    proof: list[bytes]


def verify_export(lines: Iterable[str], verifier: Verifier, origin: str) -> ExportReport:
    """Check an export against the trusted verifier key and origin; never raises on bad input."""
    numbered = enumerate(lines, start=1)
    first = next(numbered, None)
    if first is None:
        return ExportReport(0, None, ExportFault(1, None, "bad_header", "the export is empty"))
    try:
        checkpoint = _open_header(first[1], verifier, origin)
    except _Fault as fault:
        return ExportReport(0, None, fault.at(1))
    records, previous = 0, None
    for number, line in numbered:
        try:
            previous = _check_record(line, checkpoint, previous)
        except _Fault as fault:
            return ExportReport(records, checkpoint.size, fault.at(number))
        records += 1
    return ExportReport(records, checkpoint.size, None)


def _open_header(line: str, verifier: Verifier, origin: str) -> Checkpoint:
    header = _parse_object(line, HEADER_KEYS, "bad_header")
    if header["type"] != FORMAT or type(header["version"]) is not int:
        raise _Fault("bad_header", f"not an {FORMAT} header")
    if header["version"] != VERSION:
        raise _Fault("bad_header", f"version {header['version']} is not {VERSION}")
    if not isinstance(header["origin"], str) or not isinstance(header["checkpoint"], str):
        raise _Fault("bad_header", "the origin and the checkpoint must be strings")
    if header["origin"] != origin:
        raise _Fault("wrong_origin", f"the export is of log {_excerpt(header['origin'])}")
    try:
        return open_checkpoint(header["checkpoint"], verifier, origin)
    except CheckpointError as exc:
        raise _Fault(_CHECKPOINT_REASONS.get(exc.reason, exc.reason), exc.message) from exc


def _check_record(line: str, checkpoint: Checkpoint, previous: _Entry | None) -> _Entry:
    """One record line, in order after ``previous``, under the checkpoint's root."""
    entry = _parse_entry(line)
    seq = entry.seq
    if seq >= checkpoint.size:
        raise _Fault(
            "seq_beyond_checkpoint", f"the checkpoint covers {checkpoint.size} records", seq
        )
    if previous is not None and seq <= previous.seq:
        raise _Fault("seq_out_of_order", f"it follows record {previous.seq}", seq)
    prev = _chained_prev(seq, entry.data)
    if entry.leaf != leaf_hash(entry.data):
        raise _Fault("leaf_mismatch", "the leaf is not the hash of the record text", seq)
    if not verify_inclusion(entry.leaf, seq, checkpoint.size, entry.proof, checkpoint.root_hash):
        raise _Fault("bad_proof", f"not included in the tree of size {checkpoint.size}", seq)
    expected = _expected_prev(seq, previous)
    if expected is not None and prev != expected:
        raise _Fault("broken_link", "prev is not the leaf hash of the previous record", seq)
    return entry


def _parse_entry(line: str) -> _Entry:
    value = _parse_object(line, RECORD_KEYS, "malformed_line")
    seq, record, leaf, proof = value["seq"], value["record"], value["leaf"], value["proof"]
    if value["type"] != "record" or type(seq) is not int or seq < 0:
        raise _Fault("malformed_line", 'not a record line ("type": "record", "seq": n >= 0)')
    if not isinstance(record, str) or not isinstance(proof, list):
        raise _Fault("malformed_line", "the record must be a string and the proof a list", seq)
    if not all(isinstance(h, str) and _HEX_HASH.fullmatch(h) for h in [leaf, *proof]):
        raise _Fault("malformed_line", "leaf and proof hashes are 64 lowercase hex digits", seq)
    try:
        data = record.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Fault("malformed_line", "the record text is not encodable as UTF-8", seq) from exc
    return _Entry(seq, data, bytes.fromhex(leaf), [bytes.fromhex(h) for h in proof])


def _parse_object(line: str, keys: frozenset[str], reason: str) -> dict[str, Any]:
    """A JSON object with exactly ``keys``, or a fault named ``reason``."""
    try:
        value = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise _Fault(reason, "the line is not JSON") from exc
    if not isinstance(value, dict) or value.keys() != keys:
        raise _Fault(reason, f"the line is not a JSON object with keys {', '.join(sorted(keys))}")
    return value


def _chained_prev(seq: int, data: bytes) -> str:
    """The ``prev`` of a canonical chained record carrying ``seq``; faults name what is off."""
    try:
        record = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise _Fault("not_a_record", "the record text is not JSON", seq) from exc
    if not isinstance(record, dict) or record.keys() != ENVELOPE_KEYS:
        raise _Fault("not_a_record", "the record text is not {fields, prev, seq}", seq)
    carried = record["seq"]
    if type(carried) is not int or carried != seq:
        shown = carried if type(carried) is int else "that is not an integer"
        raise _Fault("seq_mismatch", f"the record carries seq {shown}", seq)
    prev = record["prev"]
    if not isinstance(prev, str) or not _HEX_HASH.fullmatch(prev):
        raise _Fault("not_a_record", "prev is not a hex leaf hash", seq)
    fault = check_next(seq, seq, data, bytes.fromhex(prev))  # links are checked after the proof
    if fault is not None:
        raise _Fault("not_a_record", fault.reason, seq)
    return prev


def _expected_prev(seq: int, previous: _Entry | None) -> str | None:
    """What ``prev`` must be, when the export holds the record before (or seq is 0)."""
    if seq == 0:
        return GENESIS_PREV
    if previous is not None and previous.seq == seq - 1:
        return previous.leaf.hex()
    return None


def _excerpt(text: str) -> str:
    """Text from the file, quoted and cut short: never raw control characters."""
    return repr(text[:80] + ("..." if len(text) > 80 else ""))
