"""audit content: tenants' opt-in to sealed prompts and answers, subject keys, legal holds

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 10:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The gateway creates keys, shreds them (UPDATE) and sets holds; auditors read.
GRANTS = {
    "audit_subject_keys": {"enclave_gateway": "SELECT, INSERT, UPDATE"},
    "audit_holds": {"enclave_gateway": "SELECT, INSERT, DELETE"},
}


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column("keep_content", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("content_retention_days", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("legal_hold", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.create_table(
        "audit_subject_keys",
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=7), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("shredded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("shred_reason", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("subject", "period", name=op.f("pk_audit_subject_keys")),
    )
    op.create_index(
        op.f("ix_audit_subject_keys_tenant_id"), "audit_subject_keys", ["tenant_id"]
    )
    op.create_table(
        "audit_holds",
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject", name=op.f("pk_audit_holds")),
    )
    if op.get_bind().dialect.name == "postgresql":
        for table, grants in GRANTS.items():
            op.execute(f"REVOKE ALL ON {table} FROM PUBLIC")
            for role, privileges in grants.items():
                op.execute(f"GRANT {privileges} ON {table} TO {role}")
            op.execute(f"GRANT SELECT ON {table} TO enclave_auditor")


def downgrade() -> None:
    op.drop_table("audit_holds")
    op.drop_index(op.f("ix_audit_subject_keys_tenant_id"), table_name="audit_subject_keys")
    op.drop_table("audit_subject_keys")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("legal_hold")
        batch.drop_column("content_retention_days")
        batch.drop_column("keep_content")
