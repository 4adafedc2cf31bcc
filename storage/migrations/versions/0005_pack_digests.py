"""pack_checks and pack_digests: a run's checked packs, kept so a repeat backtest need not re-hash them (in: 0004).

A backtest checks every stored context pack against its hash before it trusts it: 100,000 packs are ~450 MB
of JSON read and hashed, the largest part of its load. What the check yields per pack is small — the hash,
the regime tag and the equity — so the check's answer is stored (``pack_digests``) together with the
*generation* of the run's packs it was taken at (``pack_checks``). Triggers raise the generation on every
insert, update or delete of a run's ``context_packs`` and withdraw the stamp on any change to its digests, so
the digests are used only while no pack row has changed since a check read them; otherwise the next
backtest checks the JSON again and stores a fresh answer. Nothing recorded changes: both tables are derived
and are rebuilt from the packs on demand.

SQLite: row triggers (one B-tree probe per pack written). PostgreSQL: statement triggers over the transition
tables, so a multi-row insert pays once.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (trigger name suffix, operation, the run ids it touches in SQLite's row trigger)
_SQLITE = (("insert", "INSERT", "NEW.run_id"), ("update", "UPDATE", "OLD.run_id, NEW.run_id"),
           ("delete", "DELETE", "OLD.run_id"))
# what a change to each table does to its run's stamp
_ACTIONS = {"context_packs": "generation = generation + 1", "pack_digests": "verified = NULL"}

_PG_FUNCTION = """
CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE pack_checks SET {action} WHERE run_id IN (SELECT DISTINCT run_id FROM old_rows);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        UPDATE pack_checks SET {action} WHERE run_id IN (SELECT DISTINCT run_id FROM new_rows);
    END IF;
    RETURN NULL;
END
$$
"""
_PG_REFERENCING = {"INSERT": "NEW TABLE AS new_rows", "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
                   "DELETE": "OLD TABLE AS old_rows"}


def upgrade() -> None:
    op.create_table(
        "pack_checks",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("verified", sa.BigInteger(), nullable=True),
        sa.Column("checked_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_pack_checks_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", name="pk_pack_checks"),
    )
    op.create_table(
        "pack_digests",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("signal_id", sa.String(200), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("regime_tag", sa.String(32), nullable=False),
        sa.Column("equity", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_pack_digests_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "signal_id", name="pk_pack_digests"),
        sqlite_with_rowid=False,
    )
    if op.get_bind().dialect.name == "postgresql":
        for table, action in _ACTIONS.items():
            name = f"tradevet_{table}_changed"
            op.execute(_PG_FUNCTION.format(name=name, action=action))
            for suffix, operation in ((s, o) for s, o, _ in _SQLITE):
                op.execute(f"CREATE TRIGGER tr_{table}_{suffix} AFTER {operation} ON {table} "
                           f"REFERENCING {_PG_REFERENCING[operation]} FOR EACH STATEMENT EXECUTE FUNCTION {name}()")
    else:
        for table, action in _ACTIONS.items():
            for suffix, operation, runs in _SQLITE:
                op.execute(f"CREATE TRIGGER tr_{table}_{suffix} AFTER {operation} ON {table} BEGIN "
                           f"UPDATE pack_checks SET {action} WHERE run_id IN ({runs}); END")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in _ACTIONS:
        for suffix, _, _ in _SQLITE:
            op.execute(f"DROP TRIGGER IF EXISTS tr_{table}_{suffix}" + (f" ON {table}" if postgres else ""))
        if postgres:
            op.execute(f"DROP FUNCTION IF EXISTS tradevet_{table}_changed()")
    op.drop_table("pack_digests")
    op.drop_table("pack_checks")
