"""Initial schema: runs and everything a run records, plus the verdict cache (in: empty db; out: 13 tables).

Written out in full rather than generated from the models at run time, so that this revision stays the
same when the models change; ``tests/test_storage.py`` checks that models and migrations agree.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _run_id() -> sa.Column[int]:
    return sa.Column("run_id", sa.Integer(), nullable=False)


def _run_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=f"fk_{table}_run_id_runs", ondelete="CASCADE")


def _signal_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["run_id", "signal_id"], ["signals.run_id", "signals.id"],
                                   name=f"fk_{table}_signal", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config_json", sa.Text(), nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("reviewer_mode", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_slice_ms", sa.BigInteger(), nullable=True),
        sa.Column("starting_equity", sa.Float(), nullable=False),
        sa.CheckConstraint("status IN ('running', 'finished', 'failed', 'stopped')", name="ck_runs_status"),
        sa.CheckConstraint("reviewer_mode IN ('active', 'shadow', 'off')", name="ck_runs_reviewer_mode"),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_name_id", "runs", ["name", "id"])

    op.create_table(
        "bars",
        _run_id(),
        sa.Column("close_ms", sa.BigInteger(), nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("open_ms", sa.BigInteger(), nullable=False),
        sa.Column("open", sa.Float(), nullable=False),
        sa.Column("high", sa.Float(), nullable=False),
        sa.Column("low", sa.Float(), nullable=False),
        sa.Column("close", sa.Float(), nullable=False),
        sa.Column("volume", sa.Float(), nullable=False),
        _run_fk("bars"),
        # time order first: bars are appended in time order and read back in time order
        sa.PrimaryKeyConstraint("run_id", "close_ms", "symbol", name="pk_bars"),
    )

    op.create_table(
        "signals",
        _run_id(),
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("strategy_id", sa.String(100), nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("entry", sa.Float(), nullable=False),
        sa.Column("stop_loss", sa.Float(), nullable=False),
        sa.Column("take_profit", sa.Float(), nullable=False),
        sa.Column("size_hint", sa.Float(), nullable=False),
        sa.Column("timeframe", sa.String(16), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.CheckConstraint("status IN ('blocked', 'reviewed')", name="ck_signals_status"),
        _run_fk("signals"),
        sa.PrimaryKeyConstraint("run_id", "id", name="pk_signals"),
    )
    op.create_index("ix_signals_run_id_created_ms", "signals", ["run_id", "created_ms"])

    op.create_table(
        "gate_results",
        _run_id(),
        sa.Column("signal_id", sa.String(200), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("gate", sa.String(100), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("until_ms", sa.BigInteger(), nullable=True),
        _run_fk("gate_results"),
        _signal_fk("gate_results"),
        sa.PrimaryKeyConstraint("run_id", "signal_id", "seq", name="pk_gate_results"),
    )

    op.create_table(
        "context_packs",
        _run_id(),
        sa.Column("signal_id", sa.String(200), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("regime_tag", sa.String(32), nullable=False),
        sa.Column("json", sa.Text(), nullable=False),
        _run_fk("context_packs"),
        _signal_fk("context_packs"),
        sa.PrimaryKeyConstraint("run_id", "signal_id", name="pk_context_packs"),
    )

    op.create_table(
        "verdicts",
        _run_id(),
        sa.Column("signal_id", sa.String(200), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=False),
        sa.Column("modified_size_pct", sa.Float(), nullable=True),
        sa.Column("modified_sl", sa.Float(), nullable=True),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("tier", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("prompt_version", sa.String(64), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("raw_reply", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Text(), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        _run_fk("verdicts"),
        _signal_fk("verdicts"),
        sa.PrimaryKeyConstraint("run_id", "signal_id", name="pk_verdicts"),
    )

    op.create_table(
        "decisions",
        _run_id(),
        sa.Column("signal_id", sa.String(200), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("size_pct", sa.Float(), nullable=False),
        sa.Column("stop_loss", sa.Float(), nullable=False),
        sa.Column("take_profit", sa.Float(), nullable=False),
        sa.Column("clamps", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _run_fk("decisions"),
        _signal_fk("decisions"),
        sa.PrimaryKeyConstraint("run_id", "signal_id", name="pk_decisions"),
    )

    op.create_table(
        "fills",
        _run_id(),
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("signal_id", sa.String(200), nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("filled_ms", sa.BigInteger(), nullable=False),
        sa.Column("requested_price", sa.Float(), nullable=False),
        sa.Column("fill_price", sa.Float(), nullable=False),
        sa.Column("qty", sa.Float(), nullable=False),
        sa.Column("fee", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("ambiguous", sa.Boolean(), nullable=False),
        sa.Column("gap", sa.Boolean(), nullable=False),
        _run_fk("fills"),
        sa.PrimaryKeyConstraint("run_id", "id", name="pk_fills"),
    )
    op.create_index("ix_fills_run_id_filled_ms", "fills", ["run_id", "filled_ms"])

    op.create_table(
        "trades",
        _run_id(),
        sa.Column("signal_id", sa.String(200), nullable=False),
        sa.Column("strategy_id", sa.String(100), nullable=False),
        sa.Column("symbol", sa.String(64), nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("qty", sa.Float(), nullable=False),
        sa.Column("entry_price", sa.Float(), nullable=False),
        sa.Column("exit_price", sa.Float(), nullable=False),
        sa.Column("opened_ms", sa.BigInteger(), nullable=False),
        sa.Column("closed_ms", sa.BigInteger(), nullable=False),
        sa.Column("pnl", sa.Float(), nullable=False),
        sa.Column("pnl_pct", sa.Float(), nullable=False),
        sa.Column("r_multiple", sa.Float(), nullable=False),
        sa.Column("fees", sa.Float(), nullable=False),
        sa.Column("exit_reason", sa.String(16), nullable=False),
        sa.Column("bars_held", sa.Integer(), nullable=False),
        sa.Column("ambiguous", sa.Boolean(), nullable=False),
        _run_fk("trades"),
        _signal_fk("trades"),
        sa.PrimaryKeyConstraint("run_id", "signal_id", name="pk_trades"),
    )
    op.create_index("ix_trades_run_id_closed_ms", "trades", ["run_id", "closed_ms"])

    op.create_table(
        "outcomes",
        _run_id(),
        sa.Column("signal_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("filled", sa.Boolean(), nullable=False),
        sa.Column("pnl_pct", sa.Float(), nullable=False),
        sa.Column("r_multiple", sa.Float(), nullable=False),
        sa.Column("exit_reason", sa.String(16), nullable=False),
        sa.Column("ambiguous", sa.Boolean(), nullable=False),
        sa.Column("opened_ms", sa.BigInteger(), nullable=True),
        sa.Column("closed_ms", sa.BigInteger(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        _run_fk("outcomes"),
        _signal_fk("outcomes"),
        sa.PrimaryKeyConstraint("run_id", "signal_id", "kind", name="pk_outcomes"),
    )

    op.create_table(
        "events",
        _run_id(),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        _run_fk("events"),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_events"),
    )
    op.create_index("ix_events_run_id_at_ms", "events", ["run_id", "at_ms"])

    op.create_table(
        "news_items",
        _run_id(),
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("published_ms", sa.BigInteger(), nullable=False),
        sa.Column("symbols", sa.Text(), nullable=False),
        sa.Column("headline", sa.Text(), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("category", sa.String(32), nullable=False),
        _run_fk("news_items"),
        sa.PrimaryKeyConstraint("run_id", "id", name="pk_news_items"),
    )
    op.create_index("ix_news_items_run_id_published_ms", "news_items", ["run_id", "published_ms"])

    op.create_table(
        "verdict_cache",
        sa.Column("tier", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("prompt_version", sa.String(64), nullable=False),
        sa.Column("context_hash", sa.String(64), nullable=False),
        sa.Column("verdict", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tier", "model", "prompt_version", "context_hash", name="pk_verdict_cache"),
    )


def downgrade() -> None:
    for table in ("verdict_cache", "news_items", "events", "outcomes", "trades", "fills", "decisions", "verdicts",
                  "context_packs", "gate_results", "signals", "bars", "runs"):
        op.drop_table(table)
