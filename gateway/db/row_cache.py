"""Rows read on every request, kept per process for as long as nothing changed them.

A value is served from memory only while the change feed (``gateway.db.changes``) is live
and has seen no change since the value was read; a value read while a change arrived is
returned but not kept, so a write that commits during a read is never hidden. Entries
also age out after ``ttl_s`` and the cache holds at most ``max_entries`` (oldest out).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from gateway.db.changes import ChangeFeed

V = TypeVar("V")

DEFAULT_TTL_S = 60.0
DEFAULT_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class _Entry(Generic[V]):
    value: V
    generation: int
    expires_at: float


class RowCache(Generic[V]):
    def __init__(
        self,
        feed: ChangeFeed,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._feed = feed
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Entry[V]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    async def get(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        feed = self._feed
        if not feed.live:
            self._entries.clear()
            return await load()
        generation = feed.generation
        entry = self._entries.get(key)
        if entry is not None:
            if entry.generation == generation and entry.expires_at > self._clock():
                self.hits += 1
                return entry.value
            del self._entries[key]
        self.misses += 1
        value = await load()
        if feed.live and feed.generation == generation:
            self._entries[key] = _Entry(value, generation, self._clock() + self._ttl_s)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return value
