"""Recorded spend of the reviewer tiers: the verdicts (``RunReader.spend``) → real calls and USD per tier and day."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.ports import RunReader

__all__ = ["daily_cost", "recorded_spend", "spend_summary"]


def recorded_spend(store: RunReader, run_id: int | None) -> Callable[[str, int, str], tuple[int, float]]:
    """What ``Reviewer.seed_spend`` reads: a tier's recorded real calls and USD since a time, in run ``run_id``
    (``whose`` "run"; none when ``run_id`` is None: a backtest is no run) or in the database's other runs
    ("others"; every run for a backtest)."""

    def spent(tier: str, since_ms: int, whose: str) -> tuple[int, float]:
        if whose == "run":
            if run_id is None:
                return 0, 0.0
            rows = store.spend(run_id=run_id, since_ms=since_ms)
        else:
            rows = store.spend(since_ms=since_ms, exclude_run_id=run_id)
        mine = [r for r in rows if r[0] == tier]
        return sum(r[2] for r in mine), sum(r[3] for r in mine)

    return spent


def daily_cost(reader: RunReader, run_id: int) -> list[dict[str, Any]]:
    """Cost per UTC day (of the real calls, wall clock) and tier of one run, oldest day first; calls recorded
    without a call time (before schema 0003) are under day ``None``."""
    from engine.types import ms_to_dt

    out = []
    for tier, day, calls, usd in sorted(reader.spend(run_id=run_id), key=lambda r: (r[1], r[0])):
        if day == 0 and usd == 0:
            continue  # answers of free synchronous tiers (rules): no call time is stamped, nothing was spent
        out.append({"day": ms_to_dt(day).strftime("%Y-%m-%d") if day > 0 else None, "tier": tier, "calls": calls,
                    "cost_usd": usd})
    return out


def _budgets_of(config_json: str) -> dict[str, dict[str, Any]]:
    """Per tier of the run's stored config: its budget caps (tiers without a budget left out)."""
    import json

    try:
        tiers = (json.loads(config_json) if config_json else {}).get("reviewer", {}).get("tiers", [])
    except (ValueError, AttributeError):
        return {}
    return {t["name"]: dict(t["budget"]) for t in tiers if isinstance(t, dict) and t.get("budget") and "name" in t}


def spend_summary(reader: RunReader, run_id: int, config_json: str, events: Any) -> dict[str, Any]:
    """Cost per day and per tier, budget use and budget events of a run (scorecard ``spend``, report, CLI).

    ``budgets``: per tier with a budget, its caps, this run's calls and USD, and its busiest day against the daily
    caps (a run's own calls; with scope database other runs shared the day too). ``events``: the budget events.
    """
    days = daily_cost(reader, run_id)
    by_tier: dict[str, dict[str, Any]] = {}
    for d in days:
        t = by_tier.setdefault(d["tier"], {"calls": 0, "cost_usd": 0.0})
        t["calls"] += d["calls"]
        t["cost_usd"] += d["cost_usd"]
    budgets: dict[str, dict[str, Any]] = {}
    for tier, caps in _budgets_of(config_json).items():
        mine = [d for d in days if d["tier"] == tier and d["day"] is not None]
        busiest = max(mine, key=lambda d: (d["cost_usd"], d["calls"]), default=None)
        run = by_tier.get(tier, {"calls": 0, "cost_usd": 0.0})
        use: dict[str, Any] = {"caps": caps, "run_calls": run["calls"], "run_usd": run["cost_usd"],
                               "busiest_day": busiest["day"] if busiest else None,
                               "busiest_day_calls": busiest["calls"] if busiest else 0,
                               "busiest_day_usd": busiest["cost_usd"] if busiest else 0.0}
        shares = []
        if caps.get("calls_per_day"):
            shares.append(use["busiest_day_calls"] / caps["calls_per_day"])
        if caps.get("usd_per_day"):
            shares.append(use["busiest_day_usd"] / caps["usd_per_day"])
        if caps.get("usd_per_run"):
            shares.append(use["run_usd"] / caps["usd_per_run"])
        use["used_share"] = max(shares) if shares else None  # of the tightest cap
        budgets[tier] = use
    budget_events = [{"at_ms": e.at_ms, "tier": e.subject, "message": e.message} for e in events if e.kind == "budget"]
    for tier, use in budgets.items():
        use["exhausted"] = sum(1 for e in budget_events if e["tier"] == tier and e["message"].startswith("exhausted"))
    return {"by_day": days, "by_tier": by_tier, "budgets": budgets, "events": budget_events}
