"""Shared builders for the engine-core tests: bars, price paths, reference indicators, signals, configs, packs.

Helpers are plain functions (``from tests.conftest import make_bar``) so a test reads top to bottom;
the one fixture below only wraps them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from engine.config import Config, ExecutionConfig, load_config
from engine.types import (
    Action,
    Bar,
    ContextPack,
    Decision,
    Fill,
    FillKind,
    NewsItem,
    RegimeInfo,
    RegimeTag,
    Side,
    Signal,
    TradeStats,
)

T0 = 1_735_689_600_000  # 2025-01-01T00:00:00Z in ms
TF = 300_000  # 5m bars
DAY_MS = 86_400_000
SYM = "BTC/USDT"


# ------------------------------------------------------------------------------------------- bars


def bar_open_ms(i: int, tf: int = TF, t0: int = T0) -> int:
    return t0 + i * tf


def bar_close_ms(i: int, tf: int = TF, t0: int = T0) -> int:
    return t0 + (i + 1) * tf


def make_bar(i: int, open: float, high: float, low: float, close: float, volume: float = 1.0, *,
             symbol: str = SYM, tf: int = TF, t0: int = T0) -> Bar:
    """The ``i``-th bar of a ``tf`` grid starting at ``t0``."""
    assert low <= min(open, close) and high >= max(open, close), "inconsistent OHLC in a test bar"
    return Bar(symbol, bar_open_ms(i, tf, t0), bar_close_ms(i, tf, t0), float(open), float(high), float(low),
               float(close), float(volume))


def flat_bar(i: int, price: float, *, symbol: str = SYM, volume: float = 1.0) -> Bar:
    return make_bar(i, price, price, price, price, volume, symbol=symbol)


def ohlc_from_closes(closes: Sequence[float], *, wick: float | Sequence[float] = 0.002, first_open: float | None = None,
                     volume: float | Sequence[float] = 1.0) -> list[tuple[float, float, float, float, float]]:
    """(open, high, low, close, volume) rows: open = previous close, wicks a fraction beyond the body."""
    n = len(closes)
    wicks = np.broadcast_to(np.asarray(wick, dtype=float), (n,))
    vols = np.broadcast_to(np.asarray(volume, dtype=float), (n,))
    rows = []
    prev = float(closes[0]) if first_open is None else float(first_open)
    for c, w, v in zip(closes, wicks, vols, strict=True):
        o, c = prev, float(c)
        rows.append((o, max(o, c) * (1 + w), min(o, c) * (1 - w), c, float(v)))
        prev = c
    return rows


def bars_from_closes(closes: Sequence[float], *, symbol: str = SYM, start: int = 0, tf: int = TF,
                     wick: float | Sequence[float] = 0.002, volume: float | Sequence[float] = 1.0) -> list[Bar]:
    return [make_bar(start + i, o, h, lo, c, v, symbol=symbol, tf=tf)
            for i, (o, h, lo, c, v) in enumerate(ohlc_from_closes(closes, wick=wick, volume=volume))]


def random_bars(n: int, seed: int, *, symbol: str = SYM, start_price: float = 100.0, vol: float = 0.01) -> list[Bar]:
    """A seeded random walk with random wicks and volumes (wide enough to exercise every indicator)."""
    rng = np.random.default_rng(seed)
    closes = start_price * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    wicks = rng.uniform(0.0, 0.01, n)
    vols = rng.uniform(0.5, 20.0, n)
    return bars_from_closes(closes, symbol=symbol, wick=wicks, volume=vols)


# ------------------------------------------------- reference indicators (plain pandas/numpy, written independently)


def ref_sma(c: np.ndarray, n: int) -> np.ndarray:
    return pd.Series(c).rolling(n).mean().to_numpy()


def ref_ema(c: np.ndarray, n: int) -> np.ndarray:
    """Seeded with the SMA of the first n closes, then alpha = 2 / (n + 1)."""
    out = np.full(len(c), np.nan)
    if len(c) < n:
        return out
    alpha = 2.0 / (n + 1)
    v = float(np.mean(c[:n]))
    out[n - 1] = v
    for i in range(n, len(c)):
        v = alpha * c[i] + (1 - alpha) * v
        out[i] = v
    return out


def true_range(h: np.ndarray, lo: np.ndarray, c: np.ndarray) -> np.ndarray:
    pc = pd.Series(c).shift(1)
    hs, ls = pd.Series(h), pd.Series(lo)
    tr = pd.concat([hs - ls, (hs - pc).abs(), (ls - pc).abs()], axis=1).max(axis=1)
    tr.iloc[0] = h[0] - lo[0]
    return tr.to_numpy()


def ref_wilder(x: np.ndarray, n: int, first: int = 0) -> np.ndarray:
    """Wilder smoothing of x[first:], seeded with the plain mean of its first n values."""
    out = np.full(len(x), np.nan)
    if len(x) - first < n:
        return out
    v = float(np.mean(x[first : first + n]))
    out[first + n - 1] = v
    for i in range(first + n, len(x)):
        v = (v * (n - 1) + x[i]) / n
        out[i] = v
    return out


def ref_atr(h: np.ndarray, lo: np.ndarray, c: np.ndarray, n: int) -> np.ndarray:
    return ref_wilder(true_range(h, lo, c), n)


def ref_rsi(c: np.ndarray, n: int) -> np.ndarray:
    d = np.diff(c, prepend=np.nan)
    gain, loss = np.where(d > 0, d, 0.0), np.where(d < 0, -d, 0.0)
    ag, al = ref_wilder(gain, n, first=1), ref_wilder(loss, n, first=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = 100.0 - 100.0 / (1.0 + ag / al)
    rsi = np.where(al == 0, np.where(ag > 0, 100.0, 50.0), rsi)
    return np.where(np.isnan(ag), np.nan, rsi)


def ref_highest(h: np.ndarray, n: int) -> np.ndarray:
    return pd.Series(h).shift(1).rolling(n).max().to_numpy()


def ref_lowest(lo: np.ndarray, n: int) -> np.ndarray:
    return pd.Series(lo).shift(1).rolling(n).min().to_numpy()


# ------------------------------------------------------------------------------------ signals etc.


def make_signal(side: Side | str = Side.LONG, *, entry: float = 100.0, stop: float | None = None,
                target: float | None = None, symbol: str = SYM, strategy_id: str = "s1", created_ms: int | None = None,
                size_hint: float = 0.1, sid: str | None = None, tags: tuple[str, ...] = ()) -> Signal:
    """A signal with a 5 % stop and a 10 % target by default, mirrored for shorts."""
    side = Side(side)
    sign = side.sign
    stop = entry * (1 - sign * 0.05) if stop is None else stop
    target = entry * (1 + sign * 0.10) if target is None else target
    created_ms = bar_close_ms(0) if created_ms is None else created_ms
    sid = sid or f"{strategy_id}:{symbol}:{created_ms}"
    return Signal(sid, strategy_id, symbol, side, created_ms, entry, stop, target, size_hint, "5m", tags)


def accept(signal: Signal, size_pct: float = 100.0, stop: float | None = None) -> Decision:
    """An executed decision for ``signal`` (as emitted unless size or stop are given)."""
    return Decision(signal.id, Action.EXECUTE, size_pct, signal.stop_loss if stop is None else stop,
                    signal.take_profit, (), "accept")


def deposit_fill(amount: float, at_ms: int = T0) -> Fill:
    return Fill("deposit:0", "", "USDT", Side.LONG, FillKind.DEPOSIT, at_ms, 1.0, 1.0, amount, 0.0, "deposit")


# ----------------------------------------------------------------------------------------- config


def make_config(overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """The embedded default with ``overrides`` merged on top, resolved against ``env`` (empty by default)."""
    return load_config(overrides=overrides, env={} if env is None else env).config


def exec_config(**kw: Any) -> ExecutionConfig:
    base: dict[str, Any] = {"starting_equity": 10_000, "fee_bps": 10, "slippage_bps": 5, "max_bars_held": 48}
    base.update(kw)
    return ExecutionConfig.model_validate(base)


# ---------------------------------------------------------------------------------------- context


class ListNews:
    """A NewsSource over a fixed list, honouring the contract start < published <= end."""

    def __init__(self, items: Iterable[NewsItem] = ()) -> None:
        self.all = sorted(items, key=lambda n: n.published_ms)
        self.calls: list[tuple[int, int]] = []

    def items(self, start_ms: int, end_ms: int) -> list[NewsItem]:
        self.calls.append((start_ms, end_ms))
        return [n for n in self.all if start_ms < n.published_ms <= end_ms]

    def poll(self) -> int:
        return 0


def make_pack(signal: Signal | None = None, **kw: Any) -> ContextPack:
    parts: dict[str, Any] = {
        "signal": signal or make_signal(),
        "recent_trades": (),
        "trade_stats": TradeStats(0, None, 0),
        "regime": RegimeInfo(RegimeTag.UNKNOWN, None, None, None, 96, 8),
        "correlated": (),
        "news": (),
        "gate_note": "no gates",
        "equity": 10_000.0,
    }
    parts.update(kw)
    return ContextPack.build(**parts)


# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def default_config() -> Config:
    return make_config()


def step_all(pipe: Any, slices: Iterable[Sequence[Bar]], equity: float, at_ms: int | None = 0) -> list[Any]:
    """Every slice through ``pipe.step`` and then ``finish`` (a replay's records, in memory, nothing written);
    the ledger opens first with ``equity`` at ``at_ms`` (None: at the first bar's open, as ``run_replay``).
    Closes the pipeline."""
    out: list[Any] = []
    try:
        if at_ms is not None:
            pipe.open_ledger(equity, at_ms)
        for bars in slices:
            if at_ms is None and not out:
                pipe.open_ledger(equity, bars[0].open_ms)
            out.append(pipe.step(bars))
        end = pipe.finish()
        if end is not None:
            out.append(end)
    finally:
        pipe.close()
    return out


class InterruptedFeed:
    """A feed wrapper that raises KeyboardInterrupt after n slices (a Ctrl-C mid-run)."""

    def __init__(self, feed: Any, n: int) -> None:
        self.feed, self.n = feed, n

    def __getattr__(self, name: str) -> Any:
        return getattr(self.feed, name)

    def slices(self) -> Iterator[Any]:
        for i, s in enumerate(self.feed.slices()):
            if i == self.n:
                raise KeyboardInterrupt
            yield s


def stored_ledger(db_url: str, run_id: int) -> tuple[list[Any], Any, dict[str, int]]:
    """A recorded run's fills, its run row and its table counts."""
    from storage import open_storage

    store = open_storage(db_url)
    try:
        return store.recorder(run_id).load_fills(), store.get_run(run_id), store.table_counts(run_id)
    finally:
        store.close()


def record_digest(records: Iterable[Any]) -> str:
    """SHA-256 over everything a run recorded except wall-clock measurements (verdict latencies)."""
    h = hashlib.sha256()
    for r in records:
        reviews = tuple(
            (rv.pack.hash, dataclasses.replace(rv.verdict, latency_ms=0.0, attempts=tuple(
                dataclasses.replace(a, latency_ms=0.0) for a in rv.verdict.attempts)), rv.decision, rv.mode)
            for rv in r.reviews
        )
        h.update(repr((r.close_ms, r.bars, r.signals, r.gate_results, reviews, r.fills, r.trades, r.outcomes,
                       r.events, r.news)).encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- databases

PG_URL = os.environ.get("TRADEVET_PG_URL")  # a throwaway PostgreSQL database (.ci/run starts one)


@contextlib.contextmanager
def pg_database(tag: str) -> Iterator[str]:
    """A fresh database on the TRADEVET_PG_URL server for one case (dropped afterwards): its URL. Cases running
    at once on other workers never share one."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    assert PG_URL
    name = f"tv_{tag}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite, and PostgreSQL (a fresh database of its own) when TRADEVET_PG_URL names a server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tv.db'}"
        return
    if not PG_URL:
        pytest.skip("TRADEVET_PG_URL is not set")
    with pg_database("t") as url:
        yield url
