"""The one definition of a scored outcome and of the trailing window (engine.core.scored), against brute force."""

from __future__ import annotations

import random

import pytest

from engine.core.scored import TrailingWindow, is_finished, is_scored, trailing_at


@pytest.mark.parametrize(("filled", "exit_reason", "ambiguous", "finished", "scored"), [
    (True, "stop", False, True, True),
    (True, "target", True, True, False),  # ambiguous: finished, reported apart
    (True, "time", False, True, True),
    (True, "end", False, False, False),  # marked out at the end of the data
    (True, "", False, False, False),  # still open
    (False, "stop", False, False, False),  # never filled
])
def test_which_outcomes_are_scored(filled: bool, exit_reason: str, ambiguous: bool, finished: bool,
                                   scored: bool) -> None:
    assert is_finished(filled, exit_reason) is finished
    assert is_scored(filled, exit_reason, ambiguous) is scored


def _brute(outcomes: list[tuple[int, int, bool, bool]], t: int, window: int) -> tuple[int, int, int, int]:
    inside = [(v, lost) for closed, created, v, lost in outcomes if t - window < created <= t and closed <= t]
    return (sum(lost for v, lost in inside if v), sum(1 for v, _ in inside if v), sum(lost for _, lost in inside),
            len(inside))


@pytest.mark.parametrize("seed", range(20))
def test_the_window_fed_live_and_rebuilt_after_the_fact_are_the_brute_force_window(seed: int) -> None:
    rng = random.Random(seed)
    window = rng.choice([1, 5, 60, 600])
    outcomes = []
    for _ in range(rng.randint(0, 300)):
        created = rng.randrange(1000)
        outcomes.append((created + rng.randrange(200), created, rng.random() < 0.3, rng.random() < 0.6))
    times = sorted(rng.randrange(1300) for _ in range(25))
    live = TrailingWindow(window)
    arrivals = sorted(outcomes)  # as a replay would see them: by close time
    i = 0
    for t, rebuilt in zip(times, trailing_at(times, window, outcomes), strict=True):
        while i < len(arrivals) and arrivals[i][0] <= t:
            live.add(arrivals[i][1], arrivals[i][2], arrivals[i][3])
            i += 1
        c = live.counts(t)
        expected = _brute(outcomes, t, window)
        assert (c.veto_lost, c.vetoes, c.lost, c.scored) == expected
        assert (rebuilt.veto_lost, rebuilt.vetoes, rebuilt.lost, rebuilt.scored) == expected
        assert (c.since_ms, c.until_ms) == (t - window, t)


def test_a_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_ms must be > 0"):
        TrailingWindow(0)
