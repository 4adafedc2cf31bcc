"""runs get a kind and a parent: counterfactual replays of a run are runs linked to it (in: 0003; out: 0004).

``kind`` is ``run`` for every existing row (its server default) or ``counterfactual`` for a replay of
``parent_id`` with another reviewer (``tradevet value``: reviewer off, random reviewers). Both are added in place
as plain columns — SQLite cannot add a constraint to an existing table without rebuilding it, and rebuilding
``runs`` would cascade through every table that references it — so the store checks the kind and deletes a run's
counterfactuals with it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("kind", sa.String(16), nullable=False, server_default="run"))
    op.add_column("runs", sa.Column("parent_id", sa.Integer(), nullable=True))
    op.create_index("ix_runs_parent_id", "runs", ["parent_id"])


def downgrade() -> None:
    # in place (SQLite >= 3.35 drops a plain column): a batch rebuild of runs would cascade-delete every run's rows
    op.drop_index("ix_runs_parent_id", table_name="runs")
    op.execute("ALTER TABLE runs DROP COLUMN parent_id")
    op.execute("ALTER TABLE runs DROP COLUMN kind")
