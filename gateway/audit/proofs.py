"""Inclusion and consistency proofs served from the database, without reading every leaf.

The sequencer stores the root of each perfect subtree of ``2^STORED_HEIGHT`` leaves or
more as it completes (``audit_nodes``); a smaller subtree is hashed from its leaves
(``audit_log.leaf``, at most ``2^STORED_HEIGHT`` of them). A proof is then a few dozen
small reads whatever the log's size. Nothing here is trusted by a verifier: a wrong node
only yields a proof that fails against the signed root.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.audit.merkle import (
    consistency_proof_ranges,
    inclusion_proof_ranges,
    node_hash,
    root,
)
from gateway.db.models import AuditLogEntry, AuditNode

STORED_HEIGHT = 8
"""Subtrees of 256 leaves and more are stored: about one node row per 128 records."""


def stored_nodes(first_index: int, completed: list[list[bytes]]) -> list[dict[str, int | bytes]]:
    """The node rows to store after appending leaves ``first_index``.. whose
    ``Frontier.append`` results are ``completed`` (one list per leaf)."""
    rows: list[dict[str, int | bytes]] = []
    for offset, subtrees in enumerate(completed):
        index = first_index + offset
        for height in range(STORED_HEIGHT, len(subtrees) + 1):
            rows.append({"height": height, "idx": index >> height, "hash": subtrees[height - 1]})
    return rows


Cache = dict[tuple[int, int], bytes]
"""Range roots already computed: proofs of neighbouring records share most of theirs."""


async def range_root(
    conn: AsyncConnection, start: int, end: int, cache: Cache | None = None
) -> bytes:
    """The Merkle Tree Hash of leaves ``start``..``end - 1`` (a subtree of the RFC 6962 tree:
    ``start`` is a multiple of the largest power of two below ``end - start``)."""
    if cache is None:
        cache = {}
    if (start, end) not in cache:
        cache[start, end] = await _range_root(conn, start, end, cache)
    return cache[start, end]


async def _range_root(conn: AsyncConnection, start: int, end: int, cache: Cache) -> bytes:
    size = end - start
    if size <= 1 << STORED_HEIGHT:
        leaves = list(
            await conn.scalars(
                select(AuditLogEntry.leaf)
                .where(AuditLogEntry.seq >= start, AuditLogEntry.seq < end)
                .order_by(AuditLogEntry.seq)
            )
        )
        if len(leaves) != size:
            raise LookupError(f"records {start}..{end - 1} are not all in the log")
        return root(leaves)
    if size & (size - 1) == 0 and start % size == 0:
        height = size.bit_length() - 1
        stored = await conn.scalar(
            select(AuditNode.hash).where(
                AuditNode.height == height, AuditNode.idx == start >> height
            )
        )
        if stored is not None:
            return stored
    split = 1 << ((size - 1).bit_length() - 1)  # the largest power of two below size
    left = await range_root(conn, start, start + split, cache)
    return node_hash(left, await range_root(conn, start + split, end, cache))


async def inclusion_proof(
    conn: AsyncConnection, index: int, tree_size: int, cache: Cache | None = None
) -> list[bytes]:
    """The audit path of record ``index`` in the tree of its first ``tree_size`` records."""
    cache = {} if cache is None else cache
    ranges = inclusion_proof_ranges(index, tree_size)
    return [await range_root(conn, a, b, cache) for a, b in ranges]


async def consistency_proof(conn: AsyncConnection, old_size: int, new_size: int) -> list[bytes]:
    """The proof that the tree of ``new_size`` records extends that of ``old_size``."""
    ranges = consistency_proof_ranges(old_size, new_size)
    return [await range_root(conn, a, b) for a, b in ranges]
