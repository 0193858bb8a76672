"""Read the audit log as tests need it: every record, sequenced or still pending, with the
pseudonyms of known users and keys resolved back to their ids (as an auditor holding the
pseudonym key would)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.audit.chain import pseudonym
from gateway.db.models import ApiKey, User

# One statement, one snapshot: a record moving from pending to the log is seen once.
RECORDS = text(
    "SELECT 0 AS pending, seq AS n, data FROM audit_log "
    "UNION ALL SELECT 1 AS pending, id AS n, body AS data FROM audit_pending "
    "ORDER BY pending, n"
)


@dataclass(frozen=True)
class Logged:
    """One record's fields; ``seq`` is None while it waits for the sequencer. Attribute
    access reads a field (None when absent); ``user_id``, ``key_id``, ``target`` and
    ``change`` carry the resolved identities."""

    seq: int | None
    fields: dict[str, Any]
    user_id: str | None
    key_id: str | None
    target: str | None
    change: dict[str, Any] | None

    def __getattr__(self, name: str) -> Any:
        return self.fields.get(name)


async def known_pseudonyms(main_db: AsyncEngine, key: bytes) -> dict[str, str]:
    async with main_db.connect() as conn:
        ids = [*await conn.scalars(select(User.id)), *await conn.scalars(select(ApiKey.id))]
    return {pseudonym(key, identity): identity for identity in ids}


async def read_logged(audit_db: AsyncEngine, main_db: AsyncEngine, key: bytes) -> list[Logged]:
    async with audit_db.connect() as conn:
        rows = (await conn.execute(RECORDS)).all()
    names = await known_pseudonyms(main_db, key)

    def resolve(value: Any) -> str | None:
        return None if value is None else names.get(value, f"<unknown pseudonym {value}>")

    logged = []
    for pending, n, data in rows:
        if data is None:  # purged after its retention
            continue
        parsed = json.loads(data)
        fields = parsed if pending else parsed["fields"]
        kind, _, target_id = str(fields.get("target", "")).partition(":")
        target = fields.get("target")
        if kind in ("user", "api_key"):
            target = f"{kind}:{resolve(target_id)}"
        change = fields.get("change")
        if isinstance(change, dict) and "user" in change:
            change = {k: v for k, v in change.items() if k != "user"}
            change["user_id"] = resolve(fields["change"]["user"])
        logged.append(
            Logged(
                seq=None if pending else n,
                fields=fields,
                user_id=resolve(fields.get("user")),
                key_id=resolve(fields.get("key")),
                target=target,
                change=change,
            )
        )
    return logged
