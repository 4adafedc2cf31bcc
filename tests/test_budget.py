"""Tier budgets: calls/USD per UTC day (real time, from the recorded verdicts) and USD per run; exhausted → skipped."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.app import run_replay
from engine.config import BudgetConfig, load_config
from engine.recorded.scorecard import run_scorecard
from engine.types import Verdict, VerdictKind, parse_iso_ms
from reviewer import Cascade, CircuitBreaker
from reviewer.budget import TierBudget
from reviewer.scripted import ScriptedTier
from tests.fake_llm import FakeLLM
from tests.test_cascade import FALLBACK, pack

NOON = parse_iso_ms("2026-12-02T12:00:00Z")
DAY_MS = 86_400_000


@dataclass
class FakeWall:
    """A wall clock the test moves (the budget's UTC day comes from it)."""

    ms: int = NOON

    def now_ms(self) -> int:
        return self.ms

    def advance_to(self, ms: int) -> None:
        self.ms = ms


def _config(tmp_path: Path, srv: FakeLLM, *, budget: dict[str, Any], name: str = "budget",
            db: str = "budget.db", bars: int = 700, cache: bool = True, db_url: str | None = None) -> Any:
    data = {
        "run": {"name": name, "db_url": db_url or f"sqlite:///{tmp_path / db}"},
        "market": {"synthetic": {"bars": bars}},
        "reviewer": {"cache": cache, "tiers": [
            {"name": "claude", "provider": "anthropic", "model": "claude-test", "api_key_env": "ANTHROPIC_API_KEY",
             "base_url": srv.url, "timeout_s": 3, "prices": {"input_per_mtok": 3.0, "output_per_mtok": 15.0,
                                                            "cached_input_per_mtok": 0.3},
             "budget": budget},
            {"name": "rules", "provider": "rules"}]},
    }
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump(data))
    return load_config([f])


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key-not-real")


def _reviews(db_url: str, run_id: int) -> tuple[list[Any], list[Any], Any]:
    from storage import open_storage

    store = open_storage(db_url)
    try:
        rec = store.recorder(run_id)
        return rec.load_reviews(), rec.load_events(), run_scorecard(store, run_id)
    finally:
        store.close()


def test_calls_per_day_three_answers_then_the_next_tier_then_back_after_midnight(
        tmp_path: Path, key: None, caplog: pytest.LogCaptureFixture) -> None:
    wall = FakeWall()
    with FakeLLM() as srv, caplog.at_level(logging.WARNING, logger="tradevet.reviewer"):
        # no verdict cache: the later runs see the same signals, and a cache hit would be free
        loaded = _config(tmp_path, srv, budget={"calls_per_day": 3, "scope": "database"}, cache=False)
        first = run_replay(loaded, wall=wall)
        sent_first = len(srv.requests)
        reviews, events, card = _reviews(loaded.config.run.db_url, first.run_id)
        # a restart the same day (a new run on the same database, scope database): the tier stays skipped
        wall.ms = NOON + 3_600_000
        second = run_replay(loaded, wall=wall, fresh=True)
        sent_second = len(srv.requests) - sent_first
        reviews2, events2, card2 = _reviews(loaded.config.run.db_url, second.run_id)
        # past midnight UTC: the daily budget is open again
        wall.ms = NOON + DAY_MS - 12 * 3_600_000 + 1  # 00:00:00.001 the next day
        third = run_replay(loaded, wall=wall, fresh=True)
        sent_third = len(srv.requests) - sent_first - sent_second
        reviews3, _, _ = _reviews(loaded.config.run.db_url, third.run_id)

    assert len(reviews) > 3, "the replay must review more signals than the budget allows"
    answered = [r.verdict.source for r in reviews]
    assert answered[:3] == ["claude"] * 3 and set(answered[3:]) == {"rules"}
    assert sent_first == 3
    assert all(r.verdict.reviewed_at_ms == NOON for r in reviews[:3])
    skipped = reviews[3:]
    assert all([(a.tier, a.kind) for a in r.verdict.attempts] == [("claude", "budget"), ("rules", "ok")]
               for r in skipped)
    # counted in the rates: a fall-through per skipped signal, failure kind `budget`, not a call
    assert card.tiers["claude"]["failures"] == {"budget": len(skipped)}
    assert card.tiers["claude"]["calls"] == 3 and card.tiers["claude"]["answered"] == 3
    assert card.fallthrough_rate.k == len(skipped)
    budget_events = [e for e in events if e.kind == "budget"]
    assert len(budget_events) == 1 and budget_events[0].subject == "claude"
    assert "calls_per_day 3 of 3" in budget_events[0].message
    lines = [r.getMessage() for r in caplog.records if "over budget" in r.getMessage()]
    assert len(lines) == 3 and "calls_per_day 3 of 3 used on 2026-12-02" in lines[0]  # one line per run exhausted

    assert sent_second == 0 and {r.verdict.source for r in reviews2} == {"rules"}
    assert any(e.kind == "budget" for e in events2) and card2.tiers["claude"]["failures"]["budget"] == len(reviews2)

    assert sent_third == 3 and [r.verdict.source for r in reviews3[:3]] == ["claude"] * 3

    # score: cost per day and tier, the budget's use, the budget event
    spend = card.spend
    paid = sum(r.verdict.cost_usd for r in reviews[:3])
    assert spend["by_day"] == [{"day": "2026-12-02", "tier": "claude", "calls": 3, "cost_usd": pytest.approx(paid)}]
    b = spend["budgets"]["claude"]
    assert b["caps"]["calls_per_day"] == 3 and b["used_share"] == 1.0 and b["exhausted"] == 1
    assert b["run_calls"] == 3 and b["busiest_day"] == "2026-12-02"
    assert [e["tier"] for e in spend["events"]] == ["claude"]


def test_score_and_report_show_cost_per_day_and_budgets(tmp_path: Path, key: None, db_url: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    class TickingWall(FakeWall):  # every read a minute later: calls at different times of one day
        def now_ms(self) -> int:
            self.ms += 60_000
            return self.ms

    wall = TickingWall(NOON - 6 * 3_600_000)
    with FakeLLM() as srv:
        loaded = _config(tmp_path, srv, budget={"calls_per_day": 2}, bars=600, db_url=db_url)
        res = run_replay(loaded, wall=wall)
    db = loaded.config.run.db_url
    _, _, card = _reviews(db, res.run_id)
    assert [(d["day"], d["tier"], d["calls"]) for d in card.spend["by_day"]] == [("2026-12-02", "claude", 2)]
    capsys.readouterr()
    assert main(["score", "--run", str(res.run_id), "--db", db]) == 0
    out = capsys.readouterr().out
    assert "cost on 2026-12-02 (UTC)" in out and "budget of claude" in out and "calls_per_day 2" in out
    assert "exhausted: calls_per_day 2 of 2" in out
    html = tmp_path / "r.html"
    assert main(["report", "--run", str(res.run_id), "--db", db, "--out", str(html)]) == 0
    page = html.read_text()
    assert 'id="table-cost-per-day"' in page and 'id="table-tier-budgets"' in page
    assert 'id="table-budget-events"' in page and "2026-12-02" in page


def test_metrics_show_todays_cost_and_budget_use() -> None:
    import urllib.request

    from engine.drivers.metrics import Metrics
    from engine.types import Action, Decision, Event, ReviewRecord, SliceRecord, TierAttempt

    use = {"claude": {"calls_per_day": 3, "usd_per_day": None, "usd_per_run": 1.0, "day_calls": 3, "day_usd": 0.02,
                      "run_usd": 0.5, "exhausted": True}}
    metrics = Metrics(0, budgets=lambda: use)
    try:
        p = pack()
        v = Verdict(VerdictKind.ACCEPT, 0.8, "ok", source="claude", tier="claude", cost_usd=0.25,
                    attempts=(TierAttempt("claude", True, "ok", 10.0),), reviewed_at_ms=NOON)
        skipped = Verdict(VerdictKind.ACCEPT, 0.8, "ok", source="rules", tier="rules",
                          attempts=(TierAttempt("claude", False, "budget", 0.0), TierAttempt("rules", True, "ok", 1.0)))
        d = Decision(p.signal.id, Action.EXECUTE, 100, p.signal.stop_loss, p.signal.take_profit)
        rec = SliceRecord(NOON, (), reviews=(ReviewRecord(p, v, d, "active"), ReviewRecord(p, skipped, d, "active")),
                          events=(Event("budget", NOON, "claude", "exhausted: calls_per_day 3 of 3 used"),))
        metrics.observe_slice(rec, 10_000.0, 0)
        with urllib.request.urlopen(metrics.url or "", timeout=5) as r:
            text = r.read().decode()
    finally:
        metrics.close()
    assert 'tradevet_cost_usd_today{tier="claude"} 0.25' in text
    assert 'tradevet_budget_limit{cap="calls_per_day",tier="claude"} 3.0' in text
    assert 'tradevet_budget_used{cap="usd_per_run",tier="claude"} 0.5' in text
    assert 'tradevet_budget_exhausted{tier="claude"} 1.0' in text
    assert 'tradevet_budget_events_total{event="exhausted",tier="claude"} 1.0' in text
    assert 'tradevet_tier_attempts_total{kind="budget",outcome="failure",tier="claude"} 1.0' in text
    assert 'tradevet_tier_latency_seconds_count{tier="claude"} 1.0' in text  # the refused try is not a call


def test_scope_run_counts_this_runs_spend_only(tmp_path: Path, key: None) -> None:
    wall = FakeWall()
    with FakeLLM() as srv:
        loaded = _config(tmp_path, srv, budget={"calls_per_day": 2}, bars=600, cache=False)
        run_replay(loaded, wall=wall)
        run_replay(loaded, wall=wall, fresh=True)
    assert len(srv.requests) == 4  # two runs, two calls each: the default scope is the run


def test_usd_per_run_stops_the_tier_for_the_rest_of_the_run(tmp_path: Path, key: None) -> None:
    wall = FakeWall()
    with FakeLLM() as srv:
        # one call costs ~1.5k input tokens x 3 $/Mtok: about half a cent
        loaded = _config(tmp_path, srv, budget={"usd_per_run": 0.009}, bars=600)
        res = run_replay(loaded, wall=wall)
        reviews, events, card = _reviews(loaded.config.run.db_url, res.run_id)
    paid = [r for r in reviews if r.verdict.source == "claude"]
    spent = sum(r.verdict.cost_usd for r in paid)
    assert paid and spent >= 0.009 and spent - paid[-1].verdict.cost_usd < 0.009  # stopped at the first call over
    assert card.tiers["claude"]["failures"].get("budget", 0) == len(reviews) - len(paid) > 0
    assert next(e.message for e in events if e.kind == "budget").startswith("exhausted: usd_per_run")


# ----------------------------------------------------------------------------------- the cascade alone


ACCEPT = Verdict(VerdictKind.ACCEPT, 0.7, "fine", cost_usd=0.01)


def _budgeted(wall: FakeWall, **caps: Any) -> tuple[Cascade, ScriptedTier, ScriptedTier]:
    a, b = ScriptedTier(script=[ACCEPT] * 50, name="a"), ScriptedTier(script=[ACCEPT] * 50, name="b")
    budget = TierBudget("a", BudgetConfig(**caps), clock=wall)
    breakers = {t.name: CircuitBreaker(t.name, 3, 30.0) for t in (a, b)}
    c = Cascade([a, b], breakers=breakers, deadline_s=5, fallback=FALLBACK, clock_s=time.monotonic,
                budgets={"a": budget}, wall=wall)
    return c, a, b


def test_concurrent_reviews_cannot_overshoot_calls_per_day() -> None:
    wall = FakeWall()
    c, a, b = _budgeted(wall, calls_per_day=3)
    verdicts = asyncio.run(c.review_many([pack(i) for i in range(10)]))
    assert a.calls == 3 and b.calls == 7
    assert sorted(v.source for v in verdicts) == ["a"] * 3 + ["b"] * 7
    assert c.stats["a"].failures["budget"] == 7


def test_the_day_rolls_over_at_midnight_utc_and_says_so() -> None:
    wall = FakeWall(NOON)
    c, a, _ = _budgeted(wall, usd_per_day=0.02)
    asyncio.run(c.review_many([pack(i) for i in range(4)]))
    assert a.calls == 2
    wall.ms = NOON + 11 * 3_600_000  # 23:00 the same day: still exhausted
    asyncio.run(c.review(pack(10)))
    assert a.calls == 2
    wall.ms = NOON + 12 * 3_600_000  # midnight
    v = asyncio.run(c.review(pack(11)))
    assert a.calls == 3 and v.source == "a"
    events = [e for e in c.drain_events() if e.kind == "budget"]
    assert [e.message.split(":")[0] for e in events] == ["exhausted", "back"]
    use = c.budget_use()["a"]
    assert use["day"] == "2026-12-03" and use["day_calls"] == 1 and use["run_calls"] == 3


def test_seeded_spend_keeps_an_exhausted_tier_skipped() -> None:
    wall = FakeWall()
    c, a, b = _budgeted(wall, calls_per_day=5)
    c.seed_spend(lambda tier, since, scope: (5, 0.1) if since > 0 else (9, 0.3))
    asyncio.run(c.review(pack()))
    assert (a.calls, b.calls) == (0, 1)
    assert c.budget_use()["a"]["run_calls"] == 9


def test_a_cache_hit_is_free() -> None:
    from tests.test_cascade import DictCache

    wall = FakeWall()
    c, a, _ = _budgeted(wall, calls_per_day=1)
    c.cache = DictCache()
    p = pack()
    first = asyncio.run(c.review(p))
    again = asyncio.run(c.review(p))
    assert first.source == "a" and again.source == "cache" and again.reviewed_at_ms == 0
    assert a.calls == 1 and c.budget_use()["a"]["day_calls"] == 1


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("budget", "line"), [
    ("{calls_per_day: 0}", "reviewer.tiers[0].budget.calls_per_day: must be > 0 (got 0)"),
    ("{usd_per_day: -5}", "reviewer.tiers[0].budget.usd_per_day: must be > 0 (got -5)"),
    ("{usd_per_run: 0}", "reviewer.tiers[0].budget.usd_per_run: must be > 0 (got 0)"),
    ("{usd_per_dya: 5}", "reviewer.tiers[0].budget.usd_per_dya: unknown key (known keys: usd_per_day, "
                         "calls_per_day, usd_per_run, scope); did you mean 'usd_per_day'?"),
    ("{scope: team}", "reviewer.tiers[0].budget.scope: must be one of 'run' or 'database' (got 'team')"),
])
def test_a_bad_budget_is_one_line_naming_the_key_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              budget: str, line: str) -> None:
    from engine.cli import main

    f = tmp_path / "bad.yaml"
    f.write_text(f"reviewer:\n  tiers:\n    - {{name: rules, provider: rules, budget: {budget}}}\n")
    capsys.readouterr()
    code = main(["config", "check", str(f)])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and err == [f"error: {f}: {line}"]


# ------------------------------------------------------------------------------------------- estimate


def _reviewer_file(tmp_path: Path, name: str, tiers: list[dict[str, Any]]) -> Path:
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump({"reviewer": {"tiers": tiers}}))
    return f


PRICES = {"input_per_mtok": 3.0, "output_per_mtok": 15.0, "cached_input_per_mtok": 0.3}


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_estimate_matches_the_backtest_against_the_fake_server(tmp_path: Path, key: None, provider: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.app import estimate_backtest, run_backtest
    from storage import open_storage

    monkeypatch.setenv("OPENAI_API_KEY", "test-key-not-real")
    with FakeLLM() as srv:
        srv.chaos({"accept": 0.6, "veto": 0.2, "modify": 0.2}, seed=5)
        loaded = _config(tmp_path, srv, budget={"usd_per_day": 100}, bars=900)
        recorded = run_replay(loaded)
    tier = {"name": "b", "provider": provider, "model": "model-b", "api_key_env": "ANTHROPIC_API_KEY",
            "timeout_s": 5, "prices": PRICES}
    with FakeLLM() as srv:  # a fresh server: the provider's prompt cache starts cold, as it would
        srv.chaos({"accept": 0.6, "veto": 0.2, "modify": 0.2}, seed=6)
        tier["base_url"] = srv.url if provider == "anthropic" else srv.openai_url
        f = _reviewer_file(tmp_path, "b", [tier, {"name": "rules", "provider": "rules"}])
        store = open_storage(loaded.config.run.db_url)
        try:
            est = estimate_backtest(store, recorded.run_id, [f])
            assert est is not None and len(srv.requests) == 0  # the estimate calls nothing
            result = run_backtest(store, recorded.run_id, [f])
            again = estimate_backtest(store, recorded.run_id, [f])  # every verdict is cached now
        finally:
            store.close()
        sent = len(srv.requests)
    col = est.columns[0]
    b = col.tiers[0]
    actual = result.columns[1].card.tiers["b"]
    assert b.sent == sent == actual["answered"] == est.signals > 20
    for mine, theirs in ((b.input_tokens, actual["input_tokens"]), (b.output_tokens, actual["output_tokens"]),
                         (b.cost_usd, actual["cost_usd"])):
        assert abs(mine - theirs) <= 0.05 * theirs, (mine, theirs)
    assert b.cached_tokens > 0 and abs(b.cached_tokens - actual["cached_tokens"]) <= 0.05 * actual["cached_tokens"]
    assert 0.3 < (b.cache_share or 0) < 1
    assert again is not None and again.columns[0].tiers[0].sent == 0
    assert again.columns[0].tiers[0].cache_hits == est.signals and again.cost_usd == 0


def test_estimate_passes_calls_over_budget_to_the_next_tier(tmp_path: Path, key: None) -> None:
    from engine.app import estimate_backtest
    from storage import open_storage

    with FakeLLM() as srv:
        loaded = _config(tmp_path, srv, budget={"usd_per_day": 100}, bars=700)
        recorded = run_replay(loaded)
        tier = {"name": "b", "provider": "anthropic", "model": "model-b", "api_key_env": "ANTHROPIC_API_KEY",
                "base_url": srv.url, "prices": PRICES, "budget": {"calls_per_day": 2}}
        f = _reviewer_file(tmp_path, "b", [tier, {"name": "rules", "provider": "rules"}])
        rules_only = _reviewer_file(tmp_path, "r", [{"name": "rules", "provider": "rules"}])
        store = open_storage(loaded.config.run.db_url)
        try:
            est = estimate_backtest(store, recorded.run_id, [f])
            assert estimate_backtest(store, recorded.run_id, [rules_only], only_priced=True) is None
        finally:
            store.close()
    b, rules = est.columns[0].tiers
    assert b.sent == 2 and b.over_budget == est.signals - 2 and rules.answered_free == est.signals - 2


def test_cli_estimate_then_a_confirmation_above_the_threshold(tmp_path: Path, key: None,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import sys

    import typer

    from engine.cli import main

    with FakeLLM() as srv:
        loaded = _config(tmp_path, srv, budget={"usd_per_day": 100}, bars=600)
        recorded = run_replay(loaded)
        tier = {"name": "b", "provider": "anthropic", "model": "model-b", "api_key_env": "ANTHROPIC_API_KEY",
                "base_url": srv.url, "prices": PRICES}
        f = _reviewer_file(tmp_path, "b", [tier, {"name": "rules", "provider": "rules"}])
        db = loaded.config.run.db_url
        before = len(srv.requests)
        capsys.readouterr()
        assert main(["backtest", "--run", str(recorded.run_id), "--db", db, "--reviewer", str(f), "--estimate",
                     "--json"]) == 0
        est = json.loads(capsys.readouterr().out)
        assert est["cost_usd"] > 0 and est["columns"][0]["tiers"][0]["sent"] == est["signals"]
        assert len(srv.requests) == before  # nothing sent
        # on a terminal, above the threshold: asked, and "no" spends nothing
        asked: list[str] = []
        monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
        monkeypatch.setattr(typer, "confirm", lambda text, **kw: asked.append(text) or False)
        code = main(["backtest", "--run", str(recorded.run_id), "--db", db, "--reviewer", str(f), "--no-progress",
                     "--confirm-above", "0.001"])
        err = capsys.readouterr().err
        assert code == 1 and len(asked) == 1 and "estimated to cost" in asked[0]
        assert "backtest cancelled: nothing was sent" in err and len(srv.requests) == before
        # --yes: not asked, and the backtest runs
        code = main(["backtest", "--run", str(recorded.run_id), "--db", db, "--reviewer", str(f), "--no-progress",
                     "--confirm-above", "0.001", "--yes"])
        out = capsys.readouterr().out
        assert code == 0 and len(asked) == 1 and len(srv.requests) - before == est["columns"][0]["sent"]
        assert "estimated total" in out


def test_an_interrupted_run_resumed_the_same_day_keeps_the_tier_skipped(tmp_path: Path, key: None,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.app as app
    from tests.conftest import InterruptedFeed

    wall = FakeWall()
    real = app.build_feed
    with FakeLLM() as srv:
        loaded = _config(tmp_path, srv, budget={"calls_per_day": 3}, bars=700, cache=False)  # scope: run
        monkeypatch.setattr(app, "build_feed", lambda loaded: InterruptedFeed(real(loaded), 450))
        with pytest.raises(KeyboardInterrupt):
            run_replay(loaded, wall=wall)
        before = len(srv.requests)
        monkeypatch.setattr(app, "build_feed", real)
        wall.ms += 600_000  # ten minutes later, the same UTC day
        res = run_replay(loaded, wall=wall)  # resumes the interrupted run
        after = len(srv.requests) - before
    reviews, events, card = _reviews(loaded.config.run.db_url, res.run_id)
    assert before == 3 and after == 0, "the resumed run must not call the exhausted tier again"
    assert [r.verdict.source for r in reviews].count("claude") == 3
    assert card.tiers["claude"]["failures"]["budget"] == len(reviews) - 3
    assert sum(e.kind == "budget" for e in events) == 2  # refused before the interruption, and again after it


def test_a_database_budget_sees_what_a_concurrent_run_spends_within_the_refresh_delay() -> None:
    from reviewer.budget import REFRESH_S

    wall = FakeWall()
    a, b = ScriptedTier(script=[ACCEPT] * 50, name="a"), ScriptedTier(script=[ACCEPT] * 50, name="b")
    budget = TierBudget("a", BudgetConfig(calls_per_day=5, scope="database"), clock=wall)
    c = Cascade([a, b], breakers={}, deadline_s=5, fallback=FALLBACK, clock_s=time.monotonic,
                budgets={"a": budget}, wall=wall)
    other_runs = {"calls": 1}  # what the other runs on the database have recorded today

    def spent(tier: str, since_ms: int, whose: str) -> tuple[int, float]:
        return (other_runs["calls"], 0.0) if whose == "others" else (0, 0.0)

    c.seed_spend(spent)
    asyncio.run(c.review_many([pack(i) for i in range(2)]))
    assert a.calls == 2 and c.budget_use()["a"]["day_calls"] == 3
    other_runs["calls"] = 3  # a concurrent run spent two more calls
    asyncio.run(c.review(pack(10)))
    assert a.calls == 3  # not seen yet: read again after REFRESH_S only
    wall.ms += int(REFRESH_S * 1000)
    v = asyncio.run(c.review(pack(11)))
    assert a.calls == 3 and v.source == "b"  # 3 own + 3 others' ≥ 5
    assert "calls by other runs" in next(e.message for e in c.drain_events() if e.kind == "budget")
