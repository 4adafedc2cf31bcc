"""A backtest's load kept as columns for the next one (storage.snapshot, run_snapshots, migration 0006's triggers).

A repeat backtest reads the run's snapshot instead of its rows — but only while its stamp stands: any insert,
update or delete of what it covers, on either backend, sends the next load back to the rows, and the values a
snapshot gives back are the rows' own, bit for bit."""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from engine.app import run_backtest, run_replay
from engine.config import load_config
from storage import rows, snapshot
from tests.test_backtest import _quality
from tests.test_pack_digests import RULES, _sql


def _bits(values: list[Any]) -> list[Any]:
    return [(type(v), struct.pack("<d", v) if isinstance(v, float) else v) for v in values]


@pytest.mark.parametrize("values", [
    [0.0, -0.0, 1.5, math.inf, -math.inf, math.nan, 5e-324, 1e308, 0.1 + 0.2],
    [0, -1, 2 ** 63 - 1, -(2 ** 63)],
    [2 ** 63, 1],  # beyond int64: as JSON
    ["", "a", "é€😀", "tab\tnew\nline", ""],
    ["x\x00y", "z"],  # a NUL: as JSON
    [None, 1, 2.5, "s", True, False],
    [True, False],  # bools stay bools, not ints
    [None, None],
    [""],
    [],
])
def test_columns_come_back_bit_for_bit(values: list[Any]) -> None:
    blob = snapshot.encode({"a": values, "b": list(range(len(values)))})
    assert blob is not None
    back = snapshot.decode(blob)
    assert list(back) == ["a", "b"]
    assert _bits(back["a"]) == _bits(values)
    assert back["b"] == list(range(len(values)))


def test_a_column_that_would_not_read_back_equal_is_not_kept() -> None:
    assert snapshot.encode({"a": [None, math.nan]}) is None  # JSON reads a NaN back as another NaN object
    assert snapshot.encode({"a": [(1, 2)]}) is None  # a tuple would come back a list
    with pytest.raises(ValueError, match="snapshot column b: 1 values, expected 2"):
        snapshot.encode({"a": [1, 2], "b": [1]})


@pytest.mark.parametrize("blob", [b"", b"\x05\x00\x00\x00\x00\x00\x00\x00{}", b"garbage-garbage"])
def test_a_blob_that_is_no_snapshot_is_refused(blob: bytes) -> None:
    with pytest.raises(ValueError):
        snapshot.decode(blob)


@pytest.fixture
def recorded(db_url: str, tmp_path: Path) -> tuple[str, int, Path]:
    loaded = load_config(overrides={"run": {"db_url": db_url}, "market": {"synthetic": {"bars": 1000}}}, env={})
    reviewer = tmp_path / "rules.yaml"
    reviewer.write_text(RULES, encoding="utf-8")
    return db_url, run_replay(loaded).run_id, reviewer


@pytest.fixture
def row_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every time a lean load reads rows, not a snapshot: "reviewed" (the reviews' rows read), and each snapshot
    kept from rows read ("kept <kind>")."""
    from storage import bulk

    seen: list[str] = []
    real_reviewed, real_keep = bulk._reviewed_columns, snapshot.keep

    def reviewed(*a: Any, **k: Any) -> Any:
        seen.append("reviewed")
        return real_reviewed(*a, **k)

    def keep(storage: Any, run_id: int, kind: str, *a: Any) -> bool:
        seen.append(f"kept {kind}")
        return real_keep(storage, run_id, kind, *a)

    monkeypatch.setattr(bulk, "_reviewed_columns", reviewed)
    monkeypatch.setattr(snapshot, "keep", keep)
    return seen


def _loaded(store: Any, run_id: int) -> tuple[Any, Any]:
    """What a backtest loads of the run (lean, through a check): its reviews and shadow outcomes."""
    from engine.recorded.stored import load_stored

    check = store.check_packs(run_id)
    try:
        stored = load_stored(store, run_id, lean=True, check=check)
    finally:
        check.close()
    r = stored.reviews
    return (r.packs, r.verdicts, r.decisions), stored.stored_outcomes.columns


def _kinds(store: Any, run_id: int) -> dict[str, str]:
    with store.engine.connect() as conn:
        return dict(conn.execute(text("SELECT kind, stamp FROM run_snapshots WHERE run_id = :r"), {"r": run_id}).all())


def test_a_repeat_backtest_reads_the_snapshot_and_scores_the_same(recorded: tuple[str, int, Path],
                                                                 row_reads: list[str]) -> None:
    from storage import open_storage

    url, run_id, reviewer = recorded
    with open_storage(url) as store:
        rows_first = _loaded(store, run_id)  # checks the packs, keeps their digests and a snapshot on their stamp
        assert row_reads == ["reviewed", "kept reviewed-lean", "kept outcomes-shadow"]
        assert set(_kinds(store, run_id)) == {"reviewed-lean", "outcomes-shadow"}
        row_reads.clear()
        first = run_backtest(store, run_id, [reviewer])
        second = run_backtest(store, run_id, [reviewer])
        assert row_reads == []  # read from the snapshot
        from_snapshot = _loaded(store, run_id)
        assert row_reads == []
    assert from_snapshot == rows_first  # the same values, in the same order
    assert _bits(list(from_snapshot[1]["pnl_pct"])) == _bits(list(rows_first[1]["pnl_pct"]))
    assert second.columns[1].card.sources == {"cache": second.signals}
    assert [_quality(c.card.to_dict()) for c in first.columns] == [_quality(c.card.to_dict()) for c in second.columns]


_OUTCOME_COLUMNS = ", ".join(rows.COLUMNS["outcomes"])
_AS_REALIZED = _OUTCOME_COLUMNS.replace("kind", "'realized'")
# each change a run's rows can go through after a backtest, and what the next load must then see
_CHANGES = {
    "verdict updated": ("UPDATE verdicts SET verdict = 'veto', source = 'edited' WHERE run_id = :r AND signal_id = "
                        "(SELECT min(signal_id) FROM verdicts WHERE run_id = :r)"),
    "decision deleted": ("DELETE FROM decisions WHERE run_id = :r AND signal_id = "
                         "(SELECT min(signal_id) FROM decisions WHERE run_id = :r)"),
    "signal updated": ("UPDATE signals SET size_hint = size_hint / 2 WHERE run_id = :r AND id = "
                       "(SELECT min(signal_id) FROM verdicts WHERE run_id = :r)"),
    "outcome updated": ("UPDATE outcomes SET pnl_pct = pnl_pct + 1 WHERE run_id = :r AND kind = 'shadow' AND "
                        "signal_id = (SELECT min(signal_id) FROM outcomes WHERE run_id = :r AND kind = 'shadow')"),
    "outcome deleted": ("DELETE FROM outcomes WHERE run_id = :r AND kind = 'shadow' AND signal_id = "
                        "(SELECT min(signal_id) FROM outcomes WHERE run_id = :r AND kind = 'shadow')"),
    "outcome inserted": (f"INSERT INTO outcomes ({_OUTCOME_COLUMNS}) SELECT {_AS_REALIZED} FROM outcomes WHERE "
                         "run_id = :r AND kind = 'shadow' AND signal_id NOT IN (SELECT signal_id FROM outcomes WHERE "
                         "run_id = :r AND kind = 'realized') ORDER BY signal_id LIMIT 1"),
}


@pytest.mark.parametrize("change", sorted(_CHANGES))
def test_any_change_to_what_a_snapshot_covers_sends_the_next_load_back_to_the_rows(
        recorded: tuple[str, int, Path], row_reads: list[str], change: str) -> None:
    from storage import open_storage

    url, run_id, reviewer = recorded
    with open_storage(url) as store:
        run_backtest(store, run_id, [reviewer])
        stamps = _kinds(store, run_id)
        assert _sql(store, _CHANGES[change], r=run_id) == 1
        row_reads.clear()
        after = _loaded(store, run_id)
        seen = list(row_reads)
        # the truth: read from the rows with no snapshot at all
        _sql(store, "DELETE FROM run_snapshots WHERE run_id = :r", r=run_id)
        truth = _loaded(store, run_id)
        assert after == truth
        # read from the rows, and kept again: the reviews, or the outcomes, whichever changed (an update or delete
        # of any of the four tables withdraws both: the run's changed-row count is one)
        if change.startswith("outcome"):
            assert "kept outcomes-shadow" in seen
            assert ("reviewed" in seen) is (change != "outcome inserted")
        else:
            assert seen[:2] == ["reviewed", "kept reviewed-lean"]
        with store.engine.connect() as conn:
            now = snapshot.stamp(conn, run_id, [])
        assert now is not None and now.split(";")[:2] == stamps["reviewed-lean"].split(";")[:2]  # packs untouched
        assert _loaded(store, run_id) == truth  # and a snapshot kept from the rows again gives the same


def test_a_snapshot_taken_before_a_change_is_never_used_after_it(recorded: tuple[str, int, Path]) -> None:
    """The stamp is read before the rows: a change committed between the two leaves a stamp that is not the run's."""
    from storage import bulk, open_storage

    url, run_id, reviewer = recorded
    with open_storage(url) as store:
        run_backtest(store, run_id, [reviewer])
        _sql(store, "DELETE FROM run_snapshots WHERE run_id = :r", r=run_id)
        real = bulk._reviewed_columns

        def changed_meanwhile(*a: Any, **k: Any) -> Any:
            got = real(*a, **k)  # read (the stamp before it) ... then another connection changes a verdict
            _sql(store, _CHANGES["verdict updated"], r=run_id)
            return got

        bulk._reviewed_columns = changed_meanwhile  # type: ignore[assignment]
        try:
            stale = _loaded(store, run_id)
        finally:
            bulk._reviewed_columns = real  # type: ignore[assignment]
        fresh = _loaded(store, run_id)
        assert fresh != stale  # the kept snapshot (of the rows before the change) was not used
        assert fresh[0][1]["source"].count("edited") == 1


def test_a_snapshot_that_cannot_be_read_is_logged_and_the_rows_are_read(recorded: tuple[str, int, Path],
                                                                       row_reads: list[str],
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    from storage import open_storage

    url, run_id, reviewer = recorded
    with open_storage(url) as store:
        run_backtest(store, run_id, [reviewer])
        truth = _loaded(store, run_id)
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE run_snapshots SET data = :d WHERE run_id = :r"), {"d": b"\x01" * 20, "r": run_id})
        row_reads.clear()
        assert _loaded(store, run_id) == truth
    assert row_reads[0] == "reviewed"
    assert "snapshot cannot be read" in caplog.text


def test_deleting_a_run_deletes_its_snapshots(recorded: tuple[str, int, Path]) -> None:
    from storage import open_storage

    url, run_id, reviewer = recorded
    with open_storage(url) as store:
        run_backtest(store, run_id, [reviewer])
        assert _kinds(store, run_id)
        store.delete_run(run_id)
        assert _kinds(store, run_id) == {}
