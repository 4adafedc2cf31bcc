"""bench/'s nautilus_trader row: the table logic, an install that fails (a row with the error, no crash), and —
where bench/.venv-nt exists — the runner's trade list against tradevet's on the same bars."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bench import __main__ as bench_main

ROOT = Path(__file__).resolve().parents[1]
NT_PYTHON = ROOT / "bench" / ".venv-nt" / "bin" / "python"
TRADEVET = {"digest": "a" * 64, "trades": 10, "seconds_in_memory": 1.0}


def nt_result(**kw: object) -> dict[str, object]:
    return {"bars": 1000, "seconds": 0.5, "seconds_cold": 2.0, "bars_per_s": 2000.0, "trades": 10,
            "digest": "a" * 64, "version": "1.2.3", "convert_s": 0.25, "gap_entries": 0,
            "first_gap_entry": None} | kw


def test_same_trades_give_trade_for_trade_and_a_ratio() -> None:
    rows = bench_main._nautilus_rows(nt_result(), TRADEVET)
    assert len(rows) == 2
    figure, value, _, _, note = rows[0]
    assert "nautilus_trader" in figure
    assert value == "2,000 bars/s · 500 bars/s"
    assert "trade for trade" in note and "1.2.3" in note
    assert rows[1][1] == "2.00"
    assert "entries filled at the signal close" not in note
    moved = bench_main._nautilus_rows(nt_result(entries_at_another_price=7), TRADEVET)[0][4]
    assert "trade for trade (7 entries filled at the signal close, not the gapped next open" in moved


def test_different_trades_give_no_ratio_and_name_the_gap_entries() -> None:
    rows = bench_main._nautilus_rows(
        nt_result(digest="b" * 64, trades=12, gap_entries=2, first_gap_entry=["BTC/USDT", 1735689900000]),
        TRADEVET)
    assert len(rows) == 1
    note = rows[0][4]
    assert "TRADES DIFFER (12 vs tradevet's 10)" in note
    assert "2 entries" in note and "BTC/USDT at 1735689900000" in note
    assert "trade for trade" not in note


def test_different_trades_without_a_known_cause_say_so() -> None:
    rows = bench_main._nautilus_rows(nt_result(digest="b" * 64), TRADEVET)
    assert len(rows) == 1 and "not the known gap-entry case" in rows[0][4]


def test_an_error_is_the_row_note() -> None:
    rows = bench_main._nautilus_rows({"error": "nautilus_trader could not be installed: boom"}, TRADEVET)
    assert rows == [("SMA cross, nautilus_trader (warm · cold incl. conversion)", "— · —", "", "",
                     "nautilus_trader could not be installed: boom")]


def test_a_failed_install_is_an_error_row_and_leaves_no_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_main, "HERE", tmp_path)
    fake = tmp_path / "python-that-fails"
    fake.write_text("#!/bin/sh\necho 'WARNING: noise' >&2\necho 'ERROR: no matching distribution' >&2\nexit 1\n")
    fake.chmod(0o755)
    out = bench_main._side_engine(tmp_path / "bars.npz", ".venv-x", "pkg", "runner.py", python=str(fake),
                                  install_errors=True)
    assert out == {"error": "pkg could not be installed into bench/.venv-x: ERROR: no matching distribution"}
    assert not (tmp_path / ".venv-x").exists()
    missing = bench_main._side_engine(tmp_path / "bars.npz", ".venv-x", "pkg", "runner.py",
                                      python=str(tmp_path / "no-such-python"), install_errors=True)
    assert missing["error"].startswith("pkg could not be installed into bench/.venv-x: ")


@pytest.mark.slow
@pytest.mark.skipif(not NT_PYTHON.exists(), reason="bench/.venv-nt not installed (make bench installs it)")
def test_nautilus_trades_are_tradevets(tmp_path: Path) -> None:
    """The same bars through tradevet and through bench/nt_runner.py: the same trade list, trade for trade."""
    import numpy as np

    from bench.cases import sma_only_config, trade_digest
    from bench.trades import digest
    from engine.app import build_feed, build_pipeline
    from engine.drivers.replay import Replay

    loaded = sma_only_config("sqlite://", 3000)
    feed = build_feed(loaded)
    npz = tmp_path / "bars.npz"
    np.savez(npz, **{f"{s}_{k}": v for s, cols in feed.arrays().items() for k, v in cols.items()})
    pipe = build_pipeline(loaded, feed=feed)
    pipe.open_ledger(loaded.config.execution.starting_equity, 0)
    fills: list = []
    Replay(pipe, feed.slices(), None, on_slice=lambda r: fills.extend(r.fills)).run()
    pipe.close()
    trades_json = tmp_path / "nt.json"
    done = subprocess.run([str(NT_PYTHON), str(ROOT / "bench" / "nt_runner.py"), str(npz), str(trades_json)],
                          capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    n_exits = sum(1 for f in fills if f.kind.value == "exit")
    assert n_exits > 50  # enough trades that a difference would show
    assert out["trades"] == n_exits
    assert out["digest"] == digest(tuple(r[:4]) for r in json.loads(trades_json.read_text()))
    assert out["digest"] == trade_digest(fills, loaded.config.market.timeframe_ms)
    assert out["same_on_rerun"] is True
    # nautilus's entries fill at the signal bar's close: where the next bar opened away from it, only the price
    # differs from tradevet's entry
    entry_px = {(f.symbol, f.filled_ms): f.fill_price for f in fills if f.kind.value == "entry"}
    moved = sum(1 for r in json.loads(trades_json.read_text()) if r[4] != pytest.approx(entry_px[(r[0], r[1])]))
    assert moved == out["entries_at_another_price"]
