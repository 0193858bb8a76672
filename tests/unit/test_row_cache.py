"""RowCache: served from memory only while the feed is live and unchanged since the read."""

from __future__ import annotations

from gateway.db.changes import ChangeFeed
from gateway.db.row_cache import RowCache


class SwitchableFeed(ChangeFeed):
    """The protocol of the real feed, with ``live`` set by the test."""

    def __init__(self, live: bool = True) -> None:
        super().__init__()
        self.listening = live

    @property
    def live(self) -> bool:
        return self.listening


class Loader:
    def __init__(self, feed: SwitchableFeed | None = None, change_during_read: bool = False):
        self.reads = 0
        self._feed = feed
        self._change_during_read = change_during_read

    async def __call__(self) -> str:
        self.reads += 1
        if self._change_during_read and self._feed is not None:
            self._feed.changed()
        return f"value {self.reads}"


async def test_a_second_get_is_served_from_memory() -> None:
    cache: RowCache[str] = RowCache(SwitchableFeed())
    load = Loader()
    assert await cache.get("k", load) == "value 1"
    assert await cache.get("k", load) == "value 1"
    assert (load.reads, cache.hits, cache.misses) == (1, 1, 1)


async def test_any_change_makes_every_entry_stale() -> None:
    feed = SwitchableFeed()
    cache: RowCache[str] = RowCache(feed)
    load = Loader()
    await cache.get("a", load)
    feed.changed()
    assert await cache.get("a", load) == "value 2"


async def test_a_value_read_while_a_change_arrived_is_returned_but_not_kept() -> None:
    feed = SwitchableFeed()
    cache: RowCache[str] = RowCache(feed)
    racing = Loader(feed, change_during_read=True)
    assert await cache.get("k", racing) == "value 1"
    assert await cache.get("k", racing) == "value 2"


async def test_without_a_live_feed_every_get_reads() -> None:
    feed = SwitchableFeed(live=False)
    cache: RowCache[str] = RowCache(feed)
    load = Loader()
    for _ in range(3):
        await cache.get("k", load)
    assert load.reads == 3


async def test_losing_the_feed_drops_what_was_cached() -> None:
    feed = SwitchableFeed()
    cache: RowCache[str] = RowCache(feed)
    load = Loader()
    await cache.get("k", load)
    feed.listening = False
    await cache.get("k", load)
    feed.listening = True  # back, with the same generation: nothing old may be served
    assert await cache.get("k", load) == "value 3"


async def test_entries_age_out_and_the_oldest_go_first() -> None:
    now = [0.0]
    cache: RowCache[str] = RowCache(SwitchableFeed(), ttl_s=10, max_entries=2, clock=lambda: now[0])
    load = Loader()
    await cache.get("a", load)
    now[0] = 11.0
    assert await cache.get("a", load) == "value 2"
    await cache.get("b", load)
    await cache.get("c", load)  # "a" is the oldest of three: out
    assert await cache.get("a", load) == "value 5"
    assert await cache.get("c", load) == "value 4"
