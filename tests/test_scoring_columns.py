"""The vectorised scorer against the per-signal scorer it replaced: the same scorecard, to the last bit.

``tests/scoring_reference.py`` is the old implementation, kept as the oracle. Every comparison is of the
JSON text of the whole scorecard: the same keys in the same order and the same doubles (a float sum taken
in another order, or a count that became a float, shows up as a different text).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from engine.recorded.columns import SignalColumns, VerdictColumns
from engine.recorded.scorecard import score, score_columns
from engine.types import (
    Action,
    ContextPack,
    Decision,
    Event,
    ExitReason,
    Outcome,
    OutcomeKind,
    RegimeInfo,
    RegimeTag,
    ReviewRecord,
    Side,
    Signal,
    TierAttempt,
    Trade,
    TradeStats,
    Verdict,
    VerdictKind,
)
from tests import scoring_reference

T0 = 1_735_689_600_000
TIERS = ("haiku", "sonnet", "rules")
KINDS = ("ok", "timeout", "cache", "breaker_open", "deadline", "cancelled", "bad_reply", "server")


def _float(rng: random.Random) -> float:
    """Awkward doubles: sums of these depend on the order they are added in."""
    return rng.choice([0.0, -0.0, 0.1, 0.2, 0.3, 1e-17, 1e16, -1e16, 2.5, -3.75, 100.0]) if rng.random() < 0.3 \
        else rng.uniform(-5, 5) * 10 ** rng.randint(-3, 3)


def _review(rng: random.Random, i: int) -> ReviewRecord:
    side = rng.choice(list(Side))
    sig = Signal(f"s{i:05d}", rng.choice(["trend", "meanrev", "breakout"]), rng.choice(["BTC/USDT", "ETH/USDT", "SOL"]),
                 side, T0 + rng.randrange(40) * 86_400_000 + rng.randrange(86_400_000), 100.0, 95.0, 110.0,
                 rng.choice([0.1, 0.05, 0.333, 1.0]), "5m")
    regime = RegimeInfo(rng.choice(list(RegimeTag)), None, None, None, 0, 0)
    pack = ContextPack(sig, (), TradeStats(0, None, 0), regime, (), (), "", rng.choice([10_000.0, 0.0, 1234.5678]))
    source = rng.choice([*TIERS, "cache", "cache", "fallback", "off"])
    attempts = tuple(TierAttempt(rng.choice(TIERS), rng.random() < 0.6, rng.choice(KINDS), abs(_float(rng)),
                                 rng.choice(["", "boom"])) for _ in range(rng.choice([0, 0, 1, 1, 2, 3])))
    kind: Any = rng.choice(list(VerdictKind))
    if rng.random() < 0.05:
        kind = str(kind)  # a verdict built by hand with a plain string: counted, but `is MODIFY` is False
    verdict = Verdict(kind, rng.random(), "why", source=source,
                      tier="" if source == "fallback" else rng.choice([*TIERS, ""]),
                      latency_ms=rng.choice([abs(_float(rng)), 0, 3]), input_tokens=rng.randrange(3000),
                      output_tokens=rng.randrange(200), cached_tokens=rng.randrange(100), cost_usd=abs(_float(rng)),
                      attempts=attempts)
    executed = rng.random() < 0.7
    decision = Decision(sig.id, Action.EXECUTE if executed else Action.SKIP,
                        rng.choice([100.0, 50.0, 10, 33.3]) if executed else 0.0, sig.stop_loss, sig.take_profit)
    return ReviewRecord(pack, verdict, decision, rng.choice(["active", "shadow"]))


def _outcomes(rng: random.Random, reviews: list[ReviewRecord]) -> list[Outcome]:
    out: list[Outcome] = []
    for r in reviews:
        sid = r.pack.signal.id
        for kind in (OutcomeKind.SHADOW, OutcomeKind.REALIZED):
            if rng.random() < 0.15:
                continue  # still open
            filled = rng.random() < 0.85
            out.append(Outcome(sid, kind, filled, _float(rng) if filled else 0.0, 0.0,
                               rng.choice(["stop", "target", "time", "end", ""]) if filled else "",
                               rng.random() < 0.1, 1, 2))
    rng.shuffle(out)
    return out


def _run(seed: int, n: int) -> tuple[list[ReviewRecord], list[Outcome], list[Trade], list[Event]]:
    rng = random.Random(seed)
    reviews = [_review(rng, i) for i in range(n)]
    trades = [Trade(f"s{i:05d}", "trend", "BTC/USDT", Side.LONG, 1.0, 100.0, 101.0, T0 + i, T0 + 10 * i,
                    _float(rng), 1.0, 0.5, 0.1, ExitReason.TARGET, 3, ambiguous=rng.random() < 0.2)
              for i in range(rng.randrange(6))]
    events = [Event("retire", T0 + 5, "reviewer", "veto precision below the floor", (("precision", 0.31),)),
              Event("breaker", T0 + 1, "haiku", "open")][: rng.randrange(3)]
    return reviews, _outcomes(rng, reviews), trades, events


def _text(card: Any) -> str:
    return json.dumps(card.to_dict())


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("estimate", [False, True])
def test_the_vectorised_scorecard_is_the_per_signal_one(seed: int, estimate: bool) -> None:
    reviews, outcomes, trades, events = _run(seed, [0, 1, 7, 60, 400, 2500][seed % 6])
    kw: dict[str, Any] = {"signals": len(reviews) + seed, "starting_equity": 10_000.0, "events": events,
                          "window_days": [14.0, 0.5, 3.0][seed % 3], "modify_estimate": estimate}
    expected = scoring_reference.score(reviews, outcomes, trades, **kw)
    got = score(reviews, outcomes, trades, **kw)
    assert _text(got) == _text(expected)
    assert got.to_dict() == expected.to_dict()


def test_columns_scored_one_at_a_time_match_score() -> None:
    """A backtest builds SignalColumns once and scores several reviewers against them."""
    reviews, outcomes, trades, events = _run(99, 800)
    signals = SignalColumns.of([r.pack for r in reviews], outcomes)
    rng = random.Random(7)
    for _ in range(3):  # other reviewers of the same signals
        other = [ReviewRecord(r.pack, _review(rng, i).verdict, r.decision, "active") for i, r in enumerate(reviews)]
        kw: dict[str, Any] = {"signals": 900, "starting_equity": 5_000.0, "events": events, "modify_estimate": True}
        got = score_columns(signals, VerdictColumns.of(other), trades, **kw)
        assert _text(got) == _text(scoring_reference.score(other, outcomes, trades, **kw))


def test_columns_of_other_lengths_are_refused() -> None:
    reviews, outcomes, _, _ = _run(3, 10)
    signals = SignalColumns.of([r.pack for r in reviews], outcomes)
    with pytest.raises(ValueError, match="9 verdicts for 10 reviewed signals"):
        score_columns(signals, VerdictColumns.of(reviews[:9]), [], signals=10, starting_equity=1.0)


def test_a_float_sum_keeps_the_order_of_the_signals() -> None:
    """1e16 + 1 − 1e16 is 0 added left to right and 1 in another order: the signal order must win."""
    reviews, _, _, _ = _run(5, 3)
    reviews = [ReviewRecord(r.pack, Verdict(VerdictKind.ACCEPT, 0.9, source="haiku", tier="haiku", cost_usd=c),
                            r.decision, "active") for r, c in zip(reviews, [1e16, 1.0, -1e16], strict=True)]
    card = score(reviews, [], [], signals=3, starting_equity=1.0)
    assert card.cost["usd"] == (1e16 + 1.0) - 1e16 == 0.0
    assert _text(card) == _text(scoring_reference.score(reviews, [], [], signals=3, starting_equity=1.0))


def test_the_scorecard_of_a_recorded_run_is_the_one_scored_from_its_reviews(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`tradevet score` scores stored rows as columns; the same run scored from its full review records agrees."""
    import json

    from engine.app import run_replay
    from engine.config import load_config
    from engine.recorded.scorecard import run_scorecard, score
    from engine.recorded.stored import load_stored
    from storage import open_storage

    url = f"sqlite:///{tmp_path / 'run.db'}"
    res = run_replay(load_config(overrides={"run": {"db_url": url}, "market": {"synthetic": {"bars": 1500}}},
                                 env={}))
    with open_storage(url) as store:
        fast = run_scorecard(store, res.run_id)
        stored = load_stored(store, res.run_id, realized=True)
        rec = store.recorder(res.run_id)
        full = score(stored.records, stored.outcomes, rec.load_trades(),
                     signals=store.table_counts(res.run_id)["signals"], starting_equity=10_000.0,
                     events=rec.load_events())
    assert fast.reviewed > 50 and fast.veto_precision is not None
    # the recorded spend (per day, budgets) is read from storage, not scored from reviews: a rules run spent nothing
    assert fast.spend == {"by_day": [], "by_tier": {}, "budgets": {}, "events": []} and full.spend == {}
    fast.spend = full.spend
    assert fast.value == {} and fast.counterfactual["replayed"] is False  # what the run's stored replays add: none
    full.value, full.counterfactual = fast.value, fast.counterfactual
    # the gate figures come from the recorded gate results, which only a recorded run has
    d_fast, d_full = fast.to_dict(), full.to_dict()
    gates = d_fast.pop("gates")  # the account's rules come first: what they refuse never reaches min_volume
    assert gates["min_volume"]["reached"] == store_signals(url, res.run_id) - gates["account"]["blocked"] > 0
    assert d_full.pop("gates") == {} and d_full.pop("warnings") == [] and isinstance(d_fast.pop("warnings"), list)
    assert json.dumps(d_fast, sort_keys=True) == json.dumps(d_full, sort_keys=True)


def store_signals(url: str, run_id: int) -> int:
    from storage import open_storage

    with open_storage(url) as store:
        return int(store.table_counts(run_id)["signals"])


@pytest.mark.parametrize("seed", range(6))
def test_the_trailing_window_counted_over_masks_is_the_window_fed_in_order(seed: int) -> None:
    """The scorecard's trailing windows (as of each retire event and the end) are what ``trailing_at`` — a
    ``TrailingWindow`` fed outcome by outcome as they close — counts, for any window and event times."""
    import numpy as np

    from engine.core.scored import trailing_at
    from engine.recorded.columns import columns
    from engine.recorded.scorecard import _trailing

    rng = random.Random(seed)
    reviews = [_review(rng, i) for i in range(rng.choice([0, 1, 50, 900]))]
    outcomes = []
    for r in reviews:
        created = r.pack.signal.created_ms
        if rng.random() < 0.9:
            closed = created + rng.choice([0, 1, 300_000, rng.randrange(10 * 86_400_000), -5])
            outcomes.append(Outcome(r.pack.signal.id, OutcomeKind.SHADOW, True, _float(rng), 0.0,
                                    rng.choice(["stop", "target", "time"]), rng.random() < 0.1, created, closed))
    c = columns(SignalColumns.of([r.pack for r in reviews], outcomes), VerdictColumns.of(reviews), True)
    for window_days in (14.0, 0.5, 3.0, 0.001, 40.0):
        times = sorted(T0 + rng.randrange(45 * 86_400_000) for _ in range(rng.randrange(5)))
        times += [times[-1]] if times and rng.random() < 0.5 else []  # two events at the same time
        idx = np.flatnonzero(c.scored).tolist()
        feed = [(int(c.shadow_closed_ms[i]), int(c.created_ms[i]), bool(c.veto[i]), bool(c.lost[i])) for i in idx]
        assert _trailing(c, window_days, times) == trailing_at(times, int(window_days * 86_400_000), feed)


def test_the_bootstrap_on_a_thread_of_its_own_gives_the_same_scorecard(monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.recorded.scorecard as sc

    reviews, outcomes, trades, events = _run(5, 2500)
    kw: dict[str, Any] = {"signals": 2600, "starting_equity": 10_000.0, "events": events, "modify_estimate": True}
    inline = _text(score(reviews, outcomes, trades, **kw))
    monkeypatch.setattr(sc, "_BOOTSTRAP_APART", 0)
    apart = _text(score(reviews, outcomes, trades, **kw))
    assert apart == inline == _text(scoring_reference.score(reviews, outcomes, trades, **kw))
    assert json.loads(apart)["modify"]["improvement"]["ci95"] is not None

