"""Fill rules (shared by the executor and the shadow book): slippage, cancelled entries, exits by stop /
target / time, the intra-bar conventions (stop first + ambiguous, gaps fill at the open), shorts mirror longs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.fills import check_exit, entry_blocked, slip
from engine.types import ExitReason, Side
from tests.conftest import make_bar

SLIP = 5.0  # bps
F = SLIP / 10_000


def test_slippage_is_adverse() -> None:
    assert slip(100.0, Side.LONG, True, SLIP) == pytest.approx(100.05)
    assert slip(100.0, Side.LONG, False, SLIP) == pytest.approx(99.95)
    assert slip(100.0, Side.SHORT, True, SLIP) == pytest.approx(100.05)
    assert slip(100.0, Side.SHORT, False, SLIP) == pytest.approx(99.95)
    assert slip(100.0, Side.LONG, True, 0.0) == 100.0


@pytest.mark.parametrize(
    ("side", "open_", "blocked"),
    [
        (Side.LONG, 100.0, None),
        (Side.LONG, 95.0, "stop"),  # at the stop counts as through it
        (Side.LONG, 94.0, "stop"),
        (Side.LONG, 110.0, "target"),
        (Side.LONG, 111.0, "target"),
        (Side.SHORT, 100.0, None),
        (Side.SHORT, 105.0, "stop"),
        (Side.SHORT, 106.0, "stop"),
        (Side.SHORT, 90.0, "target"),
        (Side.SHORT, 89.0, "target"),
    ],
)
def test_entry_blocked(side: Side, open_: float, blocked: str | None) -> None:
    stop, target = (95.0, 110.0) if side is Side.LONG else (105.0, 90.0)
    why = entry_blocked(side, open_, stop, target)
    if blocked is None:
        assert why is None
    else:
        assert why == f"open {open_:g} gapped through the {blocked} {stop if blocked == 'stop' else target:g}"


# ---------------------------------------------------------------------------------------- long exits


def long_exit(o: float, h: float, lo: float, c: float, held: int = 1, max_held: int = 48):  # type: ignore[no-untyped-def]
    return check_exit(Side.LONG, 95.0, 110.0, make_bar(1, o, h, lo, c), held, max_held, SLIP)


def test_no_exit_inside_the_range() -> None:
    assert long_exit(100, 109.9, 95.1, 101) is None


def test_long_stop_hit_intrabar_sells_at_the_stop_with_slippage() -> None:
    hit = long_exit(100, 101, 94, 96)
    assert hit is not None
    assert (hit.reason, hit.requested_price, hit.ambiguous, hit.gap) == (ExitReason.STOP, 95.0, False, False)
    assert hit.fill_price == pytest.approx(95.0 * (1 - F))


def test_long_stop_touched_exactly() -> None:
    hit = long_exit(100, 101, 95.0, 96)
    assert hit is not None and hit.reason is ExitReason.STOP


def test_long_target_hit_fills_at_the_target() -> None:
    hit = long_exit(100, 110.5, 99, 108)
    assert hit is not None
    assert (hit.reason, hit.requested_price, hit.fill_price, hit.ambiguous, hit.gap) == (
        ExitReason.TARGET, 110.0, 110.0, False, False)


def test_both_touched_assumes_the_stop_and_flags_ambiguous() -> None:
    hit = long_exit(100, 111, 94, 105)
    assert hit is not None
    assert hit.reason is ExitReason.STOP and hit.ambiguous and not hit.gap
    assert hit.fill_price == pytest.approx(95.0 * (1 - F))


def test_gap_through_the_stop_fills_at_the_open() -> None:
    hit = long_exit(90, 92, 89, 91)
    assert hit is not None
    assert hit.reason is ExitReason.STOP and hit.gap and not hit.ambiguous
    assert hit.requested_price == 95.0
    assert hit.fill_price == pytest.approx(90.0 * (1 - F))  # worse than the stop


def test_gap_through_the_target_fills_at_the_open() -> None:
    hit = long_exit(112, 113, 111, 112.5)
    assert hit is not None
    assert hit.reason is ExitReason.TARGET and hit.gap
    assert hit.requested_price == 110.0 and hit.fill_price == 112.0  # the better price


def test_gap_through_the_stop_wins_over_a_later_target_touch() -> None:
    hit = long_exit(94, 120, 93, 115)
    assert hit is not None and hit.reason is ExitReason.STOP and hit.gap


def test_time_stop_at_max_bars_held_at_the_close() -> None:
    assert long_exit(100, 101, 99, 100.5, held=2, max_held=3) is None
    hit = long_exit(100, 101, 99, 100.5, held=3, max_held=3)
    assert hit is not None
    assert hit.reason is ExitReason.TIME and hit.requested_price == 100.5
    assert hit.fill_price == pytest.approx(100.5 * (1 - F))


def test_stop_beats_time_stop_on_the_same_bar() -> None:
    hit = long_exit(100, 101, 94, 96, held=3, max_held=3)
    assert hit is not None and hit.reason is ExitReason.STOP


# --------------------------------------------------------------------------------------- short exits


def short_exit(o: float, h: float, lo: float, c: float, held: int = 1, max_held: int = 48):  # type: ignore[no-untyped-def]
    return check_exit(Side.SHORT, 105.0, 90.0, make_bar(1, o, h, lo, c), held, max_held, SLIP)


def test_short_exits() -> None:
    assert short_exit(100, 104.9, 90.1, 99) is None
    stop = short_exit(100, 106, 99, 104)
    assert stop is not None and stop.reason is ExitReason.STOP
    assert stop.fill_price == pytest.approx(105 * (1 + F))  # buying back: slipped up
    target = short_exit(100, 101, 89, 92)
    assert target is not None and target.reason is ExitReason.TARGET and target.fill_price == 90.0
    both = short_exit(100, 106, 89, 95)
    assert both is not None and both.reason is ExitReason.STOP and both.ambiguous
    gap = short_exit(108, 109, 107, 108)
    assert gap is not None and gap.gap and gap.fill_price == pytest.approx(108 * (1 + F))
    gap_t = short_exit(88, 89, 87, 88)
    assert gap_t is not None and gap_t.gap and gap_t.reason is ExitReason.TARGET and gap_t.fill_price == 88.0
    time = short_exit(100, 101, 99, 99.5, held=5, max_held=5)
    assert time is not None and time.reason is ExitReason.TIME
    assert time.fill_price == pytest.approx(99.5 * (1 + F))


prices = st.floats(min_value=50.0, max_value=150.0, allow_nan=False)


@settings(max_examples=400, deadline=None)
@given(o=prices, a=prices, b=prices, c=prices, stop_d=st.floats(0.5, 30), tgt_d=st.floats(0.5, 30),
       held=st.integers(1, 6), max_held=st.integers(1, 6))
def test_shorts_mirror_longs(o: float, a: float, b: float, c: float, stop_d: float, tgt_d: float, held: int,
                             max_held: int) -> None:
    """Reflect the bar around 200: a short sees exactly what the long saw (without slippage)."""
    hi, lo = max(o, a, b, c), min(o, a, b, c)
    ref = 100.0
    long_hit = check_exit(Side.LONG, ref - stop_d, ref + tgt_d, make_bar(1, o, hi, lo, c), held, max_held, 0.0)
    m = 200.0
    mirrored = make_bar(1, m - o, m - lo, m - hi, m - c)
    short_hit = check_exit(Side.SHORT, m - (ref - stop_d), m - (ref + tgt_d), mirrored, held, max_held, 0.0)
    if long_hit is None:
        assert short_hit is None
        return
    assert short_hit is not None
    assert (short_hit.reason, short_hit.ambiguous, short_hit.gap) == (long_hit.reason, long_hit.ambiguous, long_hit.gap)
    assert short_hit.fill_price == pytest.approx(m - long_hit.fill_price, abs=1e-9)
    assert short_hit.requested_price == pytest.approx(m - long_hit.requested_price, abs=1e-9)


@settings(max_examples=400, deadline=None)
@given(o=prices, a=prices, b=prices, c=prices, stop_d=st.floats(0.5, 30), tgt_d=st.floats(0.5, 30),
       slip_bps=st.floats(0, 50))
def test_long_exit_follows_the_written_rules(o: float, a: float, b: float, c: float, stop_d: float, tgt_d: float,
                                             slip_bps: float) -> None:
    """DESIGN §1.7, restated: gaps at the open first, then stop before target, then nothing."""
    hi, lo = max(o, a, b, c), min(o, a, b, c)
    stop, target = 100 - stop_d, 100 + tgt_d
    f = slip_bps / 10_000
    hit = check_exit(Side.LONG, stop, target, make_bar(1, o, hi, lo, c), 1, 48, slip_bps)
    if o <= stop:
        want = (ExitReason.STOP, o * (1 - f), False, True)
    elif o >= target:
        want = (ExitReason.TARGET, o, False, True)
    elif lo <= stop:
        want = (ExitReason.STOP, stop * (1 - f), hi >= target, False)
    elif hi >= target:
        want = (ExitReason.TARGET, target, False, False)
    else:
        assert hit is None
        return
    assert hit is not None
    assert (hit.reason, hit.ambiguous, hit.gap) == (want[0], want[2], want[3])
    assert hit.fill_price == pytest.approx(want[1], rel=1e-12)
    if hit.reason is ExitReason.STOP:
        assert hit.fill_price <= stop  # a long's stop never fills above the stop
    else:
        assert hit.fill_price >= target  # nor its target below the target
