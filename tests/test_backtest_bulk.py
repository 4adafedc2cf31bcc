"""Bulk reads of a recorded run (storage.bulk) and the backtest built on them: the same reviews, verdicts,
outcomes and scorecards as the repository's one-kind-at-a-time readers and the per-signal scorer give."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.app import run_backtest
from engine.config import PolicyConfig, load_config
from engine.core.clamp import clamp
from engine.errors import StorageError
from engine.recorded.stored import load_stored
from engine.types import (
    ContextPack,
    NewsCategory,
    NewsFlag,
    Outcome,
    OutcomeKind,
    RegimeInfo,
    RegimeTag,
    ReviewRecord,
    Side,
    Signal,
    SliceRecord,
    TradeStats,
    Verdict,
    VerdictKind,
)
from tests import scoring_reference
from tests.test_backtest import STRICT, _quality
from tests.test_scoring import FLAKY


@pytest.fixture(scope="module")
def flaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int, Path]:
    """A recorded run whose reviewer fell through, fell back and was paid (every verdict field in use)."""
    from engine.app import run_replay

    d = tmp_path_factory.mktemp("bulk")
    url = f"sqlite:///{d / 'run.db'}"
    loaded = load_config(overrides={"run": {"db_url": url}, "market": {"synthetic": {"bars": 1500}},
                                    "reviewer": FLAKY}, env={})
    (d / "strict.yaml").write_text(STRICT, encoding="utf-8")
    return url, run_replay(loaded).run_id, d


def _text(card: Any) -> str:
    return json.dumps(card.to_dict())


# ------------------------------------------------------------------------------------------- readers


def test_bulk_reviews_are_the_repository_reviews(flaky: tuple[str, int, Path]) -> None:
    from storage import bulk, open_storage

    url, run_id, _ = flaky
    store = open_storage(url)
    try:
        rows = bulk.load_reviewed(store, run_id, keep_json=True)
        rec = store.recorder(run_id)
        expected = rec.load_reviews()
        outcomes = rec.load_outcomes()
        stored = load_stored(store, run_id, realized=True)
    finally:
        store.close()
    assert len(rows) == len(expected) > 100
    for i, r in enumerate(expected):  # same signals, same order, same rows
        ref = rows.packs[i]
        assert ref.signal.id == r.pack.signal.id
        assert (ref.hash, ref.json, ref.equity) == (r.pack.hash, r.pack.json, r.pack.equity)
        assert ref.regime_tag == r.pack.regime_tag
        assert rows.record(i) == ReviewRecord(ref, r.verdict, r.decision, r.mode)
    assert sorted(stored.outcomes, key=repr) == sorted(outcomes, key=repr)
    assert {r.verdict.source for r in expected} >= {"flaky", "backup", "fallback"}


def test_a_lean_load_scores_like_the_full_reviews(flaky: tuple[str, int, Path]) -> None:
    from engine.recorded.scorecard import score_columns
    from storage import open_storage

    url, run_id, _ = flaky
    store = open_storage(url)
    try:
        full = load_stored(store, run_id, realized=True)
        lean = load_stored(store, run_id, realized=True, lean=True)
        trades = store.recorder(run_id).load_trades()
    finally:
        store.close()
    with pytest.raises(ValueError, match="lean"):
        _ = lean.records
    assert lean.packs == full.packs
    records = full.records
    for estimate in (False, True):
        kw: dict[str, Any] = {"signals": len(records) + 3, "starting_equity": full.starting_equity,
                              "window_days": 2.0, "modify_estimate": estimate}
        got = score_columns(lean.signal_columns(), lean.recorded_columns(), trades, **kw)
        assert _text(got) == _text(scoring_reference.score(records, full.outcomes, trades, **kw))


def test_cached_verdicts_are_read_like_the_cache_reads_them(flaky: tuple[str, int, Path]) -> None:
    from engine.app import build_reviewer
    from engine.recorded.backtest import _tier_keys
    from storage import bulk, open_storage, rows

    url, run_id, d = flaky
    store = open_storage(url)
    try:
        run_backtest(store, run_id, [d / "strict.yaml"])  # fills the cache for the strict tier
        hashes = [p.hash for p in load_stored(store, run_id, lean=True).packs]
        cache = store.verdict_cache()
        strict = build_reviewer(load_config([d / "strict.yaml"], env={}).config.reviewer, cache=None)
        (_, model, pv), = _tier_keys(strict)
        # odd entries under a key of their own: what the careful reader makes of each decides
        v = Verdict(VerdictKind.MODIFY, 0.7, "half", modified_size_pct=50.0, source="x", tier="x", model="m")
        good = rows.verdict_to_json(v)
        odd = {hashes[0]: " " + good + " ", hashes[1]: good[:-1] + ',"extra":1}', hashes[2]: "{not json",
               hashes[3]: good.replace('"confidence":0.7', '"confidence":1'), hashes[4]: "[1]",
               hashes[5]: json.dumps({k: val for k, val in json.loads(good).items() if k != "raw_reply"}),
               hashes[6]: good.replace('"modify"', '"maybe"')}
        with store.engine.begin() as conn:
            for h, text in odd.items():
                conn.exec_driver_sql("INSERT INTO verdict_cache VALUES (?, ?, ?, ?, ?, ?)",
                                     ("odd", "m", "pv", h, text, "2025-01-01 00:00:00"))
        found = bulk.cached_verdicts(store, run_id, [("strict", model, pv), ("odd", "m", "pv")])
        for h in hashes:
            assert found[("strict", model, pv)].get(h) == cache.get("strict", model, pv, h)
    finally:
        store.close()
    assert len(found[("strict", model, pv)]) == len(set(hashes)) > 100
    entries = found[("odd", "m", "pv")]
    fields = rows.CACHE_FIELDS

    def expected(text: str) -> Verdict | None:  # the reader as it was: fast path, then the careful one, else a miss
        try:
            d = json.loads(text)
            d["verdict"] = VerdictKind(d["verdict"])
            return Verdict(**{k: d[k] for k in fields})
        except (ValueError, KeyError, TypeError):
            try:
                return rows.verdict_from_json(text)
            except (ValueError, KeyError, TypeError):
                return None

    for h, text in odd.items():
        got = entries.get(h)
        assert got == expected(text) and repr(got) == repr(expected(text)), text
    assert entries[hashes[1]] == v  # an extra key is ignored
    assert entries[hashes[3]].confidence == 1  # as stored: the fast path does not convert
    assert hashes[2] not in entries and hashes[5] not in entries


def _one_review_run(store: Any, gate_note: str) -> tuple[int, ContextPack]:
    sig = Signal("s1", "st", "BTC/USDT", Side.LONG, 1_735_689_900_000, 100.0, 95.0, 110.0, 0.1, "5m")
    pack = ContextPack.build(signal=sig, recent_trades=(), trade_stats=TradeStats(0, None, 0),
                             regime=RegimeInfo(RegimeTag.TRENDING, 1.0, 0.5, 50.0, 96, 8), correlated=(),
                             news=(NewsFlag(NewsCategory.HACK, 5.0, f"Börse ☂ {gate_note} 🚀", "feed"),),
                             gate_note=gate_note, equity=12_345.5)
    from engine.config import PolicyConfig
    from engine.core.clamp import clamp

    v = Verdict(VerdictKind.ACCEPT, 0.9, "ok", source="rules", tier="rules", model="rules-v1")
    run_id = store.create_run("unicode", "{}", "h", 1, "active", 10_000.0)
    store.recorder(run_id).record_slices([SliceRecord(
        close_ms=sig.created_ms, bars=(), signals=(sig,), reviews=(ReviewRecord(pack, v, clamp(sig, v, PolicyConfig()),
                                                                                 "active"),),
        outcomes=(Outcome("s1", OutcomeKind.SHADOW, True, -1.0, -0.2, "stop", False, 1, 2),))])
    return run_id, pack


def test_packs_beyond_ascii_are_checked_as_the_bytes_stored(tmp_path: Path) -> None:
    from storage import open_storage

    url = f"sqlite:///{tmp_path / 'u.db'}"
    store = open_storage(url)
    try:
        run_id, pack = _one_review_run(store, "Zürich — naïve ✓")
        stored = load_stored(store, run_id, keep_json=True)
        assert [(p.hash, p.json, p.equity) for p in stored.packs] == [(pack.hash, pack.json, 12_345.5)]
        assert load_stored(store, run_id).packs[0].json == ""
        with store.engine.begin() as conn:  # same length, same hash column: only the text changed
            conn.exec_driver_sql("UPDATE context_packs SET json = replace(json, 'Zürich', 'Zurich') WHERE run_id = ?",
                                 (run_id,))
        with pytest.raises(StorageError, match="context pack of signal s1 does not match its stored hash"):
            load_stored(store, run_id)
    finally:
        store.close()


def test_an_in_memory_database_backtests_from_its_cache(tmp_path: Path) -> None:
    from storage import open_storage
    from tests.test_backtest import record_synthetic_run

    (tmp_path / "rules.yaml").write_text("reviewer:\n  tiers:\n    - {name: rules, provider: rules}\n")
    store = open_storage("sqlite://")
    try:
        run_id = record_synthetic_run(store, 300)
        first = run_backtest(store, run_id, [tmp_path / "rules.yaml"])
        second = run_backtest(store, run_id, [tmp_path / "rules.yaml"])
    finally:
        store.close()
    assert first.columns[1].card.sources == {"rules": 300} and second.columns[1].card.sources == {"cache": 300}
    assert second.columns[1].card.verdicts == first.columns[1].card.verdicts


# ------------------------------------------------------------------------------------------ backtest


def test_the_clamp_once_per_distinct_verdict_decides_as_the_clamp_signal_by_signal() -> None:
    """``decided_columns`` calls the clamp once per (verdict, confidence, modified size): every action and size
    is the one the clamp gives that signal, odd values included (bools, -0.0, NaN, strings, unhashables)."""
    import math
    import random

    from engine.recorded.backtest import decided_columns

    rng = random.Random(3)
    odd: list[Any] = [None, True, False, 0, 1, 50, 50.0, -0.0, 0.0, 5.0, 7, 150.0, float("nan"), float("inf"),
                      "50", [50], 10**400, 0.3, 0.29999999999999993, 0.2]
    kinds: list[Any] = [*VerdictKind, "veto", "maybe"]
    signals, verdicts = [], []
    for i in range(3000):
        side = Side.LONG if i % 2 else Side.SHORT
        signals.append(Signal(f"s{i}", "st", "X/USDT", side, 1_000 + i, 100.0, 100.0 - side.sign * 2,
                              100.0 + side.sign * 4, 0.1, "5m"))
        verdicts.append(Verdict(rng.choice(kinds), rng.choice([0.9, 0.9, *odd]), modified_size_pct=rng.choice(odd),
                                modified_sl=rng.choice([None, 99.0, 101.0, "x"])))
    # one verdict object answering many signals, as a cached backtest's answers do (decided once per object)
    verdicts += [verdicts[i] for i in (rng.randrange(3000) for _ in range(1000))]
    signals += [Signal(f"t{i}", "st", "X/USDT", Side.LONG, 9_000 + i, 100.0, 98.0, 104.0, 0.1, "5m")
                for i in range(1000)]
    for policy in (PolicyConfig(), PolicyConfig(min_confidence=0.0, min_size_pct=1, max_size_pct=40)):
        actions, sizes = decided_columns([_Ref(s) for s in signals], verdicts, policy)
        want = [clamp(s, v, policy, "active") for s, v in zip(signals, verdicts, strict=True)]
        assert actions == [d.action for d in want]
        assert [math.copysign(1, x) for x in sizes] == [math.copysign(1, d.size_pct) for d in want]
        assert sizes == [d.size_pct for d in want]


class _Ref:
    def __init__(self, signal: Signal) -> None:
        self.signal = signal



def test_every_backtest_column_is_the_per_signal_scorecard_of_its_reviews(
        flaky: tuple[str, int, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorded column and each reviewer's, uncached and cached, scored as the old scorer scores them."""
    import engine.recorded.backtest as bt
    from storage import open_storage

    url, run_id, d = flaky
    (d / "llm.yaml").write_text(json.dumps({"reviewer": FLAKY}), encoding="utf-8")  # scripted: fails, falls back
    seen: list[list[ReviewRecord]] = []
    verdict_columns = bt.verdict_columns

    def spy(packs: Any, verdicts: Any, policy: Any) -> Any:
        # each column's reviews as the per-signal path makes them: the clamp called signal by signal
        seen.append([ReviewRecord(p, v, clamp(p.signal, v, policy, "active"), "active")
                     for p, v in zip(packs, verdicts, strict=True)])
        return verdict_columns(packs, verdicts, policy)

    monkeypatch.setattr(bt, "verdict_columns", spy)
    store = open_storage(url)
    try:
        full = load_stored(store, run_id)
        results = [run_backtest(store, run_id, [d / "llm.yaml", d / "strict.yaml"]) for _ in range(2)]
    finally:
        store.close()
    window = json.loads(full.config_json)["scoring"]["retire"]["window_days"]

    def reference(reviews: list[ReviewRecord]) -> str:
        return _text(scoring_reference.score(reviews, full.outcomes, [], signals=len(reviews),
                                             starting_equity=full.starting_equity, window_days=window,
                                             modify_estimate=True))

    for result in results:
        assert _text(result.columns[0].card) == reference(full.records)
        for col in result.columns[1:]:
            assert _text(col.card) == reference(seen.pop(0)), col.name
    assert results[1].columns[2].card.sources == {"cache": len(full.reviews)}


# ------------------------------------------------------------------------------- the packs' check in a child


@pytest.fixture
def in_child(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every PackCheck checks the packs (the digests an earlier check kept are set aside) in a child process
    (whatever the run's size); the checks started are listed, each with whether it started a child."""
    from storage import bulk

    started: list[Any] = []
    real = bulk.PackCheck.start.__func__  # type: ignore[attr-defined]

    def start(cls: Any, storage: Any, run_id: int) -> Any:
        _unstamp(storage, run_id)
        check = real(cls, storage, run_id)
        started.append((check, check.child is not None))
        return check

    monkeypatch.setattr(bulk.PackCheck, "MIN_PACKS", 0)
    monkeypatch.setattr(bulk.PackCheck, "start", classmethod(start))
    return started


def _unstamp(store: Any, run_id: int) -> None:
    """Withdraw the stamp of the run's kept digests: the next PackCheck checks the packs again."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE pack_checks SET verified = NULL WHERE run_id = ?", (run_id,))


def test_packs_checked_in_a_child_are_the_packs_checked_here(flaky: tuple[str, int, Path], in_child: list[Any]) -> None:
    from storage import bulk, open_storage

    url, run_id, _ = flaky
    with open_storage(url) as store:
        check = bulk.PackCheck.start(store, run_id)
        assert in_child == [(check, True)]
        child = check.child
        got = bulk.load_reviewed(store, run_id, lean=True, check=check)
        here = bulk.load_reviewed(store, run_id, lean=True)
        assert child.process.returncode == 0 and check.child is None
    assert len(got) == len(here) > 100
    assert got.packs == here.packs


@pytest.mark.parametrize("packs_ready", [True, False])
def test_verdict_cache_entries_read_by_the_child_are_the_ones_read_here(flaky: tuple[str, int, Path],
                                                                        in_child: list[Any], packs_ready: bool,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever is free reads the verdict cache — the child once it sent the packs, or this process while the child
    is still at them — and the entries are the same either way, equal texts still shared."""
    import time

    from storage import bulk, open_storage
    from storage.child import Child

    url, run_id, d = flaky
    with open_storage(url) as store:
        run_backtest(store, run_id, [d / "strict.yaml"])  # fills the cache for the strict tier
        keys = [*sorted(_cache_keys(store)), ("strict", "x", "y")]  # and a key with no entries
        check = bulk.PackCheck.start(store, run_id)
        check.ask_cache(keys)
        assert in_child[-1] == (check, True)
        with pytest.raises(RuntimeError, match="result"):
            check.cached_verdicts()
        if packs_ready:
            deadline = time.monotonic() + 60
            while not check.child.poll() and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            monkeypatch.setattr(Child, "poll", lambda self: False)
        child = check.child
        got = bulk.load_reviewed(store, run_id, lean=True, check=check)
        assert (check.child is not None) is packs_ready  # the child reads the cache, or has ended
        with pytest.raises(RuntimeError, match="before the packs"):
            check.ask_cache(keys)
        from_child = check.cached_verdicts()
        assert check.child is None and check.cached_verdicts() is from_child
        assert child.exit_code() == 0
        here = bulk.cached_verdicts(store, run_id, keys)
        assert got.packs == bulk.load_reviewed(store, run_id, lean=True).packs
    assert list(from_child) == list(here) == keys and from_child[("strict", "x", "y")] == {}
    assert sum(map(len, here.values())) > 100
    for key in keys:
        assert from_child[key] == here[key]
        assert len({id(v) for v in from_child[key].values()}) == len({id(v) for v in here[key].values()})


def _cache_keys(store: Any) -> list[tuple[str, str, str]]:
    with store.engine.connect() as conn:
        return [(str(r[0]), str(r[1]), str(r[2])) for r in conn.exec_driver_sql(
            "SELECT DISTINCT tier, model, prompt_version FROM verdict_cache").all()]


def test_a_backtest_with_the_check_in_a_child_is_the_same_backtest(flaky: tuple[str, int, Path],
                                                                    in_child: list[Any],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from storage import bulk, open_storage

    url, run_id, d = flaky
    with open_storage(url) as store:
        run_backtest(store, run_id, [d / "strict.yaml"])  # the verdict cache holds every answer from here on
        a = run_backtest(store, run_id, [d / "strict.yaml"])
        monkeypatch.setattr(bulk.PackCheck, "MIN_PACKS", 10**9)
        b = run_backtest(store, run_id, [d / "strict.yaml"])
    assert [used for _, used in in_child] == [True, True, False]
    assert all(check.child is None for check, _ in in_child)  # every child's answer was taken
    assert [c.card.sources for c in a.columns[1:]] == [c.card.sources for c in b.columns[1:]] == [{"cache": a.signals}]
    assert [_quality(c.card.to_dict()) for c in a.columns] == [_quality(c.card.to_dict()) for c in b.columns]


def test_an_altered_pack_is_the_same_error_from_the_child(flaky: tuple[str, int, Path], tmp_path: Path,
                                                          in_child: list[Any]) -> None:
    import shutil

    from storage import bulk, open_storage

    url, run_id, _ = flaky
    copy = tmp_path / "altered.db"
    shutil.copy(url.removeprefix("sqlite:///"), copy)
    with open_storage(f"sqlite:///{copy}") as store:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE context_packs SET json = replace(json, '\"equity\":', '\"equity\": ') "
                                 "WHERE rowid = 7")
        errors = []
        for check in (bulk.PackCheck.start(store, run_id), None):
            with pytest.raises(StorageError) as e:
                bulk.load_reviewed(store, run_id, lean=True, check=check)
            errors.append(str(e.value))
    assert errors[0] == errors[1] and "does not match its stored hash" in errors[0] and "\n" not in errors[0]


def test_a_child_that_dies_is_replaced_by_checking_here(flaky: tuple[str, int, Path], in_child: list[Any],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    import os
    import signal

    from storage import bulk, open_storage

    url, run_id, _ = flaky
    with open_storage(url) as store:
        check = bulk.PackCheck.start(store, run_id)
        os.kill(check.child.pid, signal.SIGKILL)
        got = bulk.load_reviewed(store, run_id, lean=True, check=check)
        here = bulk.load_reviewed(store, run_id, lean=True)
    assert got.packs == here.packs
    assert any("the process checking the context packs ended with exit code -9: checking them here"
               in r.getMessage() for r in caplog.records)


def test_a_child_that_dies_after_the_packs_is_replaced_by_reading_the_cache_here(
        flaky: tuple[str, int, Path], in_child: list[Any], caplog: pytest.LogCaptureFixture) -> None:
    import os
    import signal
    import time

    from storage import bulk, open_storage

    url, run_id, d = flaky
    with open_storage(url) as store:
        run_backtest(store, run_id, [d / "strict.yaml"])
        keys = sorted(_cache_keys(store))
        check = bulk.PackCheck.start(store, run_id)
        check.ask_cache(keys)
        deadline = time.monotonic() + 60
        while not check.child.poll() and time.monotonic() < deadline:
            time.sleep(0.01)
        child = check.child
        bulk.load_reviewed(store, run_id, lean=True, check=check)  # the child is asked for the cache ...
        os.kill(child.pid, signal.SIGKILL)  # ... and dies before it answers (or after: its answer is then lost)
        found = check.cached_verdicts()
        here = bulk.cached_verdicts(store, run_id, keys)
    assert found == here and sum(map(len, here.values())) > 100
    assert check.child is None and child.process.returncode is not None


def test_a_check_not_taken_ends_its_child(flaky: tuple[str, int, Path], in_child: list[Any]) -> None:
    from storage import bulk, open_storage

    url, run_id, _ = flaky
    with open_storage(url) as store:
        check = bulk.PackCheck.start(store, run_id)
        child = check.child
        check.close()
        check.close()  # idempotent
    assert child.process.returncode is not None and check.child is None


def test_the_same_reviewer_twice_reviews_afresh_in_both_columns(tmp_path: Path) -> None:
    """Each column has its own prefetched cache: the answers one column's tiers put are not the other's hits
    within one backtest (both are cache hits the next time)."""
    from storage import open_storage
    from tests.test_backtest import record_synthetic_run

    (tmp_path / "rules.yaml").write_text("reviewer:\n  tiers:\n    - {name: rules, provider: rules}\n")
    with open_storage(f"sqlite:///{tmp_path / 'twice.db'}") as store:
        run_id = record_synthetic_run(store, 300)
        first = run_backtest(store, run_id, [tmp_path / "rules.yaml", tmp_path / "rules.yaml"])
        second = run_backtest(store, run_id, [tmp_path / "rules.yaml", tmp_path / "rules.yaml"])
    assert [c.name for c in first.columns] == ["recorded", "rules", "rules#2"]
    assert [c.card.sources for c in first.columns[1:]] == [{"rules": 300}, {"rules": 300}]
    assert [c.card.sources for c in second.columns[1:]] == [{"cache": 300}, {"cache": 300}]
