"""Bench case: `tradevet backtest` over N recorded signals whose verdicts are already cached (second run)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def _breakdown(result: Any, total_s: float) -> dict[str, float]:
    """Where a backtest's time went: loading the run, reading the cache, reviewing, scoring (all columns)."""
    parts = {"load_s": result.load_s, "cache_s": sum(c.cache_s for c in result.columns),
             "review_s": sum(c.review_s for c in result.columns),
             "score_s": sum(c.score_s for c in result.columns)}
    return parts | {"other_s": total_s - sum(parts.values())}


def _cpu_s() -> tuple[float, float]:
    """CPU seconds used so far by this process (all threads) and by its ended children (the packs' check)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def run(tmp: Path, n: int) -> dict[str, Any]:
    from engine.app import run_backtest
    from storage import open_storage
    from tests.test_backtest import record_synthetic_run

    url = f"sqlite:///{tmp / 'bt.db'}"
    reviewer = tmp / "rules.yaml"
    reviewer.write_text("reviewer:\n  tiers:\n    - {name: rules, provider: rules}\n")
    store = open_storage(url)
    try:
        run_id = record_synthetic_run(store, n)
        t = time.perf_counter()
        first_result = run_backtest(store, run_id, [reviewer])  # fills the verdict cache
        first = time.perf_counter() - t
    finally:
        store.close()
    store = open_storage(url)
    try:
        cpu0 = _cpu_s()
        t = time.perf_counter()
        result = run_backtest(store, run_id, [reviewer])
        cached = time.perf_counter() - t
        cpu1 = _cpu_s()
    finally:
        store.close()
    sources = result.columns[1].card.sources
    return {"signals": n, "first_s": first, "cached_s": cached, "signals_per_s": n / cached,
            "first_signals_per_s": n / first, "cached_sources": sources,
            "cached_breakdown": _breakdown(result, cached), "first_breakdown": _breakdown(first_result, first),
            # on a shared machine the wall clock depends on the neighbours; the CPU the cached run used does not
            "cached_cpu_s": {"process": cpu1[0] - cpu0[0], "children": cpu1[1] - cpu0[1]}}
