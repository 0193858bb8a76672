"""Group commit for audit records: many concurrent appends, few transactions.

``append`` returns only once its record is committed to ``audit_pending`` (fail closed: an
exception means no record, and the caller refuses the request). Appends that arrive while
a commit is in flight wait for the next one, which takes all of them in one multi-row
INSERT: with 32 concurrent requests a commit carries dozens of records, so the database
sees a few hundred transactions a second instead of thousands.

On PostgreSQL each flusher holds one connection of its own and writes a batch with COPY
in a transaction driven on the driver's connection directly, not a pooled connection
through SQLAlchemy (whose checkout pings the server and whose wrappers cost more CPU than
the COPY). The transaction stays explicit, though COPY is atomic alone: a commit that times
out before its COMMIT was sent is rolled back when the connection is dropped, where an
autocommitted COPY to a hung server could still commit once the server wakes, leaving a
record behind a request that was refused. A held connection idle for ``IDLE_PING_S`` is
pinged before use, as the pool would; one that fails is dropped, and the next batch
connects afresh.

A record that can no longer be refused (the outcome of a request that has run) and could
not be committed is ``owe``d: kept in memory, bounded, and written with the next commit
that succeeds, or retried every ``OWED_RETRY_S`` seconds until the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
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
IDLE_PING_S = 1.0


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
    """Insert pending rows in the caller's transaction, one multi-row INSERT (PostgreSQL's
    flushers COPY on their held connection instead: ``_HeldConnection``)."""
    await conn.execute(
        insert(AuditPending), [{"created_at": at, "body": body} for at, body in rows]
    )


class _HeldConnection:
    """A PostgreSQL connection one flusher keeps for its COPYs."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._used_at = -math.inf

    async def copy(self, rows: list[tuple[datetime, bytes]]) -> None:
        """Commit the rows (all of them or none); on any failure, including a cancel, the
        connection is dropped (its state is unknown) and the error raised."""
        try:
            driver = await self._driver()
            async with driver.transaction():
                await driver.copy_records_to_table(
                    AuditPending.__tablename__, records=rows, columns=["created_at", "body"]
                )
            self._used_at = time.monotonic()
        except BaseException:
            await self.close(invalidate=True)
            raise

    async def _driver(self) -> Any:
        """The driver's connection: the one held, if it answers a ping after being idle
        (found dead here, nothing was sent on it: a new one takes its place), else new."""
        if self._conn is not None and time.monotonic() - self._used_at > IDLE_PING_S:
            try:
                driver: Any = (await self._conn.get_raw_connection()).driver_connection
                await driver.execute(";")
            except Exception:
                await self.close(invalidate=True)
        if self._conn is None:
            self._conn = await self._engine.connect()
        return (await self._conn.get_raw_connection()).driver_connection

    async def close(self, *, invalidate: bool = False) -> None:
        conn, self._conn, self._used_at = self._conn, None, -math.inf
        if conn is None:
            return
        with contextlib.suppress(Exception):
            if invalidate:
                await conn.invalidate()
            await conn.close()


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
        self._stopping = False

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._flush_loop(self._held())) for _ in range(self._flushers)
        ]

    def _held(self) -> _HeldConnection | None:
        return _HeldConnection(self._engine) if self._engine.dialect.name == "postgresql" else None

    async def stop(self) -> None:
        """Commit what is waiting, then stop. The flushers finish the batch in hand (one
        cancelled mid-commit could not tell its waiters whether their records were
        written)."""
        self._stopping = True
        self._wakeup.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        held = self._held()
        try:
            while self._waiting:
                await self._flush_once(held)
            if self._owed:
                await self._flush_once(held)
        finally:
            if held is not None:
                await held.close()
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

    async def _flush_loop(self, held: _HeldConnection | None) -> None:
        try:
            while not self._stopping:
                if not self._waiting:
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._wakeup.wait(), OWED_RETRY_S if self._owed else None
                        )
                await self._flush_once(held)
        finally:
            if held is not None:
                await held.close()

    async def _flush_once(self, held: _HeldConnection | None) -> None:
        batch, self._waiting = (
            self._waiting[: self._max_batch],
            self._waiting[self._max_batch :],
        )
        owed, self._owed = self._owed[: self._max_batch], self._owed[self._max_batch :]
        if not batch and not owed:
            return
        now = datetime.now(UTC)
        rows = [(now, body) for body in [*owed, *(body for body, _ in batch)]]
        try:
            async with asyncio.timeout(self._commit_timeout_s):
                if held is not None:
                    await held.copy(rows)
                else:
                    async with self._engine.begin() as conn:
                        await insert_pending(conn, rows)
        except Exception as exc:  # every waiter learns its record was not written
            self._owed[:0] = owed  # still owed, in their order
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        for _, done in batch:
            if not done.done():
                done.set_result(None)
