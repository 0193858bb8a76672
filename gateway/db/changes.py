"""Which rows changed, told by PostgreSQL: the feed that keeps per-process row caches honest.

Triggers on the identity and limit tables (``tenants``, ``users``, ``api_keys``, ``limits``;
migration 0012) send ``NOTIFY enclave_rows_changed`` in the writing transaction, so every
write — this replica's, another replica's, the CLI's, an operator's psql — reaches every
gateway the moment it commits. Each gateway LISTENs on a connection of its own and counts
the notifications in ``generation``; a cache entry is good only for the generation it was
read in. The gateway's own writes need not wait for the notification to come back: its
sessions bump the generation as they commit (``create_session_factory``'s
``after_write_commit``), so its next request sees what it has just written.

Fail closed: while the feed is not listening (not yet connected, connection lost, SQLite
where other processes write without telling) ``live`` is False and caches read through to
the database on every request. A reconnect bumps the generation, since notifications sent
while away are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import make_url

logger = logging.getLogger("enclave.db.changes")

CHANNEL = "enclave_rows_changed"
WATCHED_TABLES = ("tenants", "users", "api_keys", "limits")
RECONNECT_S = 1.0


class ChangeFeed:
    """Counts committed changes to the watched tables; ``live`` only while listening."""

    def __init__(self) -> None:
        self.generation = 0
        self._listening = False

    @property
    def live(self) -> bool:
        return self._listening

    def changed(self) -> None:
        self.generation += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Nothing to listen to: never live (SQLite, or caching turned off)."""
        await stop.wait()


class PostgresChangeFeed(ChangeFeed):
    """LISTENs on its own asyncpg connection, reconnecting every ``RECONNECT_S`` when lost."""

    def __init__(self, database_url: str) -> None:
        super().__init__()
        url = make_url(database_url)
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._lost = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        import asyncpg  # type: ignore[import-untyped]

        while not stop.is_set():
            connection: Any = None
            try:
                connection = await asyncpg.connect(self._dsn, timeout=10)
                self._lost.clear()
                connection.add_termination_listener(self._on_termination)
                await connection.add_listener(CHANNEL, self._on_notify)
                self.changed()  # whatever was read before now may have missed a change
                self._listening = True
                await _first(stop.wait(), self._lost.wait())
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                logger.warning("row change feed unavailable (%s); not caching", type(exc).__name__)
            finally:
                self._listening = False
                self.changed()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), 5)
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RECONNECT_S)

    def _on_notify(self, *_args: object) -> None:
        self.changed()

    def _on_termination(self, *_args: object) -> None:
        self._listening = False
        self.changed()
        self._lost.set()


async def _first(*waits: Any) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def change_feed_for(database_url: str, *, enabled: bool = True) -> ChangeFeed:
    """A PostgreSQL database tells of its changes; anything else never does."""
    if enabled and make_url(database_url).get_backend_name() == "postgresql":
        return PostgresChangeFeed(database_url)
    return ChangeFeed()
