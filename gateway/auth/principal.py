"""Who is calling: the result of authentication, whatever the method (API key or OIDC token)."""

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
    allowed_models: frozenset[str] | None = None
    """The tenant's model allow-list; None: every model."""
    issuer: str | None = None
    keep_content: bool = False
    """The tenant keeps prompts and answers, sealed, in its audit records."""
    priority: Literal["interactive", "batch"] = "interactive"
    """The tenant's scheduling class: interactive jobs start before batch jobs."""
    weight: float = 1.0
    """The tenant's share of a model's workers against the other tenants of its class."""

    def may_use(self, model: str) -> bool:
        return self.allowed_models is None or model in self.allowed_models

    @property
    def is_platform_admin(self) -> bool:
        return "platform_admin" in self.roles

    @property
    def reach(self) -> str | None:
        """The one tenant this caller's admin or audit rights cover; None: every tenant
        (a platform_admin)."""
        return None if self.is_platform_admin else self.tenant_id

    def reaches(self, tenant_id: str | None) -> bool:
        return self.reach is None or tenant_id == self.reach
