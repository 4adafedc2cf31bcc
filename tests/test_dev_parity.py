"""On every real data set present (../shared/data/market), a preloaded replay records exactly what a bar-by-bar
one records: the same packs (hashes), verdicts, decisions, fills, trades and outcomes, slice by slice.

A preloaded replay computes what it can in advance (indicators per column, strategies' candidate bars, the
24h quote volume, exits it can foresee); the bar-by-bar path is the live one. Every shortcut must leave the
run unchanged to the bit, on real markets too (gaps filled flat, bars without volume, daily and hourly bars).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from engine.app import build_feed, build_pipeline
from engine.config import load_config
from engine.types import RegimeTag, SliceRecord
from tests.conftest import record_digest, step_all

MARKET = Path(__file__).resolve().parents[2] / "shared" / "data" / "market"
SLICES = 5_000  # past the regime's 2,017-close warm-up on every set, and a minute or less per case


def _sets() -> list[tuple[str, Path, str, list[str]]]:
    """(name, dir, timeframe, symbols) of every real data set present: one per directory and bar length."""
    out: list[tuple[str, Path, str, list[str]]] = []
    if not MARKET.is_dir():
        return out
    for d in sorted(p for p in MARKET.iterdir() if p.is_dir()):
        by_tf: dict[str, list[str]] = {}
        for f in sorted(d.glob("*_*_*.csv")):
            _, pair, tf = f.stem.split("_")
            base, _, quote = pair.partition("-")
            by_tf.setdefault(tf, []).append(f"{base}/{quote or 'USD'}")
        out += [(f"{d.name}-{tf}", d, tf, syms) for tf, syms in sorted(by_tf.items())]
    return out


SETS = _sets()


def _linked(files: Path, d: Path, tf: str, symbols: list[str]) -> None:
    """The data set as the files feed names it (VENUE_BASE-QUOTE_TF.csv): links, not copies."""
    files.mkdir()
    for sym in symbols:
        base, quote = sym.split("/")
        src = next(iter(d.glob(f"*_{base}-{quote}_{tf}.csv")), None) or next(iter(d.glob(f"*_{base}_{tf}.csv")))
        (files / f"{src.stem.split('_')[0]}_{base}-{quote}_{tf}.csv").symlink_to(src)


def _records(loaded, preload: bool) -> list[SliceRecord]:  # type: ignore[no-untyped-def]
    feed = build_feed(loaded)
    pipe = build_pipeline(loaded, feed=feed, preload=preload)
    return step_all(pipe, itertools.islice(feed.slices(), SLICES), loaded.config.execution.starting_equity)


@pytest.mark.slow
@pytest.mark.skipif(not SETS, reason="shared market data not present (../shared/data/market)")
@pytest.mark.parametrize("account", ["hedging", "netting"])
@pytest.mark.parametrize("name,d,tf,symbols", SETS, ids=[s[0] for s in SETS])
def test_a_preloaded_replay_of_real_data_records_what_bar_by_bar_records(
        tmp_path: Path, name: str, d: Path, tf: str, symbols: list[str], account: str) -> None:
    files = tmp_path / "files"
    _linked(files, d, tf, symbols)
    loaded = load_config(overrides={
        "run": {"db_url": "sqlite://"}, "news": {"source": "none"},
        "market": {"source": "files", "symbols": symbols, "timeframe": tf, "files": {"dir": str(files)},
                   "type": "futures"},  # shorts too: every kind of exit on both sides
        "execution": {"account": account},
        "gates": [{"kind": "max_open_positions", "params": {"max_total": 8, "max_per_strategy": 3}},
                  {"kind": "cooldown", "params": {"bars": 3}}]})
    pre, plain = _records(loaded, True), _records(loaded, False)
    reviews = [rv for r in pre for rv in r.reviews]
    fills = [f for r in pre for f in r.fills]
    assert len(reviews) > 20 and len(fills) > 10  # the data exercises the pipeline
    assert any(rv.pack.regime.tag is not RegimeTag.UNKNOWN for rv in reviews)
    assert [rv.pack.hash for rv in reviews] == [rv.pack.hash for r in plain for rv in r.reviews]
    assert fills == [f for r in plain for f in r.fills]
    assert record_digest(pre) == record_digest(plain)
