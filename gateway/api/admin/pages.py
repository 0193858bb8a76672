"""Bounded, stable pages of admin listings: ordered by (created_at, id), continued after an id.

The cursor is looked up with the listing's own filters, so an id outside the caller's
reach is refused exactly like one that does not exist.
"""

from __future__ import annotations

import uuid
from typing import Annotated, TypeAlias, TypeVar

from litestar.params import QueryParameter
from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.db.models import ApiKey, Tenant, User
from gateway.errors import InvalidRequest

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

Row = TypeVar("Row", Tenant, User, ApiKey)

Limit: TypeAlias = Annotated[
    int, QueryParameter(description=f"Items per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).")
]
After: TypeAlias = Annotated[
    str | None, QueryParameter(description="Continue after the item with this id.")
]


async def page(
    session: AsyncSession,
    query: Select[Row],
    entity: type[Row],
    *,
    limit: int,
    after: str | None,
) -> tuple[list[Row], bool]:
    """At most ``limit`` rows of ``query`` following ``after``, and whether more follow."""
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}.", param="limit")
    if after is not None:
        cursor = await session.scalar(query.where(entity.id == _cursor_id(after)))
        if cursor is None:
            raise _unknown_cursor(after)
        query = query.where(
            or_(
                entity.created_at > cursor.created_at,
                and_(entity.created_at == cursor.created_at, entity.id > cursor.id),
            )
        )
    rows = list(
        await session.scalars(query.order_by(entity.created_at, entity.id).limit(limit + 1))
    )
    return rows[:limit], len(rows) > limit


def _cursor_id(after: str) -> str:
    try:
        return str(uuid.UUID(after))
    except ValueError:
        raise _unknown_cursor(after) from None


def _unknown_cursor(after: str) -> InvalidRequest:
    return InvalidRequest(
        f"after={after!r} is not the id of an object in this listing.", param="after"
    )
