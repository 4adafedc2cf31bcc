"""Storage schema: typed SQLAlchemy models, one table per recorded value type (in: nothing; out: ``Base.metadata``).

These models describe the schema the code expects; the schema itself is created only by the Alembic
migrations in ``storage/migrations`` (a test checks that the two agree). Types are portable between
SQLite and PostgreSQL: ``BigInteger`` for every ``*_ms`` instant, ``Float`` (double precision on
PostgreSQL) for prices and amounts, ``Text`` for JSON that we encode ourselves so that it reads back
exactly on both backends.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "RUN_KINDS",
    "RUN_MODES",
    "RUN_SCOPED_TABLES",
    "RUN_STATUSES",
    "BarRow",
    "Base",
    "ContextPackRow",
    "DecisionRow",
    "EventRow",
    "FillRow",
    "GateResultRow",
    "NewsItemRow",
    "OutcomeRow",
    "PackCheckRow",
    "PackDigestRow",
    "RunRow",
    "RunSnapshotRow",
    "SignalRow",
    "TradeRow",
    "VerdictCacheRow",
    "VerdictRow",
]

RUN_STATUSES = ("running", "finished", "failed", "stopped")
RUN_MODES = ("active", "shadow", "off")
RUN_KINDS = ("run", "counterfactual", "sweep", "trial")  # trial: a sweep's replay, linked to its sweep

# Deterministic constraint names, so that later migrations (batch mode on SQLite) can address them.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _run_fk() -> Mapped[int]:
    # Deleting a run deletes everything it recorded.
    return mapped_column(Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)


def _signal_fk(table: str) -> ForeignKeyConstraint:
    # Review-chain rows must belong to a recorded signal of the same run.
    return ForeignKeyConstraint(["run_id", "signal_id"], ["signals.run_id", "signals.id"], ondelete="CASCADE",
                                name=f"fk_{table}_signal")


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (
        CheckConstraint(f"status IN {RUN_STATUSES!r}", name="status"),
        CheckConstraint(f"reviewer_mode IN {RUN_MODES!r}", name="reviewer_mode"),
        Index("ix_runs_name_id", "name", "id"),
        Index("ix_runs_parent_id", "parent_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # what `--run 12` names
    name: Mapped[str] = mapped_column(String(200))  # run.name from config; not unique (a name is re-run)
    status: Mapped[str] = mapped_column(String(16))  # running | finished | failed | stopped
    config_json: Mapped[str] = mapped_column(Text)  # effective config, secrets already masked by the caller
    config_hash: Mapped[str] = mapped_column(String(64))  # hash of config_json, to compare runs at a glance
    seed: Mapped[int] = mapped_column(BigInteger)  # run.seed: everything random derives from it
    reviewer_mode: Mapped[str] = mapped_column(String(16))  # active | shadow | off; the retire rule may change it
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # wall clock: when the run began
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # wall clock: last status/slice write
    last_slice_ms: Mapped[int | None] = mapped_column(BigInteger)  # close of the newest recorded slice; resume point
    starting_equity: Mapped[float] = mapped_column(Float)  # first deposit of the run's ledger (quote currency)
    # run: a run of its own; counterfactual: a replay of ``parent_id`` with another reviewer (``tradevet value``).
    # Added by 0003 as plain columns (SQLite cannot add a constraint in place): the store checks the kind, and
    # deletes a run's counterfactuals with it.
    kind: Mapped[str] = mapped_column(String(16), server_default="run")
    parent_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the run a counterfactual replays


class BarRow(Base):
    __tablename__ = "bars"
    # Key in time order, not symbol order: bars arrive in time order (appends to the B-tree, the
    # replay's hot path) and resuming reads a run's bars in time order; one symbol's bars are a filter.
    # SQLite: WITHOUT ROWID, so the table is its key's B-tree (one write per row, not a row plus an index entry).
    __table_args__ = (PrimaryKeyConstraint("run_id", "close_ms", "symbol"), {"sqlite_with_rowid": False})

    run_id: Mapped[int] = _run_fk()
    close_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # bar end; when strategies may see it
    symbol: Mapped[str] = mapped_column(String(64), primary_key=True)  # "BTC/USDT"
    open_ms: Mapped[int] = mapped_column(BigInteger)  # bar start; entries fill at the next bar's open
    open: Mapped[float] = mapped_column(Float)  # first trade price, quote currency
    high: Mapped[float] = mapped_column(Float)  # stops and targets are checked against high/low
    low: Mapped[float] = mapped_column(Float)  # see high
    close: Mapped[float] = mapped_column(Float)  # what strategies see as the price
    volume: Mapped[float] = mapped_column(Float)  # base-currency units


class SignalRow(Base):
    __tablename__ = "signals"
    __table_args__ = (
        CheckConstraint("status IN ('blocked', 'reviewed')", name="status"),
        Index("ix_signals_run_id_created_ms", "run_id", "created_ms"),
    )

    run_id: Mapped[int] = _run_fk()
    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # strategy-made id, unique within a run
    strategy_id: Mapped[str] = mapped_column(String(100))  # configured strategy id (strategies[i].id)
    symbol: Mapped[str] = mapped_column(String(64))  # market symbol, e.g. BTC/USDT
    side: Mapped[str] = mapped_column(String(8))  # long | short
    created_ms: Mapped[int] = mapped_column(BigInteger)  # close of the bar that produced it
    entry: Mapped[float] = mapped_column(Float)  # reference price (the close the strategy saw)
    stop_loss: Mapped[float] = mapped_column(Float)  # as emitted; the clamp may only tighten it
    take_profit: Mapped[float] = mapped_column(Float)  # as emitted
    size_hint: Mapped[float] = mapped_column(Float)  # fraction of equity, as notional
    timeframe: Mapped[str] = mapped_column(String(16))  # bar length the strategy ran on, e.g. 5m
    tags: Mapped[str] = mapped_column(Text)  # JSON list of strings
    status: Mapped[str] = mapped_column(String(16))  # blocked by a gate, or reviewed


class GateResultRow(Base):
    __tablename__ = "gate_results"
    # SQLite: WITHOUT ROWID, as bars (about five gate results per signal: the second-largest table)
    __table_args__ = (_signal_fk("gate_results"), {"sqlite_with_rowid": False})

    run_id: Mapped[int] = _run_fk()
    signal_id: Mapped[str] = mapped_column(String(200), primary_key=True)  # the gated signal
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)  # evaluation order of the gates for this signal
    gate: Mapped[str] = mapped_column(String(100))  # gate kind from config, e.g. cooldown
    passed: Mapped[bool] = mapped_column(Boolean)  # False ends the signal's life here
    reason: Mapped[str] = mapped_column(Text)  # why it blocked, or its part of the gate note
    until_ms: Mapped[int | None] = mapped_column(BigInteger)  # when a lock or cooldown expires


class ContextPackRow(Base):
    __tablename__ = "context_packs"
    __table_args__ = (_signal_fk("context_packs"),)

    run_id: Mapped[int] = _run_fk()
    signal_id: Mapped[str] = mapped_column(String(200), primary_key=True)  # one pack per reviewed signal
    hash: Mapped[str] = mapped_column(String(64))  # content hash of json; checked again when loaded
    regime_tag: Mapped[str] = mapped_column(String(32))  # copied out of json so reports can group by it
    json: Mapped[str] = mapped_column(Text)  # canonical JSON exactly as the reviewer saw it


class VerdictRow(Base):
    __tablename__ = "verdicts"
    __table_args__ = (_signal_fk("verdicts"),)

    run_id: Mapped[int] = _run_fk()
    signal_id: Mapped[str] = mapped_column(String(200), primary_key=True)  # one verdict per reviewed signal
    verdict: Mapped[str] = mapped_column(String(16))  # accept | modify | veto
    confidence: Mapped[float] = mapped_column(Float)  # 0..1 as the reviewer said (the clamp reads it)
    rationale: Mapped[str] = mapped_column(Text)  # stored for people; never acted on
    modified_size_pct: Mapped[float | None] = mapped_column(Float)  # unclamped suggestion
    modified_sl: Mapped[float | None] = mapped_column(Float)  # unclamped suggestion
    source: Mapped[str] = mapped_column(String(100))  # tier name | cache | fallback | off
    tier: Mapped[str] = mapped_column(String(100))  # tier that answered (empty for fallback)
    model: Mapped[str] = mapped_column(String(200))  # provider model id
    prompt_version: Mapped[str] = mapped_column(String(64))  # PROMPT_VERSION the pack was shown with
    latency_ms: Mapped[float] = mapped_column(Float)  # wall time of the whole cascade
    input_tokens: Mapped[int] = mapped_column(Integer)  # provider-reported usage, for cost reports
    output_tokens: Mapped[int] = mapped_column(Integer)  # provider-reported
    cached_tokens: Mapped[int] = mapped_column(Integer)  # prompt-cache hits
    cost_usd: Mapped[float] = mapped_column(Float)  # estimated cost of this review
    error: Mapped[str] = mapped_column(Text)  # last tier failure, if any
    raw_reply: Mapped[str] = mapped_column(Text)  # the model's reply verbatim, for audits
    attempts: Mapped[str] = mapped_column(Text)  # JSON list of TierAttempt objects, in cascade order
    mode: Mapped[str] = mapped_column(String(16))  # reviewer mode at decision time: active | shadow | off
    # wall clock (UTC ms) of the answering tier's real call, 0 for cache/fallback/rules answers: daily budgets
    # count spend from it, in real time (market time would let a replay of last year spend today's budget again)
    reviewed_at_ms: Mapped[int] = mapped_column(BigInteger, server_default="0")


class DecisionRow(Base):
    __tablename__ = "decisions"
    __table_args__ = (_signal_fk("decisions"),)

    run_id: Mapped[int] = _run_fk()
    signal_id: Mapped[str] = mapped_column(String(200), primary_key=True)  # one decision per reviewed signal
    action: Mapped[str] = mapped_column(String(16))  # execute | skip
    size_pct: Mapped[float] = mapped_column(Float)  # % of the signal's own size
    stop_loss: Mapped[float] = mapped_column(Float)  # clamped stop the executor uses
    take_profit: Mapped[float] = mapped_column(Float)  # target the executor uses
    clamps: Mapped[str] = mapped_column(Text)  # JSON list of the bounds the clamp applied
    reason: Mapped[str] = mapped_column(Text)  # accept, veto, modify, low confidence, shadow mode, ...


class FillRow(Base):
    __tablename__ = "fills"
    __table_args__ = (Index("ix_fills_run_id_filled_ms", "run_id", "filled_ms"),)

    run_id: Mapped[int] = _run_fk()
    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # "<signal id>:entry", "deposit:0", ...
    signal_id: Mapped[str] = mapped_column(String(200))  # empty for deposits, hence no foreign key
    symbol: Mapped[str] = mapped_column(String(64))  # market symbol; the quote currency for deposits
    side: Mapped[str] = mapped_column(String(8))  # the position's side, not buy/sell
    kind: Mapped[str] = mapped_column(String(16))  # deposit | entry | exit
    filled_ms: Mapped[int] = mapped_column(BigInteger)  # entry: next bar's open; exit: the bar's close
    requested_price: Mapped[float] = mapped_column(Float)  # before slippage
    fill_price: Mapped[float] = mapped_column(Float)  # after slippage (or the gap open)
    qty: Mapped[float] = mapped_column(Float)  # base units (quote units for deposits)
    fee: Mapped[float] = mapped_column(Float)  # quote currency
    reason: Mapped[str] = mapped_column(Text)  # next_open, an exit reason, or deposit
    ambiguous: Mapped[bool] = mapped_column(Boolean)  # the bar touched both stop and target
    gap: Mapped[bool] = mapped_column(Boolean)  # filled at the open, through the stop


class TradeRow(Base):
    __tablename__ = "trades"
    __table_args__ = (_signal_fk("trades"), Index("ix_trades_run_id_closed_ms", "run_id", "closed_ms"))

    run_id: Mapped[int] = _run_fk()
    signal_id: Mapped[str] = mapped_column(String(200), primary_key=True)  # one position per executed signal
    strategy_id: Mapped[str] = mapped_column(String(100))  # for per-strategy scoring
    symbol: Mapped[str] = mapped_column(String(64))  # market symbol
    side: Mapped[str] = mapped_column(String(8))  # long | short
    qty: Mapped[float] = mapped_column(Float)  # base units
    entry_price: Mapped[float] = mapped_column(Float)  # filled entry price
    exit_price: Mapped[float] = mapped_column(Float)  # filled exit price
    opened_ms: Mapped[int] = mapped_column(BigInteger)  # entry fill time
    closed_ms: Mapped[int] = mapped_column(BigInteger)  # exit fill time
    pnl: Mapped[float] = mapped_column(Float)  # net of both fees, quote currency
    pnl_pct: Mapped[float] = mapped_column(Float)  # relative to entry notional
    r_multiple: Mapped[float] = mapped_column(Float)  # pnl in units of the initial risk
    fees: Mapped[float] = mapped_column(Float)  # entry and exit fees, quote currency
    exit_reason: Mapped[str] = mapped_column(String(16))  # stop | target | time | end
    bars_held: Mapped[int] = mapped_column(Integer)  # for the time stop and reports
    ambiguous: Mapped[bool] = mapped_column(Boolean)  # a bar touched stop and target; stop assumed first


class OutcomeRow(Base):
    __tablename__ = "outcomes"
    __table_args__ = (_signal_fk("outcomes"),)

    run_id: Mapped[int] = _run_fk()
    signal_id: Mapped[str] = mapped_column(String(200), primary_key=True)  # the reviewed signal this scores
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # realized | shadow; each written once, final
    filled: Mapped[bool] = mapped_column(Boolean)  # False when the entry never filled
    pnl_pct: Mapped[float] = mapped_column(Float)  # net of fees, relative to entry notional
    r_multiple: Mapped[float] = mapped_column(Float)  # pnl in units of the initial risk
    exit_reason: Mapped[str] = mapped_column(String(16))  # stop | target | time | end, empty when not filled
    ambiguous: Mapped[bool] = mapped_column(Boolean)  # reported apart in veto precision
    opened_ms: Mapped[int | None] = mapped_column(BigInteger)  # entry fill time, if filled
    closed_ms: Mapped[int | None] = mapped_column(BigInteger)  # may be later than the signal's own slice
    note: Mapped[str] = mapped_column(Text)  # why it did not fill, and similar


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_run_id_at_ms", "run_id", "at_ms"),)

    run_id: Mapped[int] = _run_fk()
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)  # assigned by the repository: timeline order
    kind: Mapped[str] = mapped_column(String(32))  # breaker | retire | repair | run | ...
    at_ms: Mapped[int] = mapped_column(BigInteger)  # run clock, not wall clock
    subject: Mapped[str] = mapped_column(String(200))  # tier name, symbol, ...
    message: Mapped[str] = mapped_column(Text)  # one line for the timeline
    data: Mapped[str] = mapped_column(Text)  # JSON list of [key, value] pairs (keeps the order given)


class NewsItemRow(Base):
    __tablename__ = "news_items"
    __table_args__ = (Index("ix_news_items_run_id_published_ms", "run_id", "published_ms"),)

    run_id: Mapped[int] = _run_fk()
    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # the source's id
    published_ms: Mapped[int] = mapped_column(BigInteger)  # news windows read (t - 4h, t]
    symbols: Mapped[str] = mapped_column(Text)  # JSON list of upper-case assets or symbols
    headline: Mapped[str] = mapped_column(Text)  # as received; sanitised only when put in a pack
    source: Mapped[str] = mapped_column(String(200))  # feed or publisher name
    category: Mapped[str] = mapped_column(String(32))  # hack | delisting | regulatory | ...


class VerdictCacheRow(Base):
    __tablename__ = "verdict_cache"

    tier: Mapped[str] = mapped_column(String(100), primary_key=True)  # tier name from config
    model: Mapped[str] = mapped_column(String(200), primary_key=True)  # provider model id
    prompt_version: Mapped[str] = mapped_column(String(64), primary_key=True)  # a new prompt invalidates old answers
    context_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # ContextPack.hash
    verdict: Mapped[str] = mapped_column(Text)  # JSON of every Verdict field except attempts
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # wall clock, for pruning by age


class PackCheckRow(Base):
    """The generation of a run's context packs (raised by triggers on every change to them) and the one the stored
    digests were checked at (migration 0005): the digests stand for the packs only while the two are equal."""

    __tablename__ = "pack_checks"

    run_id: Mapped[int] = _run_fk()
    generation: Mapped[int] = mapped_column(BigInteger, server_default="0")  # triggers: +1 per changed pack row
    verified: Mapped[int | None] = mapped_column(BigInteger)  # generation the digests were taken at; NULL: none
    checked_ms: Mapped[int | None] = mapped_column(BigInteger)  # wall clock of that check, for people
    # triggers (0006): +1 per updated or deleted row of the run's signals, verdicts, decisions and outcomes
    changes: Mapped[int] = mapped_column(BigInteger, server_default="0")


class PackDigestRow(Base):
    """What checking one stored pack against its hash yields (storage.bulk.PackCheck), kept for the next backtest."""

    __tablename__ = "pack_digests"
    __table_args__ = ({"sqlite_with_rowid": False},)

    run_id: Mapped[int] = _run_fk()
    signal_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))  # the pack's hash, its JSON checked against it
    regime_tag: Mapped[str] = mapped_column(String(32))
    equity: Mapped[float] = mapped_column(Float)  # the pack's equity, read from its JSON


class RunSnapshotRow(Base):
    """What a backtest reads of a run, as columns (storage.snapshot), with the stamp of the rows it covers."""

    __tablename__ = "run_snapshots"

    run_id: Mapped[int] = _run_fk()
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)  # what was read: "reviewed", "outcomes"
    stamp: Mapped[str] = mapped_column(String(400))  # storage.snapshot.stamp: used only while it is the run's
    data: Mapped[bytes] = mapped_column(LargeBinary)
    made_ms: Mapped[int] = mapped_column(BigInteger)  # wall clock, for people


# Tables whose rows belong to one run (table_counts and deletes walk these), in write order. pack_checks,
# pack_digests and run_snapshots belong to a run too but record nothing: they are derived from its rows, rebuilt on
# demand.
RUN_SCOPED_TABLES = (
    "bars", "signals", "gate_results", "context_packs", "verdicts", "decisions", "fills", "trades", "outcomes",
    "events", "news_items",
)
