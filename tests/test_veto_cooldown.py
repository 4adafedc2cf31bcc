"""A veto cools its setup down (``cooldown.after_veto_bars``), end to end: only vetoes that took effect hold a
strategy on a symbol, for the next N bars, and the run stays deterministic and resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.app import build_feed, build_pipeline, run_replay
from engine.config import load_config
from engine.drivers.replay import fills_fingerprint
from engine.types import Action, SliceRecord
from tests.conftest import InterruptedFeed, record_digest, step_all, stored_ledger

BARS = 1500


def _gates(after_veto_bars: int) -> list[dict[str, Any]]:
    gates = [g.model_dump() for g in load_config().config.gates]
    for g in gates:
        if g["kind"] == "cooldown":
            g["params"] = {**g["params"], "after_veto_bars": after_veto_bars}
    return gates


def _loaded(tmp_path: Path, after_veto_bars: int, name: str = "demo", **extra: Any):  # type: ignore[no-untyped-def]
    over: dict[str, Any] = {"run": {"name": name, "db_url": f"sqlite:///{tmp_path / (name + '.db')}"},
                            "market": {"synthetic": {"bars": BARS}}, "gates": _gates(after_veto_bars)}
    over.update(extra)
    return load_config(overrides=over)


def _records(loaded) -> list[SliceRecord]:  # type: ignore[no-untyped-def]
    feed = build_feed(loaded)
    return step_all(build_pipeline(loaded, feed=feed), feed.slices(), loaded.config.execution.starting_equity, None)


def _vetoes(records: list[SliceRecord]) -> dict[tuple[str, str], list[int]]:
    """Bar close times of the vetoes that took effect (signal skipped), per (strategy, symbol)."""
    out: dict[tuple[str, str], list[int]] = {}
    for r in records:
        for rv in r.reviews:
            if rv.decision.action is Action.SKIP:
                s = rv.pack.signal
                out.setdefault((s.strategy_id, s.symbol), []).append(s.created_ms)
    return out


def _held_by_veto(records: list[SliceRecord]) -> list[str]:
    return [sid for r in records for sid, g in r.gate_results
            if g.gate == "cooldown" and not g.passed and "after the veto of" in g.reason]


@pytest.mark.parametrize("n", [3, 48])
def test_no_signal_is_reviewed_within_n_bars_after_a_veto_of_its_setup(tmp_path: Path, n: int) -> None:
    recs = _records(_loaded(tmp_path, n))
    tf = load_config().config.market.timeframe_ms
    vetoes = _vetoes(recs)
    assert vetoes, "the demo's rules tier vetoes some signals"
    signals = {s.id: s for r in recs for s in r.signals}
    held = _held_by_veto(recs)
    assert held, "some setup re-fired within N bars of its veto"
    for sid in held:  # every hold follows a veto of the same strategy and symbol, at most n bars earlier
        s = signals[sid]
        assert any(0 < s.created_ms - v <= n * tf for v in vetoes[(s.strategy_id, s.symbol)]), sid
    for r in recs:  # and no signal within n bars of such a veto reached the reviewer
        for rv in r.reviews:
            s = rv.pack.signal
            assert not any(0 < s.created_ms - v <= n * tf for v in vetoes.get((s.strategy_id, s.symbol), ())), s.id


def test_the_setting_changes_the_active_run_and_nothing_when_zero(tmp_path: Path) -> None:
    off = _records(_loaded(tmp_path, 0))
    assert not _held_by_veto(off)
    assert record_digest(off) == record_digest(_records(load_config(overrides={
        "run": {"name": "demo", "db_url": f"sqlite:///{tmp_path / 'x.db'}"}, "market": {"synthetic": {"bars": BARS}}})))
    on = _records(_loaded(tmp_path, 48))
    assert record_digest(on) != record_digest(off)
    assert sum(len(r.reviews) for r in on) < sum(len(r.reviews) for r in off)


@pytest.mark.parametrize("extra", [{"reviewer": {"mode": "shadow"}}, {"policy": {"min_confidence": 0.99}}],
                         ids=["shadow-mode", "low-confidence"])
def test_a_veto_that_changes_nothing_holds_nothing(tmp_path: Path, extra: dict[str, Any]) -> None:
    """A shadow-mode veto and a veto below ``policy.min_confidence`` leave the gate decision standing: the signal
    trades, so its setup is not held either (a shadow reviewer never alters what the account does)."""
    off = _records(_loaded(tmp_path, 0, **extra))
    on = _records(_loaded(tmp_path, 48, **extra))
    reviews = [rv for r in on for rv in r.reviews]
    assert any(rv.verdict.verdict == "veto" for rv in reviews)
    assert all(rv.decision.action is Action.EXECUTE for rv in reviews)
    assert not _held_by_veto(on)
    assert record_digest(on) == record_digest(off)


def test_same_config_and_seed_give_the_same_run_with_veto_cooldowns(tmp_path: Path) -> None:
    a = _records(_loaded(tmp_path, 48))
    b = _records(_loaded(tmp_path, 48))
    assert _held_by_veto(a)
    assert record_digest(a) == record_digest(b)


def test_an_interrupted_run_resumes_with_its_veto_cooldowns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = _loaded(tmp_path, 48, name="whole")
    recs = _records(whole)
    # cut between a veto and the signal it holds, so the resumed part must know a veto from before the cut
    vetoes = _vetoes(recs)
    signals = {s.id: s for r in recs for s in r.signals}
    tf = whole.config.market.timeframe_ms
    held = signals[_held_by_veto(recs)[0]]
    veto_ms = max(v for v in vetoes[(held.strategy_id, held.symbol)] if v < held.created_ms)
    assert held.created_ms - veto_ms >= 2 * tf
    cut = next(i for i, r in enumerate(recs) if r.close_ms > veto_ms)  # the slice after the veto's
    ref = run_replay(whole)
    ref_fills, _, ref_counts = stored_ledger(whole.config.run.db_url, ref.run_id)

    part = _loaded(tmp_path, 48, name="part")
    import engine.app as app
    from engine.drivers.replay import Replay

    real = app.build_feed
    monkeypatch.setattr(app, "build_feed", lambda loaded: InterruptedFeed(real(loaded), cut))
    monkeypatch.setattr(Replay, "BATCH_SECONDS", 0.0)  # every slice its own batch: the run stops right at the cut
    with pytest.raises(KeyboardInterrupt):
        run_replay(part)
    monkeypatch.undo()
    from storage import open_storage

    store = open_storage(part.config.run.db_url)
    try:
        assert veto_ms <= store.records(1).last_slice_ms() < held.created_ms
    finally:
        store.close()
    res = run_replay(part)  # resumes run 1: the vetoes before the cut hold their setups after it
    assert res.run_id == 1
    fills, _, counts = stored_ledger(part.config.run.db_url, 1)
    assert fills_fingerprint(fills) == fills_fingerprint(ref_fills)
    assert counts == ref_counts
