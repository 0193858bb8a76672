"""audit append-only: triggers refuse UPDATE, DELETE and TRUNCATE of sequenced records

PostgreSQL only (SQLite, the single-host default, has no TRUNCATE and one process). The
triggers stop the application, a bug, or a careless operator; a superuser can still switch
them off (``session_replication_role = replica``), which is what the chain, the tree and
the signed checkpoints detect. The tree head may be UPDATEd (by the sequencer) but never
deleted; checkpoints are insert-only.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> the row events refused (TRUNCATE is refused on all of them)
REFUSED = {
    "audit_log": "UPDATE OR DELETE",
    "audit_checkpoints": "UPDATE OR DELETE",
    "audit_tree": "DELETE",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION enclave_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit table %: % is not allowed (append-only)', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    for table, events in REFUSED.items():
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE {events} ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION enclave_audit_refuse()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION enclave_audit_refuse()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in REFUSED:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    op.execute("DROP FUNCTION IF EXISTS enclave_audit_refuse()")
