"""nautilus_trader side of the comparison: the same SMA cross on the same bars, event-driven (run in its own venv).

Usage: python bench/nt_runner.py BARS.npz [TRADES.json] → one JSON line (seconds: the faster of two identical
engine runs; cold: import, data conversion and the first run; bars, trades, digest); TRADES.json gets its
trade list, with prices.
nautilus_trader is installed only for the benchmark, into bench/.venv-nt; none of its code is in tradevet.

One BacktestEngine, one simulated venue (margin account, 1e9 USDT per symbol), the 10 symbols as spot pairs
with a 10 bps maker and taker fee, the bars fed as nautilus trade Bars stamped at their close, with an
unlimited volume (nautilus fills against a bar's volume; tradevet's fills are not volume-limited). The venue
is a hedging one (a position id per entry): the strategy holds one position per symbol itself, and a netting
venue keeps one Position per symbol across all its trades, which makes each new trade slower than the last
(10 × 30k bars: 31 s netting, 12 s hedging, the same trades). The strategy decides at a bar's close with
tradevet's indicators (bench/indicators.py: the rolling SMA, Wilder's ATR seeded with the mean of the first 14
true ranges) and, when flat on that symbol, submits a bracket: a market entry with a stop-market at close ∓ 2
ATR and a limit at close ± 4 ATR (one cancels the other).

Where nautilus's fill model differs from tradevet's, by construction:
- a market order sent at a bar's close fills at that close (there is no "next open" event), stamped at the
  bar's close: the next bar's open time. The entry price differs where the next bar opens with a gap (225 of
  20,804 entries at full scale: ``entries_at_another_price``), and tradevet's rule "no entry when the next
  open is already beyond the stop or target" cannot be expressed (``gap_entries``: none on these bars);
- a bar is replayed as open → high → low → close, so on a bar that touches both the stop and the target a
  long's target fills first (tradevet assumes the stop): the same exit bar, another exit price (no exit of the
  synthetic set is on such a bar: the stop and target are 6 ATR apart);
- a stop or target the bar opened beyond fills at the stop's trigger or the limit's price, where tradevet
  fills at the open (2 exits of 20,804 at full scale);
- prices are nautilus fixed-point values (12 decimals here): bars, stops and targets are rounded to them,
  which can only matter where a float price and a stop are within 1e-12 of each other;
- an entry sent at the last bar's close fills there; tradevet has no next open to fill it at, so those
  entries are left out of the trade list (counted in ``final_close_entries``).
"""

import json
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

T_IMPORT = time.perf_counter()
from nautilus_trader import __version__ as nautilus_version  # noqa: E402
from nautilus_trader.backtest.config import BacktestEngineConfig  # noqa: E402
from nautilus_trader.backtest.engine import BacktestEngine  # noqa: E402
from nautilus_trader.config import LoggingConfig, StrategyConfig  # noqa: E402
from nautilus_trader.model.data import Bar, BarType  # noqa: E402
from nautilus_trader.model.enums import AccountType, OmsType, OrderSide  # noqa: E402
from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue  # noqa: E402
from nautilus_trader.model.instruments import CurrencyPair  # noqa: E402
from nautilus_trader.model.objects import Currency, Money, Price, Quantity  # noqa: E402
from nautilus_trader.persistence.wranglers import BarDataWrangler  # noqa: E402
from nautilus_trader.trading.strategy import Strategy  # noqa: E402

IMPORT_S = time.perf_counter() - T_IMPORT

sys.path.insert(0, str(Path(__file__).resolve().parent))
from indicators import atr, sma  # noqa: E402  the same indicator definitions as the other engines' runners
from trades import digest  # noqa: E402

FAST, SLOW, ATR_N, ATR_STOP, RR = 12, 48, 14, 2.0, 2.0
EQUITY = 1e9  # per symbol, as the other engines: no size limit binds
SIZE = 0.1  # of the equity per entry, as the backtesting.py side
VENUE = Venue("SIM")
UNLIMITED_VOLUME = 1e13
PRICE_PRECISION, SIZE_PRECISION = 12, 6


class SmaCrossConfig(StrategyConfig, frozen=True):
    pass


class SmaCross(Strategy):
    """The comparison's SMA cross. Indicators come from ``columns`` (symbol → open/high/low/close floats) in
    on_start, inside the timed run, as backtesting.py's Strategy.init computes them."""

    def __init__(self, config, columns, instruments):
        super().__init__(config)
        self.columns, self.instruments = columns, instruments
        self.trades, self.gap_entries, self.moved_entries = [], [], 0
        self._state = {}

    def on_start(self):
        self._state = {}
        for symbol, inst in self.instruments.items():
            c = self.columns[symbol]
            fast, slow = sma(c["close"], FAST), sma(c["close"], SLOW)
            d = ATR_STOP * atr(c["high"], c["low"], c["close"], ATR_N)
            with np.errstate(invalid="ignore"):
                up = np.concatenate(([False], (fast[:-1] <= slow[:-1]) & (fast[1:] > slow[1:])))
                down = np.concatenate(([False], (fast[:-1] >= slow[:-1]) & (fast[1:] < slow[1:])))
            # tradevet's degenerate-signal rules (strategies/base.py): a distance > 0 and below the price
            with np.errstate(invalid="ignore"):
                ok = (d > 0) & (d < c["close"])
            side = np.where(up & ok, 1, np.where(down & ok & (c["close"] - RR * d > 0), -1, 0))
            # the entries tradevet refuses: the next bar opens at or beyond the stop or the target. nautilus
            # cannot be told (its entry fills at this close); they are only counted, to name the difference
            nxt = np.concatenate((c["open"][1:], [np.nan]))
            stop, target = c["close"] - side * d, c["close"] + side * RR * d
            with np.errstate(invalid="ignore"):
                refused = (((side > 0) & ((nxt <= stop) | (nxt >= target)))
                           | ((side < 0) & ((nxt >= stop) | (nxt <= target))))
            # the entries nautilus fills at another price than tradevet: the next bar opens away from this close
            moved = nxt != c["close"]
            # [instrument, bar index, side per bar, closes, distances, symbol, refused, bar opens, moved]
            self._state[inst.id] = [inst, 0, side.tolist(), c["close"].tolist(), d.tolist(), symbol,
                                    refused.tolist(), c["open_ms"], moved.tolist()]
            bar_type = BarType.from_str(f"{inst.id}-5-MINUTE-LAST-EXTERNAL")
            self.subscribe_bars(bar_type)

    def on_bar(self, bar: Bar):
        st = self._state[bar.bar_type.instrument_id]
        i = st[1]
        st[1] = i + 1
        sign = st[2][i]
        if sign == 0 or not self.portfolio.is_flat(st[0].id):
            return
        inst, c, d = st[0], st[3][i], st[4][i]
        if st[6][i]:
            self.gap_entries.append((st[5], int(st[7][i + 1])))
        elif st[8][i] and i + 1 < len(st[8]):
            self.moved_entries += 1
        order = self.order_factory.bracket(
            instrument_id=inst.id, order_side=OrderSide.BUY if sign > 0 else OrderSide.SELL,
            quantity=inst.make_qty(EQUITY * SIZE / c),
            sl_trigger_price=inst.make_price(c - sign * d), tp_price=inst.make_price(c + sign * RR * d),
            tp_post_only=False)
        self.submit_order_list(order)

    def on_position_closed(self, event):
        st = self._state[event.instrument_id]
        self.trades.append((st[5], event.ts_opened, event.entry, event.ts_closed, event.avg_px_open,
                            event.avg_px_close))

    def on_reset(self):
        self.trades, self.gap_entries, self.moved_entries = [], [], 0


def instrument(symbol):
    base, quote = symbol.split("/")
    return CurrencyPair(
        instrument_id=InstrumentId(Symbol(base + quote), VENUE), raw_symbol=Symbol(base + quote),
        base_currency=Currency.from_str(base), quote_currency=Currency.from_str(quote),
        price_precision=PRICE_PRECISION, size_precision=SIZE_PRECISION,
        price_increment=Price(10.0 ** -PRICE_PRECISION, PRICE_PRECISION),
        size_increment=Quantity(10.0 ** -SIZE_PRECISION, SIZE_PRECISION), lot_size=None, max_quantity=None,
        min_quantity=None, max_notional=None, min_notional=None, max_price=None, min_price=None,
        margin_init=Decimal(0), margin_maint=Decimal(0), maker_fee=Decimal("0.001"), taker_fee=Decimal("0.001"),
        ts_event=0, ts_init=0)


def build(data):
    """The engine with the venue, the instruments, the bars (converted to nautilus Bars) and the strategy."""
    symbols = [k.removesuffix("_close") for k in data.files if k.endswith("_close")]
    columns = {s: {k: np.asarray(data[f"{s}_{k}"]) for k in ("open", "high", "low", "close", "volume",
                                                            "open_ms", "close_ms")} for s in symbols}
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR"), run_analysis=False))
    engine.add_venue(venue=VENUE, oms_type=OmsType.HEDGING, account_type=AccountType.MARGIN,
                     base_currency=Currency.from_str("USDT"),
                     starting_balances=[Money(EQUITY * len(symbols), Currency.from_str("USDT"))],
                     default_leverage=Decimal(1))
    instruments = {}
    for s in symbols:
        inst = instrument(s)
        instruments[s] = inst
        engine.add_instrument(inst)
        c = columns[s]
        # a bar is stamped at its close, nautilus's convention. Its volume is nautilus's liquidity (a quarter
        # of it at each of open, high, low, close): unlimited here, as in tradevet, so no fill is partial
        df = pd.DataFrame({k: c[k] for k in ("open", "high", "low", "close")},
                          index=pd.to_datetime(c["close_ms"], unit="ms", utc=True))
        df["volume"] = UNLIMITED_VOLUME
        bars = BarDataWrangler(BarType.from_str(f"{inst.id}-5-MINUTE-LAST-EXTERNAL"), inst).process(df)
        engine.add_data(bars)
    strategy = SmaCross(SmaCrossConfig(), columns, instruments)
    engine.add_strategy(strategy)
    return engine, strategy, columns


def trade_rows(engine, strategy, columns):
    """(symbol, entry bar's open, side, exit bar's open, entry price, exit price) per trade — the first four are
    the compared trade list: nautilus stamps an entry at the signal bar's close (the next bar's open) and an
    exit at the close of the bar it happened in; a position still open at the end is marked out at the last
    bar's close, as tradevet does."""
    rows, final = [], 0
    for symbol, opened_ns, entry, closed_ns, px_open, px_close in strategy.trades:
        tf = int(columns[symbol]["close_ms"][0] - columns[symbol]["open_ms"][0])
        rows.append((symbol, opened_ns // 10**6, "long" if entry == OrderSide.BUY else "short",
                     closed_ns // 10**6 - tf, px_open, px_close))
    for symbol, inst in strategy.instruments.items():
        last_close = int(columns[symbol]["close_ms"][-1])
        for pos in engine.cache.positions_open(instrument_id=inst.id):
            if pos.ts_opened // 10**6 >= last_close:  # entered at the final close: no next open to fill at
                final += 1
                continue
            rows.append((symbol, pos.ts_opened // 10**6, "long" if pos.entry == OrderSide.BUY else "short",
                         int(columns[symbol]["open_ms"][-1]), pos.avg_px_open, float(columns[symbol]["close"][-1])))
    return rows, final


def main(path):
    data = np.load(path)
    t0 = time.perf_counter()
    engine, strategy, columns = build(data)
    convert = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.run()
    first = time.perf_counter() - t0
    rows_first, _ = trade_rows(engine, strategy, columns)
    engine.reset()  # the same engine and data, run again (nautilus has no JIT: both runs are warm ones)
    t0 = time.perf_counter()
    engine.run()
    second = time.perf_counter() - t0
    rows, final = trade_rows(engine, strategy, columns)
    bars = sum(len(c["close"]) for c in columns.values())
    engine.dispose()
    if len(sys.argv) > 2:  # the trade list itself, to see where the engines differ
        Path(sys.argv[2]).write_text(json.dumps(sorted(rows)))
    # the figure: the faster of the two identical runs, the one least disturbed by other work on the machine
    print(json.dumps({"seconds": min(first, second), "seconds_first_run": first, "seconds_second_run": second,
                      "convert_s": convert, "import_s": IMPORT_S,
                      "seconds_cold": IMPORT_S + convert + first, "bars": bars, "trades": len(rows),
                      "final_close_entries": final, "gap_entries": len(strategy.gap_entries),
                      "first_gap_entry": min(strategy.gap_entries, default=None),
                      "entries_at_another_price": strategy.moved_entries,
                      "digest": digest(r[:4] for r in rows),
                      "version": nautilus_version,
                      "same_on_rerun": rows_first == rows}))


if __name__ == "__main__":
    main(sys.argv[1])
