"""`make bench`: run every benchmark case in its own process → a table with targets + bench/results/*.json.

Each end-to-end case's trade fingerprint is compared with bench/fingerprints.json: a change means an
"optimisation" changed results, and the run says so (and exits 1). ``BENCH_SCALE=0.1`` gives a quick look;
fingerprints are kept per scale. The backtesting.py comparison installs that package into a separate
virtual environment under bench/.venv-bt, only for the benchmark.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
FINGERPRINTS = HERE / "fingerprints.json"
BASELINE = HERE / "baseline.json"  # the figures before the current round of work: the "before" column
SCALE = os.environ.get("BENCH_SCALE", "1")


def numpy_dispatch() -> list[str]:
    """The CPU features numpy dispatches kernels to at run time (what ``NPY_DISABLE_CPU_FEATURES`` can switch
    off); empty for a numpy without run-time dispatch, or one that moved the list."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__
    except ImportError:
        return []
    return list(__cpu_dispatch__)


def other_kernels() -> dict[str, str]:
    """Environment for a run on "another CPU": numpy's dispatched kernels off (all of them: no AVX-512, no AVX2
    paths), OpenBLAS's Nehalem kernel, and the compiled kernels built for a generic x86-64 (no AVX, no FMA;
    numba's cache for them kept apart, in the temporary directory)."""
    env = {"OPENBLAS_CORETYPE": "Nehalem", "NUMBA_CPU_NAME": "generic",
           "NUMBA_CACHE_DIR": str(Path(tempfile.gettempdir()) / "tradevet-bench-numba-generic")}
    dispatch = numpy_dispatch()
    if dispatch:
        env["NPY_DISABLE_CPU_FEATURES"] = " ".join(dispatch)
    return env


def _same_bits(a: dict[str, Any], b: dict[str, Any]) -> str:
    """Do two runs of one case have one fingerprint?"""
    if not a.get("fingerprint") or not b.get("fingerprint"):
        return "—"
    return "the same" if a["fingerprint"] == b["fingerprint"] else "DIFFERENT"


def run_case(name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench.cases", name], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["wall_s"] = time.perf_counter() - t
    return out


def _side_engine(npz: Path, venv_name: str, package: str, runner: str, python: str = sys.executable,
                 install_errors: bool = False) -> dict[str, Any]:
    """Another engine on the same bars, installed only for the benchmark into its own venv under bench/.

    ``install_errors``: a failed install gives a row with the error (and no venv left behind) instead of a crash.
    """
    venv = HERE / venv_name
    py = venv / "bin" / "python"
    install_s = None
    if not py.exists():
        t = time.perf_counter()
        steps = ([python, "-m", "venv", str(venv)],
                 [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", package])
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=install_errors, text=True, check=not install_errors)
            except OSError as e:  # the interpreter asked for is not there
                done = subprocess.CompletedProcess(step, 1, "", str(e))
            if done.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                lines = [ln for ln in (done.stderr or "").strip().splitlines() if not ln.startswith("WARNING")]
                return {"error": f"{package} could not be installed into bench/{venv_name}: "
                                 + (lines[-1] if lines else f"exit {done.returncode}")}
        install_s = time.perf_counter() - t
    done = subprocess.run([str(py), str(HERE / runner), str(npz)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"failed (exit {done.returncode})"])[-1]}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["bars_per_s"] = out["bars"] / out["seconds"]
    if install_s is not None:
        out["install_s"] = install_s
    return out


def backtesting_py(npz: Path) -> dict[str, Any]:
    return _side_engine(npz, ".venv-bt", "backtesting", "bt_runner.py")


def vectorbt(npz: Path) -> dict[str, Any]:
    return _side_engine(npz, ".venv-vbt", "vectorbt", "vbt_runner.py")


def nautilus_trader(npz: Path) -> dict[str, Any]:
    """nautilus_trader in bench/.venv-nt. Its newest releases need Python >= 3.12: ``BENCH_NT_PYTHON`` names
    the interpreter the venv is made with (default: this one; pip then picks the newest release it supports)."""
    return _side_engine(npz, ".venv-nt", "nautilus_trader", "nt_runner.py",
                        python=os.environ.get("BENCH_NT_PYTHON") or sys.executable, install_errors=True)


def _nt_difference(nt: dict[str, Any], sm: dict[str, Any]) -> str:
    """Why nautilus_trader's trade list is not tradevet's, as far as its runner could tell (bench/nt_runner.py)."""
    head = f"TRADES DIFFER ({fmt(nt.get('trades'))} vs tradevet's {fmt(sm.get('trades'))}), no ratio: "
    if nt.get("gap_entries"):
        symbol, at_ms = nt["first_gap_entry"]
        return head + (f"{nt['gap_entries']} entries filled at the signal bar's close where the next open is "
                       f"already beyond the stop or target (tradevet refuses them; first {symbol} at {at_ms})")
    return head + ("not the known gap-entry case; compare the trade lists "
                   "(bench/nt_runner.py BARS.npz TRADES.json)")


def _nautilus_rows(nt: dict[str, Any], sm: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """nautilus_trader's rows: warm and cold bars/s, trades, and a time ratio only when its trades are tradevet's."""
    same = bool(nt.get("digest")) and nt.get("digest") == sm.get("digest")
    cold = nt["bars"] / nt["seconds_cold"] if nt.get("seconds_cold") else None
    if nt.get("error"):
        note = nt["error"]
    else:
        note = (f"{nt.get('version', '?')}; {fmt(nt.get('trades'))} trades, "
                + (("trade for trade" + (f" ({nt['entries_at_another_price']} entries filled at the signal close, "
                                         "not the gapped next open: prices differ, trades do not)"
                                         if nt.get("entries_at_another_price") else ""))
                   if same else _nt_difference(nt, sm))
                + f"; conversion {fmt(nt.get('convert_s'), ' s', 1)}"
                + (f"; venv installed in {nt['install_s']:.0f} s" if nt.get("install_s") else ""))
    rows = [("SMA cross, nautilus_trader (warm · cold incl. conversion)",
             f"{fmt(nt.get('bars_per_s'), ' bars/s')} · {fmt(cold, ' bars/s')}", "", "", note)]
    if same and sm.get("seconds_in_memory") and nt.get("seconds"):
        rows.append(("time ratio tradevet / nautilus_trader (in memory)",
                     f"{sm['seconds_in_memory'] / nt['seconds']:.2f}", "", "", "the same trades"))
    return rows


def fmt(x: Any, unit: str = "", digits: int = 0) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:,.{digits}f}{unit}"
    return f"{x}{unit}"


def main() -> int:
    print(f"tradevet benchmarks (BENCH_SCALE={SCALE}; {os.cpu_count()} cores)", flush=True)
    results: dict[str, Any] = {}
    for name in ("replay_synthetic", "pipeline_synthetic", "replay_bittrex", "context", "reviewer", "outage",
                 "backtest_cached"):
        print(f"  running {name} …", flush=True)
        results[name] = run_case(name)
    # the same engine run with numpy's CPU-dispatched kernels off and another OpenBLAS core type: what a
    # machine without AVX-512 (or another worker of a cluster) would compute; its fingerprint must not move
    print("  running pipeline_synthetic with other CPU kernels …", flush=True)
    results["pipeline_synthetic_kernels"] = run_case("pipeline_synthetic", other_kernels())
    with tempfile.TemporaryDirectory() as d:
        npz = Path(d) / "bars.npz"
        print("  running sma_tradevet …", flush=True)
        results["sma_tradevet"] = run_case("sma_tradevet", {"BENCH_BARS_NPZ": str(npz)})
        print("  running backtesting.py (separate venv) …", flush=True)
        results["backtesting_py"] = backtesting_py(npz) if npz.exists() else {"error": "no bars written"}
        print("  running vectorbt (separate venv) …", flush=True)
        results["vectorbt"] = vectorbt(npz) if npz.exists() else {"error": "no bars written"}
        print("  running nautilus_trader (separate venv) …", flush=True)
        results["nautilus_trader"] = nautilus_trader(npz) if npz.exists() else {"error": "no bars written"}

    rs, ps, rb, cx, rv, bt = (results[k] for k in ("replay_synthetic", "pipeline_synthetic", "replay_bittrex",
                                                    "context", "reviewer", "backtest_cached"))
    sm, bp, og = results["sma_tradevet"], results["backtesting_py"], results["outage"]
    pk = results["pipeline_synthetic_kernels"]
    base = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}

    def before(key: str, unit: str = "", digits: int = 0) -> str:
        return fmt(base.get(key), unit, digits) if key in base else ""

    # (figure, measured, target, before, note)
    rows = [
        ("replay, synthetic 10×100k bars (rules, SQLite)", fmt(rs.get("bars_per_s"), " bars/s"),
         "see ratio below", before("replay_synthetic.bars_per_s", " bars/s"), fmt(rs.get("seconds"), " s", 1)),
        ("  signals/s · peak memory", f"{fmt(rs.get('signals_per_s'), '/s')} · {fmt(rs.get('peak_mb'), ' MB')}",
         "≤ 1,024 MB", before("replay_synthetic.peak_mb", " MB"), ""),
        ("  the same, nothing recorded (engine only)", fmt(ps.get("bars_per_s"), " bars/s"), "", "",
         fmt(ps.get("seconds"), " s", 1)),
        ("  the same on other CPU kernels (numpy dispatch off, OpenBLAS Nehalem, numba generic)", _same_bits(ps, pk),
         "the same fingerprint", "", f"{fmt(pk.get('fills'), ' fills')}; {fmt(pk.get('seconds'), ' s', 1)}"),
        ("replay, bittrex 10 pairs 5m (rules, SQLite)", fmt(rb.get("bars_per_s"), " bars/s"),
         "", before("replay_bittrex.bars_per_s", " bars/s"), rb.get("skipped") or fmt(rb.get("seconds"), " s", 1)),
        ("  signals/s · peak memory", f"{fmt(rb.get('signals_per_s'), '/s')} · {fmt(rb.get('peak_mb'), ' MB')}",
         "", "", ""),
        ("context build per signal (mean · p95)", f"{fmt(cx.get('mean_us'), ' µs')} · {fmt(cx.get('p95_us'), ' µs')}",
         "≤ 50 µs mean", f"{before('context.mean_us', ' µs')} · {before('context.p95_us', ' µs')}",
         f"{fmt(cx.get('packs'), ' packs')}; CPU mean {fmt(cx.get('cpu_mean_us'), ' µs')}"),
        ("breaker-open fast-fail (async · sync)",
         f"{fmt(rv.get('breaker_open_fast_fail_us'), ' µs', 2)} · "
         f"{fmt(rv.get('breaker_open_fast_fail_sync_us'), ' µs', 2)}", "≤ 20 µs",
         before("reviewer.breaker_open_fast_fail_us", " µs", 2), ""),
        ("fallback decision (3 tiers open)", fmt(rv.get("fallback_decision_us"), " µs", 1), "",
         before("reviewer.fallback_decision_us", " µs", 1), ""),
        ("decision with first tier open → rules", fmt(rv.get("decision_first_tier_open_us"), " µs", 1), "", "", ""),
        ("outage of tier 1: decision p50/p99 before open",
         f"{fmt(og.get('before_open_p50_ms'), ' ms')} / {fmt(og.get('before_open_p99_ms'), ' ms')}", "≈ timeout",
         "", ""),
        ("outage of tier 1: decision p50/p99 after open",
         f"{fmt(og.get('after_open_p50_ms'), ' ms', 2)} / {fmt(og.get('after_open_p99_ms'), ' ms', 2)}", "", "", ""),
        ("100 concurrent reviews, 500 ms tier", fmt(og.get("concurrent_100_at_500ms_s"), " s", 2), "≈ 1 s", "", ""),
        ("backtest, recorded signals, cached verdicts", fmt(bt.get("signals_per_s"), " signals/s"),
         "≥ 50,000 signals/s", before("backtest_cached.signals_per_s", " signals/s"),
         bt.get("skipped") or fmt(bt.get("signals"), " signals")),
        ("  peak memory", fmt(bt.get("peak_mb"), " MB"), "", "", ""),
        ("SMA cross, tradevet (reviewer off, in memory)", fmt(sm.get("bars_per_s_in_memory"), " bars/s"), "",
         before("sma_tradevet.bars_per_s_in_memory", " bars/s"), fmt(sm.get("seconds_in_memory"), " s", 2)),
        ("SMA cross, tradevet (reviewer off, SQLite)", fmt(sm.get("bars_per_s_recorded"), " bars/s"), "",
         before("sma_tradevet.bars_per_s_recorded", " bars/s"), fmt(sm.get("seconds_recorded"), " s", 2)),
        ("SMA cross, backtesting.py", fmt(bp.get("bars_per_s"), " bars/s"), "",
         before("backtesting_py.bars_per_s", " bars/s"), fmt(bp.get("seconds"), " s", 2)),
    ]
    # Like for like: the same trades, or no ratio. Both engines hold one position per symbol, pay the same fee,
    # no slippage and no time stop; each lists its trades (bench/trades.py) and the lists must be the same.
    same = bool(sm.get("digest")) and sm.get("digest") == bp.get("digest")
    rows.append(("  trades: tradevet · backtesting.py", f"{fmt(sm.get('trades'))} · {fmt(bp.get('trades'))}",
                 "the same trades", "", "trade for trade" if same else "TRADES DIFFER: no ratio is printed"))
    vb = results["vectorbt"]
    vb_same = bool(vb.get("digest")) and vb.get("digest") == sm.get("digest")
    rows.append(("SMA cross, vectorbt (warm · cold with its JIT)",
                 f"{fmt(vb.get('bars_per_s'), ' bars/s')} · "
                 f"{fmt(vb['bars'] / vb['seconds_cold'] if vb.get('seconds_cold') else None, ' bars/s')}", "",
                 "", vb.get("error") or f"{fmt(vb.get('trades'))} trades, " + (
                     "trade for trade" if vb_same else "not like for like: it checks stops only from the bar "
                     "after the entry bar, so no ratio")))
    rows.extend(_nautilus_rows(results["nautilus_trader"], sm))
    if same and sm.get("seconds_in_memory") and bp.get("seconds"):
        ratio = sm["seconds_in_memory"] / bp["seconds"]
        rows.append(("time ratio tradevet / backtesting.py (in memory)", f"{ratio:.2f}", "≤ 0.3",
                     before("ratio_vs_backtesting_py", "", 2), ""))
        results["ratio_vs_backtesting_py"] = ratio
    if same and bp.get("bars_per_s") and rs.get("bars_per_s"):
        # Targets are ratios measured in the same run: absolute figures move ±40 % on shared machines.
        rows.append(("replay, synthetic (everything recorded) ÷ backtesting.py bars/s",
                     f"{rs['bars_per_s'] / bp['bars_per_s']:.2f}", "≥ 3", "",
                     f"backtesting.py: {fmt(bp['bars_per_s'], ' bars/s')} in this run"))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'figure'.ljust(width)}  {'measured':>28}  {'target':>20}  {'before':>20}  note")
    for name, value, target, prior, note in rows:
        print(f"{name.ljust(width)}  {value:>28}  {target:>20}  {prior:>20}  {note}")
    for k, v in results.items():
        if isinstance(v, dict) and v.get("error"):
            print(f"error in {k}: {v['error']}")

    # fingerprints: results must not change under optimisation
    known = json.loads(FINGERPRINTS.read_text()) if FINGERPRINTS.exists() else {}
    changed = []
    for case in ("replay_synthetic", "pipeline_synthetic", "replay_bittrex", "sma_tradevet"):
        fp = results[case].get("fingerprint")
        if not fp:
            continue
        key = f"{case}@{SCALE}"
        if key in known and known[key] != fp:
            changed.append(f"{case}: {known[key][:12]} → {fp[:12]}")
        known.setdefault(key, fp)
    if _same_bits(ps, pk) == "DIFFERENT":
        changed.append(f"pipeline_synthetic on other CPU kernels: {ps['fingerprint'][:12]} → {pk['fingerprint'][:12]}")
    FINGERPRINTS.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n")
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for path in (RESULTS / f"bench-{stamp}.json", RESULTS / "latest.json"):
        path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"\nresults: {RESULTS / 'latest.json'}")
    if changed:
        print("TRADE FINGERPRINT CHANGED (results differ from the recorded ones):\n  " + "\n  ".join(changed))
        return 1
    print("trade fingerprints unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
