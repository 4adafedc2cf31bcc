"""Portfolio: the ledger of fills in → cash, open positions, closed trades. The wallet is never configured.

It is the one stateful owner of money. ``from_ledger`` rebuilds it exactly from stored fills, which is how
a restarted run gets its wallet back.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from engine.types import ExitReason, Fill, FillKind, Position, Side, Trade, TradeSummary

__all__ = ["EntryMeta", "Portfolio", "trade_figures"]


@dataclass(frozen=True, slots=True)
class EntryMeta:
    """What an entry fill alone does not say: who opened it and where its exits sit."""

    strategy_id: str
    stop_loss: float
    take_profit: float


def trade_figures(side: Side, entry: float, exit: float, qty: float, fees: float,
                  initial_stop: float) -> tuple[float, float, float]:
    """(pnl, pnl %, R multiple), net of fees. R is measured against the stop distance from the fill."""
    pnl = side.sign * (exit - entry) * qty - fees
    notional = entry * qty
    pnl_pct = pnl / notional * 100.0 if notional > 0 else 0.0
    risk = abs(entry - initial_stop) * qty
    r = pnl / risk if risk > 0 else 0.0
    return pnl, pnl_pct, r


class Portfolio:
    def __init__(self, timeframe_ms: int = 0, recent_keep: int = 256) -> None:
        self.timeframe_ms = timeframe_ms
        self.recent_capacity = max(1, recent_keep)
        self.cash = 0.0
        self.deposits = 0.0
        self.positions: dict[str, Position] = {}
        self.trades: list[Trade] = []
        self.fill_count = 0
        self.realized_pnl = 0.0
        self.realized_peak = 0.0
        self.last_exit_ms: dict[tuple[str, str], int] = {}
        self.stopouts: dict[tuple[str, str], deque[int]] = defaultdict(lambda: deque(maxlen=64))
        self._recent: dict[str, deque[Trade]] = defaultdict(lambda: deque(maxlen=max(1, recent_keep)))
        self._summaries: dict[str, TradeSummary] = {}  # signal id → summary, built once per closed trade

    # ------------------------------------------------------------------------------------ ledger
    def apply(self, fill: Fill, meta: EntryMeta | None = None) -> Trade | None:
        """Book one fill. Entries need ``meta``; exits return the closed ``Trade``."""
        self.fill_count += 1
        self.cash += fill.cash_delta
        if fill.kind is FillKind.DEPOSIT:
            self.deposits += fill.qty * fill.fill_price
            self.realized_peak = max(self.realized_peak, self.realized_equity)
            return None
        if fill.kind is FillKind.ENTRY:
            if meta is None:
                raise ValueError(f"entry fill {fill.id} needs its EntryMeta")
            self.positions[fill.signal_id] = Position(
                signal_id=fill.signal_id, strategy_id=meta.strategy_id, symbol=fill.symbol, side=fill.side,
                qty=fill.qty, entry_price=fill.fill_price, entry_fee=fill.fee, opened_ms=fill.filled_ms,
                stop_loss=meta.stop_loss, take_profit=meta.take_profit, initial_stop=meta.stop_loss,
            )
            return None
        pos = self.positions.pop(fill.signal_id)
        fees = pos.entry_fee + fill.fee
        pnl, pnl_pct, r = trade_figures(pos.side, pos.entry_price, fill.fill_price, pos.qty, fees, pos.initial_stop)
        trade = Trade(
            signal_id=pos.signal_id, strategy_id=pos.strategy_id, symbol=pos.symbol, side=pos.side,
            qty=pos.qty, entry_price=pos.entry_price, exit_price=fill.fill_price, opened_ms=pos.opened_ms,
            closed_ms=fill.filled_ms, pnl=pnl, pnl_pct=pnl_pct, r_multiple=r, fees=fees,
            exit_reason=ExitReason(fill.reason), ambiguous=fill.ambiguous,
            bars_held=(fill.filled_ms - pos.opened_ms) // self.timeframe_ms if self.timeframe_ms else 0,
        )
        self._book_trade(trade)
        return trade

    def _book_trade(self, trade: Trade) -> None:
        self.trades.append(trade)
        self._summaries[trade.signal_id] = trade.summary()
        self.realized_pnl += trade.pnl
        self._recent[trade.strategy_id].append(trade)
        key = (trade.strategy_id, trade.symbol)
        self.last_exit_ms[key] = trade.closed_ms
        if trade.exit_reason is ExitReason.STOP:
            self.stopouts[key].append(trade.closed_ms)
        self.realized_peak = max(self.realized_peak, self.realized_equity)

    @classmethod
    def from_ledger(cls, fills: Iterable[Fill], metas: Mapping[str, EntryMeta], timeframe_ms: int = 0) -> Portfolio:
        """Rebuild from stored fills, in order. Raises: KeyError if an entry's meta is missing."""
        p = cls(timeframe_ms)
        for f in fills:
            p.apply(f, metas[f.signal_id] if f.kind is FillKind.ENTRY else None)
        return p

    # ----------------------------------------------------------------------------------- queries
    @property
    def realized_equity(self) -> float:
        """Deposits plus closed-trade PnL (open positions at cost): the drawdown gate's measure."""
        return self.deposits + self.realized_pnl

    def equity(self, marks: Mapping[str, float]) -> float:
        return self.cash + sum(p.market_value(marks.get(p.symbol, p.entry_price)) for p in self.positions.values())

    def gross_exposure(self, marks: Mapping[str, float]) -> float:
        return sum(p.qty * marks.get(p.symbol, p.entry_price) for p in self.positions.values())

    def recent_trades(self, strategy_id: str, n: int) -> list[Trade]:
        dq = self._recent.get(strategy_id)
        if not dq or n <= 0:
            return []
        return list(dq)[-n:]

    def summary(self, trade: Trade) -> TradeSummary:
        """The trade's summary for context packs (the same object every time: cheap to reuse)."""
        hit = self._summaries.get(trade.signal_id)
        return hit if hit is not None else trade.summary()

    def open_count(self, strategy_id: str | None = None) -> int:
        if strategy_id is None:
            return len(self.positions)
        return sum(1 for p in self.positions.values() if p.strategy_id == strategy_id)
