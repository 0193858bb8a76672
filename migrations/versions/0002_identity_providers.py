"""identity providers: users keyed by issuer + subject, roles, tenant model access,
key kinds, admin audit fields

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 05:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column("is_disabled", sa.Boolean(), server_default=sa.text("false"), nullable=False)
        )
        batch.add_column(sa.Column("allowed_models", sa.JSON(), nullable=True))

    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("issuer", sa.String(length=512), nullable=True))
        batch.add_column(sa.Column("subject", sa.String(length=255), nullable=True))
        batch.add_column(
            sa.Column("idp_roles", sa.JSON(), server_default=sa.text("'[]'"), nullable=False)
        )
        batch.add_column(
            sa.Column("granted_roles", sa.JSON(), server_default=sa.text("'[]'"), nullable=False)
        )
        batch.add_column(sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_constraint("uq_users_tenant_id_name", type_="unique")
        batch.create_unique_constraint(op.f("uq_users_issuer_subject"), ["issuer", "subject"])
    # Local users stay unique by name within their tenant; provider users by issuer + subject.
    op.create_index(
        "uq_users_local_name",
        "users",
        ["tenant_id", "name"],
        unique=True,
        sqlite_where=sa.text("issuer IS NULL"),
        postgresql_where=sa.text("issuer IS NULL"),
    )
    with op.batch_alter_table("users") as batch:
        batch.alter_column("idp_roles", server_default=None)
        batch.alter_column("granted_roles", server_default=None)

    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), server_default="service", nullable=False)
        )

    with op.batch_alter_table("audit_records") as batch:
        batch.add_column(sa.Column("target", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("change", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_records") as batch:
        batch.drop_column("change")
        batch.drop_column("target")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("kind")
    op.drop_index("uq_users_local_name", table_name="users")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("uq_users_issuer_subject"), type_="unique")
        batch.create_unique_constraint("uq_users_tenant_id_name", ["tenant_id", "name"])
        batch.drop_column("last_seen_at")
        batch.drop_column("granted_roles")
        batch.drop_column("idp_roles")
        batch.drop_column("subject")
        batch.drop_column("issuer")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("allowed_models")
        batch.drop_column("is_disabled")
