"""Spend budgets per reviewer tier: calls and USD per UTC day (real time) and USD per run; an exhausted tier is skipped.

A budget admits a call or raises ``BudgetExhausted`` (failure kind ``budget``: the cascade moves on to the next
tier exactly as for an open breaker, and keeps failing open). What counts is what the tier answered by real
calls — a cache hit is free — started from the recorded verdicts (``seed``) so that a restart does not reset
it, then kept in memory as calls settle. The day is the UTC calendar day of the injected clock (the wall clock
in every run, replays included: money is spent in real time, not in market time), so a tier skipped for the
day is used again when the clock passes midnight UTC.

With ``scope: database`` the daily caps also count what other runs on the same database spent today: read when
the budget is seeded, and again every ``REFRESH_S`` seconds (wall clock) while calls are admitted, so runs that
share a database at the same time see each other's spend within that delay (and after it is recorded).

Calls in flight are reserved against ``calls_per_day`` (concurrent reviews cannot overshoot it); the USD caps
can only be checked against calls already settled, so they may be overshot by the calls in flight at the
moment the cap is reached (at most the tier's ``max_concurrency``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from engine.errors import BudgetExhausted
from engine.ports import BudgetSettings, Clock
from engine.types import Event, ms_to_dt

__all__ = ["DAY_MS", "REFRESH_S", "TierBudget", "day_start_ms"]

DAY_MS = 86_400_000
REFRESH_S = 30.0  # how often a database-scope budget re-reads the other runs' spend of the day

log = logging.getLogger("tradevet.reviewer")


def day_start_ms(ms: int) -> int:
    """Midnight UTC at or before ``ms``."""
    return ms - ms % DAY_MS


def _utc(ms: int) -> str:
    return ms_to_dt(ms).strftime("%Y-%m-%dT%H:%MZ")


class TierBudget:
    """One tier's budget. Not thread-safe: the cascade calls it from its event loop only (admission never awaits)."""

    __slots__ = ("_day", "_exhausted", "_read_at", "calls_per_day", "clock", "day_calls", "day_usd", "exhaustions",
                 "in_flight", "name", "on_event", "others", "others_calls", "others_usd", "run_calls", "run_usd",
                 "scope", "usd_per_day", "usd_per_run")

    def __init__(self, name: str, settings: BudgetSettings, *, clock: Clock,
                 on_event: Callable[[Event], None] | None = None) -> None:
        for key in ("usd_per_day", "calls_per_day", "usd_per_run"):
            v = getattr(settings, key)
            if v is not None and v <= 0:
                raise ValueError(f"budget.{key} must be > 0 (got {v})")
        self.name = name
        self.usd_per_day: float | None = settings.usd_per_day
        self.calls_per_day: int | None = settings.calls_per_day
        self.usd_per_run: float | None = settings.usd_per_run
        self.scope = settings.scope
        self.clock = clock
        self.on_event = on_event
        self._day = day_start_ms(clock.now_ms())
        self.day_calls = 0  # this run's calls and USD of the day
        self.day_usd = 0.0
        self.others: Callable[[int], tuple[int, float]] | None = None  # other runs' spend since a time (database)
        self.others_calls = 0
        self.others_usd = 0.0
        self._read_at = 0
        self.run_calls = 0
        self.run_usd = 0.0
        self.in_flight = 0
        self.exhaustions = 0  # times the tier was found exhausted (one event and one console line each)
        self._exhausted = ""  # the cap that refused the last call, "" while calls are admitted

    # ------------------------------------------------------------------------------------ public
    def seed(self, *, day_calls: int, day_usd: float, run_calls: int, run_usd: float,
             others: Callable[[int], tuple[int, float]] | None = None) -> None:
        """Start from recorded spend: this run's of today and in all; ``others(since_ms)`` reads what the other runs
        on the database spent since a time (scope database: counted in the daily caps, re-read as it goes)."""
        self.day_calls, self.day_usd = int(day_calls), float(day_usd)
        self.run_calls, self.run_usd = int(run_calls), float(run_usd)
        self.others = others if self.scope == "database" else None
        self._read_others(self.clock.now_ms())

    @property
    def used_calls(self) -> int:
        """Calls of the day the daily cap counts: this run's, and the other runs' with scope database."""
        return self.day_calls + self.others_calls

    @property
    def used_usd(self) -> float:
        return self.day_usd + self.others_usd

    @property
    def day_ms(self) -> int:
        """Start (UTC midnight) of the day the daily counters are for."""
        return self._day

    def admit(self) -> None:
        """Reserve one call. Raises: BudgetExhausted naming the cap, what is used and when the tier is back."""
        self._roll()
        if self.others is not None and self.clock.now_ms() - self._read_at >= REFRESH_S * 1000:
            self._read_others(self.clock.now_ms())
        why = self._over()
        if why:
            cap, text = why
            back = "a new run" if cap == "usd_per_run" else _utc(self._day + DAY_MS)
            message = f"budget of tier {self.name!r} exhausted: {text}; skipped until {back}"
            if self._exhausted != cap:
                self._exhausted = cap
                self.exhaustions += 1
                self._event(f"exhausted: {text}; reviews go to the next tier until {back}",
                            (("cap", cap), ("used", self._used(cap)), ("limit", self._limit(cap)),
                             ("day", _utc(self._day)), ("until", back)))
                log.warning("reviewer tier %r over budget: %s; reviews go to the next tier until %s",
                            self.name, text, back)
            raise BudgetExhausted(message)
        self.in_flight += 1

    def settle(self, cost_usd: float | None) -> None:
        """End a reserved call: ``cost_usd`` when the tier answered (a real call), None when it did not."""
        self.in_flight = max(0, self.in_flight - 1)
        if cost_usd is None:
            return
        self._roll()
        self.day_calls += 1
        self.day_usd += cost_usd
        self.run_calls += 1
        self.run_usd += cost_usd

    def snapshot(self) -> dict[str, Any]:
        """Limits and use, for the scorecard, the report and metrics (``None``: no cap of that kind)."""
        self._roll()
        return {"scope": self.scope, "day": _utc(self._day)[:10],
                "calls_per_day": self.calls_per_day, "usd_per_day": self.usd_per_day, "usd_per_run": self.usd_per_run,
                "day_calls": self.used_calls, "day_usd": self.used_usd, "run_calls": self.run_calls,
                "run_usd": self.run_usd, "exhausted": self._over() is not None, "exhaustions": self.exhaustions}

    # --------------------------------------------------------------------------------- internals
    def _over(self) -> tuple[str, str] | None:
        if self.calls_per_day is not None and self.used_calls + self.in_flight >= self.calls_per_day:
            flight = f" ({self.in_flight} in flight)" if self.in_flight else ""
            return "calls_per_day", (f"calls_per_day {self.used_calls + self.in_flight} of {self.calls_per_day} "
                                     f"used on {_utc(self._day)[:10]}{flight}{self._by_others()}")
        if self.usd_per_day is not None and self.used_usd >= self.usd_per_day:
            return "usd_per_day", (f"usd_per_day {self.used_usd:.4f} of {self.usd_per_day:g} used on "
                                   f"{_utc(self._day)[:10]}{self._by_others()}")
        if self.usd_per_run is not None and self.run_usd >= self.usd_per_run:
            return "usd_per_run", f"usd_per_run {self.run_usd:.4f} of {self.usd_per_run:g} used"
        return None

    def _by_others(self) -> str:
        return f" ({self.others_calls} calls by other runs)" if self.others_calls else ""

    def _read_others(self, now_ms: int) -> None:
        self._read_at = now_ms
        if self.others is None:
            return
        try:
            calls, usd = self.others(self._day)
        except Exception as e:  # a database hiccup must not stop the review: keep the last figures
            log.warning("reviewer tier %r: cannot read the other runs' spend (%s); keeping the last figures",
                        self.name, e)
            return
        self.others_calls, self.others_usd = int(calls), float(usd)

    def _used(self, cap: str) -> float:
        return {"calls_per_day": self.used_calls, "usd_per_day": self.used_usd, "usd_per_run": self.run_usd}[cap]

    def _limit(self, cap: str) -> float | None:
        return {"calls_per_day": self.calls_per_day, "usd_per_day": self.usd_per_day,
                "usd_per_run": self.usd_per_run}[cap]

    def _roll(self) -> None:
        day = day_start_ms(self.clock.now_ms())
        if day <= self._day:
            return  # a wall clock stepped back (NTP) keeps the day it had: the window never reopens early
        self._day, self.day_calls, self.day_usd = day, 0, 0.0
        self.others_calls, self.others_usd = 0, 0.0
        self._read_others(self.clock.now_ms())
        if self._exhausted in ("calls_per_day", "usd_per_day"):
            self._exhausted = ""
            self._event(f"back: a new UTC day ({_utc(day)[:10]}) reopens the daily budget", (("day", _utc(day)),))
            log.warning("reviewer tier %r back: a new UTC day (%s) reopens its daily budget", self.name, _utc(day)[:10])

    def _event(self, message: str, data: tuple[tuple[str, Any], ...]) -> None:
        if self.on_event is not None:
            self.on_event(Event("budget", 0, self.name, message, data))
