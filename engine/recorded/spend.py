"""Recorded spend of the reviewer tiers: the verdicts (``RunReader.spend``) → real calls and USD per tier and day."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.ports import RunReader

__all__ = ["daily_cost", "recorded_spend"]


def recorded_spend(store: RunReader, run_id: int | None) -> Callable[[str, int, str], tuple[int, float]]:
    """What ``Reviewer.seed_spend`` reads: a tier's recorded real calls and USD since a time, in run ``run_id``
    (scope run; none when ``run_id`` is None: a backtest is no run) or in the whole database (scope database)."""
    memo: dict[tuple[int | None, int], list[tuple[str, int, int, float]]] = {}

    def spent(tier: str, since_ms: int, scope: str) -> tuple[int, float]:
        rid = run_id if scope == "run" else None
        if scope == "run" and run_id is None:
            return 0, 0.0
        key = (rid, since_ms)
        if key not in memo:
            memo[key] = store.spend(run_id=rid, since_ms=since_ms)
        rows = [r for r in memo[key] if r[0] == tier]
        return sum(r[2] for r in rows), sum(r[3] for r in rows)

    return spent


def daily_cost(reader: RunReader, run_id: int) -> list[dict[str, Any]]:
    """Cost per UTC day (of the real calls, wall clock) and tier of one run, oldest day first; calls recorded
    without a call time (before schema 0003) are under day ``None``."""
    from engine.types import ms_to_dt

    out = []
    for tier, day, calls, usd in sorted(reader.spend(run_id=run_id), key=lambda r: (r[1], r[0])):
        out.append({"day": ms_to_dt(day).strftime("%Y-%m-%d") if day > 0 else None, "tier": tier, "calls": calls,
                    "cost_usd": usd})
    return out
