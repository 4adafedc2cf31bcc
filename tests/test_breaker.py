"""CircuitBreaker: every transition, one half-open probe under concurrency, neutral cancellation, invariants."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from engine.errors import BreakerOpen, TierTimeout
from reviewer.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Boom(Exception):
    pass


def make(threshold: int = 3, recovery: float = 10.0) -> tuple[CircuitBreaker, list[float], list[tuple[str, ...]]]:
    t = [0.0]
    seen: list[tuple[str, ...]] = []
    b = CircuitBreaker("t1", threshold, recovery, clock=lambda: t[0],
                       on_transition=lambda *a: seen.append(a))
    return b, t, seen


async def ok() -> str:
    return "ok"


async def fail() -> None:
    raise Boom("down")


async def fail_n(b: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(Boom):
            await b.call(fail)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def test_closed_opens_after_threshold_consecutive_failures() -> None:
    async def main() -> None:
        b, _, seen = make(threshold=3)
        await fail_n(b, 2)
        assert b.state == CLOSED and b.failures == 2
        await fail_n(b, 1)
        assert b.state == OPEN
        assert seen == [("t1", CLOSED, OPEN, "after 3 consecutive failures (last: Boom)")]

    run(main())


def test_success_resets_the_consecutive_count() -> None:
    async def main() -> None:
        b, _, _ = make(threshold=3)
        await fail_n(b, 2)
        assert await b.call(ok) == "ok"
        await fail_n(b, 2)
        assert b.state == CLOSED

    run(main())


def test_open_refuses_without_calling_and_reason_names_the_kind() -> None:
    async def main() -> None:
        b, t, seen = make(threshold=1)

        async def slow_timeout() -> None:
            raise TierTimeout("slow")

        with pytest.raises(TierTimeout):
            await b.call(slow_timeout)
        assert seen[-1][3] == "after 1 consecutive failures (last: timeout)"
        called = []

        async def probe() -> None:
            called.append(1)

        t[0] = 9.99
        with pytest.raises(BreakerOpen):
            await b.call(probe)
        with pytest.raises(BreakerOpen):
            async with b.guard():
                called.append(2)
        assert called == [] and b.state == OPEN

    run(main())


def test_half_open_after_recovery_then_probe_success_closes() -> None:
    async def main() -> None:
        b, t, seen = make(threshold=2, recovery=10.0)
        await fail_n(b, 2)
        t[0] = 10.0
        assert b.state == HALF_OPEN
        assert await b.call(ok) == "ok"
        assert b.state == CLOSED and b.failures == 0
        assert [(o, n) for _, o, n, _ in seen] == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
        assert seen[-1][3] == "probe succeeded"
        # counter really reset: one more failure does not reopen
        await fail_n(b, 1)
        assert b.state == CLOSED

    run(main())


def test_probe_failure_reopens_and_restarts_the_timer() -> None:
    async def main() -> None:
        b, t, seen = make(threshold=1, recovery=10.0)
        await fail_n(b, 1)
        t[0] = 15.0
        await fail_n(b, 1)  # the probe
        assert b.state == OPEN
        assert seen[-1][1:] == (HALF_OPEN, OPEN, "probe failed (last: Boom)")
        t[0] = 24.9  # 9.9 s after the probe failed: the timer restarted at 15, not at 0
        with pytest.raises(BreakerOpen):
            await b.call(ok)
        t[0] = 25.0
        assert await b.call(ok) == "ok"
        assert b.state == CLOSED

    run(main())


def test_exactly_one_probe_under_concurrency() -> None:
    async def main() -> None:
        b, t, _ = make(threshold=1, recovery=5.0)
        await fail_n(b, 1)
        t[0] = 5.0
        gate = asyncio.Event()
        ran = []

        async def probe() -> str:
            ran.append(1)
            await gate.wait()
            return "probed"

        tasks = [asyncio.create_task(b.call(probe)) for _ in range(50)]
        await asyncio.sleep(0)  # every task has tried to enter
        assert len(ran) == 1 and b.state == HALF_OPEN
        refused = [x for x in tasks if x.done()]
        assert len(refused) == 49
        assert all(isinstance(x.exception(), BreakerOpen) for x in refused)
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert results.count("probed") == 1
        assert b.state == CLOSED

    run(main())


def test_cancellation_is_neutral_while_closed() -> None:
    async def main() -> None:
        b, _, seen = make(threshold=2)
        await fail_n(b, 1)

        async def hang() -> None:
            await asyncio.Event().wait()

        for _ in range(5):
            task = asyncio.create_task(b.call(hang))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert b.state == CLOSED and b.failures == 1  # neither a failure nor a success
        assert seen == []

    run(main())


def test_cancelled_probe_frees_the_slot_and_decides_nothing() -> None:
    async def main() -> None:
        b, t, seen = make(threshold=1, recovery=5.0)
        await fail_n(b, 1)
        t[0] = 6.0

        async def hang() -> None:
            await asyncio.Event().wait()

        task = asyncio.create_task(b.call(hang))
        await asyncio.sleep(0)
        with pytest.raises(BreakerOpen):  # the probe slot is taken
            await b.call(ok)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert b.state == HALF_OPEN
        assert await b.call(ok) == "ok"  # the next caller is the probe
        assert b.state == CLOSED
        assert [n for _, _, n, _ in seen] == [OPEN, HALF_OPEN, CLOSED]

    run(main())


def test_timeout_inside_the_guard_is_a_failure_but_outside_it_is_neutral() -> None:
    async def main() -> None:
        b, _, _ = make(threshold=1)

        async def hang() -> None:
            await asyncio.Event().wait()

        # the outer deadline cancels the guarded call: neutral
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await b.call(hang)
        assert b.state == CLOSED
        # the tier's own deadline inside the guard: a failure
        with pytest.raises(TimeoutError):
            async with b.guard(), asyncio.timeout(0.01):
                await hang()
        assert b.state == OPEN

    run(main())


def test_late_result_of_a_call_admitted_before_opening_does_not_decide_half_open() -> None:
    async def main() -> None:
        b, t, _ = make(threshold=1, recovery=5.0)
        slow_gate = asyncio.Event()

        async def slow() -> str:
            await slow_gate.wait()
            return "late"

        slow_task = asyncio.create_task(b.call(slow))
        await asyncio.sleep(0)
        await fail_n(b, 1)
        t[0] = 5.0
        assert b.state == HALF_OPEN
        slow_gate.set()
        assert await slow_task == "late"
        assert b.state == HALF_OPEN  # only the probe may close it
        await fail_n(b, 1)  # the probe fails
        assert b.state == OPEN

    run(main())


def test_refusal_is_fast_and_never_awaits() -> None:
    b, _, _ = make(threshold=1)
    b._release(*b._admit(), Boom())
    assert b.state == OPEN
    # driving __aenter__ by hand: it must finish on the first send (no suspension point)
    coro = b.guard().__aenter__()
    with pytest.raises(BreakerOpen):
        coro.send(None)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", 0, 1.0)
    with pytest.raises(ValueError):
        CircuitBreaker("x", 1, 0.0)


# ------------------------------------------------------------------------------------------- model


def test_sequential_behaviour_matches_a_reference_model() -> None:
    """Random sequential success/failure/time sequences against a tiny reference model."""
    from hypothesis import given

    ops = st.lists(st.one_of(st.just("ok"), st.just("fail"), st.floats(0.0, 8.0)), max_size=80)

    @settings(max_examples=300, deadline=None)
    @given(ops=ops, threshold=st.integers(1, 4), recovery=st.floats(0.5, 6.0))
    def check(ops: list[str | float], threshold: int, recovery: float) -> None:
        b, t, seen = make(threshold, recovery)
        state, fails, opened = CLOSED, 0, 0.0
        for op in ops:
            if isinstance(op, float):
                t[0] += op
                continue
            # reference model
            if state == OPEN and t[0] - opened >= recovery:
                state = HALF_OPEN
            admitted = state != OPEN
            try:
                gen, probe = b._admit()
            except BreakerOpen:
                assert not admitted
                continue
            assert admitted
            assert probe == (state == HALF_OPEN)
            b._release(gen, probe, None if op == "ok" else Boom())
            if op == "ok":
                state, fails = CLOSED, 0
            elif state == HALF_OPEN:
                state, opened = OPEN, t[0]
            else:
                fails += 1
                if fails >= threshold:
                    state, fails, opened = OPEN, 0, t[0]
            assert b.state == state
        for prev, nxt in itertools.pairwise(seen):
            assert nxt[1] == prev[2]  # transitions chain
        assert all((o, n) in {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED), (HALF_OPEN, OPEN)}
                   for _, o, n, _ in seen)

    check()


class BreakerMachine(RuleBasedStateMachine):
    """Concurrent calls held open by hand: start, finish (ok / fail / cancel) in any order, advance time."""

    @initialize(threshold=st.integers(1, 4), recovery=st.floats(0.5, 5.0))
    def setup(self, threshold: int, recovery: float) -> None:
        self.t = [0.0]
        self.seen: list[tuple[str, str, str, str]] = []
        self.threshold, self.recovery = threshold, recovery
        self.b = CircuitBreaker("m", threshold, recovery, clock=lambda: self.t[0],
                                on_transition=lambda *a: self.seen.append(a))
        self.held: list[tuple[int, bool]] = []  # (generation, is_probe) of calls in flight
        self.opened_at = 0.0

    @rule(dt=st.floats(0.0, 3.0))
    def advance(self, dt: float) -> None:
        self.t[0] += dt

    @rule()
    def start(self) -> None:
        before = self.b.state
        guard = self.b.guard()
        coro = guard.__aenter__()
        try:
            coro.send(None)
        except StopIteration:
            assert before != OPEN, "an open breaker admitted a call"
            assert guard._probe == (before == HALF_OPEN)
            self.held.append((guard._gen, guard._probe))
        except BreakerOpen:
            assert before != CLOSED, "a closed breaker refused a call"
            if before == OPEN:
                assert self.t[0] - self.opened_at < self.recovery
        else:  # pragma: no cover - __aenter__ never suspends
            raise AssertionError("guard entry suspended")

    @precondition(lambda self: bool(self.held))
    @rule(i=st.integers(0, 1000), outcome=st.sampled_from(["ok", "fail", "cancel"]))
    def finish(self, i: int, outcome: str) -> None:
        gen, probe = self.held.pop(i % len(self.held))
        exc = {"ok": None, "fail": Boom(), "cancel": asyncio.CancelledError()}[outcome]
        was = self.b._state
        self.b._release(gen, probe, exc)
        if self.b._state == OPEN and was != OPEN:
            self.opened_at = self.t[0]
        if outcome == "cancel":
            assert self.b._state == was, "cancellation changed the state"

    @invariant()
    def at_most_one_probe(self) -> None:
        if not hasattr(self, "b"):
            return
        live_probes = [h for h in self.held if h[1] and h[0] == self.b._gen]
        assert len(live_probes) <= 1
        assert self.b._probing == bool(live_probes)

    @invariant()
    def closed_counts_below_threshold(self) -> None:
        if hasattr(self, "b"):
            assert self.b._state in (CLOSED, OPEN, HALF_OPEN)
            assert self.b.failures < self.threshold

    @invariant()
    def transitions_chain_and_are_legal(self) -> None:
        if not hasattr(self, "b"):
            return
        legal = {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED), (HALF_OPEN, OPEN)}
        assert all((o, n) in legal for _, o, n, _ in self.seen)
        for a, b in itertools.pairwise(self.seen):
            assert a[2] == b[1]


BreakerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=60, deadline=None)
TestBreakerMachine = BreakerMachine.TestCase
