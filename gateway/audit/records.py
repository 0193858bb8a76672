"""The one audit write path: every event becomes a record of the tamper-evident log.

Fail closed: any failure to write raises AuditUnavailable, and callers refuse the request
before the model is called. Records hold SHA-256 digests of prompts and answers, never text,
and name users and keys by pseudonym only (``gateway.audit.chain.pseudonym``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Literal

from gateway.audit.chain import pseudonym
from gateway.audit.writer import PendingWriter
from gateway.errors import AuditUnavailable

logger = logging.getLogger("enclave.audit")

AuditEvent = Literal["accepted", "outcome", "refused", "admin", "audit"]
"""``audit``: an auditor searched, viewed, exported or verified the log."""


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
    prompt_sealed: dict[str, Any] | None = None
    answer_sealed: dict[str, Any] | None = None
    """Tenants that keep content: the text sealed (``gateway.audit.sealing``)."""


ENTRY_FIELDS = tuple(field.name for field in fields(AuditEntry))

AUDIT_UNWRITABLE = "The audit log cannot be written; the request was not processed."

PSEUDONYMOUS_TARGETS = frozenset({"user", "api_key"})
"""Admin action targets that identify a person (a user, or a key leading to one)."""


def log_fields(entry: AuditEntry, at: datetime, pseudonym_key: bytes) -> dict[str, Any]:
    """The fields of the hash-chained record: the entry without empty values, the time, and
    the user and key as pseudonyms (never their ids: a key id leads to its user)."""
    # The values as they are (dataclasses.asdict deep-copies: 3% of the gateway's CPU at
    # load); the writer serialises the record at once, so nothing shared can change it.
    record = {name: value for name in ENTRY_FIELDS if (value := getattr(entry, name)) is not None}
    for id_field, field in (("user_id", "user"), ("key_id", "key")):
        identity = record.pop(id_field, None)
        if identity is not None:
            record[field] = pseudonym(pseudonym_key, identity)
    kind, _, target_id = (entry.target or "").partition(":")
    if kind in PSEUDONYMOUS_TARGETS and target_id:
        record["target"] = f"{kind}:{pseudonym(pseudonym_key, target_id)}"
    if entry.change is not None and isinstance(entry.change.get("user_id"), str):
        change = dict(entry.change)
        change["user"] = pseudonym(pseudonym_key, change.pop("user_id"))
        record["change"] = change
    record["time"] = at.isoformat(timespec="microseconds")
    return record


class AuditLog:
    """Appends entries to the log through the group-commit writer: ``append`` returns once
    the record is committed to ``audit_pending``, from which the sequencer chains it."""

    def __init__(self, writer: PendingWriter, pseudonym_key: bytes) -> None:
        self._writer = writer
        self._pseudonym_key = pseudonym_key

    def pseudonym(self, identity: str) -> str:
        return pseudonym(self._pseudonym_key, identity)

    async def append(self, entry: AuditEntry) -> None:
        """Append one record, committed before returning; raise AuditUnavailable otherwise."""
        fields = log_fields(entry, datetime.now(UTC), self._pseudonym_key)
        try:
            await self._writer.append(fields)
        except Exception as exc:  # fail closed, whatever broke
            logger.error("audit write failed: %s", type(exc).__name__)
            raise AuditUnavailable(AUDIT_UNWRITABLE) from exc

    def owe(self, entry: AuditEntry) -> None:
        """Keep a record for the writer to commit once the store is back, without trying
        now (the store has just failed)."""
        self._writer.owe(log_fields(entry, datetime.now(UTC), self._pseudonym_key))

    async def append_or_owe(self, entry: AuditEntry) -> None:
        """Append a record nothing can refuse any more (the outcome of a request that has
        run): committed before returning if the store answers; else kept by the writer and
        written once the store is back. Never raises for the store being away."""
        fields = log_fields(entry, datetime.now(UTC), self._pseudonym_key)
        try:
            await self._writer.append(fields)
        except Exception as exc:
            logger.error("audit write failed: %s; the record waits", type(exc).__name__)
            self._writer.owe(fields)
