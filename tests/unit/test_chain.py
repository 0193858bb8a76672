"""The audit hash chain: canonical record bytes linked by leaf hashes; tampering is found."""

from __future__ import annotations

import json

import pytest

from gateway.audit.canonical import canonical_json
from gateway.audit.chain import (
    GENESIS_PREV,
    ChainedRecord,
    ChainFault,
    chain_fields,
    chain_record,
    check_chain,
    pseudonym,
)
from gateway.audit.merkle import leaf_hash


def build(n: int) -> list[ChainedRecord]:
    records: list[ChainedRecord] = []
    for seq in range(n):
        prev = records[-1].leaf if records else None
        fields = {"event": "accepted", "request_id": f"chatcmpl-{seq}", "status": 202}
        records.append(chain_fields(seq, prev, fields))
    return records


def stored(records: list[ChainedRecord]) -> list[tuple[int, bytes]]:
    return [(r.seq, r.data) for r in records]


def test_records_are_canonical_bytes_linked_by_the_previous_leaf_hash() -> None:
    records = build(3)

    first, second = json.loads(records[0].data), json.loads(records[1].data)
    assert second["fields"]["request_id"] == "chatcmpl-1"

    assert first["prev"] == GENESIS_PREV
    assert second["prev"] == leaf_hash(records[0].data).hex()
    assert records[1].data == canonical_json(second)
    assert records[1].leaf == leaf_hash(records[1].data)
    assert check_chain(stored(records)) is None


def test_the_envelope_is_canonical_and_fields_stay_inside_it() -> None:
    record = chain_fields(0, None, {"seq": 7, "prev": "forged", "zeta": [1, "ü"]})

    parsed = json.loads(record.data)

    assert canonical_json(parsed) == record.data
    assert (parsed["seq"], parsed["prev"]) == (0, GENESIS_PREV)
    assert parsed["fields"] == {"seq": 7, "prev": "forged", "zeta": [1, "ü"]}
    with pytest.raises(ValueError, match="predecessor"):
        chain_fields(1, None, {})
    with pytest.raises(ValueError, match="object"):
        chain_record(0, None, b"[1]")


def test_an_edited_byte_is_found_at_its_record() -> None:
    rows = stored(build(6))
    seq, data = rows[3]
    rows[3] = (seq, data.replace(b'"status":202', b'"status":200'))

    assert check_chain(rows) == ChainFault(4, "prev is not the hash of the previous record")


def test_edited_bytes_that_are_not_canonical_are_named() -> None:
    rows = stored(build(4))
    rows[2] = (2, rows[2][1].replace(b"{", b"{ ", 1))

    fault = check_chain(rows)

    assert fault is not None
    assert (fault.seq, "canonical" in fault.reason) == (2, True)


def test_a_deleted_middle_record_is_found() -> None:
    rows = stored(build(6))
    del rows[2]

    assert check_chain(rows) == ChainFault(2, "record 2 is missing (found 3 next)")


def test_swapped_records_are_found() -> None:
    rows = stored(build(6))
    rows[1], rows[2] = rows[2], rows[1]

    fault = check_chain(rows)

    assert fault is not None
    assert fault.seq == 1


def test_a_forged_record_inserted_with_the_right_seq_breaks_the_next_link() -> None:
    records = build(5)
    forged = chain_fields(2, records[1].leaf, {"event": "accepted", "request_id": "forged"})
    rows = [*stored(records[:2]), (2, forged.data), *stored(records[3:])]

    assert check_chain(rows) == ChainFault(3, "prev is not the hash of the previous record")


def test_a_consistent_rewrite_passes_the_chain_alone() -> None:
    # Only a checkpoint (Merkle root) catches a chain rewritten from the start.
    rewritten = [chain_fields(0, None, {"event": "rewritten"})]
    rewritten.append(chain_fields(1, rewritten[0].leaf, {"event": "rewritten"}))

    assert check_chain(stored(rewritten)) is None
    assert rewritten[1].leaf != build(2)[1].leaf


def test_checking_resumes_from_a_verified_prefix() -> None:
    records = build(5)

    assert check_chain(stored(records[3:]), start=3, prev_leaf=records[2].leaf) is None
    assert check_chain(stored(records[3:]), start=3, prev_leaf=records[1].leaf) == ChainFault(
        3, "prev is not the hash of the previous record"
    )


def test_pseudonyms_are_stable_and_depend_on_the_key() -> None:
    assert pseudonym(b"k1", "user-1") == pseudonym(b"k1", "user-1")
    assert pseudonym(b"k1", "user-1") != pseudonym(b"k2", "user-1")
    assert pseudonym(b"k1", "user-1") != pseudonym(b"k1", "user-2")
    assert "user-1" not in pseudonym(b"k1", "user-1")
