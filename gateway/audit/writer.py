"""Group commit for audit records: many concurrent appends, few transactions.

``append`` returns only once its record is committed to ``audit_pending`` (fail closed: an
exception means no record, and the caller refuses the request). Appends that arrive while
a commit is in flight wait for the next one, which takes all of them in one multi-row
INSERT: with 32 concurrent requests a commit carries dozens of records, so the database
sees a few hundred transactions a second instead of thousands.

A record that can no longer be refused (the outcome of a request that has run) and could
not be committed is ``owe``d: kept in memory, bounded, and written with the next commit
that succeeds, or retried every ``OWED_RETRY_S`` seconds until the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit.canonical import canonical_json
from gateway.db.models import AuditPending

logger = logging.getLogger("enclave.audit")

DEFAULT_MAX_BATCH = 500
DEFAULT_FLUSHERS = 2
DEFAULT_MAX_OWED = 100_000
DEFAULT_COMMIT_TIMEOUT_S = 5.0
"""A commit to a server that takes longer fails (its requests are refused): a hung database,
or one behind a network that drops packets, must not hold every request forever."""
OWED_RETRY_S = 1.0


async def append_pending(
    conn: AsyncConnection, fields: Mapping[str, Any], at: datetime | None = None
) -> None:
    """Queue one record for sequencing in the caller's transaction (the caller commits);
    raises on fields that have no canonical form."""
    body = canonical_json(fields)
    # inline(): no RETURNING, so a role that may only INSERT (enclave_gateway) can write
    values = {"created_at": at or datetime.now(UTC), "body": body}
    await conn.execute(insert(AuditPending).values(**values).inline())


async def insert_pending(conn: AsyncConnection, rows: list[tuple[datetime, bytes]]) -> None:
    """Insert pending rows in the caller's transaction: COPY on PostgreSQL (asyncpg), a
    multi-row INSERT elsewhere."""
    if conn.dialect.name == "postgresql":
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.copy_records_to_table(
            AuditPending.__tablename__, records=rows, columns=["created_at", "body"]
        )
        return
    await conn.execute(
        insert(AuditPending), [{"created_at": at, "body": body} for at, body in rows]
    )


class PendingWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        flushers: int = DEFAULT_FLUSHERS,
        max_owed: int = DEFAULT_MAX_OWED,
        commit_timeout_s: float = DEFAULT_COMMIT_TIMEOUT_S,
    ) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._max_owed = max_owed
        self._owed: list[bytes] = []
        is_sqlite = engine.dialect.name == "sqlite"
        # A local file does not hang like a server; its busy_timeout bounds a write already.
        self._commit_timeout_s = None if is_sqlite else commit_timeout_s
        # SQLite has one writer at a time: a second flusher would only wait for the lock.
        self._flushers = 1 if is_sqlite else flushers
        self._waiting: list[tuple[bytes, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._flush_loop()) for _ in range(self._flushers)]

    async def stop(self) -> None:
        """Commit what is waiting, then stop."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._waiting:
            await self._flush_once()
        if self._owed:
            await self._flush_once()
        if self._owed:
            logger.error("%d audit records lost: the database did not come back", len(self._owed))

    async def append(self, fields: Mapping[str, Any]) -> None:
        """Queue one record and wait until it is committed; raises if it could not be."""
        body = canonical_json(fields)  # bad fields fail here, alone
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((body, done))
        self._wakeup.set()
        await asyncio.shield(done)  # a cancelled caller does not cancel others' commit

    def owe(self, fields: Mapping[str, Any]) -> None:
        """Keep a record ``append`` could not commit, to be written once the database is
        back; past ``max_owed`` records it is dropped (and logged)."""
        body = canonical_json(fields)
        if len(self._owed) >= self._max_owed:
            logger.error("audit record dropped: %d records already wait", len(self._owed))
            return
        self._owed.append(body)
        self._wakeup.set()

    async def _flush_loop(self) -> None:
        while True:
            if not self._waiting:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wakeup.wait(), OWED_RETRY_S if self._owed else None
                    )
            await self._flush_once()

    async def _flush_once(self) -> None:
        batch, self._waiting = (
            self._waiting[: self._max_batch],
            self._waiting[self._max_batch :],
        )
        owed, self._owed = self._owed[: self._max_batch], self._owed[self._max_batch :]
        if not batch and not owed:
            return
        now = datetime.now(UTC)
        try:
            async with asyncio.timeout(self._commit_timeout_s), self._engine.begin() as conn:
                bodies = [*owed, *(body for body, _ in batch)]
                await insert_pending(conn, [(now, body) for body in bodies])
        except Exception as exc:  # every waiter learns its record was not written
            self._owed[:0] = owed  # still owed, in their order
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        for _, done in batch:
            if not done.done():
                done.set_result(None)
