"""Configured limits: one row per scope (a tenant's total, a tenant's default per user, a
user, an API key). A missing row or a NULL column: no limit of that kind at that scope."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.models.base import Base, UtcDateTime

SCOPE_KINDS = ("tenant", "tenant_user_default", "user", "key")


class Limit(Base):
    __tablename__ = "limits"

    kind: Mapped[str] = mapped_column(String(24), primary_key=True)
    """tenant | tenant_user_default | user | key"""
    scope_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer, nullable=True)
    concurrent_requests: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_day: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tokens_per_month: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
