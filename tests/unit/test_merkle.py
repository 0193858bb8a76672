"""The RFC 6962 Merkle tree: reference vectors, exhaustive proofs with tampering, the frontier."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import pytest

from gateway.audit.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    consistency_proof_ranges,
    inclusion_proof,
    inclusion_proof_ranges,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

# Reference data from transparency-dev/merkle (the successor of Trillian's and Certificate
# Transparency's merkle packages): leaves and roots from testonly/constants.go
# (LeafInputs, RootHashes, CompactTrees; commit 582a6ad190b6848f1d26f8bf08ddef29955d9db1),
# inclusion proofs from testonly/reference_test.go (TestRefInclusionProof, 0-based index;
# commit 141d627eab770a7e9a2514f46a8b6338e6d90874), consistency proofs from
# proof/verify_test.go (consistencyProofs; commit 02194e9afb6c1d95b5381350007963aa70fff472).
REFERENCE_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
REFERENCE_ROOTS = {  # by tree size
    0: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
# Subtree roots the vectors below are made of, named by their leaf range.
L0 = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
L1 = "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"
L4 = "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"
L5 = "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658"
L6 = "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"
L0_2 = "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"
L2_4 = "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"
L4_6 = "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"
L6_8 = "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"
L0_4 = "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"
L4_8 = "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"
L0_8 = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
REFERENCE_INCLUSION = [  # (index, tree size, proof)
    (0, 1, []),
    (0, 2, [L1]),
    (1, 2, [L0]),
    (2, 3, [L0_2]),
    (1, 5, [L0, L2_4, L4]),
    (0, 8, [L1, L2_4, L4_8]),
    (5, 8, [L4, L6_8, L0_4]),
]
REFERENCE_CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, [L1, L2_4, L4_8]),
    (6, 8, [L4_6, L6_8, L0_4]),
    (2, 5, [L2_4, L4]),
    (6, 7, [L4_6, L6, L0_4]),
]
REFERENCE_FRONTIERS = {  # by tree size: the compact ranges of CompactTrees()
    0: [],
    1: [L0],
    2: [L0_2],
    3: [L0_2, "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7"],
    4: [L0_4],
    5: [L0_4, L4],
    6: [L0_4, L4_6],
    7: [L0_4, L4_6, L6],
    8: [L0_8],
}
assert leaf_hash(REFERENCE_LEAVES[5]).hex() == L5  # L5 is in NodeHashes() but no proof above

MAX_SIZE = 64
LEAVES = [leaf_hash(i.to_bytes(2, "big")) for i in range(2 * MAX_SIZE + 1)]
ROOTS = [root(LEAVES[:size]) for size in range(len(LEAVES) + 1)]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def unhex(hashes: Sequence[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hashes]


def reference_leaf_hashes(size: int) -> list[bytes]:
    return [leaf_hash(leaf) for leaf in REFERENCE_LEAVES[:size]]


def flipped(proof: Sequence[bytes], position: int) -> list[bytes]:
    changed = bytearray(proof[position])
    changed[0] ^= 0x08
    return [*proof[:position], bytes(changed), *proof[position + 1 :]]


# RFC 6962 §2.1 written out as slices and recursion: slow, but read straight off the RFC.
def rfc_root(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256().digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(rfc_root(leaves[:k]), rfc_root(leaves[k:]))


def rfc_path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*rfc_path(m, leaves[:k]), rfc_root(leaves[k:])]
    return [*rfc_path(m - k, leaves[k:]), rfc_root(leaves[:k])]


def rfc_subproof(m: int, leaves: Sequence[bytes], is_complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if is_complete else [rfc_root(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*rfc_subproof(m, leaves[:k], is_complete), rfc_root(leaves[k:])]
    return [*rfc_subproof(m - k, leaves[k:], False), rfc_root(leaves[:k])]


# --- hashing and roots ---


def test_empty_root_is_the_sha256_of_nothing() -> None:
    assert hashlib.sha256(b"").digest() == EMPTY_ROOT
    assert root([]) == EMPTY_ROOT


def test_leaf_and_node_hashes_are_domain_separated() -> None:
    left, right = leaf_hash(b"a"), leaf_hash(b"b")
    assert leaf_hash(b"a") == hashlib.sha256(b"\x00a").digest()
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert leaf_hash(left + right) != node_hash(left, right)


@pytest.mark.parametrize("size", sorted(REFERENCE_ROOTS))
def test_root_matches_the_reference_vectors(size: int) -> None:
    assert root(reference_leaf_hashes(size)).hex() == REFERENCE_ROOTS[size]


def test_root_matches_the_rfc_definition_for_every_size() -> None:
    for size in range(len(LEAVES) + 1):
        assert ROOTS[size] == rfc_root(LEAVES[:size]), size


# --- inclusion proofs ---


@pytest.mark.parametrize(("index", "size", "expected"), REFERENCE_INCLUSION)
def test_inclusion_proof_matches_the_reference_vectors(
    index: int, size: int, expected: list[str]
) -> None:
    leaves = reference_leaf_hashes(size)
    proof = inclusion_proof(leaves, index)
    assert proof == unhex(expected)
    assert verify_inclusion(leaves[index], index, size, proof, bytes.fromhex(REFERENCE_ROOTS[size]))


def inclusion_tampering(index: int, size: int, proof: list[bytes]) -> list[tuple[str, bool]]:
    """Each forgery of a valid (index, size, proof) and whether verification accepted it."""
    leaf, tree_root = LEAVES[index], ROOTS[size]
    forgeries = [(f"flip proof[{i}]", flipped(proof, i)) for i in range(len(proof))]
    forgeries += [("extended", [*proof, SOME_HASH]), ("prepended", [SOME_HASH, *proof])]
    forgeries += [("extended by root", [*proof, tree_root]), ("short element", [*proof, b""])]
    forgeries += [("truncated", proof[:-1])] if proof else []
    results = [
        (name, verify_inclusion(leaf, index, size, bad, tree_root)) for name, bad in forgeries
    ]
    results += [
        ("wrong leaf", verify_inclusion(SOME_HASH, index, size, proof, tree_root)),
        ("wrong root", verify_inclusion(leaf, index, size, proof, SOME_HASH)),
        ("empty root", verify_inclusion(leaf, index, size, proof, EMPTY_ROOT)),
        ("index = size", verify_inclusion(leaf, size, size, proof, tree_root)),
        ("negative index", verify_inclusion(leaf, -1, size, proof, tree_root)),
    ]
    for other in {index - 1, index + 1, index ^ 2} - {index}:
        results.append((f"index {other}", verify_inclusion(leaf, other, size, proof, tree_root)))
    # The path does not hash the size in; a checkpoint binds it to the root. So a wrong size
    # is a forgery when paired with the root of that size, and only the genuine proof passes.
    for other in {size - 1, size + 1, size * 2, size // 2} - {size}:
        if 0 <= index < other:
            is_genuine = proof == inclusion_proof(LEAVES[:other], index)
            accepted = verify_inclusion(leaf, index, other, proof, ROOTS[other])
            results.append((f"size {other}", accepted and not is_genuine))
    return results


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_every_inclusion_proof_verifies_and_no_forgery_does(size: int) -> None:
    leaves = LEAVES[:size]
    for index in range(size):
        proof = inclusion_proof(leaves, index)
        assert proof == rfc_path(index, leaves), index
        assert verify_inclusion(leaves[index], index, size, proof, ROOTS[size]), index
        accepted = [name for name, ok in inclusion_tampering(index, size, proof) if ok]
        assert accepted == [], f"index {index} of {size}"


def test_inclusion_proof_refuses_an_index_outside_the_tree() -> None:
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(LEAVES[:3], 3)
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof([], 0)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (1, 0), (2, 1), (-1, 1), (1, 1)])
def test_verify_inclusion_rejects_impossible_positions(index: int, size: int) -> None:
    assert not verify_inclusion(LEAVES[0], index, size, [], ROOTS[1])


def test_verify_inclusion_rejects_wrong_length_hashes_without_raising() -> None:
    assert verify_inclusion(LEAVES[0], 0, 1, [], ROOTS[1])
    assert not verify_inclusion(b"", 0, 1, [], b"")
    assert not verify_inclusion(LEAVES[0], 0, 1, [], ROOTS[1][:31])
    assert not verify_inclusion(LEAVES[0][:31], 0, 2, [LEAVES[1]], ROOTS[2])


# --- consistency proofs ---


@pytest.mark.parametrize(("old_size", "new_size", "expected"), REFERENCE_CONSISTENCY)
def test_consistency_proof_matches_the_reference_vectors(
    old_size: int, new_size: int, expected: list[str]
) -> None:
    proof = consistency_proof(reference_leaf_hashes(new_size), old_size, new_size)
    assert proof == unhex(expected)
    old_root, new_root = (bytes.fromhex(REFERENCE_ROOTS[s]) for s in (old_size, new_size))
    assert verify_consistency(old_size, new_size, old_root, new_root, proof)


def consistency_tampering(old: int, new: int, proof: list[bytes]) -> list[tuple[str, bool]]:
    """Each forgery of a valid non-empty (old, new, proof) and whether it was accepted."""
    old_root, new_root = ROOTS[old], ROOTS[new]
    forgeries = [(f"flip proof[{i}]", flipped(proof, i)) for i in range(len(proof))]
    forgeries += [("empty", []), ("truncated", proof[:-1]), ("extended", [*proof, SOME_HASH])]
    forgeries += [("prepended", [SOME_HASH, *proof]), ("old root first", [old_root, *proof])]
    forgeries += [("new root last", [*proof, new_root]), ("short element", [*proof, b""])]
    results = [
        (name, verify_consistency(old, new, old_root, new_root, bad)) for name, bad in forgeries
    ]
    results += [
        ("swapped roots", verify_consistency(old, new, new_root, old_root, proof)),
        ("wrong old root", verify_consistency(old, new, SOME_HASH, new_root, proof)),
        ("wrong new root", verify_consistency(old, new, old_root, SOME_HASH, proof)),
        ("sizes swapped", verify_consistency(new, old, new_root, old_root, proof)),
    ]
    # As for inclusion, other sizes come with their own roots; only a genuine proof passes.
    for other_old in {old - 1, old + 1, old ^ 2} - {old}:
        if 0 < other_old < new:
            is_genuine = proof == consistency_proof(LEAVES, other_old, new)
            accepted = verify_consistency(other_old, new, ROOTS[other_old], new_root, proof)
            results.append((f"old size {other_old}", accepted and not is_genuine))
    for other_new in {new - 1, new + 1, new * 2, new // 2} - {new}:
        if old < other_new:
            is_genuine = proof == consistency_proof(LEAVES, old, other_new)
            accepted = verify_consistency(old, other_new, old_root, ROOTS[other_new], proof)
            results.append((f"new size {other_new}", accepted and not is_genuine))
    return results


@pytest.mark.parametrize("new_size", range(1, MAX_SIZE + 1))
def test_every_consistency_proof_verifies_and_no_forgery_does(new_size: int) -> None:
    leaves = LEAVES[:new_size]
    for old_size in range(new_size + 1):
        proof = consistency_proof(leaves, old_size, new_size)
        if 0 < old_size < new_size:
            assert proof == rfc_subproof(old_size, leaves, True), old_size
            accepted = [n for n, ok in consistency_tampering(old_size, new_size, proof) if ok]
            assert accepted == [], f"{old_size} -> {new_size}"
        else:
            assert proof == [], old_size
        assert verify_consistency(old_size, new_size, ROOTS[old_size], ROOTS[new_size], proof)


def test_equal_sizes_need_equal_roots_and_an_empty_proof() -> None:
    assert verify_consistency(5, 5, ROOTS[5], ROOTS[5], [])
    assert not verify_consistency(5, 5, ROOTS[5], ROOTS[4], [])
    assert not verify_consistency(5, 5, ROOTS[5], ROOTS[5], [ROOTS[5]])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_consistency(0, 0, SOME_HASH, SOME_HASH, [])


def test_the_empty_tree_is_consistent_with_any_tree_given_its_true_root() -> None:
    assert verify_consistency(0, 7, EMPTY_ROOT, ROOTS[7], [])
    assert verify_consistency(0, 7, EMPTY_ROOT, SOME_HASH, [])  # no proof can say more
    assert not verify_consistency(0, 7, SOME_HASH, ROOTS[7], [])
    assert not verify_consistency(0, 7, EMPTY_ROOT, ROOTS[7], [ROOTS[7]])


def test_verify_consistency_rejects_bad_sizes_and_hashes_without_raising() -> None:
    proof = consistency_proof(LEAVES, 3, 7)
    assert verify_consistency(3, 7, ROOTS[3], ROOTS[7], proof)
    assert not verify_consistency(7, 3, ROOTS[7], ROOTS[3], proof)
    assert not verify_consistency(-1, 7, ROOTS[3], ROOTS[7], proof)
    assert not verify_consistency(3, 7, ROOTS[3][:16], ROOTS[7], proof)
    assert not verify_consistency(3, 7, ROOTS[3], ROOTS[7], [*proof[:-1], proof[-1] + b"\x00"])
    assert not verify_consistency(1, 2, b"", b"", [b""])


def test_consistency_proof_refuses_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(LEAVES, 5, 4)
    with pytest.raises(ValueError, match="exceeds"):
        consistency_proof(LEAVES[:4], 2, 5)


# --- proofs for a log too big to hold ---


def covered(ranges: Sequence[tuple[int, int]]) -> list[int]:
    return sorted(i for start, end in ranges for i in range(start, end))


def test_proof_ranges_name_logarithmically_many_disjoint_subtrees() -> None:
    size = 2**40 + 12_345
    index = 2**39 + 7
    ranges = inclusion_proof_ranges(index, size)
    assert len(ranges) <= size.bit_length()
    assert all(0 <= start < end <= size and not start <= index < end for start, end in ranges)
    consistency = consistency_proof_ranges(size - 1_000, size)
    assert len(consistency) <= size.bit_length() + 1
    assert all(0 <= start < end <= size for start, end in consistency)
    small = inclusion_proof_ranges(5, 13)
    assert covered(small) == [i for i in range(13) if i != 5]  # every other leaf, once


# --- the frontier ---


@pytest.mark.parametrize("size", sorted(REFERENCE_FRONTIERS))
def test_frontier_holds_the_reference_compact_range(size: int) -> None:
    frontier = Frontier.empty()
    frontier.extend(reference_leaf_hashes(size))
    assert frontier.hashes == tuple(unhex(REFERENCE_FRONTIERS[size]))
    assert frontier.root().hex() == REFERENCE_ROOTS[size]


def test_frontier_root_equals_the_full_root_at_every_size() -> None:
    leaves = [leaf_hash(str(i).encode()) for i in range(301)]
    frontier = Frontier.empty()
    for size in range(301):
        assert frontier.size == size
        assert frontier.root() == root(leaves[:size]), size
        assert len(frontier.hashes) == size.bit_count() <= size.bit_length()
        if size < 300:
            frontier.append(leaves[size])


def test_frontier_round_trips_through_bytes_and_json_and_keeps_growing() -> None:
    frontier = Frontier.empty()
    for size in range(301):
        from_bytes = Frontier.from_bytes(frontier.to_bytes())
        from_json = Frontier.from_json(json.loads(json.dumps(frontier.to_json())))
        for restored in (from_bytes, from_json):
            assert (restored.size, restored.hashes) == (frontier.size, frontier.hashes), size
        from_bytes.append(LEAVES[0])
        frontier.append(LEAVES[0])
        assert from_bytes.root() == frontier.root(), size


def test_frontier_bytes_are_the_size_then_the_subtree_roots() -> None:
    frontier = Frontier.empty()
    frontier.extend(reference_leaf_hashes(7))
    expected = (7).to_bytes(8, "big") + b"".join(unhex(REFERENCE_FRONTIERS[7]))
    assert frontier.to_bytes() == expected


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 7,
        (1).to_bytes(8, "big"),
        (1).to_bytes(8, "big") + LEAVES[0] + b"\x00",
        (3).to_bytes(8, "big") + LEAVES[0],
        (0).to_bytes(8, "big") + LEAVES[0],
    ],
)
def test_frontier_from_bytes_rejects_malformed_data(data: bytes) -> None:
    with pytest.raises(ValueError, match="serialised frontier"):
        Frontier.from_bytes(data)


@pytest.mark.parametrize(
    "value",
    [
        {},
        {"size": True, "hashes": [LEAVES[0].hex()]},
        {"size": "1", "hashes": [LEAVES[0].hex()]},
        {"size": 1, "hashes": LEAVES[0].hex()},
        {"size": 1, "hashes": [1]},
        {"size": 1, "hashes": ["zz"]},
        {"size": 1, "hashes": [LEAVES[0].hex()[:62]]},
        {"size": 2, "hashes": [LEAVES[0].hex(), LEAVES[1].hex()]},
        {"size": -1, "hashes": []},
        {"size": -1, "hashes": [LEAVES[0].hex()]},
    ],
)
def test_frontier_from_json_rejects_malformed_values(value: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - messages vary; the type is the contract
        Frontier.from_json(value)


def test_frontier_refuses_a_leaf_hash_of_the_wrong_length() -> None:
    frontier = Frontier.empty()
    with pytest.raises(ValueError, match="32 bytes"):
        frontier.append(b"record bytes, not their hash")
    assert frontier.size == 0
