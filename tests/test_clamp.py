"""Clamp policy: whatever the verdict holds, the decision stays within the policy's bounds and a stop only
ever tightens; every bound applied is written down (DESIGN §1.6)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from engine.config import PolicyConfig
from engine.core.clamp import as_decision, clamp
from engine.types import Action, Decision, Side, Signal, Verdict, VerdictKind
from tests.conftest import make_signal

DEFAULT = PolicyConfig()


def verdict(kind: Any = VerdictKind.MODIFY, confidence: Any = 0.9, size: Any = None, sl: Any = None) -> Verdict:
    # Verdict does no validation: junk of any type reaches the clamp, as it could from a buggy tier.
    return Verdict(verdict=kind, confidence=confidence, modified_size_pct=size, modified_sl=sl)


def is_number(x: Any) -> bool:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(float(x))
    except OverflowError:
        return False


# ----------------------------------------------------------------------------------------- examples


def test_accept_executes_as_emitted() -> None:
    sig = make_signal()
    d = clamp(sig, verdict(VerdictKind.ACCEPT, 0.9, size=20, sl=99.0), DEFAULT)
    assert d == Decision(sig.id, Action.EXECUTE, 100.0, sig.stop_loss, sig.take_profit, (), "accept")


def test_veto_skips() -> None:
    sig = make_signal()
    d = clamp(sig, verdict(VerdictKind.VETO, 0.9), DEFAULT)
    assert d.action is Action.SKIP and d.reason == "veto" and d.signal_id == sig.id


def test_plain_string_kinds_are_understood() -> None:
    sig = make_signal()
    assert clamp(sig, verdict("veto", 0.9), DEFAULT).action is Action.SKIP
    assert clamp(sig, verdict("modify", 0.9, size=50), DEFAULT).size_pct == 50


@pytest.mark.parametrize("kind", [VerdictKind.VETO, VerdictKind.MODIFY, VerdictKind.ACCEPT])
@pytest.mark.parametrize("conf", [0.0, 0.29, None, "0.9", float("nan"), True, -1.0, float("-inf")])
def test_low_or_unreadable_confidence_is_the_gate_decision(kind: VerdictKind, conf: Any) -> None:
    sig = make_signal()
    d = clamp(sig, verdict(kind, conf, size=10, sl=99.0), DEFAULT)
    assert d == as_decision(sig, d.reason)
    assert (d.action, d.size_pct, d.stop_loss, d.take_profit) == (Action.EXECUTE, 100.0, sig.stop_loss,
                                                                 sig.take_profit)
    assert d.reason.startswith("low confidence") and d.reason.endswith("gate decision")


def test_confidence_at_the_threshold_counts() -> None:
    sig = make_signal()
    assert clamp(sig, verdict(VerdictKind.VETO, 0.3), DEFAULT).action is Action.SKIP
    assert clamp(sig, verdict(VerdictKind.VETO, 1), DEFAULT).action is Action.SKIP  # an int is a number


@pytest.mark.parametrize("mode", ["shadow", "off"])
def test_shadow_and_off_modes_are_the_gate_decision(mode: str) -> None:
    sig = make_signal()
    for v in (verdict(VerdictKind.VETO, 1.0), verdict(VerdictKind.MODIFY, 1.0, size=10, sl=99.0)):
        d = clamp(sig, v, DEFAULT, mode=mode)
        assert (d.action, d.size_pct, d.stop_loss) == (Action.EXECUTE, 100.0, sig.stop_loss)
        assert d.clamps == ()


@pytest.mark.parametrize("kind", ["VETO", "reject", "", None, 3, "accept ", ["veto"]])
def test_unreadable_verdict_is_the_gate_decision_and_noted(kind: Any) -> None:
    sig = make_signal()
    d = clamp(sig, verdict(kind, 0.99), DEFAULT)
    assert (d.action, d.size_pct, d.stop_loss) == (Action.EXECUTE, 100.0, sig.stop_loss)
    assert len(d.clamps) == 1 and "not understood" in d.clamps[0]


@pytest.mark.parametrize(
    ("size", "want", "note"),
    [
        (50, 50.0, None),
        (10, 10.0, None),
        (100.0, 100.0, None),
        (5, 10.0, "raised to the minimum"),
        (-30, 10.0, "raised to the minimum"),
        (0, 10.0, "raised to the minimum"),
        (150, 100.0, "lowered to the maximum"),
        (1e300, 100.0, "lowered to the maximum"),
        (float("inf"), 100.0, "not a number"),
        (float("nan"), 100.0, "not a number"),
        ("50", 100.0, "not a number"),
        (True, 100.0, "not a number"),
        (None, 100.0, None),
    ],
)
def test_modify_size_is_clamped_and_noted(size: Any, want: float, note: str | None) -> None:
    sig = make_signal()
    d = clamp(sig, verdict(VerdictKind.MODIFY, 0.8, size=size), DEFAULT)
    assert d.action is Action.EXECUTE and d.reason == "modify"
    assert d.size_pct == want
    if note is None:
        assert d.clamps == ()
    else:
        assert len(d.clamps) == 1 and note in d.clamps[0]


@pytest.mark.parametrize(
    ("side", "sl", "want"),
    [
        (Side.LONG, 97.0, 97.0),  # tighter: taken
        (Side.LONG, 95.0, 95.0),  # the same stop is allowed
        (Side.LONG, 94.0, None),  # looser: dropped
        (Side.LONG, 100.0, None),  # at the entry: not a stop
        (Side.LONG, 101.0, None),  # beyond the entry
        (Side.LONG, -5.0, None),
        (Side.SHORT, 103.0, 103.0),
        (Side.SHORT, 105.0, 105.0),
        (Side.SHORT, 106.0, None),
        (Side.SHORT, 100.0, None),
        (Side.SHORT, 99.0, None),
    ],
)
def test_modified_stop_may_only_tighten(side: Side, sl: float, want: float | None) -> None:
    sig = make_signal(side, entry=100.0)  # stop 95 (long) / 105 (short)
    d = clamp(sig, verdict(VerdictKind.MODIFY, 0.8, size=60, sl=sl), DEFAULT)
    assert d.size_pct == 60
    if want is None:
        assert d.stop_loss == sig.stop_loss
        assert len(d.clamps) == 1 and "would not tighten" in d.clamps[0] and "dropped" in d.clamps[0]
    else:
        assert d.stop_loss == want and d.clamps == ()


@pytest.mark.parametrize("sl", ["97", float("nan"), float("inf"), False, [97.0], {"sl": 97}])
def test_non_numeric_stop_is_dropped_and_noted(sl: Any) -> None:
    sig = make_signal()
    d = clamp(sig, verdict(VerdictKind.MODIFY, 0.8, sl=sl), DEFAULT)
    assert d.stop_loss == sig.stop_loss
    assert len(d.clamps) == 1 and "not a number" in d.clamps[0]


def test_both_bounds_noted() -> None:
    sig = make_signal()
    d = clamp(sig, verdict(VerdictKind.MODIFY, 0.8, size=500, sl=200.0), DEFAULT)
    assert (d.size_pct, d.stop_loss) == (100.0, sig.stop_loss)
    assert len(d.clamps) == 2


def test_custom_policy_bounds() -> None:
    policy = PolicyConfig(min_confidence=0.6, min_size_pct=25, max_size_pct=75)
    sig = make_signal()
    assert clamp(sig, verdict(VerdictKind.MODIFY, 0.8, size=10), policy).size_pct == 25
    assert clamp(sig, verdict(VerdictKind.MODIFY, 0.8, size=90), policy).size_pct == 75
    assert clamp(sig, verdict(VerdictKind.MODIFY, 0.8), policy).size_pct == 75  # no size given: the max
    assert clamp(sig, verdict(VerdictKind.VETO, 0.5), policy).action is Action.EXECUTE  # below 0.6


@pytest.mark.parametrize("field", ["confidence", "size", "sl"])
def test_clamp_survives_integers_beyond_float_range(field: str) -> None:
    """``json.loads`` turns a long digit string into an int that float() cannot hold; the clamp must not raise."""
    sig = make_signal()
    for huge in (10**400, -(10**400)):
        kw: dict[str, Any] = {"confidence": 0.9, "size": 50, "sl": 97.0}
        kw[field] = huge
        d = clamp(sig, verdict(VerdictKind.MODIFY, kw["confidence"], kw["size"], kw["sl"]), DEFAULT)
        assert d.action is Action.EXECUTE
        assert DEFAULT.min_size_pct <= d.size_pct <= DEFAULT.max_size_pct
        assert sig.stop_loss <= d.stop_loss < sig.entry


# ------------------------------------------------------------------------------------------ property

finite = st.floats(allow_nan=False, allow_infinity=False)
junk_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=12),
    st.floats(),  # includes nan, ±inf, huge, tiny, negative zero
    st.integers(min_value=-(10**300), max_value=10**300),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 0, -0.0, 5e-324]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
)
kinds = st.one_of(
    st.sampled_from(list(VerdictKind)),
    st.sampled_from(["accept", "modify", "veto", "ACCEPT", "Veto", "", "reject", "modify ", "none"]),
    st.text(max_size=10),
    st.none(),
    st.integers(),
    st.floats(),
)
confidences = st.one_of(junk_scalars, st.floats(0, 1), st.sampled_from([0.3, 0.29999, 1.0, 1, 0]))
sizes = st.one_of(junk_scalars, st.floats(-200, 300), st.integers(-200, 300))


@st.composite
def signals(draw: st.DrawFn) -> Signal:
    side = draw(st.sampled_from(list(Side)))
    entry = draw(st.floats(1e-6, 1e7))
    risk = draw(st.floats(0.001, 0.9)) * entry
    reward = draw(st.floats(0.001, 5.0)) * entry
    stop = entry - side.sign * risk
    target = entry + side.sign * reward
    assume(stop != entry and target != entry and stop > 0 and target > 0)
    return make_signal(side, entry=entry, stop=stop, target=target)


@st.composite
def stops_for(draw: st.DrawFn, sig: Signal) -> Any:
    """Junk, or a number near the signal's prices (inside, at and beyond every bound)."""
    lo, hi = sorted((sig.stop_loss, sig.entry))
    near = st.one_of(
        st.floats(lo - (hi - lo), hi + (hi - lo), allow_nan=False),
        st.sampled_from([sig.stop_loss, sig.entry, sig.take_profit, (sig.stop_loss + sig.entry) / 2, -sig.entry]),
    )
    return draw(st.one_of(junk_scalars, near))


@st.composite
def policies(draw: st.DrawFn) -> PolicyConfig:
    if draw(st.booleans()):
        return DEFAULT
    a = draw(st.floats(0.5, 100))
    b = draw(st.floats(0.5, 100))
    return PolicyConfig(min_confidence=draw(st.floats(0, 1)), min_size_pct=min(a, b), max_size_pct=max(a, b))


def understood(kind: Any) -> VerdictKind | None:
    try:
        return VerdictKind(str(kind))
    except ValueError:
        return None


@settings(max_examples=1500, deadline=None)
@given(data=st.data())
def test_any_verdict_gives_a_bounded_decision(data: st.DataObject) -> None:
    sig = data.draw(signals())
    policy = data.draw(policies())
    v = verdict(data.draw(kinds), data.draw(confidences), data.draw(sizes), data.draw(stops_for(sig)))
    d = clamp(sig, v, policy)

    assert d.signal_id == sig.id and d.take_profit == sig.take_profit
    kind = understood(v.verdict)
    conf_ok = is_number(v.confidence) and float(v.confidence) >= policy.min_confidence

    # the stop is never looser than the signal's and always on the protective side of the entry
    if sig.side is Side.LONG:
        assert sig.stop_loss <= d.stop_loss < sig.entry
    else:
        assert sig.entry < d.stop_loss <= sig.stop_loss

    if kind is None:
        assert d == as_decision(sig, d.reason, d.clamps) and len(d.clamps) == 1
        return
    if not conf_ok:
        assert d == as_decision(sig, d.reason) and d.reason.startswith("low confidence")
        return
    if kind is VerdictKind.VETO:
        assert d.action is Action.SKIP and d.clamps == ()
        return
    if kind is VerdictKind.ACCEPT:
        assert d == as_decision(sig, "accept")
        return

    # modify: bounded size and stop, and one note per bound applied
    assert d.action is Action.EXECUTE and d.reason == "modify"
    assert policy.min_size_pct <= d.size_pct <= policy.max_size_pct
    expected_notes = 0
    size = v.modified_size_pct
    if is_number(size):
        want = min(max(float(size), policy.min_size_pct), policy.max_size_pct)
        assert d.size_pct == want
        expected_notes += want != float(size)
    else:
        assert d.size_pct == policy.max_size_pct
        expected_notes += size is not None
    sl = v.modified_sl
    if is_number(sl):
        tighter = (sig.stop_loss <= sl < sig.entry) if sig.side is Side.LONG else (sig.entry < sl <= sig.stop_loss)
        assert d.stop_loss == (float(sl) if tighter else sig.stop_loss)
        expected_notes += not tighter
    else:
        assert d.stop_loss == sig.stop_loss
        expected_notes += sl is not None
    assert len(d.clamps) == expected_notes, d.clamps


@settings(max_examples=300, deadline=None)
@given(sig=signals(), conf=confidences, size=sizes, kind=kinds)
def test_with_the_default_policy_every_execution_is_within_10_and_100(sig: Signal, conf: Any, size: Any,
                                                                      kind: Any) -> None:
    d = clamp(sig, verdict(kind, conf, size, None), DEFAULT)
    if d.action is Action.EXECUTE:
        assert 10.0 <= d.size_pct <= 100.0
    else:
        assert d.action is Action.SKIP and understood(kind) is VerdictKind.VETO


@settings(max_examples=200, deadline=None)
@given(sig=signals(), kind=kinds, conf=confidences, size=sizes, mode=st.sampled_from(["shadow", "off"]))
def test_shadow_and_off_ignore_any_verdict(sig: Signal, kind: Any, conf: Any, size: Any, mode: str) -> None:
    d = clamp(sig, verdict(kind, conf, size, sig.entry), DEFAULT, mode=mode)
    assert (d.action, d.size_pct, d.stop_loss, d.take_profit, d.clamps) == (
        Action.EXECUTE, 100.0, sig.stop_loss, sig.take_profit, ())
