"""Soak: 30 simulated days of 1-minute bars on 10 symbols (432,000 bars) through the whole pipeline.

Synthetic feed → strategies → gates → context → rules reviewer → clamp → paper executor → SQLite, in a
child process that samples its own resident memory at 25, 50, 75 and 100 % of the replay and reports its
peak (VmHWM), the run's duration, per-day signal counts and the fills fingerprint.

Checks: every bar recorded; memory flat once warmed up (RSS at 100 % within ``RSS_GROWTH_MB`` of RSS at
50 %: during the first third or so RSS moves by tens of MB while the replay's batches grow to their full
size); per-day signal counts of the two halves in the same range; the same config twice gives the same
fingerprint. Durations are printed, never asserted.

Size: ``TRADEVET_SOAK_DAYS`` (default 30) and ``TRADEVET_SOAK_SYMBOLS`` (default 10). The full 30 days take
about 11-25 s of replay and peak at about 200-250 MB here (2 cores; not counting the replay's background
writer, a child process); the scorecard at the end adds about 2 s and 20 MB. ``TRADEVET_SOAK_TWICE=1`` also
repeats the full run for the fingerprint check, which otherwise runs on 2 days.

By hand: ``.venv/bin/python -m tests.test_soak 30 10 /tmp/soak.db``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "ADA/USDT", "XRP/USDT", "DOGE/USDT", "AVAX/USDT", "DOT/USDT",
           "LINK/USDT", "LTC/USDT"]
DAYS = float(os.environ.get("TRADEVET_SOAK_DAYS", "30"))
N_SYMBOLS = int(os.environ.get("TRADEVET_SOAK_SYMBOLS", "10"))
RSS_GROWTH_MB = 11.0  # a leak of ~50 bytes per bar would add this much between 50 % and 100 % of 432k bars
DAY_MS = 86_400_000
START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z, the default synthetic start


def _vm(field: str) -> int:
    """A /proc/self/status figure in KiB (VmRSS, VmHWM)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def soak(days: float, n_symbols: int, db_path: str) -> dict[str, Any]:
    """The child's work: one replay with memory samples; returns the figures as plain data."""
    from engine.app import run_replay
    from engine.config import load_config
    from engine.drivers.replay import fills_fingerprint
    from engine.recorded.scorecard import run_scorecard
    from storage import open_storage

    bars = int(days * 1440)
    loaded = load_config(overrides={
        "run": {"name": "soak", "db_url": f"sqlite:///{db_path}"},
        "market": {"symbols": SYMBOLS[:n_symbols], "timeframe": "1m", "synthetic": {"bars": bars}},
    }, env={})
    marks = (0.25, 0.5, 0.75, 1.0)
    rss: dict[str, int] = {}

    def progress(done: int, total: int | None) -> None:
        for m in marks:
            if str(m) not in rss and done >= m * bars:
                rss[str(m)] = _vm("VmRSS")

    t0 = time.perf_counter()
    res = run_replay(loaded, progress=progress)
    replay_s = time.perf_counter() - t0
    hwm_replay = _vm("VmHWM")
    with open_storage(loaded.config.run.db_url) as store:
        card = run_scorecard(store, res.run_id)
        rec = store.recorder(res.run_id)
        per_day = [0] * int(days)
        for sig in rec.load_signals():
            per_day[min(len(per_day) - 1, (sig.created_ms - START_MS) // DAY_MS)] += 1
        out = {"bars": bars * n_symbols, "replay_s": round(replay_s, 2), "rss_kb": rss, "hwm_replay_kb": hwm_replay,
               "hwm_kb": _vm("VmHWM"),
               "fingerprint": fills_fingerprint(rec.load_fills()), "per_day": per_day,
               "counts": store.table_counts(res.run_id), "reviewed": card.reviewed}
    out["total_s"] = round(time.perf_counter() - t0, 2)
    return out


def _run_child(days: float, n_symbols: int, db: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "tests.test_soak", str(days), str(n_symbols), str(db)], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_soak_memory_stays_flat_and_figures_are_stable(tmp_path: Path) -> None:
    got = _run_child(DAYS, N_SYMBOLS, tmp_path / "soak.db")
    mb = {k: round(v / 1024, 1) for k, v in got["rss_kb"].items()}
    print(f"\nsoak: {got['bars']:,} bars ({DAYS:g} days x {N_SYMBOLS} symbols, 1m) in {got['replay_s']} s "
          f"(+ scorecard {got['total_s'] - got['replay_s']:.2f} s), RSS MB at 25/50/75/100 %: {mb}, "
          f"peak {got['hwm_replay_kb'] / 1024:.0f} MB during the replay, {got['hwm_kb'] / 1024:.0f} MB with the "
          f"scorecard; {got['counts']['signals']:,} signals, {got['reviewed']:,} reviewed, "
          f"{got['counts']['fills']:,} fills")
    assert got["counts"]["bars"] == got["bars"] == int(DAYS * 1440) * N_SYMBOLS
    assert got["counts"]["signals"] > 0 and got["reviewed"] > 0 and got["counts"]["fills"] > 0
    rss = got["rss_kb"]
    assert set(rss) == {"0.25", "0.5", "0.75", "1.0"}
    assert (rss["1.0"] - rss["0.5"]) / 1024 <= RSS_GROWTH_MB, f"memory grows with the run: {mb}"
    assert (rss["1.0"] - rss["0.75"]) / 1024 <= RSS_GROWTH_MB / 2, f"memory grows with the run: {mb}"
    assert got["hwm_replay_kb"] < 512 * 1024, "more than 512 MiB for a replay"
    # the scorecard reads every review back: it must not need a multiple of the replay's memory either
    # (it took ~450 MB for these 30 days while it rebuilt every context pack from its JSON)
    assert got["hwm_kb"] < 1024 * 1024, "more than 1 GiB for a replay and its scorecard"
    days = got["per_day"]
    if len(days) >= 4:
        half = len(days) // 2
        a, b = statistics.mean(days[:half]), statistics.mean(days[half:])
        assert 0.75 <= a / b <= 1.33, f"signals per day drift between the halves: {a:.0f} vs {b:.0f}"
        med = statistics.median(days)
        assert all(0.5 * med <= d <= 1.5 * med for d in days), f"an outlier day: {days}"
    if os.environ.get("TRADEVET_SOAK_TWICE") == "1":
        again = _run_child(DAYS, N_SYMBOLS, tmp_path / "again.db")
        assert again["fingerprint"] == got["fingerprint"] and again["per_day"] == days


@pytest.mark.slow
def test_soak_is_deterministic(tmp_path: Path) -> None:
    """Two identical runs of the soak's configuration (2 days) record the very same ledger."""
    a = _run_child(2, N_SYMBOLS, tmp_path / "a.db")
    b = _run_child(2, N_SYMBOLS, tmp_path / "b.db")
    assert a["counts"] == b["counts"] and a["per_day"] == b["per_day"]
    assert a["fingerprint"] == b["fingerprint"]


if __name__ == "__main__":
    print(json.dumps(soak(float(sys.argv[1]), int(sys.argv[2]), sys.argv[3])))
