"""Database models (SQLAlchemy 2, typed). Alembic migrations in migrations/ follow them."""

from gateway.db.models.audit_content import AuditHold, AuditSubjectKey
from gateway.db.models.audit_log import (
    AuditCheckpoint,
    AuditIndex,
    AuditLogEntry,
    AuditNode,
    AuditPending,
    AuditTree,
)
from gateway.db.models.base import Base
from gateway.db.models.identity import ApiKey, Tenant, User
from gateway.db.models.limits import Limit

__all__ = [
    "ApiKey",
    "AuditCheckpoint",
    "AuditHold",
    "AuditIndex",
    "AuditLogEntry",
    "AuditNode",
    "AuditPending",
    "AuditSubjectKey",
    "AuditTree",
    "Base",
    "Limit",
    "Tenant",
    "User",
]
