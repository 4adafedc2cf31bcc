"""backtesting.py side of the comparison: the same SMA cross on the same bars (run in its own venv).

Usage: python bench/bt_runner.py BARS.npz → one JSON line (seconds, bars, trades). backtesting.py is
installed only for the benchmark, into a separate virtual environment; none of its code is in tradevet.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from backtesting import Backtest, Strategy
from backtesting.lib import crossover

sys.path.insert(0, str(Path(__file__).resolve().parent))
from indicators import atr, sma
from trades import digest


class SmaCross(Strategy):
    fast, slow, atr_n, atr_stop, rr = 12, 48, 14, 2.0, 2.0

    def init(self):
        self.f = self.I(sma, self.data.Close, self.fast)
        self.s = self.I(sma, self.data.Close, self.slow)
        self.a = self.I(atr, self.data.High, self.data.Low, self.data.Close, self.atr_n)

    def next(self):
        c, d = self.data.Close[-1], self.atr_stop * self.a[-1]
        if not d > 0:
            return
        if crossover(self.f, self.s) and not self.position:
            self.buy(size=0.1, sl=c - d, tp=c + self.rr * d)
        elif crossover(self.s, self.f) and not self.position:
            self.sell(size=0.1, sl=c + d, tp=c - self.rr * d)


def main(path):
    data = np.load(path)
    symbols = [k.removesuffix("_close") for k in data.files if k.endswith("_close")]
    t0 = time.perf_counter()
    bars = trades = 0
    rows = []
    for s in symbols:
        idx = pd.to_datetime(data[f"{s}_open_ms"], unit="ms")
        df = pd.DataFrame({"Open": data[f"{s}_open"], "High": data[f"{s}_high"], "Low": data[f"{s}_low"],
                           "Close": data[f"{s}_close"], "Volume": data[f"{s}_volume"]}, index=idx)
        stats = Backtest(df, SmaCross, cash=1e9, commission=0.001, finalize_trades=True).run()
        bars += len(df)
        trades += int(stats["# Trades"])
        seconds = time.perf_counter() - t0
        for r in stats["_trades"].itertuples():  # times are bar opens (the index)
            rows.append((s, int(r.EntryTime.value // 10**6), "long" if r.Size > 0 else "short",
                         int(r.ExitTime.value // 10**6)))
        t0 = time.perf_counter() - seconds  # the trade list is not timed
    print(json.dumps({"seconds": time.perf_counter() - t0, "bars": bars, "trades": trades, "digest": digest(rows)}))


if __name__ == "__main__":
    main(sys.argv[1])
