"""The retire rule against chance (engine.core.scored.retire_check) and the statistics it reads."""

from __future__ import annotations

import random
from fractions import Fraction
from math import comb

import pytest

from engine.core.scored import TrailingCounts, retire_check
from engine.stats import binom_sf, bootstrap_mean, newcombe_diff


def _brute_binom_sf(k: int, n: int, p: Fraction) -> Fraction:
    return sum((comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1)), Fraction(0))


@pytest.mark.parametrize(("k", "n", "p"), [
    (0, 5, Fraction(1, 2)), (3, 5, Fraction(1, 2)), (37, 50, Fraction(61, 94)),
    (50, 50, Fraction(2, 3)), (1, 30, Fraction(1, 100)), (31, 30, Fraction(1, 2))])
def test_the_binomial_tail_is_exact(k: int, n: int, p: Fraction) -> None:
    assert binom_sf(k, n, float(p)) == pytest.approx(float(_brute_binom_sf(k, n, p)), rel=1e-12, abs=1e-300)


def _counts(veto_lost: int, vetoes: int, lost: int, scored: int) -> TrailingCounts:
    return TrailingCounts(0, 1, veto_lost, vetoes, lost, scored)


def test_a_random_reviewer_at_a_high_base_rate_is_retired_the_old_floor_would_keep_it() -> None:
    # base 66 %: random vetoes catch ~66 % losers, above the seeds' 0.5 floor, but not above chance
    c = _counts(33, 50, 132, 200)
    check = retire_check(c, min_vetoes=50, alpha=0.05)
    assert check.retire and check.failed == ("not_significant",)
    assert check.p_value is not None and check.p_value > 0.05
    msg = check.message(14)
    assert "0.660" in msg and "33/50" in msg and "132/200" in msg and "alpha 0.05" in msg
    assert not retire_check(c, min_vetoes=50, alpha=0.99).retire  # the test is at the configured level
    assert retire_check(c, min_vetoes=50, alpha=0.99, below=0.7).failed == ("below_floor",)  # the optional floor


def test_below_the_base_rate_fails_both_tests_and_a_skilled_reviewer_keeps_its_place() -> None:
    worse = retire_check(_counts(20, 50, 130, 200), min_vetoes=50, alpha=0.05)
    assert worse.failed == ("below_base", "not_significant")
    skilled = retire_check(_counts(48, 50, 130, 200), min_vetoes=50, alpha=0.05)
    assert not skilled.retire and skilled.p_value is not None and skilled.p_value < 1e-6
    assert skilled.lift == pytest.approx(48 / 50 - 130 / 200)


def test_too_few_vetoes_never_retire() -> None:
    check = retire_check(_counts(0, 49, 100, 200), min_vetoes=50, alpha=0.05)
    assert not check.retire and not check.enough and check.to_dict()["vetoes"] == 49


def test_newcombe_interval_contains_the_difference_and_the_bootstrap_is_seeded() -> None:
    lo, hi = newcombe_diff(30, 40, 100, 200)  # type: ignore[misc]
    assert lo < 0.75 - 0.5 < hi and newcombe_diff(0, 0, 1, 2) is None
    xs = [random.Random(3).gauss(0.1, 1) for _ in range(1)] + [random.Random(i).gauss(0.1, 1) for i in range(60)]
    a, b = bootstrap_mean(xs, seed=5), bootstrap_mean(xs, seed=5)
    assert a == b and a is not None and a[0] < sum(xs) / len(xs) < a[1]
    assert bootstrap_mean(xs, seed=6) != a and bootstrap_mean([1.0], seed=1) is None
