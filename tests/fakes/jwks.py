"""Fakes of an issuer's JWKS endpoint and of a clock, for the token-validation unit tests."""

from __future__ import annotations

import asyncio
from typing import Any


class FakeJwksSource:
    """The issuer's JWKS endpoint: serves ``keys`` (public parts), counts fetches, can go down."""

    def __init__(self, *keys: Any) -> None:
        self.documents: list[Any] = [key.as_dict(private=False) for key in keys]
        self.fetches = 0
        self.is_down = False

    def publish(self, *keys: Any) -> None:
        """Replace the published set (key rotation at the issuer)."""
        self.documents = [key.as_dict(private=False) for key in keys]

    async def __call__(self) -> dict[str, Any]:
        self.fetches += 1
        await asyncio.sleep(0)  # let concurrent callers pile up behind the refresh
        if self.is_down:
            raise ConnectionError("JWKS endpoint unreachable")
        return {"keys": list(self.documents)}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now
