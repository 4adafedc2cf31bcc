"""A backtest's check of the stored packs, kept (storage.bulk: pack_digests, pack_checks, migration 0005's triggers).

The first backtest of a run hashes every pack's JSON and keeps what that yields; a repeat backtest reads that
instead, but only while no pack row changed since — on both backends, whatever changed it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from engine.app import run_backtest, run_replay
from engine.config import load_config
from engine.errors import StorageError
from tests.test_backtest import _quality

RULES = "reviewer:\n  tiers:\n    - {name: rules, provider: rules}\n"


@pytest.fixture
def recorded(db_url: str, tmp_path: Path) -> tuple[str, int, Path]:
    loaded = load_config(overrides={"run": {"db_url": db_url}, "market": {"synthetic": {"bars": 1000}}}, env={})
    reviewer = tmp_path / "rules.yaml"
    reviewer.write_text(RULES, encoding="utf-8")
    return db_url, run_replay(loaded).run_id, reviewer


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every time packs are read from their JSON and hashed (``checked_packs``), the run id."""
    from storage import bulk

    seen: list[int] = []
    real = bulk.checked_packs

    def counted(storage: Any, conn: Any, run_id: int, keep_json: bool) -> Any:
        seen.append(run_id)
        return real(storage, conn, run_id, keep_json)

    monkeypatch.setattr(bulk, "checked_packs", counted)
    return seen


def _stamp(store: Any, run_id: int) -> tuple[int, int | None]:
    with store.engine.connect() as conn:
        g, v = conn.execute(text("SELECT generation, verified FROM pack_checks WHERE run_id = :r"),
                            {"r": run_id}).one()
    return int(g), None if v is None else int(v)


def _sql(store: Any, sql: str, **params: Any) -> int:
    with store.engine.begin() as conn:
        return int(conn.execute(text(sql), params).rowcount)


def _truth(store: Any, run_id: int) -> dict[str, tuple[str, str, float, str]]:
    from storage import bulk

    with store.engine.connect() as conn:
        return bulk.checked_packs(store, conn, run_id, keep_json=False)


def test_a_repeat_backtest_reads_what_the_first_one_checked(recorded: tuple[str, int, Path], checks: list[int]) -> None:
    from storage import bulk, open_storage

    url, run_id, reviewer = recorded
    with open_storage(url) as store:
        first = run_backtest(store, run_id, [reviewer])
        assert checks == [run_id]  # the first one hashes every pack ...
        g, verified = _stamp(store, run_id)
        assert verified == g  # ... and keeps its answer, stamped with the packs' generation
        with store.engine.connect() as conn:
            kept = bulk.stored_digests(conn, run_id)
        truth = _truth(store, run_id)
        assert kept == truth and len(truth) > 20  # every pack: hash, regime tag and equity, bit for bit
        checks.clear()
        second = run_backtest(store, run_id, [reviewer])
        assert checks == []  # the second reads the kept answer, not the JSON
        assert bulk.load_reviewed(store, run_id, lean=True).packs == bulk.load_reviewed(
            store, run_id, lean=True, check=bulk.PackCheck.start(store, run_id)).packs
        assert checks == []
    assert second.columns[1].card.sources == {"cache": second.signals}
    assert [_quality(c.card.to_dict()) for c in first.columns] == [_quality(c.card.to_dict()) for c in second.columns]


@pytest.mark.parametrize("change", ["update", "delete", "insert"])
def test_any_change_to_a_pack_row_sends_the_next_backtest_back_to_the_json(recorded: tuple[str, int, Path],
                                                                            checks: list[int], change: str) -> None:
    from storage import bulk, open_storage

    url, run_id, reviewer = recorded
    with open_storage(url) as store:
        run_backtest(store, run_id, [reviewer])
        g, _ = _stamp(store, run_id)
        before = len(_truth(store, run_id))
        sid = sorted(_truth(store, run_id))[3]
        checks.clear()
        if change == "update":  # the text only: same hash column, same length
            n = _sql(store, "UPDATE context_packs SET json = replace(json, '\"equity\":', '\"equity\": ') "
                            "WHERE run_id = :r AND signal_id = :s", r=run_id, s=sid)
        elif change == "delete":
            n = _sql(store, "DELETE FROM context_packs WHERE run_id = :r AND signal_id = :s", r=run_id, s=sid)
        else:  # a pack for a signal a gate blocked (it has none)
            n = _sql(store, "INSERT INTO context_packs (run_id, signal_id, hash, regime_tag, json) "
                            "SELECT s.run_id, s.id, p.hash, p.regime_tag, p.json FROM signals s, context_packs p "
                            "WHERE s.run_id = :r AND p.run_id = :r AND p.signal_id = :s AND s.id NOT IN "
                            "(SELECT signal_id FROM context_packs WHERE run_id = :r) ORDER BY s.id LIMIT 1",
                     r=run_id, s=sid)
        assert n == 1
        assert _stamp(store, run_id)[0] > g  # the trigger moved the generation past the stamp
        if change == "update":
            with pytest.raises(StorageError, match=f"context pack of signal {sid} does not match its stored hash"):
                run_backtest(store, run_id, [reviewer])
            assert checks == [run_id]
            return
        run_backtest(store, run_id, [reviewer])
        assert checks == [run_id]  # checked again, and kept again
        with store.engine.connect() as conn:
            assert bulk.stored_digests(conn, run_id) == _truth(store, run_id)
        assert len(_truth(store, run_id)) == before + (1 if change == "insert" else -1)


def test_a_change_to_the_kept_answer_withdraws_it(recorded: tuple[str, int, Path], checks: list[int]) -> None:
    from storage import bulk, open_storage

    url, run_id, reviewer = recorded
    with open_storage(url) as store:
        run_backtest(store, run_id, [reviewer])
        truth = _truth(store, run_id)
        sid = sorted(truth)[0]
        assert _sql(store, "UPDATE pack_digests SET equity = equity + 1 WHERE run_id = :r AND signal_id = :s",
                    r=run_id, s=sid) == 1
        assert _stamp(store, run_id)[1] is None
        checks.clear()
        with store.engine.connect() as conn:
            assert bulk.stored_digests(conn, run_id) is None
        got = bulk.load_reviewed(store, run_id, lean=True, check=bulk.PackCheck.start(store, run_id))
        assert checks == [run_id]
        assert {p.signal.id: p.equity for p in got.packs}[sid] == truth[sid][2]  # the JSON's, not the altered one
        with store.engine.connect() as conn:
            assert bulk.stored_digests(conn, run_id) == truth  # kept afresh


def test_a_check_overtaken_by_a_change_keeps_nothing(recorded: tuple[str, int, Path]) -> None:
    from storage import bulk, open_storage

    url, run_id, _ = recorded
    with open_storage(url) as store:
        found = bulk.pack_generation(store, run_id)
        assert found is not None and found[1] is None  # never checked yet
        answer = _truth(store, run_id)  # a check reads the packs ...
        _sql(store, "UPDATE context_packs SET regime_tag = regime_tag WHERE run_id = :r", r=run_id)  # ... one changes
        assert not bulk.keep_digests(store, run_id, found[0], answer)
        assert _stamp(store, run_id)[1] is None
        with store.engine.connect() as conn:
            assert bulk.stored_digests(conn, run_id) is None
            assert conn.execute(text("SELECT count(*) FROM pack_digests WHERE run_id = :r"),
                                {"r": run_id}).scalar_one() == 0  # nothing half written either
        g = bulk.pack_generation(store, run_id)
        assert g is not None and bulk.keep_digests(store, run_id, g[0], answer)  # taken afresh, it is kept


def test_deleting_a_run_deletes_its_kept_answer(recorded: tuple[str, int, Path]) -> None:
    from storage import open_storage

    url, run_id, reviewer = recorded
    with open_storage(url) as store:
        run_backtest(store, run_id, [reviewer])
        store.delete_run(run_id)
        with store.engine.connect() as conn:
            for table in ("pack_checks", "pack_digests"):
                assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0, table
