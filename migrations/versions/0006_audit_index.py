"""audit index and nodes: the log is the only audit write path; search columns and stored
subtree hashes (for inclusion proofs) replace audit_records

``audit_records`` was the foundation's plain audit table. Every event now goes to the
tamper-evident log (``audit_pending`` → ``audit_log``), and the sequencer fills
``audit_index`` from each record in the same transaction. The plain table is dropped (no
release ever wrote to it outside development); downgrading brings it back empty.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_index",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("tenant_id", sa.String(length=36), nullable=True),
        sa.Column("user", sa.String(length=64), nullable=True),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("endpoint", sa.String(length=64), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_index")),
    )
    for column in ("time", "request_id", "tenant_id", "user"):
        op.create_index(op.f(f"ix_audit_index_{column}"), "audit_index", [column])
    op.create_table(
        "audit_nodes",
        sa.Column("height", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("height", "idx", name=op.f("pk_audit_nodes")),
    )
    op.drop_table("audit_records")


def downgrade() -> None:
    op.drop_table("audit_nodes")
    op.create_table(
        "audit_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=True),
        sa.Column("user_id", sa.String(length=36), nullable=True),
        sa.Column("key_id", sa.String(length=36), nullable=True),
        sa.Column("endpoint", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=255), nullable=True),
        sa.Column("weights_digest", sa.String(length=71), nullable=True),
        sa.Column("worker_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("finish_reason", sa.String(length=32), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("prompt_sha256", sa.String(length=64), nullable=True),
        sa.Column("answer_sha256", sa.String(length=64), nullable=True),
        sa.Column("target", sa.String(length=255), nullable=True),
        sa.Column("change", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_records")),
    )
    op.create_index(op.f("ix_audit_records_created_at"), "audit_records", ["created_at"])
    op.create_index(op.f("ix_audit_records_request_id"), "audit_records", ["request_id"])
    op.create_index(op.f("ix_audit_records_tenant_id"), "audit_records", ["tenant_id"])
    for column in ("user", "tenant_id", "request_id", "time"):
        op.drop_index(op.f(f"ix_audit_index_{column}"), table_name="audit_index")
    op.drop_table("audit_index")
