"""The SMA-cross comparison's indicators for the other engines' runners, defined as tradevet defines them (the
rolling mean; Wilder's ATR seeded with the mean of the first n true ranges), so that every engine sees the same
stops and targets. numpy and pandas only: each runner imports this in its own venv."""

import numpy as np
import pandas as pd


def sma(x, n):
    return pd.Series(x).rolling(n).mean().to_numpy()


def atr(h, lo, c, n):
    """Wilder's ATR seeded with the mean of the first n true ranges: tradevet's definition, to the bit."""
    pc = np.concatenate(([np.nan], c[:-1]))
    tr = np.nanmax(np.vstack([h - lo, np.abs(h - pc), np.abs(lo - pc)]), axis=0).tolist()
    out = np.full(len(c), np.nan)
    if len(c) < n:
        return out
    v = sum(tr[:n]) / n
    vals = [v]
    for x in tr[n:]:
        v = (v * (n - 1) + x) / n
        vals.append(v)
    out[n - 1:] = vals
    return out
