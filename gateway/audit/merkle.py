"""The RFC 6962 Merkle tree over audit records: roots, proofs, and the sequencer's frontier.

Pure hashing, no I/O. Leaves are record hashes SHA-256(0x00 || record), inner nodes
SHA-256(0x01 || left || right); the tree over n leaves splits at the largest power of two
below n (RFC 6962 §2.1). A checkpoint signs (size, root); an inclusion proof shows a record
is under that root, a consistency proof that a later root only appended to an earlier one.

Proof generation here works over a list of leaf hashes. A proof is a list of subtree roots,
and ``inclusion_proof_ranges`` / ``consistency_proof_ranges`` name those subtrees as leaf
ranges, so a database-backed prover fetches only O(log n) stored subtree hashes (each range
decomposes into at most log2(n) perfect subtrees), never the whole log.

Verifiers follow RFC 9162 §2.1.3.2 and §2.1.4.2 and return False, never raise, on any bad
input. Generators raise ValueError: asking for an impossible proof is a caller bug.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, TypedDict

HASH_SIZE: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
_SIZE_BYTES: Final = 8  # the frontier's size prefix: a uint64, as tree sizes are in RFC 9162

LeafRange = tuple[int, int]
"""Half-open range [start, end) of leaf indices; its subtree's root is a proof element."""


def leaf_hash(data: bytes) -> bytes:
    """Hash one record; the 0x00 prefix keeps a leaf from passing for an inner node."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash two subtree roots into their parent."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """The Merkle Tree Hash of the leaves (EMPTY_ROOT for none)."""
    return _range_root(leaf_hashes, 0, len(leaf_hashes))


def inclusion_proof_ranges(index: int, tree_size: int) -> list[LeafRange]:
    """The subtrees whose roots form the audit path of leaf ``index``, leaf side first."""
    if not 0 <= index < tree_size:
        raise ValueError(f"leaf index {index} is outside a tree of size {tree_size}")
    ranges: list[LeafRange] = []
    start, end = 0, tree_size
    while end - start > 1:
        middle = start + _split(end - start)
        if index < middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((start, middle))
            start = middle
    ranges.reverse()
    return ranges


def consistency_proof_ranges(old_size: int, new_size: int) -> list[LeafRange]:
    """The subtrees whose roots form PROOF(old_size, D[new_size]) (RFC 6962 §2.1.2).

    Empty when ``old_size`` is 0 or equal to ``new_size``: nothing needs proving.
    """
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    ranges: list[LeafRange] = []
    start, end = 0, new_size
    while old_size < end:
        middle = start + _split(end - start)
        if old_size <= middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((start, middle))
            start = middle
    if start > 0:  # the old tree is no single node of the new one: give its last subtree too
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` in the tree over all of ``leaf_hashes``."""
    ranges = inclusion_proof_ranges(index, len(leaf_hashes))
    return [_range_root(leaf_hashes, start, end) for start, end in ranges]


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """The proof that the tree of ``new_size`` leaves extends the tree of ``old_size``."""
    if new_size > len(leaf_hashes):
        raise ValueError(f"tree size {new_size} exceeds the {len(leaf_hashes)} leaves given")
    ranges = consistency_proof_ranges(old_size, new_size)
    return [_range_root(leaf_hashes, start, end) for start, end in ranges]


def verify_inclusion(
    leaf_hash: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` puts ``leaf_hash`` at ``index`` under ``root`` (RFC 9162 §2.1.3.2).

    The path does not hash ``tree_size`` in: trust it only as half of a signed (size, root).
    """
    if not 0 <= index < tree_size or not _are_hashes(leaf_hash, root, *proof):
        return False
    fn, sn = index, tree_size - 1
    computed = leaf_hash
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            computed = node_hash(sibling, computed)
            fn, sn = _skip_right_edge(fn, sn)
        else:
            computed = node_hash(computed, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and computed == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the ``new_size`` tree extends the ``old_size`` one.

    Equal sizes need an empty proof and equal roots. Size 0 is consistent with any tree
    given an empty proof (RFC 9162), but only if ``old_root`` is EMPTY_ROOT: a checkpoint
    claiming another root for the empty tree is false, so we reject it.
    """
    if not 0 <= old_size <= new_size or not _are_hashes(old_root, new_root, *proof):
        return False
    if old_size == 0:
        is_new_root_plausible = new_size > 0 or new_root == EMPTY_ROOT
        return not proof and old_root == EMPTY_ROOT and is_new_root_plausible
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size.bit_count() == 1:  # a perfect subtree: the verifier's old root starts the path
        path.insert(0, old_root)
    return _verify_consistency_path(old_size, new_size, old_root, new_root, path)


def _verify_consistency_path(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: list[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2 steps 3 to 7, for 0 < old_size < new_size and a non-empty path."""
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    old_computed = new_computed = path[0]
    for sibling in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            old_computed = node_hash(sibling, old_computed)
            new_computed = node_hash(sibling, new_computed)
            fn, sn = _skip_right_edge(fn, sn)
        else:
            new_computed = node_hash(new_computed, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and old_computed == old_root and new_computed == new_root


def _skip_right_edge(fn: int, sn: int) -> tuple[int, int]:
    """Climb levels where the node is the last one of its row and so has no right sibling."""
    while fn and not fn & 1:
        fn, sn = fn >> 1, sn >> 1
    return fn, sn


def _are_hashes(*values: bytes) -> bool:
    return all(len(value) == HASH_SIZE for value in values)


def _split(size: int) -> int:
    """The largest power of two strictly below ``size`` (which is at least 2)."""
    return 1 << ((size - 1).bit_length() - 1)


def _range_root(leaf_hashes: Sequence[bytes], start: int, end: int) -> bytes:
    if end - start == 0:
        return EMPTY_ROOT
    if end - start == 1:
        return leaf_hashes[start]
    middle = start + _split(end - start)
    return node_hash(_range_root(leaf_hashes, start, middle), _range_root(leaf_hashes, middle, end))


class FrontierJson(TypedDict):
    size: int
    hashes: list[str]


class Frontier:
    """The right edge of a growing tree: the roots of its perfect subtrees, largest first.

    A tree of n leaves has one perfect subtree per set bit of n, so at most log2(n)+1
    hashes. The sequencer keeps this in a database row between batches and appends new
    leaf hashes to get each new root without reading old leaves.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int, hashes: Sequence[bytes]) -> None:
        if size < 0 or len(hashes) != size.bit_count() or not _are_hashes(*hashes):
            raise ValueError(f"{len(hashes)} hashes cannot be the frontier of size {size}")
        self._size = size
        self._hashes = list(hashes)

    @classmethod
    def empty(cls) -> Frontier:
        return cls(0, [])

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> list[bytes]:
        """Add one leaf, merging equal-sized subtrees the way binary addition carries.

        Returns the perfect subtrees this leaf completed, by height: item ``h - 1`` is the
        root of the 2^h leaves ending with this one (the node at height h, index i >> h).
        """
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"a leaf hash has {HASH_SIZE} bytes, not {len(leaf_hash)}")
        carry, size = leaf_hash, self._size
        completed = []
        while size & 1:
            carry = node_hash(self._hashes.pop(), carry)
            completed.append(carry)
            size >>= 1
        self._hashes.append(carry)
        self._size += 1
        return completed

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for leaf in leaf_hashes:
            self.append(leaf)

    def root(self) -> bytes:
        """The Merkle Tree Hash of every leaf appended so far."""
        if not self._hashes:
            return EMPTY_ROOT
        computed = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            computed = node_hash(left, computed)
        return computed

    def to_bytes(self) -> bytes:
        """The size as a big-endian uint64, then the subtree roots, largest first."""
        return self._size.to_bytes(_SIZE_BYTES, "big") + b"".join(self._hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> Frontier:
        if len(data) < _SIZE_BYTES:
            raise ValueError(f"{len(data)} bytes are not a serialised frontier")
        size, body = int.from_bytes(data[:_SIZE_BYTES], "big"), data[_SIZE_BYTES:]
        if len(body) != size.bit_count() * HASH_SIZE:
            raise ValueError(f"{len(data)} bytes are not a serialised frontier of size {size}")
        hashes = [body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)]
        return cls(size, hashes)

    def to_json(self) -> FrontierJson:
        return {"size": self._size, "hashes": [h.hex() for h in self._hashes]}

    @classmethod
    def from_json(cls, value: Mapping[str, object]) -> Frontier:
        size, hashes = value.get("size"), value.get("hashes")
        if type(size) is not int or not isinstance(hashes, list):
            raise ValueError("a frontier is {'size': int, 'hashes': [hex, ...]}")
        decoded: list[bytes] = []
        for h in hashes:
            if not isinstance(h, str):
                raise ValueError("frontier hashes are hex strings")
            decoded.append(bytes.fromhex(h))
        return cls(size, decoded)
