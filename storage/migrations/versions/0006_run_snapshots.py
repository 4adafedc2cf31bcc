"""run_snapshots: what a backtest reads of a run, kept as columns while nothing it covers has changed (in: 0005).

A repeat backtest of a run reads the same rows again: its reviewed signals, their packs' digests, verdicts and
decisions, and its shadow outcomes — ~500,000 rows per 100,000 signals, most of its load. The second read is
served from a *snapshot*: those values as columns in one blob (``storage.snapshot``), stored with a *stamp*
of what it covers — the packs' generation (0005), a count of the run's changed rows, and the row count of each
table it reads. Inserts change a count; updates and deletes of a run's signals, verdicts, decisions and
outcomes raise ``pack_checks.changes`` (the triggers below), so a snapshot is used only while its stamp equals
the run's stamp as it is now. No insert pays a trigger. Nothing recorded changes: the table is derived.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("signals", "verdicts", "decisions", "outcomes")
# (trigger name suffix, operation, the run ids it touches in SQLite's row trigger)
_SQLITE = (("update", "UPDATE", "OLD.run_id, NEW.run_id"), ("delete", "DELETE", "OLD.run_id"))
_PG_FUNCTION = """
CREATE FUNCTION tradevet_rows_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE pack_checks SET changes = changes + 1 WHERE run_id IN (SELECT DISTINCT run_id FROM old_rows);
    IF TG_OP = 'UPDATE' THEN
        UPDATE pack_checks SET changes = changes + 1 WHERE run_id IN (SELECT DISTINCT run_id FROM new_rows);
    END IF;
    RETURN NULL;
END
$$
"""
_PG_REFERENCING = {"UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows", "DELETE": "OLD TABLE AS old_rows"}


def upgrade() -> None:
    op.add_column("pack_checks", sa.Column("changes", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_table(
        "run_snapshots",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("stamp", sa.String(400), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("made_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_run_snapshots_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "kind", name="pk_run_snapshots"),
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(_PG_FUNCTION)
    for table in _TABLES:
        for suffix, operation, runs in _SQLITE:
            if postgres:
                op.execute(f"CREATE TRIGGER tr_{table}_changed_{suffix} AFTER {operation} ON {table} "
                           f"REFERENCING {_PG_REFERENCING[operation]} FOR EACH STATEMENT "
                           "EXECUTE FUNCTION tradevet_rows_changed()")
            else:
                op.execute(f"CREATE TRIGGER tr_{table}_changed_{suffix} AFTER {operation} ON {table} BEGIN "
                           f"UPDATE pack_checks SET changes = changes + 1 WHERE run_id IN ({runs}); END")


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in _TABLES:
        for suffix, _, _ in _SQLITE:
            op.execute(f"DROP TRIGGER IF EXISTS tr_{table}_changed_{suffix}" + (f" ON {table}" if postgres else ""))
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS tradevet_rows_changed()")
    op.drop_table("run_snapshots")
    # in place (SQLite 3.35+ drops a column; a batch copy of the table would break 0005's triggers on it)
    op.execute("ALTER TABLE pack_checks DROP COLUMN changes")
