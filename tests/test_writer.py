"""Write-behind recording (``storage.writer.BackgroundWriter``): a child process commits a replay's batches.

A replay recorded from the child stores exactly what an in-process one stores; a batch the database refuses
comes back as the same one-line StorageError with the batches before it committed and none after; a writer
that dies is an error naming its exit code; Ctrl-C lets the batches already sent commit, and the run resumes
to the same ledger; a killed parent takes its writer with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from engine.app import run_replay
from engine.config import load_config
from engine.drivers.replay import Replay
from engine.errors import StorageError
from storage import open_storage
from storage.child import shareable
from storage.models import RUN_SCOPED_TABLES, Base
from storage.store import Storage
from storage.writer import BackgroundWriter
from tests.test_crash import BACKENDS, database
from tests.test_replay_batches import _Pipeline, _store_records

ROOT = Path(__file__).resolve().parents[1]
# the only columns two runs of one config may differ in: wall-clock times, and the config (it holds the URL)
DIFFERENT = {"created_at", "updated_at", "latency_ms", "attempts", "config_json", "config_hash"}
BARS = 1500  # per symbol, 3 symbols: batches of 64, 128, 256, 512 slices and the rest


def _config(url: str, name: str = "w") -> Any:
    return load_config(overrides={"run": {"name": name, "db_url": url}, "market": {"synthetic": {"bars": BARS}}},
                       env={})


def _dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the run-scoped tables and the run rows but the ``DIFFERENT`` columns, in a stable order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with open_storage(url, create=False) as store, store.engine.connect() as conn:
        for name in ("runs", *RUN_SCOPED_TABLES):
            table = Base.metadata.tables[name]
            cols = [c for c in table.columns if c.name not in DIFFERENT]
            out[name] = sorted((tuple(r) for r in conn.execute(select(*cols))), key=repr)
    return out


@pytest.fixture(scope="module")
def inline_dump(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[Any, ...]]]:
    """The reference: the same replay recorded in-process (it is far below WRITE_BEHIND_MIN_BARS)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('inline') / 'inline.db'}"
    assert Storage.WRITE_BEHIND_MIN_BARS > 3 * BARS
    run_replay(_config(url))
    return _dump(url)


@pytest.fixture
def write_behind(monkeypatch: pytest.MonkeyPatch) -> list[BackgroundWriter]:
    """Every replay records through a BackgroundWriter; the writers made are listed."""
    made: list[BackgroundWriter] = []
    real = Storage.recorder

    def spy(self: Storage, run_id: int, *, expected_bars: int | None = None) -> Any:
        r = real(self, run_id, expected_bars=expected_bars)
        if isinstance(r, BackgroundWriter):
            made.append(r)
        return r

    monkeypatch.setattr(Storage, "WRITE_BEHIND_MIN_BARS", 0)
    monkeypatch.setattr(Storage, "recorder", spy)
    return made


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_replay_recorded_from_the_child_stores_exactly_what_an_inline_one_does(
        backend: str, tmp_path: Path, inline_dump: dict[str, Any], write_behind: list[BackgroundWriter]) -> None:
    with database(backend, tmp_path, "behind") as url:
        res = run_replay(_config(url))
        assert len(write_behind) == 1 and write_behind[0]._child.process.returncode == 0  # used, and ended cleanly
        got = _dump(url)
    assert got == inline_dump
    assert len(got["bars"]) == 3 * BARS == res.stats.bars


def test_in_memory_databases_are_written_in_process(write_behind: list[BackgroundWriter]) -> None:
    res = run_replay(_config("sqlite://"))
    assert res.stats.bars == 3 * BARS and write_behind == []
    with open_storage("sqlite://") as store:
        assert not shareable(store)


def _trigger_failing_from(url: str, close_ms: int) -> None:
    """A real database error inside the child: gate results of slices from ``close_ms`` on are refused."""
    with open_storage(url) as store, store.engine.begin() as conn:
        conn.execute(text(f"""CREATE TRIGGER refuse BEFORE INSERT ON gate_results
            WHEN (SELECT created_ms FROM signals WHERE id = NEW.signal_id) >= {close_ms}
            BEGIN SELECT RAISE(ABORT, 'disk I/O error (simulated)'); END"""))


def test_a_batch_the_database_refuses_surfaces_as_one_line_and_later_batches_are_not_committed(
        tmp_path: Path) -> None:
    records = list(_store_records(700))  # batches of 64, 128, 256, 252 slices; a signal every 3rd slice
    url = f"sqlite:///{tmp_path / 'r.db'}"
    _trigger_failing_from(url, records[300].close_ms)  # inside the third batch (slices 192..447)
    with open_storage(url) as store:
        run_id = store.create_run("r", "{}", "h", 1, "active", 1.0)
        rec = store.recorder(run_id)
        writer = BackgroundWriter(rec, depth=8)  # everything is sent before the failure comes back
        with pytest.raises(StorageError) as err:
            try:
                Replay(_Pipeline(records), (r.bars for r in records), writer, batch_rows=1_000).run()
                writer.close()
            finally:
                writer.abort()
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith(store.url_masked)
        assert f"cannot record slices {records[192].close_ms}..{records[447].close_ms} of run {run_id}" in msg
        assert "disk I/O error (simulated)" in msg and "(table gate_results)" in msg
        assert rec.last_slice_ms() == records[191].close_ms  # the first two batches stand, whole
        assert store.table_counts(run_id)["bars"] == 192 * 2
        assert writer._child.process.returncode == 0  # the child ended by itself after reporting


def test_a_writer_that_dies_is_an_error_naming_its_exit_code(tmp_path: Path) -> None:
    records = list(_store_records(400))
    with open_storage(f"sqlite:///{tmp_path / 'r.db'}") as store:
        run_id = store.create_run("r", "{}", "h", 1, "active", 1.0)
        rec = store.recorder(run_id)
        writer = BackgroundWriter(rec)
        batch = rec.new_batch()
        for r in records[:100]:
            batch.add(r)
        writer.write_batch(batch)
        writer._collect(block=True)  # committed
        os.kill(writer._child.pid, signal.SIGKILL)
        writer._child.process.wait()
        batch = rec.new_batch()
        for r in records[100:]:
            batch.add(r)
        with pytest.raises(StorageError, match=r"the background writer process ended with exit code -9 before "
                                               r"committing it"):
            writer.write_batch(batch)
            writer.close()
        writer.abort()  # harmless after the error
        assert rec.last_slice_ms() == records[99].close_ms
        assert store.table_counts(run_id)["bars"] == 200


def test_ctrl_c_mid_replay_keeps_the_sent_batches_and_the_run_resumes_to_the_same_ledger(
        tmp_path: Path, inline_dump: dict[str, Any], write_behind: list[BackgroundWriter],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.core.pipeline import Pipeline

    url = f"sqlite:///{tmp_path / 'crash.db'}"
    real_step = Pipeline.step
    calls = [0]

    def failing_step(self: Pipeline, bars: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1_000:  # batches of 64, 128, 256 and 512 slices (960) were sent before this
            raise KeyboardInterrupt
        return real_step(self, bars)

    monkeypatch.setattr(Pipeline, "step", failing_step)
    with pytest.raises(KeyboardInterrupt):
        run_replay(_config(url))
    with open_storage(url, create=False) as store:
        run = store.list_runs()[0]
        assert run.status == "stopped"
        recorded = store.recorder(run.id).last_slice_ms()
        n_bars = store.table_counts(run.id)["bars"]
    assert n_bars == 3 * 960, "every batch sent before the error was committed, and nothing else"
    assert recorded is not None
    monkeypatch.setattr(Pipeline, "step", real_step)
    run_replay(_config(url))  # resumes the interrupted run
    got = _dump(url)
    assert got["runs"] == inline_dump["runs"]  # finished, last slice, mode: as if never interrupted
    # The resume adds its own events, and the signals it reviewed again were answered from the verdict
    # cache (source "cache"): everything else is as if never interrupted.
    cols = [c.name for c in Base.metadata.tables["verdicts"].columns if c.name not in DIFFERENT]
    k = cols.index("source")
    assert sorted(v[:k] + v[k + 1:] for v in got["verdicts"]) == sorted(v[:k] + v[k + 1:] for v in inline_dump[
        "verdicts"])
    assert 0 < sum(v[k] == "cache" for v in got["verdicts"]) < 100
    for table in RUN_SCOPED_TABLES:
        if table not in ("events", "verdicts"):
            assert got[table] == inline_dump[table], table


CHILD = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[2])
from storage import open_storage
from storage.writer import BackgroundWriter
from tests.test_replay_batches import _store_records

store = open_storage(sys.argv[1])
run_id = store.create_run("r", "{}", "h", 1, "active", 1.0)
rec = store.recorder(run_id)
writer = BackgroundWriter(rec)
records = list(_store_records(3000))
for k in range(0, 3000, 100):
    batch = rec.new_batch()
    for r in records[k:k + 100]:
        batch.add(r)
    writer.write_batch(batch)
    if k == 1000:
        print(writer._child.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_parent_takes_its_writer_with_it_and_leaves_whole_batches(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    p = subprocess.run([sys.executable, "-c", CHILD, url, str(ROOT)], capture_output=True, text=True, timeout=120,
                       check=False)
    assert p.returncode == -signal.SIGKILL, p.stderr
    pid = int(p.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the writer outlived its parent"
    with open_storage(url, create=False) as store:
        rec = store.recorder(1)
        n = store.table_counts(1)["bars"]
        last = rec.last_slice_ms()
    assert n % 200 == 0 and n <= 1_100 * 2, n  # whole batches of 100 slices × 2 bars, nothing after the kill
    records = list(_store_records(n // 2))
    assert (last is None and n == 0) or last == records[-1].close_ms


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has ended (its parent, gone too, never reaped it)
    except FileNotFoundError:
        return False


def test_a_writer_that_cannot_start_leaves_the_replay_recording_in_process(
        tmp_path: Path, inline_dump: dict[str, Any], write_behind: list[BackgroundWriter],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import storage.child

    def refuse(*_: Any) -> None:
        raise OSError("Resource temporarily unavailable")

    monkeypatch.setattr(storage.child.Child, "__init__", refuse)
    url = f"sqlite:///{tmp_path / 'fallback.db'}"
    run_replay(_config(url))
    assert write_behind == []
    assert any("cannot start the background writer: Resource temporarily unavailable; recording in this process"
               in r.getMessage() for r in caplog.records)
    assert _dump(url) == inline_dump
