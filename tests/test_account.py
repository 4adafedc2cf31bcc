"""The account's rules (engine.core.account): netting or hedging, spot or margin/futures — what the venue would
let one account hold, checked before a signal is reviewed, recorded as the ``account`` gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.clock import SimClock
from engine.config import load_config
from engine.core.account import AccountRules, Holding, market_type_of
from engine.core.pipeline import Pipeline
from engine.inputs.news import ListNewsSource
from engine.types import Bar, FillKind, MarketLimits, Side, Signal, SliceRecord
from strategies.base import StrategyBase

TF = 300_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % TF


class _Scripted(StrategyBase):
    """Emits ``side`` on the bars whose index is in ``at``, with stops far away (positions stay open)."""

    style = "trend"

    def __init__(self, id: str, side: Side, at: set[int]) -> None:
        super().__init__(id)
        self.side, self.at = side, at

    def evaluate(self, history: Any) -> Signal | None:
        if history.count - 1 not in self.at:
            return None
        return self.signal(history, self.side, atr=history.last.close * 0.2)


def _bars(n: int, symbols: tuple[str, ...]) -> list[tuple[Bar, ...]]:
    out = []
    for i in range(n):
        px = 100.0 + 0.01 * i
        out.append(tuple(Bar(s, T0 + i * TF, T0 + (i + 1) * TF, px, px * 1.001, px * 0.999, px, 1_000.0)
                         for s in symbols))
    return out


def _run(tmp_path: Path, strategies: list[StrategyBase], *, account: str, market_type: str,
         symbols: tuple[str, ...] = ("BTC/USDT",), bars: int = 30) -> list[SliceRecord]:
    cfg = load_config(overrides={"run": {"db_url": f"sqlite:///{tmp_path / 'x.db'}"},
                                 "market": {"symbols": list(symbols), "type": market_type},
                                 "execution": {"account": account, "max_bars_held": 1000},
                                 "reviewer": {"mode": "off"}}, env={}).config
    pipe = Pipeline(cfg, strategies=strategies, gates=[], reviewer=None, news=ListNewsSource(()), clock=SimClock(),
                    limits={}, symbols=symbols)
    records = []
    for k, sl in enumerate(_bars(bars, symbols)):
        if k == 0:
            pipe.open_ledger(10_000.0, sl[0].open_ms)
        records.append(pipe.step(sl))
    return records


def _entries(records: list[SliceRecord]) -> list[tuple[str, Side]]:
    return [(f.signal_id.split(":")[0], f.side) for r in records for f in r.fills if f.kind is FillKind.ENTRY]


def _blocks(records: list[SliceRecord]) -> list[tuple[str, str]]:
    return [(sid.split(":")[0], g.reason) for r in records for sid, g in r.gate_results
            if not g.passed and g.gate == "account"]


def test_opposite_signals_of_two_strategies_on_one_symbol_net_to_one_position(tmp_path: Path) -> None:
    strats = [_Scripted("longer", Side.LONG, {5}), _Scripted("shorter", Side.SHORT, {8})]
    net = _run(tmp_path, strats, account="netting", market_type="futures")
    assert _entries(net) == [("longer", Side.LONG)]
    (blocked,) = _blocks(net)
    assert blocked[0] == "shorter"
    assert "netting account: BTC/USDT already has a long position of longer (signal longer:BTC/USDT:" in blocked[1]

    hedged = _run(tmp_path, strats, account="hedging", market_type="futures")
    assert _entries(hedged) == [("longer", Side.LONG), ("shorter", Side.SHORT)]  # long and short side by side
    assert _blocks(hedged) == []


def test_netting_refuses_a_second_signal_while_the_first_entry_is_queued_or_passed_in_the_same_slice(
        tmp_path: Path) -> None:
    # same slice: the second strategy's signal meets the first one passed earlier in the slice
    same = _run(tmp_path, [_Scripted("a", Side.LONG, {5}), _Scripted("b", Side.LONG, {5})], account="netting",
                market_type="futures")
    assert _entries(same) == [("a", Side.LONG)]
    assert [(s, "signal passed this slice" in why) for s, why in _blocks(same)] == [("b", True)]
    # next slice: the first entry is still queued for the next open (it fills at the open of the bar after)
    queued = _run(tmp_path, [_Scripted("a", Side.LONG, {5}), _Scripted("b", Side.LONG, {6})], account="netting",
                  market_type="futures")
    assert [s for s, _ in _blocks(queued)] == ["b"]
    # other symbols are not affected
    two = _run(tmp_path, [_Scripted("a", Side.LONG, {5})], account="netting", market_type="futures",
               symbols=("BTC/USDT", "ETH/USDT"))
    assert sorted(_entries(two)) == [("a", Side.LONG), ("a", Side.LONG)]


def test_a_short_on_spot_is_refused_with_its_reason_and_allowed_on_margin_and_futures(tmp_path: Path) -> None:
    for account in ("netting", "hedging"):
        spot = _run(tmp_path, [_Scripted("s", Side.SHORT, {5})], account=account, market_type="spot")
        assert _entries(spot) == []
        (blocked,) = _blocks(spot)
        assert blocked == ("s", "spot market: BTC/USDT cannot be sold short (market.type spot; margin or futures "
                                "allow shorts)")
        assert not any(r.reviews for r in spot), "a refused signal is never reviewed (no shadow trade either)"
        for kind in ("margin", "futures"):
            assert _entries(_run(tmp_path, [_Scripted("s", Side.SHORT, {5})], account=account,
                                 market_type=kind)) == [("s", Side.SHORT)]
    longs = _run(tmp_path, [_Scripted("l", Side.LONG, {5})], account="netting", market_type="spot")
    assert _entries(longs) == [("l", Side.LONG)]


def test_the_run_records_which_account_and_market_type_it_used(tmp_path: Path) -> None:
    records = _run(tmp_path, [], account="netting", market_type="auto", symbols=("BTC/USDT", "BTC/USDT:USDT"))
    (event,) = [e for r in records for e in r.events if e.kind == "account"]
    assert dict(event.data) == {"account": "netting",
                                "market_types": (("BTC/USDT", "spot"), ("BTC/USDT:USDT", "futures"))}
    assert event.message == ("account netting (one position per symbol), market futures BTC/USDT:USDT; spot "
                             "BTC/USDT: shorts refused on spot symbols")


@pytest.mark.parametrize(("configured", "venue", "symbol", "want"), [
    ("auto", "", "BTC/USDT", "spot"),
    ("auto", "", "BTC/USDT:USDT", "futures"),
    ("auto", "spot", "BTC/USDT", "spot"),
    ("auto", "swap", "BTC/USDT:USDT", "futures"),
    ("auto", "future", "BTC/USDT:USDT-250328", "futures"),
    ("auto", "margin", "BTC/USDT", "margin"),
    ("auto", "option", "BTC/USDT:USDT", "futures"),  # a word the account rules do not know: the symbol's form
    ("spot", "swap", "BTC/USDT:USDT", "spot"),  # what the user configured wins
    ("margin", "", "BTC/USDT", "margin"),
])
def test_market_type_auto_reads_the_venue_then_the_symbol(configured: str, venue: str, symbol: str,
                                                          want: str) -> None:
    assert market_type_of(symbol, configured, MarketLimits(symbol, market_type=venue)) == want


def test_hedging_never_refuses_for_holdings() -> None:
    sig = Signal("x:BTC/USDT:1", "x", "BTC/USDT", Side.LONG, 1, 100.0, 90.0, 120.0, 0.1, "5m")
    held = [Holding("y:BTC/USDT:0", "y", Side.SHORT, "open")]
    assert AccountRules("hedging", {"BTC/USDT": "futures"}).refuse(sig, held) is None
    refused = AccountRules("netting", {"BTC/USDT": "futures"}).refuse(sig, held)
    assert refused is not None and refused.gate == "account" and not refused.passed


def test_the_scorecard_counts_every_signal_as_having_reached_the_account_rules(tmp_path: Path) -> None:
    """Only refusals are recorded for the account's rules: the gate figures still count every signal as judged
    by them, so a spot run that refuses its shorts is not warned about as if it had refused everything."""
    from engine.app import run_replay
    from engine.recorded.scorecard import run_scorecard
    from storage import open_storage

    loaded = load_config(overrides={"run": {"db_url": f"sqlite:///{tmp_path / 'r.db'}"},
                                    "market": {"synthetic": {"bars": 1500}, "type": "spot"}}, env={})
    res = run_replay(loaded)
    with open_storage(loaded.config.run.db_url) as store:
        card = run_scorecard(store, res.run_id)
    account = card.gates["account"]
    assert account["reached"] == card.signals > account["blocked"] > 0
    assert "spot market" in account["top_reason"]
    assert not any(w.startswith("account") for w in card.warnings), card.warnings
