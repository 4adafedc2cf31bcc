"""verdicts.reviewed_at_ms: the wall-clock time of the answering tier's real call (in: a 0002 schema; out: 0003).

Daily tier budgets count spend from the recorded verdicts in real UTC time; market time cannot serve (a replay of
last year's bars spends today's money). Rows recorded before this revision read 0: no known call time, so they
count towards no day's budget (they still count towards a run's).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if "reviewed_at_ms" in {c["name"] for c in sa.inspect(op.get_bind()).get_columns("verdicts")}:
        return  # already there (a database an earlier test or tool gave the column by hand)
    # ADD COLUMN with a constant default is in place on both backends (no table rebuild on SQLite)
    op.add_column("verdicts", sa.Column("reviewed_at_ms", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("verdicts") as batch:
        batch.drop_column("reviewed_at_ms")
