"""audit roles: least-privilege group roles for the gateway, the sequencer and auditors

PostgreSQL only (SQLite has no roles). Creates three NOLOGIN group roles, cluster-wide and
only when missing (other databases of the cluster may share them; downgrade never drops
them), and grants each what it needs in this database:

- ``enclave_gateway``: the application tables; INSERT (never SELECT, UPDATE or DELETE) on
  ``audit_pending``; read-only on the sequenced log, its index, nodes, tree and checkpoints.
- ``enclave_sequencer``: drains ``audit_pending`` into ``audit_log``, upserts the derived
  index and nodes, advances the tree head, inserts checkpoints; no application tables.
- ``enclave_auditor``: read-only on the audit tables, nothing else.

Operators grant a LOGIN role membership and point the gateway at it::

    CREATE ROLE gw LOGIN PASSWORD '...';  GRANT enclave_gateway TO gw;
    CREATE ROLE seq LOGIN PASSWORD '...'; GRANT enclave_sequencer TO seq;
    CREATE ROLE audit LOGIN PASSWORD '...'; GRANT enclave_auditor TO audit;

The in-process sequencer and checkpointer need their own URL
(``ENCLAVE_AUDIT__SEQUENCER_DATABASE_URL``, as ``seq``); migrations still run as the
tables' owner (``enclave migrate``). Creating the roles needs CREATEROLE; without it, a
DBA creates them beforehand and this revision only grants. Privileges refuse UPDATE,
DELETE and TRUNCATE to the gateway; the triggers of 0005 refuse them to everyone but a
superuser, and a new one here refuses TRUNCATE of ``audit_pending`` (it would drop
accepted records unseen).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = ("enclave_gateway", "enclave_sequencer", "enclave_auditor")
APP_TABLES = ("tenants", "users", "api_keys")
AUDIT_TABLES = (
    "audit_pending",
    "audit_log",
    "audit_index",
    "audit_nodes",
    "audit_tree",
    "audit_checkpoints",
)
PENDING_ID_SEQUENCE = "audit_pending_id_seq"

# (privileges, object, role): every grant this revision makes, revoked again on downgrade
GRANTS: list[tuple[str, str, str]] = [
    *(("SELECT, INSERT, UPDATE, DELETE", t, "enclave_gateway") for t in APP_TABLES),
    ("SELECT", "alembic_version", "enclave_gateway"),
    ("INSERT", "audit_pending", "enclave_gateway"),
    ("USAGE", f"SEQUENCE {PENDING_ID_SEQUENCE}", "enclave_gateway"),
    *(("SELECT", t, "enclave_gateway") for t in AUDIT_TABLES if t != "audit_pending"),
    ("SELECT, DELETE", "audit_pending", "enclave_sequencer"),
    ("SELECT, INSERT", "audit_log", "enclave_sequencer"),
    ("SELECT, INSERT, UPDATE", "audit_index", "enclave_sequencer"),
    ("SELECT, INSERT, UPDATE", "audit_nodes", "enclave_sequencer"),
    ("SELECT, UPDATE", "audit_tree", "enclave_sequencer"),
    ("SELECT, INSERT", "audit_checkpoints", "enclave_sequencer"),
    *(("SELECT", t, "enclave_auditor") for t in AUDIT_TABLES),
]


def create_role(name: str) -> None:
    """Create a NOLOGIN role unless the cluster has it (also when another migration of the
    same cluster creates it concurrently)."""
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN
                CREATE ROLE {name} NOLOGIN;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END
        $$
        """
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for role in ROLES:
        create_role(role)
    for table in AUDIT_TABLES:
        op.execute(f"REVOKE ALL ON {table} FROM PUBLIC")
    for privileges, target, role in GRANTS:
        op.execute(f"GRANT {privileges} ON {target} TO {role}")
    op.execute(
        "CREATE TRIGGER audit_pending_no_truncate BEFORE TRUNCATE ON audit_pending "
        "FOR EACH STATEMENT EXECUTE FUNCTION enclave_audit_refuse()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS audit_pending_no_truncate ON audit_pending")
    for privileges, target, role in reversed(GRANTS):
        op.execute(f"REVOKE {privileges} ON {target} FROM {role}")
