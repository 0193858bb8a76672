"""limits: requests and tokens per minute, concurrency and token budgets per scope

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIMIT_COLUMNS = (
    "requests_per_minute",
    "tokens_per_minute",
    "concurrent_requests",
    "tokens_per_day",
    "tokens_per_month",
)


def upgrade() -> None:
    op.create_table(
        "limits",
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("scope_id", sa.String(length=36), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=True) for name in LIMIT_COLUMNS),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "scope_id", name=op.f("pk_limits")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON limits TO enclave_gateway")


def downgrade() -> None:
    op.drop_table("limits")
