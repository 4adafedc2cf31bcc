"""bars and gate_results become WITHOUT ROWID tables on SQLite (in: a 0001 schema; out: the same rows, 0002).

A rowid table with a composite primary key is two B-trees: the rows by rowid, and the key's index. Every
recorded bar and gate result was written twice, and bars, the bulk of a run, are read back by that key.
Without a rowid the table is its primary key's B-tree: one write per row, rows stored in key order, and
about a quarter less file. SQLite cannot alter this in place: each table is created anew under a temporary
name, its rows copied, the old table dropped and the new one renamed, all inside the migration's
transaction (a crash leaves the database at 0001, untouched). PostgreSQL tables have no rowid and keep
their layout: there this revision only moves the version.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _bars_items() -> list[sa.SchemaItem]:
    return [
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("close_ms", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("open_ms", sa.BigInteger(), nullable=False),
        sa.Column("open", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("close", sa.Float(), nullable=False),
        sa.Column("volume", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_bars_run_id_runs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "close_ms", "symbol", name="pk_bars"),
    ]


def _gate_results_items() -> list[sa.SchemaItem]:
    return [
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("signal_id", sa.String(200), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("gate", sa.String(100), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("until_ms", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_gate_results_run_id_runs", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id", "signal_id"], ["signals.run_id", "signals.id"],
                                name="fk_gate_results_signal", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "signal_id", "seq", name="pk_gate_results"),
    ]


TABLES: dict[str, Callable[[], list[sa.SchemaItem]]] = {"bars": _bars_items, "gate_results": _gate_results_items}


def _rebuild(name: str, *, with_rowid: bool) -> None:
    """Recreate table ``name`` with or without a rowid, keeping every row."""
    items = TABLES[name]()
    columns = ", ".join(f'"{c.name}"' for c in items if isinstance(c, sa.Column))
    tmp = f"_0002_{name}"
    op.create_table(tmp, *items, sqlite_with_rowid=with_rowid)
    op.execute(f'INSERT INTO "{tmp}" ({columns}) SELECT {columns} FROM "{name}"')
    op.drop_table(name)
    op.rename_table(tmp, name)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in TABLES:
        _rebuild(name, with_rowid=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in TABLES:
        _rebuild(name, with_rowid=True)
