"""Clocks: the only source of "now". ``SimClock`` for replay, ``WallClock`` (the one wall-clock read)."""

from __future__ import annotations

import time
from datetime import datetime

from engine.errors import ClockError
from engine.types import ms_to_dt

__all__ = ["SimClock", "WallClock", "monotonic_s"]


class SimClock:
    """Simulated market time, advanced to each bar's close. It refuses to go backwards."""

    __slots__ = ("_now_ms",)

    def __init__(self, start_ms: int = 0) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def now(self) -> datetime:
        return ms_to_dt(self._now_ms)

    def advance_to(self, ms: int) -> None:
        """Move to ``ms``. Raises: ClockError if ``ms`` is earlier than now."""
        if ms < self._now_ms:
            raise ClockError(f"SimClock cannot go backwards: now {self._now_ms} ms, asked {ms} ms")
        self._now_ms = ms


class WallClock:
    """Real UTC time. The only place in tradevet that reads the wall clock."""

    __slots__ = ()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def now(self) -> datetime:
        return ms_to_dt(self.now_ms())

    def advance_to(self, ms: int) -> None:  # the live loop's clock moves by itself
        return None


def monotonic_s() -> float:
    """Real elapsed-time source for timeouts and circuit breakers (never market time)."""
    return time.monotonic()
