"""Feature analysis: a field made informative by construction is flagged; with none informative, none is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.recorded.analysis import (
    analyze_facts,
    benjamini_hochberg,
    facts_of_pack,
    permutation_chi2,
)
from engine.types import (
    ContextPack,
    CorrelatedPosition,
    NewsCategory,
    NewsFlag,
    RegimeInfo,
    RegimeTag,
    Side,
    Signal,
    TradeStats,
)

_GATES = ["min_volume", "max_open_positions"]
_TAGS = [RegimeTag.TRENDING, RegimeTag.MEAN_REVERTING, RegimeTag.CHOP]
_STYLES = ["trend", "breakout", "mean_reversion"]


def _pack(i: int, rng: np.random.Generator) -> ContextPack:
    side = Side.LONG if rng.random() < 0.5 else Side.SHORT
    sig = Signal(f"s{i}", "strat", "ETH/USDT", side, 1_700_000_000_000 + i * 300_000, 100.0,
                 98.0 if side is Side.LONG else 102.0, 104.0 if side is Side.LONG else 96.0, 0.1, "5m",
                 (f"style:{_STYLES[int(rng.integers(3))]}",))
    corr = (CorrelatedPosition("BTC/USDT", side, float(rng.uniform(5, 40)), 0.9, 0.5, "other"),) \
        if rng.random() < 0.3 else ()
    news = (NewsFlag(NewsCategory.HACK, 30.0, "exchange hacked", "wire"),) if rng.random() < 0.1 else ()
    return ContextPack.build(
        signal=sig, recent_trades=(),
        trade_stats=TradeStats(10, float(rng.uniform(0.1, 0.8)), int(rng.integers(0, 8))),
        regime=RegimeInfo(_TAGS[int(rng.integers(3))], 1.0, 0.5, float(rng.uniform(0, 100)), 960, 48),
        correlated=corr, news=news,
        gate_note=f"24h quote volume {rng.uniform(1, 9):.1f}M ≥ 1M; {int(rng.integers(0, 5))}/5 slots used",
        equity=10_000.0,
    )


def _facts(n: int, seed: int, informative: bool) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        pack = json.loads(_pack(i, rng).json)
        streak = pack["trade_stats"]["loss_streak"]
        # by construction: a long loss streak loses far more often (when asked), nothing else matters
        p_loss = (0.8 if streak >= 5 else 0.45) if informative else 0.55
        lost = rng.random() < p_loss
        amb = rng.random() < 0.03
        outcome = (True, -1.0 if lost else 1.5, -1.0 if lost else 1.5, "stop" if lost else "target", amb)
        out.append(facts_of_pack(pack, _GATES, outcome, ["hack"]))
    return out


def test_a_field_informative_by_construction_is_flagged() -> None:
    a = analyze_facts(_facts(1500, 1, informative=True), permutations=999, seed=3)
    assert a.informative("all") == ["loss_streak"]
    t = a.test("loss_streak")
    assert t is not None and t.p_value is not None and t.p_value < 0.01 and t.q_value is not None
    buckets = {b.label: b for b in a.buckets["all"]["loss_streak"]}
    assert buckets["5+"].loss_rate is not None and buckets["0"].loss_rate is not None
    assert buckets["5+"].loss_rate > buckets["0"].loss_rate + 0.2
    # ambiguous outcomes are counted apart, never in a loss rate
    assert a.ambiguous > 0 and a.scored + a.ambiguous == a.reviewed
    assert sum(b.scored for b in a.buckets["all"]["loss_streak"]) == a.scored


def test_no_field_is_flagged_when_none_is_informative() -> None:
    a = analyze_facts(_facts(1500, 2, informative=False), permutations=999, seed=3)
    assert a.informative("all") == []
    assert all(not t.informative for t in a.tests)
    tested = [t for t in a.tests if t.scope == "all" and t.p_value is not None]
    assert {"regime_tag", "vol_percentile", "loss_streak", "win_rate", "correlated_exposure", "news:hack", "side",
            "style", "gate:min_volume", "gate:max_open_positions"} <= {t.field for t in tested}


def test_per_style_scopes_and_determinism() -> None:
    facts = _facts(900, 4, informative=True)
    a, b = analyze_facts(facts, permutations=199, seed=5), analyze_facts(facts, permutations=199, seed=5)
    assert a.to_dict() == b.to_dict()
    assert set(a.buckets) == {"all", *_STYLES}
    assert "style" not in a.buckets["trend"]
    # a gate note carrying a number is binned (quintiles of the number), a short list of texts is kept
    assert len(a.buckets["all"]["gate:min_volume"]) == 5
    assert {x.label for x in a.buckets["all"]["gate:max_open_positions"]} == {f"{k}/5 slots used" for k in range(5)}


def test_benjamini_hochberg_matches_the_textbook_example() -> None:
    q = benjamini_hochberg([0.01, 0.04, 0.03, 0.005])
    assert q == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert benjamini_hochberg([]) == []


def test_permutation_p_is_small_for_a_perfect_split_and_never_zero() -> None:
    codes = np.array([0] * 50 + [1] * 50)
    lost = np.array([True] * 50 + [False] * 50)
    rng = np.random.default_rng(0)
    perms = np.array([rng.permutation(lost) for _ in range(199)], dtype=float)
    chi2, p = permutation_chi2(codes, lost, perms)
    assert chi2 == pytest.approx(100.0) and p == pytest.approx(1 / 200)


def test_bad_alpha_is_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        analyze_facts([], alpha=1.5)


def test_analyze_command_on_a_recorded_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'a.db'}"
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"run: {{name: an, db_url: '{db}'}}\nmarket: {{synthetic: {{bars: 900}}}}\n", encoding="utf-8")
    assert main(["paper", "-c", str(cfg), "--json", "--no-progress"]) == 0
    card = json.loads(capsys.readouterr().out)["scorecard"]
    assert main(["analyze", "--run", "an", "--db", db, "--json", "--permutations", "199"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["reviewed"] == card["reviewed"]
    # the same predicate as the scorecard: its base loss rate's denominator is the analysis' scored count
    assert out["scored"] == card["base_loss_rate"]["n"]
    assert out["ambiguous"] == card["ambiguous"]["reviewed"]
    fields = {t["field"] for t in out["tests"] if t["scope"] == "all"}
    assert {"regime_tag", "vol_percentile", "side", "style", "gate:min_volume"} <= fields
    assert main(["analyze", "--run", "an", "--db", db]) == 0
    assert "informative fields" in capsys.readouterr().out
    page = tmp_path / "r.html"
    assert main(["report", "--run", "an", "--db", db, "--out", str(page)]) == 0
    html = page.read_text(encoding="utf-8")
    assert 'id="analysis"' in html and 'id="table-analysis"' in html and "Benjamini–Hochberg" in html


def _restrata(facts: list, k: int) -> list:
    from engine.recorded.analysis import SignalFacts

    return [SignalFacts(f.fields, f.style, f.scored, f.ambiguous, f.lost, f.r_multiple, k) for f in facts]


def test_pooled_runs_flag_what_predicts_within_runs_not_a_runs_own_loss_rate() -> None:
    from engine.recorded.analysis import SignalFacts

    rng = np.random.default_rng(11)
    facts = []
    for k, base in enumerate((0.35, 0.8)):  # two markets: one loses far more often than the other
        for f in _facts(700, 20 + k, informative=False):
            # the market shows in one field (its own quote currency), which predicts nothing within it
            fields = dict(f.fields) | {"quote": f"Q{k}"}
            lost = bool(rng.random() < base)
            facts.append(SignalFacts(fields, f.style, f.scored, f.ambiguous, lost, f.r_multiple, k))
    pooled = analyze_facts(facts, permutations=499, seed=1)
    assert "quote" not in pooled.informative("all")  # permuted within each run: the market's rate is no evidence
    naive = analyze_facts(_restrata(facts, 0), permutations=499, seed=1)
    assert "quote" in naive.informative("all")  # as one run, the same field looks informative: the test can fail
    # and a field informative within each run is found pooled, with half the signals per run
    within = _restrata(_facts(700, 31, informative=True), 0) + _restrata(_facts(700, 32, informative=True), 1)
    assert analyze_facts(within, permutations=499, seed=1).informative("all") == ["loss_streak"]


def test_analyze_command_pools_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'a.db'}"
    cards = []
    for name, seed in (("one", 1), ("two", 2)):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(f"run: {{name: {name}, db_url: '{db}', seed: {seed}}}\nmarket: {{synthetic: {{bars: 900}}}}\n",
                       encoding="utf-8")
        assert main(["paper", "-c", str(cfg), "--json", "--no-progress"]) == 0
        cards.append(json.loads(capsys.readouterr().out)["scorecard"])
    assert main(["analyze", "--run", "one", "--run", "two", "--db", db, "--json", "--permutations", "199"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in out["runs"]] == ["one", "two"] and "within each run" in out["method"]
    assert out["reviewed"] == sum(c["reviewed"] for c in cards)
    assert main(["analyze", "--run", "one", "--run", "one", "--db", db]) == 2
    assert "each run may be named once" in capsys.readouterr().err
