"""Database models (SQLAlchemy 2, typed). Alembic migrations in migrations/ follow them."""

from gateway.db.models.audit import AuditRecord
from gateway.db.models.audit_log import (
    AuditCheckpoint,
    AuditLogEntry,
    AuditPending,
    AuditTree,
)
from gateway.db.models.base import Base
from gateway.db.models.identity import ApiKey, Tenant, User

__all__ = [
    "ApiKey",
    "AuditCheckpoint",
    "AuditLogEntry",
    "AuditPending",
    "AuditRecord",
    "AuditTree",
    "Base",
    "Tenant",
    "User",
]
