"""The pipeline: one time slice of closed bars → a SliceRecord (signals, gates, packs, verdicts, fills, outcomes).

``Pipeline.step`` is the only code path from bar to fill; ``Replay`` and ``PaperLoop`` differ only in the
clock and the feed that drive it. The reviewer is async (the signals of one slice are reviewed together);
everything else here is plain synchronous code.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.config import Config
from engine.core.account import AccountRules, Holding
from engine.core.clamp import clamp
from engine.core.context import ContextBuilder
from engine.core.executor import ExecutionReport, PaperExecutor, ShadowBook
from engine.core.fills import ExitSeries
from engine.core.gates import Gate, GateView, evaluate_gates
from engine.core.market import MarketState
from engine.core.portfolio import Portfolio
from engine.core.scored import TrailingWindow, is_scored, retire_check
from engine.ports import Clock, NewsSource, Reviewer, Strategy
from engine.types import (
    Action,
    Bar,
    ContextPack,
    Event,
    Fill,
    GateResult,
    MarketLimits,
    NewsItem,
    Outcome,
    ReviewRecord,
    Signal,
    SliceRecord,
    Verdict,
    VerdictKind,
)

__all__ = ["Pipeline", "StepStats"]

log = logging.getLogger("tradevet.pipeline")
_DAY_MS = 86_400_000


@dataclass(slots=True)
class StepStats:
    slices: int = 0
    bars: int = 0
    signals: int = 0
    blocked: int = 0
    reviewed: int = 0
    executed: int = 0


class Pipeline:
    """Owns market state, portfolio, executor, shadow book; asks strategies, gates, context and reviewer."""

    def __init__(self, cfg: Config, *, strategies: Sequence[Strategy], gates: Sequence[Gate],
                 reviewer: Reviewer | None, news: NewsSource, clock: Clock, limits: dict[str, MarketLimits],
                 symbols: Sequence[str]) -> None:
        self.cfg = cfg
        self.clock = clock
        self.timeframe_ms = cfg.market.timeframe_ms
        rc = cfg.context.regime
        keep = max(4096, 2 * (rc.vol_history * rc.lookback + rc.lookback + 2), 2 * cfg.context.correlation.lookback)
        self.market = MarketState(self.timeframe_ms, symbols, keep=keep)
        self.portfolio = Portfolio(self.timeframe_ms, recent_keep=max(256, cfg.context.recent_trades))
        self.executor = PaperExecutor(cfg.execution, self.portfolio, limits, self.timeframe_ms)
        self.shadow = ShadowBook(cfg.execution, self.timeframe_ms)
        self.context = ContextBuilder(cfg.context, self.market, self.portfolio, news, self.timeframe_ms,
                                      cfg.execution.max_bars_held)
        self.gates = list(gates)
        self.view = GateView(clock, self.market, self.portfolio, self.executor, self.timeframe_ms,
                             cfg.context.correlation.lookback)
        self.account = AccountRules.of(cfg.execution.account, cfg.market.type, symbols, limits)
        self.reviewer = reviewer
        self.news = news
        self.mode = reviewer.mode if reviewer is not None else "off"
        self.stats = StepStats()
        self._plan = [(s, tuple(s.symbols) if s.symbols else tuple(symbols)) for s in strategies]
        # preloaded replays (see preload): where each strategy may fire, by bar close time / by pair
        self._cands: dict[int, list[tuple[Strategy, str]]] | None = None
        self._masks: dict[tuple[int, str], bytes] = {}
        self._marks: dict[str, float] = {}
        self._carry_fills: list[Fill] = []
        self._carry_events: list[Event] = []
        self._last_ms: int | None = None
        # reviewed signals whose shadow outcome is still to come: id → (created at, vetoed)
        self._awaiting: dict[str, tuple[int, bool]] = {}
        self._window = TrailingWindow(int(cfg.scoring.retire.window_days * _DAY_MS))  # the retire rule's
        self._runner: asyncio.Runner | None = None
        self._news_seen: set[str] = set()
        self.ended = False  # finish() ran: a finite replay reached the end of its data

    # --------------------------------------------------------------------------------- lifecycle
    def open_ledger(self, amount: float, at_ms: int) -> None:
        """First deposit of a new run; recorded with the next slice, with the account's rules as an event."""
        self._carry_fills.append(self.executor.deposit(amount, at_ms))
        acc = self.account
        self._carry_events.append(Event("account", at_ms, acc.account, acc.describe(),
                                        (("account", acc.account),
                                         ("market_types", tuple(sorted(acc.market_types.items()))))))

    def preload(self, arrays: dict[str, dict[str, np.ndarray]], *, schedule_exits: bool = True) -> None:
        """A finite replay hands over its whole series before the first step (``MarketState.preload``):
        indicators are computed once per column, strategies that offer ``candidates`` are evaluated
        only on the bars where they may fire (and always on a symbol's first bar, where evaluate creates
        its indicators), and each position's and shadow's exit bar is found at entry (``engine.core.executor``;
        ``schedule_exits=False`` keeps the check on every bar, for comparison). What each step sees and
        decides is unchanged, to the bit."""
        self.market.preload(arrays)
        if schedule_exits:
            series = {sym: ExitSeries(h.column("close_ms"), h.column("open"), h.column("high"), h.column("low"))
                      for sym, h in self.market.histories.items() if h.preloaded}
            self.executor.preload(series)
            self.shadow.preload(series)
        masks: dict[tuple[int, str], bytes] = {}
        complete = True
        for k, (strat, syms) in enumerate(self._plan):
            for sym in syms:
                h = self.market.histories.get(sym)
                m = strat.candidates(h) if h is not None and h.preloaded else None
                if m is None:
                    complete = False
                    continue
                m = np.asarray(m, dtype=bool).copy()
                if m.shape != (h.column("close").shape[0],):
                    raise ValueError(f"strategy {strat.id}: candidates() for {sym} has shape {m.shape}, "
                                     f"expected one value per bar")
                m[:1] = True
                masks[(k, sym)] = m.tobytes()
        self._masks = masks
        if not complete:
            return
        cands: dict[int, list[tuple[Strategy, str]]] = {}
        for k, (strat, syms) in enumerate(self._plan):
            for sym in syms:
                times = self.market.histories[sym].column("close_ms")
                hits = np.frombuffer(masks[(k, sym)], dtype=bool)
                for t in times[hits].tolist():
                    cands.setdefault(t, []).append((strat, sym))
        self._cands = cands  # each list in plan order (strategies in order, then their symbols), as bar by bar

    def close(self) -> None:
        if self._runner is not None:
            if self.reviewer is not None:
                self._runner.run(self.reviewer.aclose())
            self._runner.close()
            self._runner = None

    def _run(self, coro):  # type: ignore[no-untyped-def]
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(coro)

    # -------------------------------------------------------------------------------------- step
    def step(self, bars: Sequence[Bar]) -> SliceRecord:
        """Process every bar closing at one instant. Raises: ClockError if time goes backwards."""
        t = bars[0].close_ms
        self.clock.advance_to(t)
        prev_marks = self._marks
        histories = self.market.histories
        for bar in bars:
            h = histories.get(bar.symbol)
            (h if h is not None else self.market.history(bar.symbol)).append(bar)
        rep = ExecutionReport(fills=self._carry_fills)
        self._carry_fills = []
        shadow_out: list[Outcome] = []
        self.executor.on_bars(bars, prev_marks, rep)
        self.shadow.on_bars(bars, shadow_out)
        marks = self.market.marks()
        self._marks = marks

        signals = self._signals(bars, t)
        gate_rows: list[tuple[str, GateResult]] = []
        passed: list[tuple[Signal, str]] = []
        if signals:
            self.view.reserved.clear()
        for sig in signals:
            refused = self.account.refuse(sig, self._holdings(sig.symbol) if self.account.netting else ())
            if refused is not None:
                gate_rows.append((sig.id, refused))
                continue
            results, note = evaluate_gates(self.gates, sig, self.view)
            gate_rows.extend((sig.id, r) for r in results)
            if note is not None:
                self.view.reserved.append(sig)
                passed.append((sig, note))

        reviews: list[ReviewRecord] = []
        if passed:
            packs = [self.context.build(sig, note, marks) for sig, note in passed]
            verdicts = self._review(packs)
            equity = self.portfolio.equity(marks)
            for (sig, _), pack, verdict in zip(passed, packs, verdicts, strict=True):
                decision = clamp(sig, verdict, self.cfg.policy, self.mode)
                reviews.append(ReviewRecord(pack, verdict, decision, self.mode))
                self.shadow.add(sig)
                self._awaiting[sig.id] = (sig.created_ms, verdict.verdict is VerdictKind.VETO)
                if decision.action is Action.EXECUTE:
                    self.executor.submit(sig, decision, equity, t)
                    self.stats.executed += 1
                else:  # a veto that took effect (the cooldown gate's after_veto_bars reads it)
                    self.view.note_veto(sig)

        events = self._carry_events
        self._carry_events = []
        if self.reviewer is not None:
            drained = self.reviewer.drain_events()
            if drained:
                events.extend(Event(e.kind, t, e.subject, e.message, e.data) for e in drained)
        outcomes = rep.outcomes + shadow_out
        if shadow_out or (len(self._window) and self._retiring):
            # otherwise nothing to score, or nothing to expire that could retire the reviewer (min_vetoes >= 1;
            # once not active, the check only keeps its window, and the window expires lazily: same counts)
            events.extend(self._retire_check(shadow_out, t))

        news = self._new_news(t)
        stats = self.stats
        stats.slices += 1
        stats.bars += len(bars)
        if signals:
            stats.signals += len(signals)
            stats.reviewed += len(reviews)
            stats.blocked += len(signals) - len(reviews)
        return SliceRecord(
            close_ms=t, bars=tuple(bars), signals=tuple(signals), gate_results=tuple(gate_rows),
            reviews=tuple(reviews), fills=tuple(rep.fills), trades=tuple(rep.trades), outcomes=tuple(outcomes),
            events=tuple(events), news=news,
        )

    def finish(self) -> SliceRecord | None:
        """End of a finite replay: mark open positions and shadows out at the last close."""
        if self._last_ms is None:
            return None
        self.ended = True
        t = self._last_ms
        rep = ExecutionReport(fills=self._carry_fills)
        self._carry_fills = []
        self.executor.close_all(self._marks, t, rep)
        shadow_out: list[Outcome] = []
        self.shadow.close_all(self._marks, t, shadow_out)
        return SliceRecord(close_ms=t, bars=(), fills=tuple(rep.fills), trades=tuple(rep.trades),
                           outcomes=tuple(rep.outcomes + shadow_out),
                           events=(Event("run", t, "replay", "end of data: open positions marked out"),))

    # --------------------------------------------------------------------------------- internals
    @property
    def _retiring(self) -> bool:
        """Can the retire rule still fire? (Only an active reviewer is retired, and only once.)"""
        return self.mode == "active" and self.cfg.scoring.retire.enabled

    def _holdings(self, symbol: str) -> list[Holding]:
        """What the account holds or is about to hold on ``symbol``, oldest first."""
        out = [Holding(p.signal_id, p.strategy_id, p.side, "open")
               for p in self.portfolio.positions.values() if p.symbol == symbol]
        out += [Holding(q.signal.id, q.signal.strategy_id, q.signal.side, "pending")
                for q in self.executor.pending.get(symbol, ())]
        out += [Holding(r.id, r.strategy_id, r.side, "passed") for r in self.view.reserved if r.symbol == symbol]
        return out

    def _signals(self, bars: Sequence[Bar], t: int) -> list[Signal]:
        histories = self.market.histories
        if self._cands is not None:  # preloaded: only the pairs that may fire at t
            todo = [(strat, histories[sym]) for strat, sym in self._cands.get(t, ())]
        else:
            present = {b.symbol for b in bars}
            masks = self._masks
            todo = []
            for k, (strat, syms) in enumerate(self._plan):
                for sym in syms:
                    if sym in present:
                        h = histories[sym]
                        m = masks.get((k, sym)) if masks else None
                        if m is None or m[h.count - 1]:
                            todo.append((strat, h))
        out: list[Signal] = []
        for strat, h in todo:
            sig = strat.evaluate(h)
            if sig is not None:
                if sig.created_ms != t:
                    raise RuntimeError(f"strategy {strat.id} emitted a signal for {sig.created_ms}, not {t}")
                out.append(sig)
        return out

    def _review(self, packs: list[ContextPack]) -> list[Verdict]:
        if self.reviewer is None or self.mode == "off":
            return [Verdict(VerdictKind.ACCEPT, 0.0, "reviewer off", source="off") for _ in packs]
        if self.reviewer.synchronous:
            # every tier answers without I/O (the rules tier): skip the event loop, same bookkeeping
            return list(self.reviewer.review_many_sync(packs))
        verdicts = self._run(self.reviewer.review_many(packs))
        return list(verdicts)

    def _new_news(self, t: int) -> tuple[NewsItem, ...]:
        """Items not recorded yet that the context window can see. An item that arrives late (a feed
        polled after its publication time) is still recorded, once, with the slice that first sees it."""
        self._last_ms = t
        window = self.news.items(t - int(self.cfg.context.news_window_h * 3_600_000), t)
        if not window:
            return ()
        fresh = tuple(i for i in window if i.id not in self._news_seen)
        self._news_seen.update(i.id for i in fresh)
        if len(self._news_seen) > 100_000:  # bounded: ids older than the window can be forgotten
            self._news_seen = {i.id for i in window}
        return fresh

    def _retire_check(self, shadow_out: Sequence[Outcome], t: int) -> list[Event]:
        """DESIGN §4: over the trailing window (``engine.core.scored``: signals created in (t − window, t] whose
        scored shadow outcome is known at t), with enough scored vetoes, a veto precision that does not beat the
        window's base loss rate significantly (``engine.core.scored.retire_check``) → shadow mode. The scorecard
        recomputes the same window and the same check from the stored rows at the event's time."""
        rc = self.cfg.scoring.retire
        for o in shadow_out:
            waiting = self._awaiting.pop(o.signal_id, None)
            if waiting is not None and is_scored(o.filled, o.exit_reason, o.ambiguous):
                created_ms, vetoed = waiting
                self._window.add(created_ms, vetoed, o.pnl_pct < 0)
        c = self._window.counts(t)
        if not rc.enabled or self.mode != "active" or c.vetoes < rc.min_vetoes:
            return []
        check = retire_check(c, min_vetoes=rc.min_vetoes, alpha=rc.alpha, below=rc.below)
        if not check.retire:
            return []
        self.mode = "shadow"
        if self.reviewer is not None:
            self.reviewer.mode = "shadow"
        msg = check.message(rc.window_days)
        log.warning(msg)
        return [Event("retire", t, "reviewer", msg, (
            ("precision", c.precision), ("vetoes", c.vetoes), ("vetoes_lost", c.veto_lost), ("scored", c.scored),
            ("base", c.base), ("lift", check.lift), ("p_value", check.p_value), ("alpha", rc.alpha),
            ("below", rc.below), ("failed", ",".join(check.failed)),
            ("lost", c.lost), ("since_ms", c.since_ms), ("until_ms", c.until_ms)))]
