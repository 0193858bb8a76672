"""Keys for sealed audit content and legal holds.

One key per data subject (the user's pseudonym) and calendar month, stored wrapped by the
master key. Shredding sets ``wrapped`` to NULL: the key is gone, the row remembers when and
why. A legal hold on a subject (here) or a tenant (``tenants.legal_hold``) blocks shredding.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from gateway.db.models.base import Base, UtcDateTime


class AuditSubjectKey(Base):
    __tablename__ = "audit_subject_keys"

    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    """The calendar month (YYYY-MM) whose content this key seals."""
    tenant_id: Mapped[str] = mapped_column(String(36), index=True)
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    shredded_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    shred_reason: Mapped[str | None] = mapped_column(String(255), nullable=True)


class AuditHold(Base):
    """A legal hold on one data subject."""

    __tablename__ = "audit_holds"

    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
