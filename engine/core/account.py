"""The account's rules: what the venue would let this account hold, checked before a signal is reviewed.

Two settings decide it (``execution.account``, ``market.type``):

- **netting** (the default): one net position per symbol across all strategies. A signal on a symbol where the
  account already holds a position, has an entry waiting for the next open, or has passed an earlier signal in
  the same slice is refused with the reason ``account``; the position is left to its own exits (stop, target,
  time stop). Refusing rather than netting the new signal into the old position keeps every fill attributed to
  exactly one signal and one strategy, so scoring stays exact.
- **hedging**: positions are per signal, so strategies may hold longs and shorts on one symbol side by side
  (the behaviour of every run recorded before the setting existed).

On a **spot** market the account cannot be short: short signals are refused. **margin** and **futures** allow
shorts. ``auto`` takes the type from the exchange's market info where the feed has it (ccxt), otherwise
``futures`` for a symbol with a settle currency (``BTC/USDT:USDT``) and ``spot`` for any other.

A refused signal is recorded like a gate block (gate name ``account``) and is never reviewed, so it has no
shadow trade either: every shadow trade is one the account could have made when its signal came.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from engine.types import GateResult, MarketLimits, Side, Signal

__all__ = ["ACCOUNT_GATE", "AccountRules", "Holding", "market_type_of"]

ACCOUNT_GATE = "account"
_VENUE_TYPES = {"spot": "spot", "margin": "margin", "swap": "futures", "future": "futures", "futures": "futures"}


def market_type_of(symbol: str, configured: str, limits: MarketLimits | None = None) -> str:
    """The market type one symbol trades under: the configured one, or for ``auto`` the venue's, or the
    symbol's form (a settle currency means a derivative)."""
    if configured != "auto":
        return configured
    venue = _VENUE_TYPES.get(limits.market_type) if limits is not None else None
    if venue is not None:
        return venue
    return "futures" if ":" in symbol else "spot"


@dataclass(frozen=True, slots=True)
class Holding:
    """Something the account holds or is about to hold on a symbol: an open position, a queued entry or a
    signal passed earlier in the same slice."""

    signal_id: str
    strategy_id: str
    side: Side
    state: str  # "open" | "pending" | "passed"


@dataclass(frozen=True)
class AccountRules:
    account: str  # "netting" | "hedging"
    market_types: Mapping[str, str]  # symbol → "spot" | "margin" | "futures"

    @classmethod
    def of(cls, account: str, configured_type: str, symbols: Iterable[str],
           limits: Mapping[str, MarketLimits]) -> AccountRules:
        return cls(account, {s: market_type_of(s, configured_type, limits.get(s)) for s in symbols})

    @property
    def netting(self) -> bool:
        return self.account == "netting"

    def market_type(self, symbol: str) -> str:
        return self.market_types.get(symbol) or market_type_of(symbol, "auto")

    def refuse(self, signal: Signal, holdings: Sequence[Holding]) -> GateResult | None:
        """The block for a signal this account could not trade, or None when it may go on to the gates."""
        if signal.side is Side.SHORT and self.market_type(signal.symbol) == "spot":
            return GateResult(ACCOUNT_GATE, False,
                              f"spot market: {signal.symbol} cannot be sold short (market.type spot; "
                              f"margin or futures allow shorts)")
        if self.netting and holdings:
            h = holdings[0]
            return GateResult(ACCOUNT_GATE, False,
                              f"netting account: {signal.symbol} already has a {h.side.value} "
                              f"{_STATE[h.state]} of {h.strategy_id} (signal {h.signal_id})")
        return None

    def describe(self) -> str:
        """One line for the console and the run's ``account`` event."""
        by_type: dict[str, list[str]] = {}
        for sym, kind in self.market_types.items():
            by_type.setdefault(kind, []).append(sym)
        kinds = "; ".join(f"{k} {', '.join(v)}" for k, v in sorted(by_type.items()))
        shorts = "shorts refused" if set(by_type) == {"spot"} else (
            "shorts allowed" if "spot" not in by_type else "shorts refused on spot symbols")
        per = "one position per symbol" if self.netting else "positions per signal"
        return f"account {self.account} ({per}), market {kinds or '—'}: {shorts}"


_STATE = {"open": "position", "pending": "entry queued for the next open", "passed": "signal passed this slice"}
