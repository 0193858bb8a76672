"""Audit records as a hash chain: canonical bytes, sequence numbers, links, pseudonyms.

A record is the RFC 8785 canonical JSON ``{"fields": {...}, "prev": "<hex>", "seq": n}``:
the event's fields, the hex leaf hash of record ``seq - 1`` (64 zeros for the first) and
its sequence number (consecutive from 0). Those exact bytes are stored and hashed: the leaf
hash (RFC 6962, ``merkle.leaf_hash``) is both the Merkle leaf and the next record's
``prev``. Nothing is ever re-serialised from parsed JSON. Because the member names sort as
``fields`` < ``prev`` < ``seq``, the envelope around canonical field bytes is canonical
too, so the sequencer chains writers' bytes without parsing them.

User identities in records are pseudonyms: HMAC-SHA256 under a key kept outside the
database, so the log alone does not name people, and whoever holds the key can still find
a person's records (the HMAC of their id).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.audit.canonical import canonical_json
from gateway.audit.merkle import leaf_hash

GENESIS_PREV = "0" * 64
ENVELOPE_KEYS = frozenset({"fields", "prev", "seq"})


@functools.lru_cache(maxsize=4096)  # the same few users and keys, two records a request
def pseudonym(key: bytes, identity: str) -> str:
    """The stable pseudonym of a user (or subject) id under the pseudonymisation key."""
    return hmac.new(key, identity.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class ChainedRecord:
    seq: int
    data: bytes
    """The canonical JSON bytes: what is stored, hashed and exported."""
    leaf: bytes
    """``leaf_hash(data)``: the Merkle leaf and the next record's ``prev``."""


def envelope(seq: int, prev: str, body: bytes) -> bytes:
    """The canonical record around canonical field bytes ``body`` (a JSON object)."""
    return b'{"fields":%s,"prev":"%s","seq":%d}' % (body, prev.encode(), seq)


def chain_record(seq: int, prev_leaf: bytes | None, body: bytes) -> ChainedRecord:
    """Record ``seq`` holding canonical field bytes ``body``, after the record whose leaf
    hash is ``prev_leaf`` (None: the first)."""
    return chain_body(seq, prev_leaf, body)[0]


def chain_body(
    seq: int, prev_leaf: bytes | None, body: bytes
) -> tuple[ChainedRecord, dict[str, Any]]:
    """``chain_record``, and the fields it parsed from ``body`` to check them."""
    if seq < 0 or (seq == 0) != (prev_leaf is None):
        raise ValueError("the first record (seq 0) and only it has no predecessor")
    fields = _parse(body)  # C-speed; canonical form is the writer's job
    if not isinstance(fields, dict):
        raise ValueError("record fields must be a JSON object")
    data = envelope(seq, GENESIS_PREV if prev_leaf is None else prev_leaf.hex(), body)
    return ChainedRecord(seq=seq, data=data, leaf=leaf_hash(data)), fields


def chain_fields(seq: int, prev_leaf: bytes | None, fields: Mapping[str, Any]) -> ChainedRecord:
    return chain_record(seq, prev_leaf, canonical_json(fields))


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ValueError("record fields are not JSON") from exc


@dataclass(frozen=True)
class ChainFault:
    """The first record that does not fit the chain, and why."""

    seq: int
    reason: str


def check_chain(
    records: Iterable[tuple[int, bytes]], *, start: int = 0, prev_leaf: bytes | None = None
) -> ChainFault | None:
    """Walk stored ``(seq, data)`` pairs in order; the first fault, or None.

    Checks that sequence numbers are consecutive from ``start``, that each record's bytes
    are canonical JSON carrying its own ``seq``, and that ``prev`` is the previous leaf.
    """
    expected = start
    for seq, data in records:
        fault = check_next(expected, seq, data, prev_leaf)
        if fault is not None:
            return fault
        prev_leaf = leaf_hash(data)
        expected += 1
    return None


def check_next(expected: int, seq: int, data: bytes, prev_leaf: bytes | None) -> ChainFault | None:
    """Whether stored record ``seq`` is record ``expected`` following leaf ``prev_leaf``."""
    if seq != expected:
        return ChainFault(expected, f"record {expected} is missing (found {seq} next)")
    reason = _check_one(seq, data, prev_leaf)
    return None if reason is None else ChainFault(seq, reason)


def _check_one(seq: int, data: bytes, prev_leaf: bytes | None) -> str | None:
    try:
        record = json.loads(data)
    except (ValueError, RecursionError):
        return "not JSON"
    if not isinstance(record, dict) or record.keys() != ENVELOPE_KEYS:
        return "not a record (fields, prev, seq)"
    if not isinstance(record["fields"], dict) or not isinstance(record["prev"], str):
        return "not a record (fields, prev, seq)"
    if record["seq"] != seq or isinstance(record["seq"], bool):
        return f"carries seq {record['seq']!r}"
    try:
        if envelope(seq, record["prev"], canonical_json(record["fields"])) != data:
            return "not in canonical form (bytes were edited)"
    except (TypeError, ValueError):
        return "not canonicalisable"
    if record["prev"] != (GENESIS_PREV if prev_leaf is None else prev_leaf.hex()):
        return "prev is not the hash of the previous record"
    return None
