"""Rule gates: a Signal and the portfolio/market as of now → GateResult (pass with a note, or block with why).

Each gate is a small class with a ``Params`` model. Locks (cooldown, loss streak) are derived from the
ledger of closed trades rather than kept as private state, so a restarted run has the same locks, and a
replay reads them off the ``SimClock``. The one lock that is not a trade — a veto cooling its setup down
(``cooldown.after_veto_bars``) — reads the vetoes the pipeline noted in ``GateView.vetoed``, which a resumed
run rebuilds as it steps again over the recorded verdicts.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engine.config import GateConfig
from engine.config.plugins import build_params, resolve
from engine.core.executor import PaperExecutor
from engine.core.market import MarketState
from engine.core.portfolio import Portfolio
from engine.ports import Clock
from engine.types import GateResult, Signal

__all__ = [
    "DEFAULT_MIN_QUOTE_VOLUME",
    "GATES",
    "Cooldown",
    "CorrelationCap",
    "Gate",
    "GateView",
    "LossStreak",
    "MaxDrawdown",
    "MaxOpenPositions",
    "MinVolume",
    "build_gates",
    "evaluate_gates",
    "quote_of",
]

_DAY_MS = 86_400_000


@dataclass
class GateView:
    """What gates may look at, all as of the clock's now. ``reserved`` = signals passed earlier this slice."""

    clock: Clock
    market: MarketState
    portfolio: Portfolio
    executor: PaperExecutor
    timeframe_ms: int
    correlation_lookback: int = 288
    reserved: list[Signal] = field(default_factory=list)
    # the latest veto that took effect (the signal was skipped), per (strategy, symbol): (bar close ms, signal id)
    vetoed: dict[tuple[str, str], tuple[int, str]] = field(default_factory=dict)

    def note_veto(self, signal: Signal) -> None:
        """A veto skipped ``signal`` (at its bar close): the cooldown gate may hold its setup for a while."""
        self.vetoed[(signal.strategy_id, signal.symbol)] = (signal.created_ms, signal.id)


class Gate(Protocol):
    name: str

    def evaluate(self, signal: Signal, view: GateView) -> GateResult: ...


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _GateBase:
    name: ClassVar[str]
    Params: ClassVar[type[_Params]]

    def __init__(self, params: _Params | dict[str, Any] | None = None) -> None:
        self.params: Any = params if isinstance(params, _Params) else self.Params(**(params or {}))

    def ok(self, note: str) -> GateResult:
        return GateResult(self.name, True, note)

    def block(self, reason: str, until_ms: int | None = None) -> GateResult:
        return GateResult(self.name, False, reason, until_ms)


def _money(x: float) -> str:
    a = abs(x)
    if a >= 1e9:
        return f"{x / 1e9:.1f}B"
    if a >= 1e6:
        return f"{x / 1e6:.1f}M"
    if a >= 1e3:
        return f"{x / 1e3:.1f}k"
    if a >= 100 or a == 0:
        return f"{x:.0f}"
    # three significant digits, never an exponent (a thin BTC market trades 0.0213 BTC a day)
    return np.format_float_positional(x, precision=3, fractional=False, trim="-")


# 24h quote volume below which a symbol is too thin to paper-trade believably, per quote currency: about
# 1M US dollars' worth (BTC and ETH at their 2021–2025 prices; an older or smaller market may sit below these
# levels as a whole, which the relative criterion covers).
DEFAULT_MIN_QUOTE_VOLUME: dict[str, float] = {
    **dict.fromkeys(("USD", "USDT", "USDC", "BUSD", "TUSD", "FDUSD", "DAI", "EUR", "GBP"), 1_000_000.0),
    "BTC": 15.0, "ETH": 300.0, "BNB": 2_000.0, "JPY": 150_000_000.0, "KRW": 1_300_000_000.0,
}
_RELATIVE_MIN_SYMBOLS = 3  # the median of fewer symbols says nothing about the market


@functools.lru_cache(maxsize=4096)
def quote_of(symbol: str) -> str:
    """'ETH/BTC' → 'BTC', 'BTC/USDT:USDT' → 'USDT', 'ETH-BTC' → 'BTC'."""
    pair = symbol.split(":", 1)[0]
    sep = "/" if "/" in pair else "-"
    return pair.rsplit(sep, 1)[-1].upper() if sep in pair else ""


class MinVolume(_GateBase):
    """Blocks symbols whose 24h quote volume is too thin, in units that fit the market.

    The threshold of a symbol is, in its quote currency: ``min_quote_volume_24h`` when set (one number for every
    symbol), else ``by_quote`` for its quote currency (a default map for the usual quotes); when the run has at
    least three symbols in that quote, it is lowered to ``relative`` × their median 24h quote volume if that is
    smaller (the liquid part of an older or smaller market passes, its thin tail does not), and for a quote the
    map does not know that relative level is the threshold. A symbol whose source has no volume data at all (FX
    files) passes, and its note says so.
    """

    name = "min_volume"

    class Params(_Params):
        min_quote_volume_24h: float | None = Field(
            None, ge=0, description="Minimum 24h volume in the quote currency, for every symbol (null: by_quote).")
        by_quote: dict[str, float] = Field(
            default_factory=lambda: dict(DEFAULT_MIN_QUOTE_VOLUME),
            description="Minimum 24h quote volume per quote currency (used when min_quote_volume_24h is null).")
        relative: float = Field(
            0.1, ge=0, description="A symbol passes at this × the median 24h quote volume of the run's symbols in "
                                   "the same quote (at least 3 of them) when that is below the threshold; 0: off.")

    def evaluate(self, signal: Signal, view: GateView) -> GateResult:
        h = view.market.history(signal.symbol)
        quote = quote_of(signal.symbol)
        unit = f" {quote}" if quote else ""
        if not h.has_volume():
            return self.ok("no volume data: min_volume not applied")
        qv = h.quote_volume_24h()
        covered_ms = min(_DAY_MS, len(h) * view.timeframe_ms)
        note = ""
        if 0 < covered_ms < _DAY_MS:
            # less than a day of history: pro-rate, and say so
            qv *= _DAY_MS / covered_ms
            note = f" (pro-rated from {covered_ms / 3_600_000:.1f}h)"
        need, why = self._threshold(quote, view)
        if need is None:
            return self.ok(f"24h quote volume {_money(qv)}{unit}; no threshold for quote {quote or '?'}{note}")
        if qv < need:
            return self.block(f"24h quote volume {_money(qv)}{unit} < {_money(need)}{unit}{why}{note}")
        return self.ok(f"24h quote volume {_money(qv)}{unit} ≥ {_money(need)}{unit}{why}{note}")

    def _threshold(self, quote: str, view: GateView) -> tuple[float | None, str]:
        p = self.params
        if p.min_quote_volume_24h is not None:
            return p.min_quote_volume_24h, ""
        need = p.by_quote.get(quote)
        if p.relative > 0:
            peers = sorted([hh.quote_volume_24h() for sym, hh in view.market.histories.items()
                            if quote_of(sym) == quote and hh.count and hh.has_volume()])
            if len(peers) >= _RELATIVE_MIN_SYMBOLS:
                rel = p.relative * _median(peers)
                if need is None or rel < need:
                    return rel, f" ({p.relative:g}× the median of {len(peers)} {quote} symbols)"
        return need, ""


def _median(ordered: list[float]) -> float:
    """``float(np.median(ordered))`` of a sorted list of finite numbers (the middle one, or the mean of the two
    middle ones as numpy takes it: their sum halved), without numpy's overhead on a few values."""
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


class MaxOpenPositions(_GateBase):
    name = "max_open_positions"

    class Params(_Params):
        max_total: int = Field(5, ge=1, description="Open + pending positions across all strategies.")
        max_per_strategy: int = Field(2, ge=1, description="Open + pending positions of one strategy.")
        max_per_symbol: int = Field(1, ge=1, description="Open + pending positions of one strategy on one symbol.")

    def evaluate(self, signal: Signal, view: GateView) -> GateResult:
        p = self.params
        sid, symbol = signal.strategy_id, signal.symbol
        total = mine = here = 0
        # open positions, pending entries and the signals passed earlier in this slice
        for held in (view.portfolio.positions.values(), (q.signal for lst in view.executor.pending.values()
                                                         for q in lst), view.reserved):
            for x in held:
                total += 1
                if x.strategy_id == sid:
                    mine += 1
                    here += x.symbol == symbol
        if total >= p.max_total:
            return self.block(f"{total}/{p.max_total} slots used")
        if mine >= p.max_per_strategy:
            return self.block(f"{mine}/{p.max_per_strategy} slots of {signal.strategy_id} used")
        if here >= p.max_per_symbol:
            return self.block(f"{signal.strategy_id} already holds {signal.symbol}")
        return self.ok(f"{total}/{p.max_total} slots used")


class Cooldown(_GateBase):
    """Blocks a strategy on a symbol for ``bars`` bars after its trade there closed and, with
    ``after_veto_bars``, for the next N bars after the reviewer vetoed its signal there.

    A veto leaves the slot free, so a strategy whose setup persists (a quiet stretch, an unbroken channel)
    re-fires on the next bars and is vetoed again and again — every re-fire is the same setup judged twice.
    Only a veto that took effect counts: one that skipped the signal (active mode, confidence at least
    ``policy.min_confidence``). A shadow-mode or low-confidence veto changes nothing the account does, so it
    holds nothing either: a shadow reviewer never alters trading. The veto is in the past of every signal
    this reads it for (it was given at an earlier bar close).
    """

    name = "cooldown"

    class Params(_Params):
        bars: int = Field(6, ge=1, description="Bars after a trade of this strategy on this symbol closed.")
        after_veto_bars: int = Field(
            0, ge=0, description="Bars after a veto of this strategy's signal on this symbol (one that skipped "
                                 "it) during which its next signals there are blocked; 0: off.")

    def evaluate(self, signal: Signal, view: GateView) -> GateResult:
        key = (signal.strategy_id, signal.symbol)
        now = view.clock.now_ms()
        tf = view.timeframe_ms
        until = 0
        reason = ""
        last = view.portfolio.last_exit_ms.get(key)
        if last is not None:
            until = last + self.params.bars * tf
            reason = f"after the last {signal.symbol} trade"
        n = self.params.after_veto_bars
        if n:
            vetoed = view.vetoed.get(key)
            # the veto's bar plus the next n: a signal n + 1 bars after the veto passes
            if vetoed is not None and vetoed[0] + (n + 1) * tf > until:
                until = vetoed[0] + (n + 1) * tf
                reason = f"after the veto of {vetoed[1]}"
        if now < until:
            left = (until - now) // tf
            return self.block(f"cooldown: {left} more bar(s) {reason}", until)
        return self.ok("no cooldown")


class LossStreak(_GateBase):
    name = "loss_streak"

    class Params(_Params):
        stopouts: int = Field(3, ge=1, description="Stop-outs within the window that lock strategy/symbol.")
        window_bars: int = Field(288, ge=1, description="Window in bars.")
        lock_bars: int = Field(144, ge=1, description="Lock length in bars after the last stop-out.")

    def evaluate(self, signal: Signal, view: GateView) -> GateResult:
        p = self.params
        now = view.clock.now_ms()
        stops = view.portfolio.stopouts.get((signal.strategy_id, signal.symbol))
        if stops:  # stop-out times in the order the trades closed: ascending
            last = stops[-1]
            window = p.window_bars * view.timeframe_ms
            n = len(stops) - bisect_right(stops, last - window)  # stop-outs after last - window
            until = last + p.lock_bars * view.timeframe_ms
            if n >= p.stopouts and now < until:
                return self.block(f"{n} stop-outs of {signal.strategy_id} on {signal.symbol} within "
                                  f"{p.window_bars} bars: locked", until)
            recent = len(stops) - bisect_right(stops, now - window)
            return self.ok(f"{recent} recent stop-out(s)")
        return self.ok("0 recent stop-outs")


class MaxDrawdown(_GateBase):
    name = "max_drawdown"

    class Params(_Params):
        max_drawdown_pct: float = Field(15, gt=0, le=100, description="Realized-equity drawdown that blocks entries.")

    def evaluate(self, signal: Signal, view: GateView) -> GateResult:
        pf = view.portfolio
        peak = pf.realized_peak
        dd = (peak - pf.realized_equity) / peak * 100.0 if peak > 0 else 0.0
        limit = self.params.max_drawdown_pct
        if dd >= limit:
            return self.block(f"drawdown {dd:.1f}% ≥ {limit:g}%")
        return self.ok(f"drawdown {dd:.1f}% < {limit:g}%")


class CorrelationCap(_GateBase):
    name = "correlation_cap"

    class Params(_Params):
        min_corr: float = Field(0.8, gt=0, le=1, description="|corr| at which an open position counts as the same bet.")
        max_correlated: int = Field(2, ge=1, description="Same-direction correlated positions allowed.")

    def evaluate(self, signal: Signal, view: GateView) -> GateResult:
        p = self.params
        n = 0
        for pos in view.portfolio.positions.values():
            c = view.market.correlation(signal.symbol, pos.symbol, view.correlation_lookback)
            if c is None or abs(c) < p.min_corr:
                continue
            same_bet = (pos.side is signal.side) == (c > 0)
            if same_bet:
                n += 1
        if n >= p.max_correlated:
            return self.block(f"{n} open position(s) correlated ≥ {p.min_corr:g} in the same direction")
        return self.ok(f"{n} correlated same-direction position(s)")


GATES: dict[str, type[_GateBase] | str] = {
    g.name: g for g in (MinVolume, MaxOpenPositions, Cooldown, LossStreak, MaxDrawdown, CorrelationCap)
}


def build_gates(configs: Sequence[GateConfig]) -> list[Gate]:
    """Instantiate gates in order. Raises: ConfigError naming ``gates[i]`` (unknown kind, bad params)."""
    gates: list[Gate] = []
    for i, gc in enumerate(configs):
        cls = resolve(gc.kind, GATES, what="gate kind", path=f"gates[{i}].kind")
        params_model = getattr(cls, "Params", None)
        params = build_params(params_model, gc.params, path=f"gates[{i}].params")
        gate = cls(params) if params_model is not None else cls(**params)
        if not getattr(gate, "name", None):
            gate.name = gc.kind  # type: ignore[misc]
        gates.append(gate)
    return gates


def evaluate_gates(gates: Sequence[Gate], signal: Signal, view: GateView) -> tuple[list[GateResult], str | None]:
    """Run gates in order until one blocks. Returns (results, gate note or None when blocked)."""
    results: list[GateResult] = []
    for g in gates:
        r = g.evaluate(signal, view)
        results.append(r)
        if not r.passed:
            return results, None
    return results, "; ".join(r.reason for r in results if r.reason) or "no gates"

