"""Signed checkpoints of the audit log: the tree head as a C2SP note, in the database and
in a write-once directory.

The signing key is read from a file the database never sees; a verifier holding any earlier
checkpoint (from the directory, an e-mail, a regulator's copy) detects every later change
to the records it covers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.checkpoints import Checkpoint, Signer, sign
from gateway.audit.merkle import Frontier
from gateway.db.models import AuditCheckpoint, AuditTree

logger = logging.getLogger("enclave.audit.checkpoints")


def checkpoint_path(directory: Path, size: int) -> Path:
    return directory / f"{size:020d}.checkpoint"


def write_once(path: Path, text: str, mode: int = 0o444) -> None:
    """Create ``path`` with ``text`` and ``mode`` (default read-only), synced to disk; never
    overwrite: raises FileExistsError.

    The text is written to a temporary file first and linked into place, so another
    process (a gateway replica starting beside this one, a verifier reading checkpoints)
    sees the file whole or not at all, never empty or half written.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, path)  # atomic, and fails if path exists: never overwrites
    finally:
        os.unlink(temporary)


def _store(directory: Path, size: int, note: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_once(checkpoint_path(directory, size), note)


async def write_checkpoint(
    engine: AsyncEngine, signer: Signer, origin: str, directory: Path | None = None
) -> Checkpoint | None:
    """Sign the current tree head; None when the newest checkpoint already covers it."""
    async with engine.begin() as conn:
        head = (await conn.execute(select(AuditTree).where(AuditTree.id == 1))).one()
        newest = await conn.scalar(
            select(AuditCheckpoint.size).where(AuditCheckpoint.size >= head.size).limit(1)
        )
        if newest is not None:
            return None
        checkpoint = Checkpoint(origin, head.size, Frontier.from_bytes(head.frontier).root())
        note = sign(checkpoint, signer)
        await conn.execute(
            insert(AuditCheckpoint).values(
                size=checkpoint.size,
                root=checkpoint.root_hash,
                note=note,
                created_at=datetime.now(UTC),
            )
        )
    if directory is not None:
        await asyncio.to_thread(_store, directory, checkpoint.size, note)
    logger.info("checkpoint %d signed", checkpoint.size)
    return checkpoint


async def unsigned_records(engine: AsyncEngine) -> int:
    """How many sequenced records no checkpoint covers yet."""
    async with engine.connect() as conn:
        size = await conn.scalar(select(AuditTree.size).where(AuditTree.id == 1))
        signed = await conn.scalar(select(func.max(AuditCheckpoint.size)))
    return int(size or 0) - int(signed or 0)


async def run_checkpointer(
    engine: AsyncEngine,
    signer: Signer,
    origin: str,
    stop: asyncio.Event,
    *,
    directory: Path | None = None,
    interval_s: float = 60.0,
    every_records: int = 10_000,
    poll_s: float = 1.0,
) -> None:
    """Until ``stop``: a checkpoint every ``interval_s`` while records arrive, and sooner
    once ``every_records`` records wait uncovered (checked every ``poll_s``)."""
    last_signed = -math.inf
    while not stop.is_set():
        try:
            unsigned = await unsigned_records(engine)
            interval_over = time.monotonic() - last_signed >= interval_s
            if unsigned >= every_records or (unsigned > 0 and interval_over):
                await write_checkpoint(engine, signer, origin, directory)
                last_signed = time.monotonic()
        except Exception:
            logger.exception("checkpoint failed; retrying")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), min(poll_s, interval_s))
