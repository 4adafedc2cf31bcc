"""Scoring: the statistics against known values and brute force, and the scorecard against the stored rows."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from fractions import Fraction
from math import comb
from pathlib import Path
from typing import Any

import pytest

from engine.app import run_replay
from engine.cli import main
from engine.config import PolicyConfig, load_config
from engine.recorded.backtest import review_stored
from engine.recorded.scorecard import Rate, run_scorecard, score
from engine.recorded.series import realized_series, rolling_series, verdict_mix_series
from engine.recorded.stored import load_stored
from engine.stats import hypergeom_range, hypergeom_sf, wilson
from engine.types import ContextPack, ReviewRecord, Verdict, VerdictKind
from reviewer.cascade import Cascade
from reviewer.scripted import ScriptedTier

# A first tier that sometimes fails (fallthrough), a second that sometimes fails too (fallback), paid
# verdicts, a low-confidence veto and a modification: every figure of the scorecard has something to count.
FLAKY = {"tiers": [
    {"name": "flaky", "provider": "scripted", "params": {"script": [
        {"verdict": "veto", "confidence": 0.8, "rationale": "veto", "cost_usd": 0.002, "input_tokens": 900,
         "output_tokens": 40},
        {"raise": "timeout"},
        {"verdict": "modify", "confidence": 0.7, "modified_size_pct": 40, "cost_usd": 0.002, "input_tokens": 900,
         "output_tokens": 45},
        {"verdict": "accept", "confidence": 0.6, "cost_usd": 0.002, "input_tokens": 900, "output_tokens": 30},
        {"raise": "bad_reply"},
        {"verdict": "veto", "confidence": 0.2, "rationale": "unsure", "cost_usd": 0.002, "input_tokens": 900,
         "output_tokens": 30},
    ]}},
    {"name": "backup", "provider": "scripted", "params": {"script": [{"raise": "server"}, "accept", "veto"]}},
]}


def _replay(path: Path, bars: int, **over: Any) -> tuple[str, int]:
    url = f"sqlite:///{path}"
    market = {"synthetic": {"bars": bars}, **over.pop("market", {})}
    if over.get("execution", {}).get("account") == "hedging":
        market.setdefault("type", "futures")
    loaded = load_config(overrides={"run": {"db_url": url}, "market": market, **over}, env={})
    return url, run_replay(loaded).run_id


@pytest.fixture(scope="module")
def flaky_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int]:
    return _replay(tmp_path_factory.mktemp("flaky") / "run.db", 1500, reviewer=FLAKY)


# ------------------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize(("k", "n", "lo", "hi"), [
    # published Wilson score intervals (95 %, no continuity correction)
    (5, 10, 0.236593, 0.763407),
    (0, 10, 0.0, 0.277533),
    (1, 10, 0.017876, 0.404150),
    (50, 100, 0.403832, 0.596168),
    (10, 10, 0.722467, 1.0),
])
def test_wilson_interval_matches_published_values(k: int, n: int, lo: float, hi: float) -> None:
    a, b = wilson(k, n)
    assert a == pytest.approx(lo, abs=1e-6) and b == pytest.approx(hi, abs=1e-6)


def test_wilson_without_trials_is_the_whole_range() -> None:
    assert wilson(0, 0) == (0.0, 1.0)
    assert Rate(0, 0).to_dict() == {"k": 0, "n": 0, "value": None, "ci95": None}


def _brute_sf(k: int, N: int, K: int, n: int) -> Fraction:
    """P(X ≥ k) by enumerating every way to pick n of N signals of which the first K lost."""
    hits = total = 0
    for pick in itertools.combinations(range(N), n):
        total += 1
        hits += sum(1 for i in pick if i < K) >= k
    return Fraction(hits, total)


@pytest.mark.parametrize(("N", "K", "n"), [(10, 4, 3), (12, 5, 6), (12, 9, 7), (9, 0, 4), (9, 9, 4), (11, 6, 11)])
def test_hypergeometric_p_value_matches_brute_force_enumeration(N: int, K: int, n: int) -> None:
    for k in range(-1, n + 2):
        assert hypergeom_sf(k, N, K, n) == pytest.approx(float(_brute_sf(k, N, K, n)), abs=1e-12), k


def test_hypergeometric_p_value_matches_exact_fractions_on_large_runs() -> None:
    rng = random.Random(11)
    for _ in range(40):
        N = rng.randint(50, 400)
        K, n = rng.randint(0, N), rng.randint(0, N)
        k = rng.randint(0, n)
        exact = sum(Fraction(comb(K, i) * comb(N - K, n - i), comb(N, n)) for i in range(k, min(n, K) + 1))
        assert hypergeom_sf(k, N, K, n) == pytest.approx(float(exact), rel=1e-9, abs=1e-300)


def test_hypergeometric_range_holds_95_percent() -> None:
    N, K, n = 300, 170, 90
    lo, hi = hypergeom_range(N, K, n)
    inside = sum(Fraction(comb(K, i) * comb(N - K, n - i), comb(N, n)) for i in range(lo, hi + 1))
    assert inside >= Fraction(95, 100)
    assert lo <= n * K / N <= hi
    with pytest.raises(ValueError, match="hypergeometric"):
        hypergeom_sf(1, 5, 6, 2)


# ---------------------------------------------------------------------------- the scorecard vs raw SQL


def _raw_rows(url: str, run_id: int) -> list[dict[str, Any]]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT v.verdict, v.source, v.attempts, v.cost_usd, v.tier, d.action, d.size_pct, s.size_hint, "
                "s.symbol, p.json AS pack, o.filled, o.pnl_pct, o.exit_reason, o.ambiguous, r.filled AS r_filled, "
                "r.pnl_pct AS r_pnl "
                "FROM verdicts v JOIN decisions d ON d.run_id = v.run_id AND d.signal_id = v.signal_id "
                "JOIN signals s ON s.run_id = v.run_id AND s.id = v.signal_id "
                "JOIN context_packs p ON p.run_id = v.run_id AND p.signal_id = v.signal_id "
                "JOIN outcomes o ON o.run_id = v.run_id AND o.signal_id = v.signal_id AND o.kind = 'shadow' "
                "LEFT JOIN outcomes r ON r.run_id = v.run_id AND r.signal_id = v.signal_id AND r.kind = 'realized' "
                "WHERE v.run_id = :rid"), {"rid": run_id}).mappings().all()
            pnl = conn.execute(text("SELECT COALESCE(SUM(pnl), 0) FROM trades WHERE run_id = :rid"),
                               {"rid": run_id}).scalar_one()
    finally:
        engine.dispose()
    return [dict(r, trades_pnl=pnl) for r in rows]


def test_scorecard_reconciles_with_the_stored_rows(flaky_run: tuple[str, int]) -> None:
    from storage import open_storage

    url, run_id = flaky_run
    rows = _raw_rows(url, run_id)
    store = open_storage(url)
    try:
        card = run_scorecard(store, run_id)
    finally:
        store.close()

    def scored(r: dict[str, Any]) -> bool:
        return bool(r["filled"]) and r["exit_reason"] not in ("", "end") and not r["ambiguous"]

    vetoes = [r for r in rows if r["verdict"] == "veto" and scored(r)]
    population = [r for r in rows if scored(r)]
    vk, vn = sum(r["pnl_pct"] < 0 for r in vetoes), len(vetoes)
    bk, bn = sum(r["pnl_pct"] < 0 for r in population), len(population)
    assert (card.veto_precision.k, card.veto_precision.n) == (vk, vn) and vn > 20
    assert (card.base_loss_rate.k, card.base_loss_rate.n) == (bk, bn)
    accepts = [r for r in rows if r["verdict"] == "accept" and scored(r)]
    assert (card.accept_precision.k, card.accept_precision.n) == (sum(r["pnl_pct"] >= 0 for r in accepts),
                                                                  len(accepts))
    # the p-value, from exact fractions over the same counts
    exact = sum(Fraction(comb(bk, i) * comb(bn - bk, vn - i), comb(bn, vn)) for i in range(vk, min(vn, bk) + 1))
    assert card.veto_pvalue == pytest.approx(float(exact), rel=1e-9)

    fallback = sum(r["source"] == "fallback" for r in rows)
    through = sum(r["source"] == "fallback" or any(not a["ok"] for a in json.loads(r["attempts"])) for r in rows)
    assert (card.fallback_rate.k, card.fallback_rate.n) == (fallback, len(rows)) and fallback > 0
    assert (card.fallthrough_rate.k, card.fallthrough_rate.n) == (through, len(rows)) and through > fallback
    assert card.cost["usd"] == pytest.approx(sum(r["cost_usd"] for r in rows if r["source"] != "cache"))
    assert card.cost["usd"] > 0

    assert card.pnl["pnl"] == pytest.approx(rows[0]["trades_pnl"])
    # no counterfactual replays recorded yet: no reviewer-off figure is made up (the old gate-only sum is gone)
    assert card.value == {} and card.counterfactual == {"replayed": False, "how": f"tradevet value --run {run_id}"}

    # every breakdown adds back up to the whole
    for dim in ("tier", "strategy", "regime", "symbol"):
        groups = card.breakdown[dim].values()
        assert sum(g["reviewed"] for g in groups) == len(rows)
        assert sum(g["veto_precision"]["n"] for g in groups) == vn
        assert sum(g["veto_precision"]["k"] for g in groups) == vk
        assert sum(g["cost_usd"] for g in groups) == pytest.approx(card.cost["usd"])
    by_symbol = card.breakdown["symbol"]
    for sym in {r["symbol"] for r in rows}:
        mine = [r for r in vetoes if r["symbol"] == sym]
        assert by_symbol[sym]["veto_precision"]["n"] == len(mine)
    assert set(card.breakdown["tier"]) == {"flaky", "backup", "fallback"}
    assert set(card.tiers["flaky"]["failures"]) == {"timeout", "bad_reply"}
    assert set(card.tiers["backup"]["failures"]) == {"server"}
    assert card.tiers["flaky"]["answered"] + card.tiers["backup"]["answered"] + fallback == len(rows)


def test_score_json_keeps_the_old_keys_and_adds_the_new(flaky_run: tuple[str, int],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    url, run_id = flaky_run
    assert main(["score", "--run", str(run_id), "--db", url, "--json"]) == 0
    card = json.loads(capsys.readouterr().out)["scorecard"]
    for key in ("signals", "blocked", "reviewed", "executed", "verdicts", "sources", "veto_precision",
                "base_loss_rate", "random_veto_baseline", "accept_precision", "ambiguous_vetoes", "modify", "rates",
                "tiers", "pnl", "breakdown"):
        assert key in card
    assert card["random_veto"]["method"] == "hypergeometric" and 0 <= card["random_veto"]["p_value"] <= 1
    # a scripted reviewer vetoes blind: the retire rule against chance retires it (the old 0.5 floor did not)
    assert card["retired"] is True and len(card["retire"]) == 1
    check = card["retire"][0]["window"]["check"]
    assert check["retire"] and "not_significant" in check["failed"] and check["p_value"] > check["alpha"]
    assert card["lift"]["value"] == pytest.approx(card["veto_precision"]["value"] - card["base_loss_rate"]["value"])
    assert card["counterfactual"]["replayed"] is False and card["value"] == {}
    assert "gate_only_pnl" not in json.dumps(card)


# ---------------------------------------------------------------------------------- random-veto baseline


def _coin(seed: int, h: str, rate: float) -> bool:
    return int(hashlib.sha256(f"{seed}:{h}".encode()).hexdigest()[:13], 16) / 16**13 < rate


def test_a_random_vetoer_scores_the_base_rate_with_a_large_p_value(flaky_run: tuple[str, int]) -> None:
    from storage import open_storage

    url, run_id = flaky_run
    store = open_storage(url)
    try:
        stored = load_stored(store, run_id, keep_json=True)
    finally:
        store.close()

    def decide(pack: ContextPack) -> Verdict:
        veto = _coin(7, pack.hash, 0.5)
        return Verdict(VerdictKind.VETO if veto else VerdictKind.ACCEPT, 0.9, "coin")

    tier = ScriptedTier(script=decide, name="coin")
    cascade = Cascade([tier], breakers={}, deadline_s=20, fallback=Verdict(VerdictKind.ACCEPT, 0.0))
    reviews = review_stored(stored, cascade, PolicyConfig(), concurrency=64)
    assert tier.calls == len(stored.reviews)  # every pack really went through the tier
    card = score(reviews, stored.outcomes, [], signals=len(reviews), starting_equity=stored.starting_equity,
                 modify_estimate=True)
    lo, hi = card.veto_precision.interval
    assert card.veto_precision.n > 50
    assert lo <= card.base_loss_rate.value <= hi
    assert card.veto_pvalue > 0.05
    rlo, rhi = card.random_veto["range95"]
    assert rlo <= card.veto_precision.value <= rhi

    # over many seeds, the p-value of a random vetoer is not small more often than chance allows
    records = stored.records
    pvals = []
    for seed in range(40):
        coin = [ReviewRecord(r.pack, Verdict(VerdictKind.VETO if _coin(seed, r.pack.hash, 0.4) else
                                             VerdictKind.ACCEPT, 0.9), r.decision, "active") for r in records]
        pvals.append(score(coin, stored.outcomes, [], signals=len(coin), starting_equity=1.0).veto_pvalue)
    assert sum(p > 0.05 for p in pvals) >= 33, sorted(pvals)
    assert sum(pvals) / len(pvals) > 0.35

    # and the test has teeth: an oracle that vetoes exactly the losers is far beyond chance
    shadow = {o.signal_id: o for o in stored.outcomes}
    oracle = [ReviewRecord(r.pack, Verdict(VerdictKind.VETO if shadow[r.pack.signal.id].lost else VerdictKind.ACCEPT,
                                           0.9), r.decision, "active") for r in records]
    best = score(oracle, stored.outcomes, [], signals=len(oracle), starting_equity=1.0)
    assert best.veto_precision.value == 1.0 and best.veto_pvalue < 1e-9
    worst = [ReviewRecord(r.pack, Verdict(VerdictKind.ACCEPT if shadow[r.pack.signal.id].lost else VerdictKind.VETO,
                                          0.9), r.decision, "active") for r in records]
    assert score(worst, stored.outcomes, [], signals=len(worst), starting_equity=1.0).veto_pvalue > 0.999


# ------------------------------------------------------------------------------------------- series


def test_rolling_series_matches_a_brute_force_window(flaky_run: tuple[str, int]) -> None:
    from storage import open_storage

    url, run_id = flaky_run
    store = open_storage(url)
    try:
        rec = store.recorder(run_id)
        reviews, outcomes, trades = rec.load_reviews(), rec.load_outcomes(), rec.load_trades()
        card = run_scorecard(store, run_id)
    finally:
        store.close()
    window = 12 * 3_600_000
    series = rolling_series(reviews, outcomes, window_ms=window, points=50)
    assert len(series) == 50
    for pt in series[::7]:
        # the retire rule's window: signals created in (t − window, t], outcomes known (closed) by t
        inside = [r for r in reviews if pt["t_ms"] - window < r.pack.signal.created_ms <= pt["t_ms"]]
        known = [o for o in outcomes if o.closed_ms is not None and o.closed_ms <= pt["t_ms"]]
        sub = score(inside, known, [], signals=len(inside), starting_equity=1.0)
        assert pt["veto_precision"] == sub.veto_precision.to_dict()
        assert pt["base_loss_rate"] == sub.base_loss_rate.to_dict()
        assert pt["fallback"] == sub.fallback_rate.to_dict()
        assert pt["fallthrough"] == sub.fallthrough_rate.to_dict()
    mix = verdict_mix_series(reviews, buckets=30)
    assert sum(m["veto"] for m in mix) == card.verdicts["veto"]
    assert sum(m["accept"] + m["modify"] + m["veto"] for m in mix) == len(reviews)
    assert realized_series(trades, 10_000.0)[-1][1] == pytest.approx(card.pnl["final_equity"])


# --------------------------------------------------------------------------------------------- retire


def test_retire_event_is_in_the_scorecard_the_run_row_and_score_output(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from storage import open_storage

    url, run_id = _replay(tmp_path / "r.db", 2000,
                          scoring={"retire": {"below": 1.0, "min_vetoes": 1, "window_days": 30}})
    store = open_storage(url)
    try:
        assert store.get_run(run_id).reviewer_mode == "shadow"  # set when the replay ended
        card = run_scorecard(store, run_id)
    finally:
        store.close()
    assert card.retired and len(card.retire) == 1 and "shadow mode" in card.retire[0]["message"]
    assert card.events.get("retire") == 1
    assert main(["score", "--run", str(run_id), "--db", url]) == 0
    out = capsys.readouterr().out
    assert "reviewer retired" in out and "shadow mode" in out


def test_the_retire_event_and_the_scorecard_count_the_same_window(tmp_path: Path) -> None:
    """The live retire rule and the scorecard read one definition (engine.core.scored): the event's figures,
    the scorecard's window recomputed at the event's time from the stored rows, and DESIGN §4 spelled out here
    by brute force are the same numbers. A short window (6 h, trades of up to 4 h) makes its edges matter."""
    from engine.core.scored import is_scored
    from engine.types import OutcomeKind
    from storage import open_storage

    window_days = 0.25
    # a hedging futures account: every signal is reviewed, so the window holds enough vetoes to retire on
    url, run_id = _replay(tmp_path / "r.db", 2000, execution={"account": "hedging"},
                          scoring={"retire": {"below": 1.0, "min_vetoes": 16, "window_days": window_days}})
    with open_storage(url) as store:
        rec = store.records(run_id)
        reviews, outcomes, events = rec.load_reviews(), rec.load_outcomes(), rec.load_events()
        card = run_scorecard(store, run_id)
    (event,) = [e for e in events if e.kind == "retire"]
    data = dict(event.data)
    t = event.at_ms
    shadow = {o.signal_id: o for o in outcomes if o.kind is OutcomeKind.SHADOW}
    inside = [(r, shadow[r.pack.signal.id]) for r in reviews
              if t - window_days * 86_400_000 < r.pack.signal.created_ms <= t and r.pack.signal.id in shadow]
    scored = [(r, o) for r, o in inside if is_scored(o.filled, o.exit_reason, o.ambiguous) and o.closed_ms <= t]
    vetoes = [o for r, o in scored if r.verdict.verdict is VerdictKind.VETO]
    assert len(vetoes) >= 16
    window = card.retire[0]["window"]
    assert (data["vetoes"], data["vetoes_lost"]) == (len(vetoes), sum(o.pnl_pct < 0 for o in vetoes)) == \
           (window["veto_precision"]["n"], window["veto_precision"]["k"])
    assert (data["scored"], data["lost"]) == (len(scored), sum(o.pnl_pct < 0 for _, o in scored)) == \
           (window["base_loss_rate"]["n"], window["base_loss_rate"]["k"])
    assert data["precision"] == window["veto_precision"]["value"]


# --------------------------------------------------------------------------------- by hand, every case


def _record(sid: str, verdict: str, action: str, size_pct: float, source: str = "rules") -> ReviewRecord:
    from engine.types import Action, Decision
    from tests.conftest import make_pack, make_signal

    sig = make_signal(sid=sid, size_hint=0.1)
    return ReviewRecord(make_pack(sig, equity=10_000.0),
                        Verdict(VerdictKind(verdict), 0.0 if source == "fallback" else 0.8, source=source,
                                tier="" if source == "fallback" else source),
                        Decision(sid, Action(action), size_pct, sig.stop_loss, sig.take_profit, (), verdict), "active")


def test_a_hand_built_scorecard() -> None:
    from engine.types import Outcome, OutcomeKind

    def shadow(sid: str, pnl: float | None, exit_reason: str = "stop", ambiguous: bool = False) -> Outcome:
        if pnl is None:
            return Outcome(sid, OutcomeKind.SHADOW, False, note="entry cancelled")
        return Outcome(sid, OutcomeKind.SHADOW, True, pnl, 0.0, exit_reason, ambiguous, 1, 2)

    def real(sid: str, pnl: float | None, exit_reason: str = "stop") -> Outcome:
        if pnl is None:
            return Outcome(sid, OutcomeKind.REALIZED, False, note="no fill")
        return Outcome(sid, OutcomeKind.REALIZED, True, pnl, 0.0, exit_reason, False, 1, 2)

    reviews = [
        _record("s1", "veto", "skip", 0), _record("s2", "veto", "skip", 0), _record("s3", "veto", "skip", 0),
        _record("s4", "accept", "execute", 100), _record("s5", "modify", "execute", 50),
        _record("s6", "modify", "execute", 40), _record("s7", "accept", "execute", 100),
        _record("s8", "accept", "execute", 100, source="fallback"),
    ]
    outcomes = [
        shadow("s1", -2.0), shadow("s2", 1.0, "target"), shadow("s3", -1.5, ambiguous=True),
        shadow("s4", 3.0, "target"), real("s4", 3.0, "target"), shadow("s5", -4.0), real("s5", -4.0),
        shadow("s6", 5.0, "target"), real("s6", 5.0, "target"), shadow("s7", 0.5, "end"), real("s7", 0.5, "end"),
        shadow("s8", None), real("s8", None),
    ]
    card = score(reviews, outcomes, [], signals=10, starting_equity=10_000.0)
    assert (card.signals, card.blocked, card.reviewed, card.executed) == (10, 2, 8, 5)
    assert (card.veto_precision.k, card.veto_precision.n) == (1, 2)  # s1 lost, s2 won; s3 ambiguous: apart
    assert (card.base_loss_rate.k, card.base_loss_rate.n) == (2, 5)  # s1 s2 s4 s5 s6; s7 marked out, s8 unfilled
    assert (card.accept_precision.k, card.accept_precision.n) == (1, 1)  # s4 (s8 is the fallback's, unscored)
    assert card.ambiguous_vetoes == 1
    assert card.ambiguous["veto_precision_with_ambiguous"]["k"] == 2
    assert card.ambiguous["veto_precision_with_ambiguous"]["n"] == 3
    assert card.veto_pvalue == pytest.approx(0.7)  # 1 − C(3,2)/C(5,2)
    assert card.modify_loss_avoided_pct == pytest.approx(2.0)  # s5: 50 % × −4 − (−4)
    assert card.modify_gain_given_up_pct == pytest.approx(3.0)  # s6: 5 − 40 % × 5
    assert (card.modify["losers"], card.modify["winners"]) == (1, 1)
    assert (card.fallback_rate.k, card.fallback_rate.n) == (1, 8)
    # the modify improvement per trade: s5 avoided 2.0, s6 gave up 3.0 → mean −0.5, with a bootstrap interval
    imp = card.modify["improvement"]
    assert imp["n"] == 2 and imp["mean_pct"] == pytest.approx(-0.5) and imp["ci95"][0] <= -0.5 <= imp["ci95"][1]
    estimate = score(reviews, [o for o in outcomes if o.kind is OutcomeKind.SHADOW], [], signals=10,
                     starting_equity=10_000.0, modify_estimate=True)
    assert estimate.modify_loss_avoided_pct == pytest.approx(2.0) and estimate.modify_gain_given_up_pct == 3.0
