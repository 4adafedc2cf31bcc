"""Restart without loss: an interrupted replay resumes to the same ledger as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.app import build_feed, run_replay
from engine.config import load_config
from engine.drivers.replay import fills_fingerprint
from engine.errors import ConfigError, StorageError
from tests.conftest import InterruptedFeed, stored_ledger


def _loaded(tmp_path: Path, name: str, bars: int = 900, **extra):
    over = {"run": {"name": name, "db_url": f"sqlite:///{tmp_path / (name + '.db')}"},
            "market": {"synthetic": {"bars": bars}}}
    over.update(extra)
    return load_config(overrides=over)


@pytest.mark.parametrize("cut", [1, 137, 512])
def test_interrupted_run_resumes_to_the_same_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: int) -> None:
    whole = _loaded(tmp_path, "whole")
    ref = run_replay(whole)
    ref_fills, _, ref_counts = stored_ledger(whole.config.run.db_url, ref.run_id)

    part = _loaded(tmp_path, "part")
    import engine.app as app

    real = app.build_feed
    monkeypatch.setattr(app, "build_feed", lambda loaded: InterruptedFeed(real(loaded), cut))
    with pytest.raises(KeyboardInterrupt):
        run_replay(part)
    monkeypatch.setattr(app, "build_feed", real)
    fills, info, _ = stored_ledger(part.config.run.db_url, 1)
    assert info.status == "stopped"
    res = run_replay(part)  # resumes run 1
    assert res.run_id == 1
    fills, info, counts = stored_ledger(part.config.run.db_url, 1)
    assert info.status == "finished"
    assert fills_fingerprint(fills) == fills_fingerprint(ref_fills)
    assert counts == ref_counts  # nothing lost, nothing doubled, in every table


def test_resume_refuses_a_changed_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    part = _loaded(tmp_path, "cfg")
    import engine.app as app

    real = app.build_feed
    monkeypatch.setattr(app, "build_feed", lambda loaded: InterruptedFeed(real(loaded), 300))
    with pytest.raises(KeyboardInterrupt):
        run_replay(part)
    monkeypatch.setattr(app, "build_feed", real)
    changed = _loaded(tmp_path, "cfg", execution={"fee_bps": 20})
    with pytest.raises(ConfigError, match="--fresh"):
        run_replay(changed)
    assert run_replay(changed, fresh=True).run_id == 2


def test_resume_detects_a_ledger_that_cannot_be_reproduced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    part = _loaded(tmp_path, "tamper")
    import engine.app as app

    real = app.build_feed
    monkeypatch.setattr(app, "build_feed", lambda loaded: InterruptedFeed(real(loaded), 700))
    with pytest.raises(KeyboardInterrupt):
        run_replay(part)
    monkeypatch.setattr(app, "build_feed", real)
    from sqlalchemy import create_engine, text

    eng = create_engine(part.config.run.db_url)
    with eng.begin() as c:
        n = c.execute(text("UPDATE fills SET fill_price = fill_price * 1.01 WHERE kind = 'exit'")).rowcount
    eng.dispose()
    assert n > 0
    with pytest.raises(StorageError, match="cannot be reproduced"):
        run_replay(part)


def test_feed_is_deterministic_for_resume(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, "det", bars=50)
    a = [tuple(s) for s in build_feed(loaded).slices()]
    b = [tuple(s) for s in build_feed(loaded).slices()]
    assert a == b
