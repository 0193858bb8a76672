"""audit purge: records past their retention keep their leaf hash and lose their bytes

Purging sets ``audit_log.data`` to NULL and nothing else: the leaf hash stays, so the
Merkle tree, every checkpoint and proof, and the next record's link still verify. On
PostgreSQL the append-only trigger now lets exactly that UPDATE through (and nothing else),
and only the sequencer's role may make it (column privilege on ``data``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("data", existing_type=sa.LargeBinary(), nullable=True)
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        """
        CREATE FUNCTION enclave_audit_log_update() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.seq = OLD.seq AND NEW.leaf = OLD.leaf
               AND NEW.sequenced_at = OLD.sequenced_at
               AND OLD.data IS NOT NULL AND NEW.data IS NULL THEN
                RETURN NEW;  -- a purge: the bytes go, the leaf hash stays
            END IF;
            RAISE EXCEPTION 'audit table %: % is not allowed (append-only)', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
    op.execute(
        "CREATE TRIGGER audit_log_append_only BEFORE DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION enclave_audit_refuse()"
    )
    op.execute(
        "CREATE TRIGGER audit_log_purge_only BEFORE UPDATE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION enclave_audit_log_update()"
    )
    op.execute("GRANT UPDATE (data) ON audit_log TO enclave_sequencer")
    op.execute("GRANT DELETE ON audit_index TO enclave_sequencer")
    op.execute("GRANT SELECT ON audit_holds TO enclave_sequencer")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("REVOKE SELECT ON audit_holds FROM enclave_sequencer")
        op.execute("REVOKE DELETE ON audit_index FROM enclave_sequencer")
        op.execute("REVOKE UPDATE (data) ON audit_log FROM enclave_sequencer")
        op.execute("DROP TRIGGER audit_log_purge_only ON audit_log")
        op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION enclave_audit_refuse()"
        )
        op.execute("DROP FUNCTION enclave_audit_log_update()")
    with op.batch_alter_table("audit_log") as batch:
        batch.alter_column("data", existing_type=sa.LargeBinary(), nullable=False)
