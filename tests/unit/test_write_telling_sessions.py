"""Sessions that tell of their committed writes: a gateway drops its own row caches the
moment it commits a change, without waiting for PostgreSQL's notification to come back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import String, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gateway.db.row_cache import RowCache
from gateway.db.session import create_engine, create_session_factory
from tests.unit.test_row_cache import SwitchableFeed


class Base(DeclarativeBase):
    pass


class Person(Base):
    __tablename__ = "people"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Told:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@pytest.fixture
async def engine() -> AsyncIterator[AsyncEngine]:
    engine = create_engine("sqlite+aiosqlite:///:memory:")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
        await conn.execute(text("INSERT INTO people (id, name) VALUES (1, 'ann')"))
    yield engine
    await engine.dispose()


async def name_of(sessions: async_sessionmaker[AsyncSession]) -> str:
    async with sessions() as session:
        return (await session.execute(select(Person.name).where(Person.id == 1))).scalar_one()


async def test_an_orm_write_and_a_statement_write_are_told_once_each_at_commit(
    engine: AsyncEngine,
) -> None:
    told = Told()
    sessions = create_session_factory(engine, after_write_commit=told)
    async with sessions() as session:
        session.add(Person(id=2, name="bob"))
        await session.flush()
        assert told.count == 0  # flushed, not yet committed
        await session.commit()
    assert told.count == 1
    async with sessions() as session:
        await session.execute(update(Person).where(Person.id == 2).values(name="rob"))
        await session.commit()
    assert told.count == 2


async def test_reads_and_rolled_back_writes_are_not_told(engine: AsyncEngine) -> None:
    told = Told()
    sessions = create_session_factory(engine, after_write_commit=told)
    assert await name_of(sessions) == "ann"
    async with sessions() as session:
        await session.execute(update(Person).values(name="nobody"))
        await session.rollback()
        await session.commit()  # nothing left to commit: the write was rolled back
    assert (told.count, await name_of(sessions)) == (0, "ann")


async def test_the_next_cached_read_after_a_local_write_sees_it_with_no_notification(
    engine: AsyncEngine,
) -> None:
    feed = SwitchableFeed()  # live, and no notification will ever arrive
    sessions = create_session_factory(engine, after_write_commit=feed.changed)
    cache: RowCache[str] = RowCache(feed)
    assert await cache.get(1, lambda: name_of(sessions)) == "ann"
    assert (cache.hits, await cache.get(1, lambda: name_of(sessions))) == (0, "ann")
    assert cache.hits == 1
    async with sessions() as session:
        await session.execute(update(Person).where(Person.id == 1).values(name="anne"))
        await session.commit()
    assert await cache.get(1, lambda: name_of(sessions)) == "anne"
