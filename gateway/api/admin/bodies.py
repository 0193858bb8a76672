"""Admin request bodies: decoded by the handler once the caller is authenticated, and
described in OpenAPI all the same.

Litestar would parse a ``data`` parameter before the handler runs, so before
authentication and without ``decode_body``'s errors. Its OpenAPI generator also reads the
``data`` parameter of the handler's dependencies; a dependency the handler does not ask for
is never called. ``described_body`` builds such a dependency: documentation only.
"""

from __future__ import annotations

from typing import Any, TypeVar

from litestar import Request
from litestar.di import Provide

from gateway.api.intake import read_body
from gateway.schemas.decoding import decode_body

MAX_BODY_BYTES = 16 * 1024
"""Admin controllers set this as their ``request_max_body_size``; a longer body is a 413."""

T = TypeVar("T")


async def read_json(request: Request[Any, Any, Any], schema: type[T]) -> T:
    """The body as ``schema``: 400 for bad JSON, a missing field or an unknown one."""
    return decode_body(await read_body(request, MAX_BODY_BYTES), schema)


def described_body(schema: type[Any]) -> dict[str, Provide]:
    """Handler dependencies that show ``schema`` as the JSON request body in OpenAPI."""

    def request_body(data: Any) -> Any:  # never called: no handler requests it
        return data

    request_body.__annotations__ = {"data": schema, "return": schema}
    return {"openapi_request_body": Provide(request_body, sync_to_thread=False)}
