"""Backtests of verdict quality and signal transfer: side by side, from the cache, across databases, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from engine.app import run_backtest, run_replay
from engine.cli import main
from engine.config import load_config
from engine.recorded.backtest import prefetch_cache, review_stored
from engine.recorded.scorecard import run_scorecard
from engine.recorded.stored import load_stored
from engine.types import (
    Action,
    ContextPack,
    Outcome,
    OutcomeKind,
    RegimeInfo,
    RegimeTag,
    ReviewRecord,
    Side,
    Signal,
    SliceRecord,
    TradeStats,
    TradeSummary,
    Verdict,
    VerdictKind,
)

LLM = """\
reviewer:
  tiers:
    - name: llm
      provider: scripted
      params:
        script:
          - {verdict: veto, confidence: 0.8, rationale: too risky, cost_usd: 0.003, input_tokens: 1200,
             output_tokens: 50}
          - {verdict: accept, confidence: 0.7, cost_usd: 0.003, input_tokens: 1200, output_tokens: 30}
          - {verdict: modify, confidence: 0.6, modified_size_pct: 50, cost_usd: 0.003, input_tokens: 1200,
             output_tokens: 60}
"""
STRICT = """\
reviewer:
  tiers:
    - {name: strict, provider: rules, params: {veto_streak: 3, modify_streak: 2, corr_veto_pct: 20}}
policy: {min_confidence: 0.5}
"""


@pytest.fixture(scope="module")
def src(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int, Path]:
    """A recorded demo run (rules reviewer) and a folder with two reviewer configs."""
    d = tmp_path_factory.mktemp("bt")
    url = f"sqlite:///{d / 'src.db'}"
    loaded = load_config(overrides={"run": {"db_url": url}, "market": {"synthetic": {"bars": 1500}}}, env={})
    run_id = run_replay(loaded).run_id
    (d / "llm.yaml").write_text(LLM, encoding="utf-8")
    (d / "strict.yaml").write_text(STRICT, encoding="utf-8")
    return url, run_id, d


def _backtest_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert main(["backtest", *args, "--json", "--no-progress"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _quality(card: dict[str, Any]) -> dict[str, Any]:
    """The verdict-quality figures (what does not depend on who answered, when, or how fast)."""
    return {k: card[k] for k in ("verdicts", "veto_precision", "base_loss_rate", "random_veto", "accept_precision",
                                 "modify", "ambiguous", "counterfactual")} | {
        "breakdown": {d: {g: {k: v for k, v in f.items() if not k.startswith(("latency", "cost", "input", "output"))}
                          for g, f in card["breakdown"][d].items()} for d in ("strategy", "regime", "symbol")}}


# ------------------------------------------------------------------------------------------ backtest


def test_two_reviewers_side_by_side_and_the_second_run_comes_from_the_cache(
        src: tuple[str, int, Path], capsys: pytest.CaptureFixture[str]) -> None:
    url, run_id, d = src
    args = ["--run", str(run_id), "--db", url, "--reviewer", str(d / "llm.yaml"), "--reviewer", str(d / "strict.yaml")]
    first = _backtest_json(capsys, *args)
    names = [c["name"] for c in first["columns"]]
    assert names == ["recorded", "llm", "strict"]
    n = first["signals"]
    llm, strict = first["columns"][1]["scorecard"], first["columns"][2]["scorecard"]
    assert llm["sources"] == {"llm": n} and strict["sources"] == {"strict": n}
    assert llm["cost"]["usd"] == pytest.approx(0.003 * n) and llm["tiers"]["llm"]["input_tokens"] == 1200 * n
    assert {"veto", "accept", "modify"} <= set(llm["verdicts"])
    # every column is judged against the same stored shadow outcomes
    assert llm["base_loss_rate"] == strict["base_loss_rate"] == first["columns"][0]["scorecard"]["base_loss_rate"]
    assert llm["counterfactual"] == strict["counterfactual"] == {}  # no replays in a backtest: no made-up money

    second = _backtest_json(capsys, *args)
    for before, after in zip(first["columns"][1:], second["columns"][1:], strict=True):
        card = after["scorecard"]
        assert card["sources"] == {"cache": n}, after["name"]
        assert card["cost"]["usd"] == 0 and card["cost"]["cache_hits"] == n
        assert card["latency"]["p95_ms"] < 5.0  # a dict lookup, not a model call
        assert all(t["calls"] == 0 for t in card["tiers"].values())
        assert _quality(card) == _quality(before["scorecard"]), after["name"]

    # the table: one column per reviewer, the figures as rows
    assert main(["backtest", *args, "--no-progress"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "recorded" in line)
    assert "llm" in header and "strict" in header
    for label in ("verdict mix", "veto precision", "p-value", "base loss rate", "accept precision",
                  "modify estimate", "fallthrough", "fallback", "cost $", "latency p50 / p95", "cache"):
        assert label in out, label


def test_a_cached_backtest_reads_the_database_in_bulk(src: tuple[str, int, Path]) -> None:
    from sqlalchemy import event

    from storage import open_storage

    url, run_id, d = src
    store = open_storage(url)
    statements: list[str] = []
    try:
        run_backtest(store, run_id, [d / "strict.yaml"])  # fills the cache (if an earlier test did not)
        event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        result = run_backtest(store, run_id, [d / "strict.yaml"])
    finally:
        store.close()
    n = result.signals
    assert result.columns[1].card.sources == {"cache": n}
    # one query for the reviews, a few for outcomes/run rows, one per 500 hashes for the cache: not one per signal
    assert len(statements) < 20 < n, statements


def test_pack_refs_hold_what_the_full_pack_holds(src: tuple[str, int, Path]) -> None:
    from storage import open_storage

    url, run_id, _ = src
    store = open_storage(url)
    try:
        stored = load_stored(store, run_id, keep_json=True)
        full = {r.pack.signal.id: r.pack for r in store.recorder(run_id).load_reviews()}
    finally:
        store.close()
    assert len(stored.reviews) == len(full) > 0
    for ref in stored.reviews.packs:
        f = full[ref.signal.id]
        assert (ref.hash, ref.json, ref.equity, ref.regime_tag) == (f.hash, f.json, f.equity, f.regime_tag)
        assert ContextPack.from_json(ref.json).hash == ref.hash
        s, g = ref.signal, f.signal
        assert (s.id, s.strategy_id, s.symbol, s.side, s.created_ms) == (g.id, g.strategy_id, g.symbol, g.side,
                                                                         g.created_ms)
        assert s.size_hint == pytest.approx(g.size_hint, rel=1e-11)


def test_cache_hits_and_full_reviews_give_the_same_verdicts(src: tuple[str, int, Path]) -> None:
    from engine.app import build_reviewer
    from storage import open_storage

    url, run_id, d = src
    store = open_storage(url)
    try:
        loaded = load_config([d / "strict.yaml"], env={})
        stored = load_stored(store, run_id)
        fresh = build_reviewer(loaded.config.reviewer, cache=None)  # no cache: every pack rebuilt and reviewed
        direct = review_stored(stored, fresh, loaded.config.policy, reader=store, concurrency=50)
        cascade = build_reviewer(loaded.config.reviewer, cache=None)
        cache = prefetch_cache(store, [("strict", t.model, t.prompt_version) for t in cascade.tiers], run_id,
                               [p.hash for p in stored.reviews.packs])
        cascade.cache = cache
        via_cache = review_stored(stored, cascade, loaded.config.policy, reader=store)
    finally:
        store.close()
    assert [(r.verdict.verdict, r.verdict.confidence, r.decision) for r in direct] == \
           [(r.verdict.verdict, r.verdict.confidence, r.decision) for r in via_cache]
    assert {r.verdict.source for r in direct} == {"strict"}


def test_an_altered_pack_is_refused(src: tuple[str, int, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from sqlalchemy import create_engine, text

    url, run_id, d = src
    copy = tmp_path / "altered.db"
    shutil.copy(url.removeprefix("sqlite:///"), copy)
    engine = create_engine(f"sqlite:///{copy}")
    with engine.begin() as conn:
        sid = conn.execute(text("SELECT signal_id FROM context_packs WHERE run_id = :r LIMIT 1 OFFSET 3"),
                           {"r": run_id}).scalar_one()
        conn.execute(text("UPDATE context_packs SET json = replace(json, '\"equity\":', '\"equity\": ') "
                          "WHERE run_id = :r AND signal_id = :s"), {"r": run_id, "s": sid})
    engine.dispose()
    code = main(["backtest", "--run", str(run_id), "--db", f"sqlite:///{copy}", "--reviewer", str(d / "strict.yaml"),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 4 and sid in err and "does not match its stored hash" in err


def test_reviewer_files_are_checked(src: tuple[str, int, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    url, run_id, _ = src
    base = ["backtest", "--run", str(run_id), "--db", url, "--no-progress"]
    assert main(base) == 2
    assert "--reviewer: expected at least one" in capsys.readouterr().err
    (tmp_path / "none.yaml").write_text("policy: {min_confidence: 0.4}\n", encoding="utf-8")
    assert main([*base, "--reviewer", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: expected a `reviewer:` section" in capsys.readouterr().err
    (tmp_path / "typo.yaml").write_text("reviewer:\n  deadlin_s: 3\n", encoding="utf-8")
    assert main([*base, "--reviewer", str(tmp_path / "typo.yaml")]) == 2
    err = capsys.readouterr().err
    assert "typo.yaml" in err and "reviewer.deadlin_s" in err and "did you mean 'deadline_s'" in err
    assert main([*base, "--reviewer", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    (tmp_path / "tier.yaml").write_text("reviewer:\n  tiers: [{name: x, provider: anthropik}]\n", encoding="utf-8")
    assert main([*base, "--reviewer", str(tmp_path / "tier.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'tier.yaml'}: reviewer.tiers[0].provider: unknown tier provider "
                          "'anthropik'") and err.count("\n") == 1


# ---------------------------------------------------------------------------------- export / import


def test_export_import_backtest_gives_the_same_scorecard(src: tuple[str, int, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from storage import open_storage

    url, run_id, d = src
    out = tmp_path / "signals.jsonl"
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert main(["signals", "export", "--run", str(run_id), "--db", url, "--out", str(out)]) == 0
    assert "exported run" in capsys.readouterr().out
    assert main(["signals", "import", str(out), "--db", other, "--name", "elsewhere", "--json"]) == 0
    new_id = json.loads(capsys.readouterr().out)["run_id"]
    header = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert header["format"] == "tradevet-signals" and header["version"] == 1

    args = ["--reviewer", str(d / "strict.yaml"), "--reviewer", str(d / "llm.yaml")]
    here = _backtest_json(capsys, "--run", str(run_id), "--db", url, *args)
    there = _backtest_json(capsys, "--run", "elsewhere", "--db", other, *args)
    assert here["signals"] == there["signals"] > 0
    for a, b in zip(here["columns"], there["columns"], strict=True):
        if a["name"] == "llm":  # a scripted tier answers by call order: compare where both come from one cache
            continue
        assert _quality(a["scorecard"]) == _quality(b["scorecard"]), a["name"]

    # the imported run scores like the original: verdicts, outcomes, trades and fills all came along
    src_store, dst_store = open_storage(url), open_storage(other)
    try:
        a_card, b_card = run_scorecard(src_store, run_id).to_dict(), run_scorecard(dst_store, new_id).to_dict()
        for key in ("signals", "blocked", "reviewed", "executed", "verdicts", "veto_precision", "base_loss_rate",
                    "pnl", "counterfactual", "modify", "rates", "tiers", "breakdown"):
            assert a_card[key] == b_card[key], key
        assert b_card["events"].get("import") == 1
        run = dst_store.get_run(new_id)
        assert (run.status, run.name) == ("finished", "elsewhere")
        # the bars behind every outcome came along: from the signal's bar to the outcome's close
        src_rec, dst_rec = src_store.recorder(run_id), dst_store.recorder(new_id)
        dst_bars = {(b.symbol, b.close_ms) for b in dst_rec.load_bars()}
        signals = {s.id: s for s in src_rec.load_signals()}
        for o in src_rec.load_outcomes():
            if not o.filled:
                continue
            sig = signals[o.signal_id]
            needed = {(b.symbol, b.close_ms) for b in src_rec.load_bars(sig.symbol, since_ms=sig.created_ms)
                      if b.close_ms <= (o.closed_ms or 0)}
            assert needed <= dst_bars, o.signal_id
    finally:
        src_store.close()
        dst_store.close()


@pytest.fixture(scope="module")
def exported(src: tuple[str, int, Path], tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    url, run_id, _ = src
    out = tmp_path_factory.mktemp("exp") / "run.jsonl"
    assert main(["signals", "export", "--run", str(run_id), "--db", url, "--out", str(out)]) == 0
    return out.read_text(encoding="utf-8").splitlines()


def _first(lines: list[str], kind: str, pred: Any = lambda o: True) -> int:
    return next(i for i, line in enumerate(lines) if json.loads(line).get("type") == kind and pred(json.loads(line)))


def _edit_verdict(o: dict[str, Any]) -> dict[str, Any]:
    o["review"]["verdict"]["confidence"] = "high"
    return o


def _edit_pack(o: dict[str, Any]) -> dict[str, Any]:
    o["review"]["pack"]["json"] = o["review"]["pack"]["json"].replace('"equity":', '"equity":1', 1)
    return o


def _drop_close(o: dict[str, Any]) -> dict[str, Any]:
    del o["close"]
    return o


def _bad_trade(o: dict[str, Any]) -> dict[str, Any]:
    o["signal_id"] = "nobody"
    return o


BAD_LINES = [
    ("header", lambda ls: 0, lambda o: {"format": "other"}, 'expected a header line with "format"'),
    ("version", lambda ls: 0, lambda o: o | {"version": 2}, "expected format version 1, found 2"),
    ("not json", lambda ls: _first(ls, "signal"), None, "expected one JSON object per line"),
    ("type", lambda ls: _first(ls, "bar"), lambda o: o | {"type": "tick"}, "type: expected one of bar, signal"),
    ("number", lambda ls: _first(ls, "signal", lambda o: o["review"]), _edit_verdict,
     "review.verdict.confidence: expected a number, found 'high'"),
    ("pack hash", lambda ls: _first(ls, "signal", lambda o: o["review"]), _edit_pack,
     "review.pack.hash: the pack's JSON hashes to"),
    ("missing", lambda ls: _first(ls, "bar"), _drop_close, "bar: missing key 'close'"),
    ("reference", lambda ls: _first(ls, "trade"), _bad_trade,
     "trade.signal_id: expected a reviewed signal of this file, found 'nobody'"),
    ("enum", lambda ls: _first(ls, "signal"), lambda o: o | {"signal": o["signal"] | {"side": "sideways"}},
     "signal.side: expected one of long, short, found 'sideways'"),
]


@pytest.mark.parametrize(("case", "where", "edit", "message"), BAD_LINES, ids=[c[0] for c in BAD_LINES])
def test_bad_jsonl_lines_name_the_file_line_and_what_was_expected(
        case: str, where: Any, edit: Any, message: str, exported: list[str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from storage import open_storage

    lines = list(exported)
    i = where(lines)
    lines[i] = "{not json" if edit is None else json.dumps(edit(json.loads(lines[i])))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'dst.db'}"
    assert main(["signals", "import", str(bad), "--db", url]) == 3, case
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}:{i + 1}: "), err
    assert message in err and len(err.splitlines()) == 1
    store = open_storage(url)
    try:
        assert store.list_runs() == []  # nothing half-imported
    finally:
        store.close()


def test_import_of_a_missing_or_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'dst.db'}"
    assert main(["signals", "import", str(tmp_path / "nope.jsonl"), "--db", url]) == 3
    assert "cannot read the file" in capsys.readouterr().err
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    assert main(["signals", "import", str(tmp_path / "empty.jsonl"), "--db", url]) == 3
    assert "empty file" in capsys.readouterr().err


# ------------------------------------------------------------------------------ a large recorded run


def record_synthetic_run(store: Any, n: int, *, seed: int = 1, per_slice: int = 20) -> int:
    """Record ``n`` reviewed signals with realistic packs (16 recent trades), verdicts and shadow outcomes.

    For throughput measurements of backtests (bench/ and by hand); bars are not needed by a backtest.
    """
    from engine.config import PolicyConfig
    from engine.core.clamp import clamp

    rng = random.Random(seed)
    run_id = store.create_run(f"synthetic-{n}", json.dumps({}), "synthetic", seed, "active", 10_000.0)
    rec = store.recorder(run_id)
    t0, tf = 1_735_689_600_000, 300_000
    policy = PolicyConfig()
    trades = tuple(TradeSummary("BTC/USDT", Side.LONG, t0, t0 + tf * 5, rng.uniform(-2, 2), rng.uniform(-1, 2), "stop")
                   for _ in range(16))
    batch: list[SliceRecord] = []
    for i in range(0, n, per_slice):
        t = t0 + (i // per_slice + 1) * tf
        reviews, sigs, outs = [], [], []
        for j in range(i, min(n, i + per_slice)):
            side = Side.LONG if j % 2 else Side.SHORT
            entry = 100 + rng.random()
            sig = Signal(f"s{j}", f"strat{j % 3}", f"SYM{j % 7}/USDT", side, t, entry, entry * (1 - side.sign * 0.02),
                         entry * (1 + side.sign * 0.04), 0.1, "5m")
            pack = ContextPack.build(signal=sig, recent_trades=trades, trade_stats=TradeStats(16, 0.5, j % 4),
                                     regime=RegimeInfo(RegimeTag.CHOP, 1.0, 0.5, 50.0, 96, 8), correlated=(),
                                     news=(), gate_note="ok", equity=10_000.0)
            v = Verdict(rng.choice(list(VerdictKind)), 0.7, "synthetic", modified_size_pct=50, source="rules",
                        tier="rules", model="rules-v1")
            d = clamp(sig, v, policy)
            sigs.append(sig)
            reviews.append(ReviewRecord(pack, v, d, "active"))
            outs.append(Outcome(sig.id, OutcomeKind.SHADOW, True, rng.uniform(-3, 3), 0.0, "stop", False, t, t + tf))
            if d.action is Action.EXECUTE:
                outs.append(Outcome(sig.id, OutcomeKind.REALIZED, False, note="not simulated"))
        batch.append(SliceRecord(close_ms=t, bars=(), signals=tuple(sigs), reviews=tuple(reviews),
                                 outcomes=tuple(outs)))
        if len(batch) >= 100:
            rec.record_slices(batch)
            batch = []
    rec.record_slices(batch)
    store.set_run_status(run_id, "finished")
    return run_id


def test_a_large_synthetic_run_backtests_from_the_cache(tmp_path: Path) -> None:
    from storage import open_storage

    url = f"sqlite:///{tmp_path / 'big.db'}"
    (tmp_path / "rules.yaml").write_text("reviewer:\n  tiers:\n    - {name: rules, provider: rules}\n")
    store = open_storage(url)
    try:
        run_id = record_synthetic_run(store, 3000)
        first = run_backtest(store, run_id, [tmp_path / "rules.yaml"])
        # before this store is closed, another connection already sees every new verdict: the backtest flushed
        other = open_storage(url)
        try:
            assert other.table_counts()["verdict_cache"] == 3000
            second = run_backtest(other, run_id, [tmp_path / "rules.yaml"])
        finally:
            other.close()
    finally:
        store.close()
    assert first.columns[1].card.sources == {"rules": 3000}
    assert second.columns[1].card.sources == {"cache": 3000}
    assert second.columns[1].card.verdicts == first.columns[1].card.verdicts
