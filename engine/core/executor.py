"""Paper execution: decisions in → fills at the next bar's open, exits by stop/target/time → trades.

``ShadowBook`` simulates signals *as emitted* with the very same fill rules, touching no wallet: the
shadow trade that scores what a veto or a modification avoided.

Exits known in advance. In a preloaded replay (``Pipeline.preload``: the whole series is known) a position's
and a shadow's exit bar is fixed at entry — stops and targets never move after entry and the time stop is a
bar count — so it is found then with one vectorised forward search (``engine.core.fills.first_exit``: the same
comparisons on the same floats as ``check_exit``), and ``check_exit`` runs only on that bar, where it must hit
(else the bars differ from the series: an error). The bars in between are skipped because their checks are
known not to fire; fills, trades and outcomes are the same, to the bit. This is not look-ahead: nothing a
strategy, gate, context pack or reviewer sees changes, and the exit still happens at its own bar, in the same
order among the slice's other fills. Positions and shadows of a history that is not preloaded (the live paper
loop) are checked on every bar of their symbol, as before. Entries still fill at the next bar's open.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from engine.config import ExecutionConfig
from engine.core.fills import ExitSeries, check_exit, entry_blocked, first_exit, slip
from engine.core.portfolio import EntryMeta, Portfolio, trade_figures
from engine.types import (
    Bar,
    Decision,
    ExitReason,
    Fill,
    FillKind,
    MarketLimits,
    Outcome,
    OutcomeKind,
    Side,
    Signal,
    Trade,
)

__all__ = ["ExecutionReport", "PaperExecutor", "PendingEntry", "ShadowBook"]

_NEVER = 2**63 - 1  # the due time of an exit the series does not reach (marked out at the end of data)


class _Schedule:
    """When each scheduled exit is due: close time → symbols to look at then (see the module docstring)."""

    __slots__ = ("max_bars_held", "series", "timeframe_ms", "wake")

    def __init__(self, timeframe_ms: int, max_bars_held: int) -> None:
        self.series: dict[str, ExitSeries] = {}
        self.timeframe_ms = timeframe_ms
        self.max_bars_held = max_bars_held
        self.wake: dict[int, list[str]] = {}

    def due(self, bar: Bar, side: Side, stop: float, target: float, opened_ms: int) -> int | None:
        """Close time of the exit bar of a position entered on ``bar`` (``_NEVER``: none in the series), or
        None when ``bar``'s symbol has no preloaded series (check every bar)."""
        ser = self.series.get(bar.symbol)
        if ser is None:
            return None
        i = ser.index(bar.close_ms)
        if i is None:
            return None
        j = first_exit(ser, i, side, stop, target, opened_ms, self.max_bars_held, self.timeframe_ms)
        if j is None:
            return _NEVER
        t = ser.times[j]
        if j > i:  # on the entry bar itself it is checked right after the entry
            self.wake.setdefault(t, []).append(bar.symbol)
        return t


def _missed(what: str, signal_id: str, t: int) -> RuntimeError:
    return RuntimeError(f"{what} {signal_id}: the exit scheduled at {t} did not hit there (the bars stepped "
                        f"differ from the preloaded series)")


@dataclass(frozen=True, slots=True)
class PendingEntry:
    signal: Signal
    decision: Decision
    notional: float  # quote amount requested at decision time
    placed_ms: int


@dataclass(slots=True)
class ExecutionReport:
    fills: list[Fill] = field(default_factory=list)
    trades: list[Trade] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


class PaperExecutor:
    """Owns pending entries; books every fill into the ``Portfolio``."""

    def __init__(self, cfg: ExecutionConfig, portfolio: Portfolio, limits: Mapping[str, MarketLimits],
                 timeframe_ms: int) -> None:
        self.cfg = cfg
        self.portfolio = portfolio
        self.limits = dict(limits)
        self.timeframe_ms = timeframe_ms
        self.pending: dict[str, list[PendingEntry]] = {}
        self.metas: dict[str, EntryMeta] = {}
        self._fee = cfg.fee_bps / 10_000.0
        self._schedule = _Schedule(timeframe_ms, cfg.max_bars_held)
        self._due: dict[str, int] = {}  # signal id → close time of its exit bar (scheduled positions only)

    def preload(self, series: Mapping[str, ExitSeries]) -> None:
        """The whole series of these symbols is known (a finite replay): schedule exits at entry."""
        self._schedule.series = dict(series)

    def deposit(self, amount: float, at_ms: int) -> Fill:
        fill = Fill(id="deposit:0", signal_id="", symbol=self.cfg.quote, side=Side.LONG, kind=FillKind.DEPOSIT,
                    filled_ms=at_ms, requested_price=1.0, fill_price=1.0, qty=amount, fee=0.0, reason="deposit")
        self.portfolio.apply(fill)
        return fill

    def submit(self, signal: Signal, decision: Decision, equity: float, now_ms: int) -> None:
        """Queue an entry for the next bar's open. Notional = equity × size_hint × size_pct."""
        notional = equity * signal.size_hint * decision.size_pct / 100.0
        self.pending.setdefault(signal.symbol, []).append(PendingEntry(signal, decision, notional, now_ms))
        self.metas[signal.id] = EntryMeta(signal.strategy_id, decision.stop_loss, decision.take_profit)

    def on_bar(self, bar: Bar, marks: Mapping[str, float], out: ExecutionReport) -> None:
        """Entries at this bar's open first, then exits over the bar for every position on its symbol."""
        queued = self.pending.pop(bar.symbol, None)
        if queued:
            for p in queued:
                self._enter(p, bar, marks, out)
        t = bar.close_ms
        due = self._due
        positions = [p for p in self.portfolio.positions.values() if p.symbol == bar.symbol]
        for pos in positions:
            at = due.get(pos.signal_id)
            if at is not None and at != t:
                continue  # scheduled for another bar: its check here is known not to fire
            bars_held = (t - pos.opened_ms) // self.timeframe_ms
            hit = check_exit(pos.side, pos.stop_loss, pos.take_profit, bar, bars_held,
                             self.cfg.max_bars_held, self.cfg.slippage_bps)
            if hit is not None:
                self._exit(pos.signal_id, bar, hit.reason, hit.requested_price, hit.fill_price,
                           out, ambiguous=hit.ambiguous, gap=hit.gap)
            elif at is not None:
                raise _missed("position", pos.signal_id, t)

    def on_bars(self, bars: Sequence[Bar], marks: Mapping[str, float], out: ExecutionReport) -> None:
        """``on_bar`` for each bar of a slice (bars closing at one instant), skipping the symbols with nothing
        pending, nothing due and nothing unscheduled open (a bar only ever changes the orders and positions of
        its own symbol)."""
        wake = self._schedule.wake
        woke = wake.pop(bars[0].close_ms, None) if wake else None
        positions = self.portfolio.positions
        loose = len(positions) > len(self._due)  # some positions are checked on every bar
        if not (woke or self.pending or loose):
            return
        busy = set(self.pending)
        if woke:
            busy.update(woke)
        if loose:
            due = self._due
            busy.update(p.symbol for p in positions.values() if p.signal_id not in due)
        for bar in bars:
            if bar.symbol in busy:
                self.on_bar(bar, marks, out)

    def close_all(self, marks: Mapping[str, float], at_ms: int, out: ExecutionReport) -> None:
        """Mark every open position out at the last close (a finite replay ran out of data)."""
        for pos in sorted(self.portfolio.positions.values(), key=lambda p: p.signal_id):
            price = marks.get(pos.symbol, pos.entry_price)
            fill_price = slip(price, pos.side, pos.side is Side.SHORT, self.cfg.slippage_bps)
            bar = Bar(pos.symbol, at_ms - self.timeframe_ms, at_ms, price, price, price, price, 0.0)
            self._exit(pos.signal_id, bar, ExitReason.END, price, fill_price, out)
        for sym in sorted(self.pending):
            for p in self.pending[sym]:
                out.outcomes.append(Outcome(p.signal.id, OutcomeKind.REALIZED, filled=False,
                                            note="run ended before the entry could fill"))
        self.pending.clear()
        self._schedule.wake.clear()

    # ---------------------------------------------------------------------------------- internals
    def _enter(self, p: PendingEntry, bar: Bar, marks: Mapping[str, float], out: ExecutionReport) -> None:
        sig, dec = p.signal, p.decision
        blocked = entry_blocked(sig.side, bar.open, dec.stop_loss, dec.take_profit)
        if blocked is not None:
            self._no_fill(sig.id, f"entry cancelled: {blocked}", out)
            return
        buying = sig.side is Side.LONG
        price = slip(bar.open, sig.side, buying, self.cfg.slippage_bps)
        notional = p.notional
        notes = ""
        # No leverage: what is committed (at cost, plus fees) never exceeds equity.
        equity = self.portfolio.equity(marks)
        available = equity - self.portfolio.gross_exposure(marks)
        if notional * (1 + self._fee) > available:
            notional = max(0.0, available / (1 + self._fee))
            notes = f"size reduced to available buying power {notional:.2f}"
        qty = notional / price if price > 0 else 0.0
        lim = self.limits.get(sig.symbol)
        if lim is not None and lim.qty_step > 0:
            qty = math.floor(qty / lim.qty_step + 1e-9) * lim.qty_step
        if lim is not None and lim.min_qty > 0 and qty < lim.min_qty:
            self._no_fill(sig.id, f"below exchange minimum quantity {lim.min_qty:g} (got {qty:.8g})", out)
            return
        if lim is not None and lim.min_notional > 0 and qty * price < lim.min_notional:
            self._no_fill(sig.id, f"below exchange minimum notional {lim.min_notional:g} (got {qty * price:.4g})", out)
            return
        if qty <= 0:
            self._no_fill(sig.id, "no buying power left", out)
            return
        fill = Fill(id=f"{sig.id}:entry", signal_id=sig.id, symbol=sig.symbol, side=sig.side, kind=FillKind.ENTRY,
                    filled_ms=bar.open_ms, requested_price=bar.open, fill_price=price, qty=qty,
                    fee=qty * price * self._fee, reason="next_open" + (f"; {notes}" if notes else ""))
        meta = self.metas[sig.id]
        self.portfolio.apply(fill, meta)
        out.fills.append(fill)
        at = self._schedule.due(bar, sig.side, meta.stop_loss, meta.take_profit, bar.open_ms)
        if at is not None:
            self._due[sig.id] = at

    def _exit(self, signal_id: str, bar: Bar, reason: ExitReason, requested: float, price: float,
              out: ExecutionReport, *, ambiguous: bool = False, gap: bool = False) -> None:
        pos = self.portfolio.positions[signal_id]
        fill = Fill(id=f"{signal_id}:exit", signal_id=signal_id, symbol=pos.symbol, side=pos.side,
                    kind=FillKind.EXIT, filled_ms=bar.close_ms, requested_price=requested, fill_price=price,
                    qty=pos.qty, fee=pos.qty * price * self._fee, reason=str(reason), ambiguous=ambiguous, gap=gap)
        trade = self.portfolio.apply(fill)
        assert trade is not None
        self.metas.pop(signal_id, None)
        self._due.pop(signal_id, None)
        out.fills.append(fill)
        out.trades.append(trade)
        out.outcomes.append(Outcome(signal_id, OutcomeKind.REALIZED, filled=True, pnl_pct=trade.pnl_pct,
                                    r_multiple=trade.r_multiple, exit_reason=str(reason), ambiguous=ambiguous,
                                    opened_ms=trade.opened_ms, closed_ms=trade.closed_ms))

    @staticmethod
    def _no_fill(signal_id: str, note: str, out: ExecutionReport) -> None:
        out.outcomes.append(Outcome(signal_id, OutcomeKind.REALIZED, filled=False, note=note))


@dataclass(slots=True)
class _Shadow:
    signal: Signal
    entry: float = 0.0
    opened_ms: int = 0
    open: bool = False
    due: int | None = None  # close time of its exit bar once scheduled (None: check every bar)


class ShadowBook:
    """Every reviewed signal, simulated as emitted (same fills, fees, exits), scored in pnl %."""

    def __init__(self, cfg: ExecutionConfig, timeframe_ms: int) -> None:
        self.cfg = cfg
        self.timeframe_ms = timeframe_ms
        self.by_symbol: dict[str, list[_Shadow]] = {}
        self._fee = cfg.fee_bps / 10_000.0
        self._schedule = _Schedule(timeframe_ms, cfg.max_bars_held)
        self._fresh: set[str] = set()  # symbols with a shadow still to enter at their next bar
        self._loose: dict[str, int] = {}  # symbol → open shadows checked on every bar (no preloaded series)

    def preload(self, series: Mapping[str, ExitSeries]) -> None:
        """The whole series of these symbols is known (a finite replay): schedule exits at entry."""
        self._schedule.series = dict(series)

    def add(self, signal: Signal) -> None:
        self.by_symbol.setdefault(signal.symbol, []).append(_Shadow(signal))
        self._fresh.add(signal.symbol)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_symbol.values())

    def on_bars(self, bars: Sequence[Bar], out: list[Outcome]) -> None:
        """``on_bar`` for the bars of a slice (closing at one instant) whose symbol has a shadow to enter, due
        or unscheduled."""
        wake = self._schedule.wake
        woke = wake.pop(bars[0].close_ms, None) if wake else None
        if not (woke or self._fresh or self._loose):
            return
        busy = set(self._fresh)
        if woke:
            busy.update(woke)
        if self._loose:
            busy.update(self._loose)
        for bar in bars:
            if bar.symbol in busy:
                self.on_bar(bar, out)

    def on_bar(self, bar: Bar, out: list[Outcome]) -> None:
        lst = self.by_symbol.get(bar.symbol)
        if not lst:
            return
        t = bar.close_ms
        keep: list[_Shadow] = []
        for s in lst:
            sig = s.signal
            if not s.open:
                blocked = entry_blocked(sig.side, bar.open, sig.stop_loss, sig.take_profit)
                if blocked is not None:
                    out.append(Outcome(sig.id, OutcomeKind.SHADOW, filled=False, note=f"entry cancelled: {blocked}"))
                    continue
                s.entry = slip(bar.open, sig.side, sig.side is Side.LONG, self.cfg.slippage_bps)
                s.opened_ms = bar.open_ms
                s.open = True
                s.due = self._schedule.due(bar, sig.side, sig.stop_loss, sig.take_profit, s.opened_ms)
                if s.due is None:
                    self._loose[bar.symbol] = self._loose.get(bar.symbol, 0) + 1
            if s.due is not None and s.due != t:
                keep.append(s)  # scheduled for another bar: its check here is known not to fire
                continue
            bars_held = (t - s.opened_ms) // self.timeframe_ms
            hit = check_exit(sig.side, sig.stop_loss, sig.take_profit, bar, bars_held,
                             self.cfg.max_bars_held, self.cfg.slippage_bps)
            if hit is None:
                if s.due is not None:
                    raise _missed("shadow", sig.id, t)
                keep.append(s)
                continue
            if s.due is None:
                self._unloose(bar.symbol)
            out.append(self._outcome(s, hit.fill_price, t, str(hit.reason), hit.ambiguous))
        self._fresh.discard(bar.symbol)
        if keep:
            self.by_symbol[bar.symbol] = keep
        else:
            del self.by_symbol[bar.symbol]

    def _unloose(self, symbol: str) -> None:
        n = self._loose[symbol] - 1
        if n:
            self._loose[symbol] = n
        else:
            del self._loose[symbol]

    def close_all(self, marks: Mapping[str, float], at_ms: int, out: list[Outcome]) -> None:
        for sym in sorted(self.by_symbol):
            for s in self.by_symbol[sym]:
                if not s.open:
                    out.append(Outcome(s.signal.id, OutcomeKind.SHADOW, filled=False,
                                       note="run ended before the entry could fill"))
                    continue
                price = slip(marks.get(sym, s.entry), s.signal.side, s.signal.side is Side.SHORT,
                             self.cfg.slippage_bps)
                out.append(self._outcome(s, price, at_ms, str(ExitReason.END), False))
        self.by_symbol.clear()
        self._fresh.clear()
        self._loose.clear()
        self._schedule.wake.clear()

    def _outcome(self, s: _Shadow, exit_price: float, at_ms: int, reason: str, ambiguous: bool) -> Outcome:
        fees = (s.entry + exit_price) * self._fee  # per unit
        _, pnl_pct, r = trade_figures(s.signal.side, s.entry, exit_price, 1.0, fees, s.signal.stop_loss)
        return Outcome(s.signal.id, OutcomeKind.SHADOW, filled=True, pnl_pct=pnl_pct, r_multiple=r,
                       exit_reason=reason, ambiguous=ambiguous, opened_ms=s.opened_ms, closed_ms=at_ms)
