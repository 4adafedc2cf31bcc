"""Benchmark cases: each runs in its own process (``python -m bench.cases NAME``) and prints one JSON line.

Figures are measured, never asserted; each end-to-end case also reports its trade fingerprint (a hash of
all fills) so that an optimisation that changes results is caught (see bench/__main__.py).
"""

from __future__ import annotations

import itertools
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKET = ROOT.parent / "shared" / "data" / "market"
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT", "ADA/USDT",
           "DOGE/USDT", "AVAX/USDT", "DOT/USDT", "LINK/USDT", "LTC/USDT"]
SCALE = float(os.environ.get("BENCH_SCALE", "1"))  # < 1 for a quick look; figures are per-bar anyway


_CHILD_PEAK_KB = [0]  # the largest peak resident memory seen of a child process (storage.child)


def _watch_children() -> None:
    """Sample the peak resident memory (VmHWM) of every ``storage.child.Child`` while it runs.

    Not ``RUSAGE_CHILDREN``: a child's maximum there includes the parent's pages it shared between fork and
    exec, so it would count this process's memory twice.
    """
    import threading

    from storage.child import Child

    pids: set[int] = set()
    real_init = Child.__init__

    def init(self: Any, *a: Any, **k: Any) -> None:
        real_init(self, *a, **k)
        pids.add(self.pid)

    def poll() -> None:
        while True:
            for pid in list(pids):
                try:
                    with open(f"/proc/{pid}/status") as f:
                        hwm = next((int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")), None)
                except OSError:
                    hwm = None
                if hwm is None:
                    pids.discard(pid)  # ended (a zombie has no memory lines)
                else:
                    _CHILD_PEAK_KB[0] = max(_CHILD_PEAK_KB[0], hwm)
            time.sleep(0.02)

    Child.__init__ = init  # type: ignore[method-assign]
    threading.Thread(target=poll, name="bench-child-memory", daemon=True).start()


def _peak_mb() -> float:
    """Peak resident memory of this process plus the largest peak of a child process it started (a replay's
    background writer, a backtest's pack check): an upper bound of what the case held at once."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (own + _CHILD_PEAK_KB[0]) / 1024


def _fingerprint(db_url: str, run_id: int) -> tuple[str, int]:
    from engine.drivers.replay import fills_fingerprint
    from storage import open_storage

    store = open_storage(db_url)
    try:
        fills = store.recorder(run_id).load_fills()
        return fills_fingerprint(fills), len(fills)
    finally:
        store.close()


def replay(loaded: Any) -> dict[str, Any]:
    from engine.app import run_replay

    t0 = time.perf_counter()
    res = run_replay(loaded)
    dt = time.perf_counter() - t0
    fp, n_fills = _fingerprint(loaded.config.run.db_url, res.run_id)
    return {"seconds": dt, "bars": res.stats.bars, "bars_per_s": res.stats.bars / dt,
            "signals": res.stats.signals, "signals_per_s": res.stats.signals / dt, "reviewed": res.stats.reviewed,
            "fills": n_fills, "fingerprint": fp, "peak_mb": _peak_mb()}


def case_replay_synthetic(tmp: Path) -> dict[str, Any]:
    """10 symbols × 100,000 synthetic 5m bars, rules tier, SQLite recording, end to end."""
    from engine.config import load_config

    bars = int(100_000 * SCALE)
    loaded = load_config(overrides={"run": {"name": "bench", "db_url": f"sqlite:///{tmp / 'syn.db'}"},
                                    "market": {"symbols": SYMBOLS, "synthetic": {"bars": bars}}})
    return replay(loaded)


def case_pipeline_synthetic(tmp: Path) -> dict[str, Any]:
    """The same 1,000,000-bar replay with nothing recorded: the engine's own share of the end-to-end time."""
    from engine.app import build_feed, build_pipeline
    from engine.config import load_config
    from engine.drivers.replay import Replay, fills_fingerprint

    bars = int(100_000 * SCALE)
    loaded = load_config(overrides={"run": {"name": "bench", "db_url": "sqlite://"},
                                    "market": {"symbols": SYMBOLS, "synthetic": {"bars": bars}}})
    fills: list[Any] = []
    t0 = time.perf_counter()
    feed = build_feed(loaded)
    pipe = build_pipeline(loaded, feed=feed)
    slices = feed.slices()
    first = next(slices)
    pipe.open_ledger(loaded.config.execution.starting_equity, first[0].open_ms)  # as run_replay: same ledger
    t1 = time.perf_counter()
    stats = Replay(pipe, itertools.chain([first], slices), None, on_slice=lambda r: fills.extend(r.fills)).run()
    dt = time.perf_counter() - t0
    pipe.close()
    fills.sort(key=lambda f: (f.filled_ms, f.id))  # the ledger's order in storage: the same fingerprint
    return {"seconds": dt, "setup_s": t1 - t0, "bars": stats.bars, "bars_per_s": stats.bars / dt,
            "signals": stats.signals, "fills": len(fills), "fingerprint": fills_fingerprint(fills),
            "peak_mb": _peak_mb()}


def case_replay_bittrex(tmp: Path) -> dict[str, Any]:
    """The recorded bittrex 2018-01 5m set (10 BTC pairs), rules tier, SQLite, end to end."""
    from tests.test_pipeline import bittrex_config

    data = MARKET / "bittrex_20180110-20180130"
    if not data.is_dir():
        return {"skipped": "shared market data not present"}
    return replay(bittrex_config(data, f"sqlite:///{tmp / 'bittrex.db'}"))


def case_context(tmp: Path) -> dict[str, Any]:
    """Context-pack build time per signal, measured inside a replay of 10 symbols (all open positions)."""
    from engine.app import build_feed, build_pipeline
    from engine.config import load_config
    from engine.drivers.replay import Replay

    loaded = load_config(overrides={"run": {"db_url": "sqlite://"},
                                    "market": {"symbols": SYMBOLS, "synthetic": {"bars": int(20_000 * SCALE)}}})
    feed = build_feed(loaded)
    pipe = build_pipeline(loaded, feed=feed)
    pipe.open_ledger(loaded.config.execution.starting_equity, 0)
    times: list[float] = []
    cpu: list[float] = []
    build = pipe.context.build

    def timed(*a: Any) -> Any:
        t, c = time.perf_counter(), time.process_time()
        out = build(*a)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)  # what the neighbours of a shared machine do not add to
        return out

    pipe.context.build = timed  # type: ignore[method-assign]
    Replay(pipe, feed.slices(), None).run()
    pipe.close()
    us = sorted(t * 1e6 for t in times)
    return {"packs": len(us), "mean_us": statistics.fmean(us), "cpu_mean_us": statistics.fmean(cpu) * 1e6,
            "p50_us": us[len(us) // 2],
            "p95_us": us[int(len(us) * 0.95)], "peak_mb": _peak_mb()}


def case_reviewer(tmp: Path) -> dict[str, Any]:
    """Breaker-open fast-fail, fallback decision time, and one cascade decision with the first tier open."""
    import asyncio

    from engine.config import TierConfig
    from engine.types import Verdict, VerdictKind
    from reviewer.breaker import CircuitBreaker
    from reviewer.cascade import Cascade
    from reviewer.rules import RulesTier
    from reviewer.scripted import ScriptedTier
    from tests.test_rules import make_pack

    br = CircuitBreaker("t", 1, 3600)
    br._open("bench")  # an open breaker, as after an outage
    n = 200_000

    async def refuse() -> int:
        refused = 0
        for _ in range(n):
            try:
                async with br.guard():
                    pass
            except Exception:
                refused += 1
        return refused

    t = time.perf_counter()
    refused = asyncio.run(refuse())
    fast_fail_us = (time.perf_counter() - t) / n * 1e6
    with_sync = CircuitBreaker("s", 1, 3600)
    with_sync._open("bench")
    t = time.perf_counter()
    for _ in range(n):
        try:
            with with_sync.guard():
                pass
        except Exception:
            pass
    fast_fail_sync_us = (time.perf_counter() - t) / n * 1e6

    pack = make_pack()
    fallback = Verdict(VerdictKind.ACCEPT, 0.0)
    down = [ScriptedTier(script=[RuntimeError("down")], cycle=True, name=f"llm{i}") for i in range(3)]
    breakers = {t.name: CircuitBreaker(t.name, 1, 3600) for t in down}
    for b in breakers.values():
        b._open("bench")
    all_open = Cascade(down, breakers=breakers, deadline_s=20, fallback=fallback)
    m = 20_000

    async def decide(c: Cascade) -> None:
        for _ in range(m):
            await c.review(pack)

    t = time.perf_counter()
    asyncio.run(decide(all_open))
    fallback_us = (time.perf_counter() - t) / m * 1e6
    rules = RulesTier(TierConfig(name="rules", provider="rules"))
    first_open = Cascade([down[0], rules], breakers={"llm0": breakers["llm0"],
                                                     "rules": CircuitBreaker("rules", 5, 60)},
                         deadline_s=20, fallback=fallback)
    t = time.perf_counter()
    asyncio.run(decide(first_open))
    rules_after_open_us = (time.perf_counter() - t) / m * 1e6
    return {"breaker_open_fast_fail_us": fast_fail_us, "breaker_open_fast_fail_sync_us": fast_fail_sync_us,
            "refused": refused, "fallback_decision_us": fallback_us,
            "decision_first_tier_open_us": rules_after_open_us, "peak_mb": _peak_mb()}


def case_backtest_cached(tmp: Path) -> dict[str, Any]:
    """`tradevet backtest` over 100,000 recorded signals whose verdicts are cached."""
    try:
        from bench.backtest_case import run as run_backtest_case
    except ImportError as e:  # the recorded-signal backtest is not in this build
        return {"skipped": f"backtest not available ({e})"}
    return run_backtest_case(tmp, int(100_000 * SCALE)) | {"peak_mb": _peak_mb()}




def sma_only_config(db_url: str, bars: int) -> Any:
    from engine.config import load_config

    return load_config(overrides={
        "run": {"name": "sma", "db_url": db_url},
        # one position per symbol, long or short (a netting futures account), as backtesting.py holds
        "market": {"symbols": SYMBOLS, "synthetic": {"bars": bars, "news": False}, "type": "futures"},
        "news": {"source": "none"},
        "strategies": [{"id": "sma", "kind": "sma_cross",
                        "params": {"fast": 12, "slow": 48, "atr_period": 14, "atr_stop": 2.0, "rr": 2.0}}],
        "gates": [], "reviewer": {"mode": "off"},
        # like for like with the other engines: taker fee on both sides, no slippage, no time stop
        # and cash enough that no entry meets an exchange minimum as fees eat the equity (backtesting.py's side
        # has 1e9 per symbol): every signal the account allows is filled in both engines
        "execution": {"fee_bps": 10, "slippage_bps": 0, "max_bars_held": 1_000_000_000, "starting_equity": 1e9},
    })


def case_sma_tradevet(tmp: Path) -> dict[str, Any]:
    """The comparison's tradevet side: SMA cross only, reviewer off, no gates — in memory and with SQLite.
    Also writes the bars for the backtesting.py side (``BENCH_BARS_NPZ``)."""
    import numpy as np

    from engine.app import build_feed, build_pipeline
    from engine.drivers.replay import Replay, fills_fingerprint

    bars = int(100_000 * SCALE)
    loaded = sma_only_config("sqlite://", bars)
    feed = build_feed(loaded)
    out_npz = os.environ.get("BENCH_BARS_NPZ")
    if out_npz:
        arrays = feed.arrays()
        np.savez(out_npz, **{f"{s}_{k}": v for s, cols in arrays.items() for k, v in cols.items()})
    pipe = build_pipeline(loaded, feed=feed)
    pipe.open_ledger(loaded.config.execution.starting_equity, 0)
    fills: list[Any] = []
    t = time.perf_counter()
    stats = Replay(pipe, feed.slices(), None, on_slice=lambda r: fills.extend(r.fills)).run()
    in_memory = time.perf_counter() - t
    pipe.close()
    recorded = replay(sma_only_config(f"sqlite:///{tmp / 'sma.db'}", bars))
    return {"bars": stats.bars, "seconds_in_memory": in_memory, "bars_per_s_in_memory": stats.bars / in_memory,
            "seconds_recorded": recorded["seconds"], "bars_per_s_recorded": recorded["bars_per_s"],
            "trades": sum(1 for f in fills if f.kind.value == "exit"), "fingerprint": fills_fingerprint(fills),
            "digest": trade_digest(fills, loaded.config.market.timeframe_ms), "peak_mb": _peak_mb()}


def trade_digest(fills: list[Any], timeframe_ms: int) -> str:
    """The comparison's trade list (bench/trades.py) from tradevet's fills: an entry fills at its bar's open; an
    exit is stamped with its bar's close (stop, target, time, end of data), so its bar opened one bar earlier."""
    from bench.trades import digest

    entries = {f.signal_id: f for f in fills if f.kind.value == "entry"}
    return digest((f.symbol, entries[f.signal_id].filled_ms, entries[f.signal_id].side.value,
                   f.filled_ms - timeframe_ms) for f in fills if f.kind.value == "exit")


def case_outage(tmp: Path) -> dict[str, Any]:
    """Decision latency while the first tier (Anthropic SDK → fake server) hangs: before and after its
    breaker opens; then 100 signals reviewed concurrently against a tier with 500 ms latency."""
    import asyncio

    from engine.app import build_reviewer
    from engine.config import ReviewerConfig
    from tests.fake_llm import FakeLLM
    from tests.test_rules import make_pack

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q / 100 * len(xs)))]

    with FakeLLM() as srv:
        srv.set_default("hang")
        cfg = ReviewerConfig.model_validate({"deadline_s": 20, "tiers": [
            {"name": "sonnet", "provider": "anthropic", "model": "claude-sonnet-4-6", "api_key_env": "BENCH_KEY",
             "base_url": srv.url, "timeout_s": 1.0, "breaker": {"failure_threshold": 5, "recovery_timeout_s": 600}},
            {"name": "rules", "provider": "rules"}]})
        os.environ["BENCH_KEY"] = "bench-key-not-real"
        cascade = build_reviewer(cfg, cache=None)
        packs = [make_pack(streak=i % 3) for i in range(60)]

        async def sequential() -> list[float]:
            out = []
            for p in packs:
                t = time.perf_counter()
                v = await cascade.review(p)
                assert v.source == "rules"
                out.append((time.perf_counter() - t) * 1000)
            await cascade.aclose()
            return out

        lat = asyncio.run(sequential())
        before, after = lat[:5], lat[5:]
    with FakeLLM(latency=0.5) as srv:
        srv.set_default("accept")
        cfg = ReviewerConfig.model_validate({"tiers": [
            {"name": "gpt", "provider": "openai", "model": "gpt-4o-mini", "api_key_env": "BENCH_KEY",
             "base_url": srv.openai_url, "timeout_s": 8, "max_concurrency": 100}]})
        cascade = build_reviewer(cfg, cache=None)

        async def concurrent() -> float:
            t = time.perf_counter()
            vs = await cascade.review_many([make_pack(streak=i % 5) for i in range(100)])
            assert all(v.source == "gpt" for v in vs)
            await cascade.aclose()
            return time.perf_counter() - t

        conc = asyncio.run(concurrent())
    return {"before_open_p50_ms": pct(before, 50), "before_open_p99_ms": pct(before, 99),
            "after_open_p50_ms": pct(after, 50), "after_open_p99_ms": pct(after, 99),
            "concurrent_100_at_500ms_s": conc, "peak_mb": _peak_mb()}


CASES = {name.removeprefix("case_"): fn for name, fn in globals().items() if name.startswith("case_")}


def main(argv: list[str]) -> int:
    name = argv[0]
    _watch_children()
    with tempfile.TemporaryDirectory(prefix="tradevet-bench-") as d:
        out = CASES[name](Path(d))
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
