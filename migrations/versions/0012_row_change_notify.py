"""row change notifications: NOTIFY enclave_rows_changed on writes to identity and limits

Gateways cache the key, user, tenant and limit rows they read on every request and drop
them the moment any of these tables changes (``gateway.db.changes``). PostgreSQL only:
SQLite has no NOTIFY, and gateways on SQLite do not cache.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNEL = "enclave_rows_changed"
TABLES = ("tenants", "users", "api_keys", "limits")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE FUNCTION enclave_notify_rows_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME);
            RETURN NULL;
        END
        $$
        """
    )
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_notify_changed "
            f"AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION enclave_notify_rows_changed()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_notify_changed ON {table}")
    op.execute("DROP FUNCTION IF EXISTS enclave_notify_rows_changed()")
