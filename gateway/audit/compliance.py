"""What the compliance API does with the log, apart from HTTP: records with their inclusion
proofs under a signed checkpoint, exports, and verification.

When this gateway holds the signing key, a proof or an export first signs the current tree
head, so it covers every record sequenced so far; otherwise it uses the newest checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit import merkle, proofs
from gateway.audit.checkpointer import write_checkpoint
from gateway.audit.checkpoints import CheckpointError, Signer, Verifier, open_checkpoint
from gateway.audit.content import ContentVault
from gateway.audit.csv_export import csv_header, csv_line
from gateway.audit.export import export_header, export_line
from gateway.audit.records import AuditLog
from gateway.audit.search import Filters, Found, search_all
from gateway.audit.verify import Report, verify_log
from gateway.db.models import AuditCheckpoint, AuditTree


@dataclass(frozen=True)
class SignedHead:
    size: int
    note: str


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    note: str
    created_at: datetime


@dataclass(frozen=True)
class Compliance:
    log: AuditLog
    engine: AsyncEngine
    vault: ContentVault
    origin: str
    signer: Signer | None
    verifier: Verifier | None
    checkpoint_dir: Path | None

    async def signed_head(self, covering: int = 0) -> SignedHead | None:
        """The newest checkpoint, signed now if it covers fewer than ``covering`` records
        and this gateway holds the key; None when no checkpoint covers that many."""
        newest = await self._newest()
        if (newest is None or newest.size < covering) and self.signer is not None:
            await write_checkpoint(self.engine, self.signer, self.origin, self.checkpoint_dir)
            newest = await self._newest()
        return newest if newest is not None and newest.size >= covering else None

    async def tree_size(self) -> int:
        """How many records are sequenced."""
        async with self.engine.connect() as conn:
            size = await conn.scalar(select(AuditTree.size).where(AuditTree.id == 1))
        return int(size or 0)

    async def export_head(self) -> SignedHead | None:
        """A checkpoint over the whole log when this gateway can sign one, else the newest
        (records sequenced after it are left out of an export)."""
        return await self.signed_head(covering=await self.tree_size()) or await self.signed_head()

    async def _newest(self) -> SignedHead | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(AuditCheckpoint.size, AuditCheckpoint.note)
                    .order_by(AuditCheckpoint.size.desc())
                    .limit(1)
                )
            ).first()
        return SignedHead(row.size, row.note) if row else None

    async def recent_checkpoints(self, count: int) -> list[StoredCheckpoint]:
        """The ``count`` newest stored checkpoints, newest first."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(AuditCheckpoint.size, AuditCheckpoint.note, AuditCheckpoint.created_at)
                .order_by(AuditCheckpoint.size.desc())
                .limit(count)
            )
            return [StoredCheckpoint(row.size, row.note, row.created_at) for row in rows]

    def is_signed(self, note: str) -> bool:
        """Whether a checkpoint note of this log carries a valid signature by this
        gateway's verifier key (False without a key)."""
        if self.verifier is None:
            return False
        try:
            open_checkpoint(note, self.verifier, self.origin)
        except CheckpointError:
            return False
        return True

    async def record_with_proof(self, found: Found) -> dict[str, Any]:
        head = await self.signed_head(covering=found.seq + 1)
        view = record_view(found)
        view["content"] = await self.content(view["fields"])
        if head is None:
            view["proof"] = None
            return view
        async with self.engine.connect() as conn:
            path = await proofs.inclusion_proof(conn, found.seq, head.size)
        view["proof"] = {
            "tree_size": head.size,
            "checkpoint": head.note,
            "inclusion": [h.hex() for h in path],
        }
        return view

    async def content(self, fields: dict[str, Any]) -> dict[str, Any] | None:
        """The record's sealed prompt and answer opened; None for each whose key is
        shredded; None overall when the record keeps no content."""
        opened: dict[str, Any] = {}
        for name in ("prompt", "answer"):
            sealed = fields.get(f"{name}_sealed")
            if isinstance(sealed, dict):
                context = f"{fields.get('request_id')}:{name}"
                opened[name] = await self.vault.open(sealed, context)
        return opened or None

    async def export_jsonl(self, head: SignedHead, filters: Filters) -> AsyncIterator[str]:
        """The export format of ``gateway.audit.export``: records under checkpoint ``head``."""
        yield export_header(self.origin, head.note)
        cache: proofs.Cache = {}
        async with self.engine.connect() as conn:
            async for found in search_all(conn, filters, below=head.size):
                path = await _proof(conn, found.seq, head.size, cache)
                yield export_line(found.seq, found.data, path)

    async def export_csv(self, filters: Filters) -> AsyncIterator[str]:
        yield csv_header()
        async with self.engine.connect() as conn:
            async for found in search_all(conn, filters):
                yield csv_line(found.seq, record_fields(found.data), found.leaf)

    def verified_checkpoint(self, view: dict[str, Any]) -> int | None:
        """The size of the signed checkpoint a record view (``record_with_proof``) is proven
        under: the note's signature, the leaf hash of the exact text and the Merkle path all
        check out with this gateway's verifier key. None when any does not, or no key."""
        proof = view.get("proof")
        if self.verifier is None or not isinstance(proof, dict):
            return None
        try:
            checkpoint = open_checkpoint(proof["checkpoint"], self.verifier, self.origin)
        except CheckpointError:
            return None
        leaf = merkle.leaf_hash(view["record"].encode())
        path = [bytes.fromhex(h) for h in proof["inclusion"]]
        is_included = merkle.verify_inclusion(
            leaf, view["seq"], checkpoint.size, path, checkpoint.root_hash
        )
        return checkpoint.size if is_included and leaf.hex() == view["leaf"] else None

    async def verify(self) -> Report | None:
        """Verify the whole log; None when no verifier key is configured."""
        if self.verifier is None:
            return None
        return await verify_log(self.engine, self.verifier, self.origin)


async def _proof(conn: AsyncConnection, seq: int, size: int, cache: proofs.Cache) -> list[bytes]:
    return await proofs.inclusion_proof(conn, seq, size, cache)


def record_fields(data: bytes) -> dict[str, Any]:
    fields = json.loads(data)["fields"]
    return fields if isinstance(fields, dict) else {}


def record_view(found: Found) -> dict[str, Any]:
    """One record as the API shows it: its exact text, its fields, its leaf hash."""
    return {
        "seq": found.seq,
        "record": found.data.decode(),
        "fields": record_fields(found.data),
        "leaf": found.leaf.hex(),
    }
