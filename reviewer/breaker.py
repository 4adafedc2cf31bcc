"""Circuit breaker per reviewer tier: closed → open → half-open (exactly one probe) → closed, on real time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypeVar

from engine.clock import monotonic_s
from engine.errors import BreakerOpen

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "CircuitBreaker"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

T = TypeVar("T")


def _kind(exc: BaseException) -> str:
    """Failure class for the transition reason: a ReviewError's ``kind``, ``timeout``, or the type name."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    kind = getattr(exc, "kind", None)
    return kind if isinstance(kind, str) else type(exc).__name__


class CircuitBreaker:
    """Hand-written on purpose: no library admits exactly one half-open probe or treats cancellation as neutral.

    ``on_transition(name, old, new, reason)`` is called synchronously on every state change and must not raise.
    The clock measures real elapsed seconds (a provider's outage happens in real time, even during a replay).
    """

    __slots__ = ("_failures", "_gen", "_opened_at", "_probing", "_state", "clock", "failure_threshold",
                 "name", "on_transition", "recovery_timeout_s")

    def __init__(self, name: str, failure_threshold: int, recovery_timeout_s: float, *,
                 clock: Callable[[], float] = monotonic_s,
                 on_transition: Callable[[str, str, str, str], None] | None = None) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1 (got {failure_threshold})")
        if recovery_timeout_s <= 0:
            raise ValueError(f"recovery_timeout_s must be > 0 (got {recovery_timeout_s})")
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_timeout_s = recovery_timeout_s
        self.clock = clock
        self.on_transition = on_transition
        self._state = CLOSED
        self._failures = 0  # consecutive failures while closed
        self._opened_at = 0.0
        self._probing = False  # the one half-open probe is in flight
        # Every transition starts a new generation; a call admitted in an earlier one (a slow call that
        # outlived the opening) reports into the void, so only the probe can decide a half-open breaker.
        self._gen = 0

    @property
    def state(self) -> str:
        """closed | open | half_open (an expired open breaker reads, and becomes, half_open)."""
        if self._state == OPEN and self.clock() - self._opened_at >= self.recovery_timeout_s:
            self._move(HALF_OPEN, f"after {self.recovery_timeout_s:g} s open: admitting one probe")
        return self._state

    @property
    def failures(self) -> int:
        return self._failures

    def guard(self) -> _Guard:
        """``async with breaker.guard(): ...`` (or plain ``with`` around synchronous work) — raises BreakerOpen
        on entry when the call is refused."""
        return _Guard(self)

    async def call(self, fn: Callable[..., Awaitable[T]], *args: object, **kwargs: object) -> T:
        """``await breaker.call(coro_fn, ...)`` — the same as awaiting ``coro_fn(...)`` inside ``guard()``."""
        async with _Guard(self):
            return await fn(*args, **kwargs)

    # ------------------------------------------------------------------------------------- internals
    def _admit(self) -> tuple[int, bool]:
        """Admit a call or raise BreakerOpen. Returns (generation, is_probe). Synchronous: never awaits."""
        state = self.state
        if state == CLOSED:
            return self._gen, False
        if state == HALF_OPEN and not self._probing:
            self._probing = True
            return self._gen, True
        if state == OPEN:
            left = self.recovery_timeout_s - (self.clock() - self._opened_at)
            raise BreakerOpen(f"breaker {self.name!r} is open (probe in {left:.1f} s)")
        raise BreakerOpen(f"breaker {self.name!r} is half-open and its probe is in flight")

    def _release(self, gen: int, probe: bool, exc: BaseException | None) -> None:
        if probe and gen == self._gen:
            self._probing = False  # freed whatever happened: success, failure or cancellation
        if gen != self._gen:
            return
        if exc is not None and not isinstance(exc, Exception):
            return  # CancelledError (and KeyboardInterrupt, ...) is neutral: neither success nor failure
        if exc is None:
            if self._state == HALF_OPEN:
                self._move(CLOSED, "probe succeeded")
            self._failures = 0
            return
        if self._state == HALF_OPEN:
            self._open(f"probe failed (last: {_kind(exc)})")
        elif self._state == CLOSED:
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._open(f"after {self._failures} consecutive failures (last: {_kind(exc)})")

    def _open(self, reason: str) -> None:
        self._opened_at = self.clock()
        self._move(OPEN, reason)

    def _move(self, new: str, reason: str) -> None:
        old, self._state = self._state, new
        self._gen += 1
        self._probing = False
        self._failures = 0
        if self.on_transition is not None:
            self.on_transition(self.name, old, new, reason)

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state}, failures={self._failures})"


class _Guard:
    """One guarded call. ``__aenter__`` does not await, so a refused call costs a few microseconds."""

    __slots__ = ("_breaker", "_gen", "_probe")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._gen = -1
        self._probe = False

    async def __aenter__(self) -> CircuitBreaker:
        self._gen, self._probe = self._breaker._admit()
        return self._breaker

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._breaker._release(self._gen, self._probe, exc)

    # The same guard for synchronous tiers (the rules tier): ``with breaker.guard(): ...``.
    def __enter__(self) -> CircuitBreaker:
        self._gen, self._probe = self._breaker._admit()
        return self._breaker

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._breaker._release(self._gen, self._probe, exc)
