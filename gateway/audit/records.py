"""First-version audit write path: the one module that appends audit records.

Fail closed: any failure to write raises AuditUnavailable, and callers refuse the request
before the model is called. Records hold SHA-256 digests of prompts and answers, never text.
The tamper-evident chain replaces this module in its own issue.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gateway.audit.chain import pseudonym
from gateway.audit.writer import append_pending
from gateway.db.models import AuditRecord
from gateway.errors import AuditUnavailable

logger = logging.getLogger("enclave.audit")

AuditEvent = Literal["accepted", "outcome", "refused", "admin"]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    request_id: str
    event: AuditEvent
    endpoint: str
    status: int
    tenant_id: str | None = None
    user_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    weights_digest: str | None = None
    worker_id: str | None = None
    error_code: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: int | None = None
    prompt_sha256: str | None = None
    answer_sha256: str | None = None
    target: str | None = None
    change: dict[str, Any] | None = None


def log_fields(entry: AuditEntry, at: datetime, pseudonym_key: bytes) -> dict[str, Any]:
    """The fields of the hash-chained record: the entry without empty values, the time, and
    the user as a pseudonym (never the user id itself)."""
    fields = {name: value for name, value in asdict(entry).items() if value is not None}
    user_id = fields.pop("user_id", None)
    if user_id is not None:
        fields["user"] = pseudonym(pseudonym_key, user_id)
    fields["time"] = at.isoformat(timespec="microseconds")
    return fields


class AuditLog:
    """Writes each entry twice in one transaction: the searchable ``audit_records`` row and
    the pending record of the tamper-evident log (when a pseudonym key is given)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], pseudonym_key: bytes | None = None
    ) -> None:
        self._sessions = sessions
        self._pseudonym_key = pseudonym_key

    async def append(self, entry: AuditEntry) -> None:
        """Append one record, committed before returning; raise AuditUnavailable otherwise."""
        at = datetime.now(UTC)
        values = asdict(entry) | {"created_at": at}
        try:
            async with self._sessions() as session:
                await session.execute(insert(AuditRecord).values(**values))
                if self._pseudonym_key is not None:
                    fields = log_fields(entry, at, self._pseudonym_key)
                    await append_pending(await session.connection(), fields, at)
                await session.commit()
        except Exception as exc:  # fail closed, whatever broke
            logger.error("audit write failed: %s", type(exc).__name__)
            raise AuditUnavailable(
                "The audit log cannot be written; the request was not processed."
            ) from exc
