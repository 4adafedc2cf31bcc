"""vectorbt side of the comparison: the same SMA cross on the same bars, vectorised (run in its own venv).

Usage: python bench/vbt_runner.py BARS.npz → one JSON line (seconds cold and warm, bars, trades, digest).
vectorbt is installed only for the benchmark, into bench/.venv-vbt; none of its code is in tradevet.

Faithful to tradevet's rules where vectorbt allows: the cross is decided at a bar's close and entered at the
next open; the stop and target are the prices tradevet computes (close ∓ 2 ATR, close ± 4 ATR: Wilder's ATR
seeded with the mean of the first 14 true ranges), given to vectorbt as fractions of the fill price; one
position per symbol (a new cross while a position is open is ignored, an opposite one too); 10 bps fee per
side, no slippage; open positions are marked out at the end.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import vectorbt as vbt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from indicators import atr, sma  # the same indicator definitions as the backtesting.py side
from trades import digest

FAST, SLOW, ATR_N, ATR_STOP, RR = 12, 48, 14, 2.0, 2.0


def frames(data):
    symbols = [k.removesuffix("_close") for k in data.files if k.endswith("_close")]
    idx = pd.to_datetime(data[f"{symbols[0]}_open_ms"], unit="ms")
    cols = {k: pd.DataFrame({s: data[f"{s}_{k}"] for s in symbols}, index=idx) for k in ("open", "high", "low",
                                                                                        "close")}
    return symbols, cols


def run(symbols, f):
    o, h, lo, c = (f[k].to_numpy() for k in ("open", "high", "low", "close"))
    n = len(c)
    long_in, short_in = np.zeros_like(c, dtype=bool), np.zeros_like(c, dtype=bool)
    sl, tp = np.full_like(c, np.nan), np.full_like(c, np.nan)
    for j in range(len(symbols)):
        fast, slow = sma(c[:, j], FAST), sma(c[:, j], SLOW)
        d = ATR_STOP * atr(h[:, j], lo[:, j], c[:, j], ATR_N)
        with np.errstate(invalid="ignore"):
            up = (fast[:-1] <= slow[:-1]) & (fast[1:] > slow[1:])
            down = (fast[:-1] >= slow[:-1]) & (fast[1:] < slow[1:])
            ok = d[1:] > 0
        # decided at the close of bar i (i ≥ 1), entered at the open of bar i + 1
        up, down = np.concatenate(([False], up & ok)), np.concatenate(([False], down & ok))
        nxt = np.arange(1, n)
        li, si = up[:-1], down[:-1]
        long_in[nxt, j], short_in[nxt, j] = li, si
        ci, di, oi = c[:-1, j], d[:-1], o[1:, j]
        stop = np.where(li, ci - di, np.where(si, ci + di, np.nan))
        target = np.where(li, ci + RR * di, np.where(si, ci - RR * di, np.nan))
        sl[nxt, j] = np.where(li, (oi - stop) / oi, (stop - oi) / oi)
        tp[nxt, j] = np.where(li, (target - oi) / oi, (oi - target) / oi)
    pf = vbt.Portfolio.from_signals(
        f["close"], entries=pd.DataFrame(long_in, index=f["close"].index, columns=symbols),
        short_entries=pd.DataFrame(short_in, index=f["close"].index, columns=symbols),
        price=f["open"], open=f["open"], high=f["high"], low=f["low"], sl_stop=sl, tp_stop=tp,
        stop_entry_price="fillprice", size=0.1, size_type="percent", fees=0.001, init_cash=1e9,
        accumulate=False, upon_opposite_entry="ignore", freq="5min")
    return pf


def main(path):
    data = np.load(path)
    symbols, f = frames(data)
    t0 = time.perf_counter()
    pf = run(symbols, f)
    trades = pf.trades.records_readable
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    pf = run(symbols, f)
    trades = pf.trades.records_readable
    warm = time.perf_counter() - t0
    last = f["close"].index[-1]
    rows = [(str(col), int(pd.Timestamp(entry).value // 10**6), "long" if side == "Long" else "short",
             int(pd.Timestamp(ex if status == "Closed" else last).value // 10**6))
            for col, entry, ex, side, status in zip(trades["Column"], trades["Entry Timestamp"],
                                                    trades["Exit Timestamp"], trades["Direction"],
                                                    trades["Status"], strict=True)]
    if len(sys.argv) > 2:  # the trade list itself, to see where the engines differ
        Path(sys.argv[2]).write_text(json.dumps(sorted(rows)))
    print(json.dumps({"seconds": warm, "seconds_cold": cold, "bars": int(f["close"].size), "trades": len(rows),
                      "digest": digest(rows)}))


if __name__ == "__main__":
    main(sys.argv[1])
