"""`tradevet paper` live and `tradevet data download`, as a user runs them, against a fake exchange."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.fake_exchange import FakeExchange, make_bars

ROOT = Path(__file__).resolve().parents[1]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _live_yaml(tmp_path: Path, ex: FakeExchange, url: str | None = None) -> Path:
    """A live config against the fake exchange: 1 s bars of two symbols, a fast SMA cross (``url``: the database,
    default live.db in ``tmp_path``)."""
    cfg = {
        "run": {"name": "live", "db_url": url or f"sqlite:///{tmp_path / 'live.db'}"},
        "market": {"source": "ccxt", "symbols": ["BTC/USDT", "ETH/USDT"], "timeframe": "1s",
                   "ccxt": {"urls": ex.ccxt_urls(), "options": {"fetchMarkets": {"types": ["spot"]}},
                            "warmup_bars": 300, "settle_s": 0.05}},
        "news": {"source": "none"},
        "strategies": [{"id": "fast", "kind": "sma_cross", "params": {"fast": 2, "slow": 5, "atr_period": 3}}],
        "gates": [{"kind": "max_open_positions", "params": {"max_total": 4, "max_per_strategy": 4}}],
    }
    f = tmp_path / "live.yaml"
    f.write_text(yaml.safe_dump(cfg))
    return f


def _run_until(cmd: list[str], lines_wanted: int, timeout_s: float = 60) -> tuple[int, str, str]:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stderr is not None
    seen, err = 0, []
    deadline = time.monotonic() + timeout_s
    while seen < lines_wanted and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        err.append(line)
        seen += line.startswith(("20", "19")) or " bars " in line or "slice" in line
    proc.send_signal(signal.SIGTERM)
    out, rest = proc.communicate(timeout=60)
    return proc.returncode, out, "".join(err) + rest


def test_paper_live_stops_cleanly_on_sigterm_and_resumes(tmp_path: Path) -> None:
    from storage import open_storage

    start = (_now_ms() // 1000 - 400) * 1000
    bars = make_bars(["BTC/USDT", "ETH/USDT"], "1s", start, 2000, seed=4, vol=0.004)
    with FakeExchange(bars, timeframe="1s", now_fn=_now_ms) as ex:
        cfg = _live_yaml(tmp_path, ex)
        cmd = [sys.executable, "-m", "engine.cli", "paper", "-c", str(cfg)]
        code, _, err = _run_until(cmd, 303)  # the warm-up prints a line per slice, then live bars
        assert code == 0, err
        store = open_storage(f"sqlite:///{tmp_path / 'live.db'}")
        try:
            runs = store.list_runs()
            assert len(runs) == 1 and runs[0].status == "stopped", runs
            first_last = runs[0].last_slice_ms
            counts = store.table_counts(runs[0].id)
            assert counts["bars"] >= 2 * 300 and counts["fills"] >= 1
        finally:
            store.close()
        time.sleep(2.5)  # bars close while it is down: the restart back-fills them
        code, _, err = _run_until(cmd, 4)
        assert code == 0, err
    store = open_storage(f"sqlite:///{tmp_path / 'live.db'}")
    try:
        runs = store.list_runs()
        assert len(runs) == 1, "the restart must resume the run, not start another"
        rec = store.recorder(runs[0].id)
        assert runs[0].last_slice_ms is not None and first_last is not None and runs[0].last_slice_ms > first_last
        closes = sorted({b.close_ms for b in rec.load_bars()})
        assert all(b - a == 1000 for a, b in itertools.pairwise(closes)), "a gap or a duplicate"
        ids = [f.id for f in rec.load_fills()]
        assert len(ids) == len(set(ids))
    finally:
        store.close()


def test_data_download_writes_files_a_files_replay_reads_back(tmp_path: Path) -> None:
    from engine.inputs.feeds.files import FilesFeed

    start = 1_735_689_600_000  # 2025-01-01
    bars = make_bars(["BTC/USDT", "ETH/USDT"], "5m", start, 400, seed=2)
    with FakeExchange(bars, timeframe="5m", now_ms=start + 400 * 300_000) as ex:
        cfg = tmp_path / "ex.yaml"
        cfg.write_text(yaml.safe_dump({"market": {"ccxt": {"urls": ex.ccxt_urls(),
                                                            "options": {"fetchMarkets": {"types": ["spot"]}}}}}))
        out = tmp_path / "data"
        cmd = [sys.executable, "-m", "engine.cli", "data", "download", "-c", str(cfg), "--exchange", "binance",
               "--symbols", "BTC/USDT", "ETH/USDT", "--timeframe", "5m", "--since", "2025-01-01", "--out", str(out)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["BINANCE_BTC-USDT_5m.csv", "BINANCE_ETH-USDT_5m.csv"]
    feed = FilesFeed(out, ["BTC/USDT", "ETH/USDT"], "5m")
    got = {s: [] for s in ("BTC/USDT", "ETH/USDT")}
    for sl in feed.slices():
        for b in sl:
            got[b.symbol].append((b.open_ms, b.open, b.high, b.low, b.close, b.volume))
    for sym in got:
        want = [(b.open_ms, b.open, b.high, b.low, b.close, b.volume) for b in bars[sym]]
        assert got[sym] == want[: len(got[sym])] and len(got[sym]) >= 398  # only closed bars


def test_data_download_rejects_a_bad_date(capsys) -> None:  # type: ignore[no-untyped-def]
    from engine.cli import main

    assert main(["data", "download", "--symbols", "BTC/USDT", "--timeframe", "5m", "--since", "yesterday",
                 "--out", "x"]) == 2
    assert "--since: expected a UTC date" in capsys.readouterr().err
