"""Who is calling: the result of authentication, whatever the method (API key now, OIDC later)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Principal:
    user_id: str
    tenant_id: str
    tenant_name: str
    user_name: str
    roles: frozenset[str] = field(default_factory=lambda: frozenset({"user"}))
    auth_method: Literal["api_key", "oidc"] = "api_key"
    key_id: str | None = None
