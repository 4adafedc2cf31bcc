"""Concurrent runs: `tradevet paper` processes writing one database at once (SQLite in WAL mode, and
PostgreSQL when TRADEVET_PG_URL is set).

* two runs with different names both finish, neither's rows leak into the other's, and each run's ledger
  equals the same run executed alone;
* two processes opening a brand-new database at once both get the schema (one creates it, the other waits);
* a second process of the *same* run name does not take over the run the first is writing: it waits a
  moment for it, then refuses with one line, and the first run is untouched.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from storage.db import SCHEMA_REVISION
from tests.test_crash import BACKENDS, database

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"alpha": {"seed": 7, "bars": 1500}, "beta": {"seed": 8, "bars": 1200}}


def _config(tmp_path: Path, url: str, name: str, **over: Any) -> Path:
    spec = {**RUNS[name], **over}
    f = tmp_path / f"{name}-{abs(hash(url)) % 10**8}.yaml"
    f.write_text(yaml.safe_dump({"run": {"name": name, "db_url": url, "seed": spec["seed"]},
                                 "market": {"synthetic": {"bars": spec["bars"]}}}))
    return f


def _start(config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "engine.cli", "paper", "-c", str(config), "--no-progress",
                             "--json"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def _ledger(url: str, name: str) -> dict[str, Any]:
    from engine.drivers.replay import fills_fingerprint
    from storage import open_storage

    with open_storage(url, create=False) as store:
        info = store.resolve_run(name)
        rec = store.recorder(info.id)
        fills = rec.load_fills()
        reviews = rec.load_reviews()
        return {
            "status": info.status,
            "fingerprint": fills_fingerprint(fills),
            "fill_ids_unique": len({f.id for f in fills}) == len(fills),
            "trades": rec.load_trades(),
            "outcomes": rec.load_outcomes(),
            "counts": store.table_counts(info.id),
            "packs": [r.pack.hash for r in reviews],
            "verdicts": [(r.verdict.verdict, r.verdict.confidence, r.decision) for r in reviews],
            "symbols_seen": sorted({b.symbol for b in rec.load_bars()}),
        }


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each run executed alone, in a database of its own."""
    tmp = tmp_path_factory.mktemp("alone")
    out = {}
    for name in RUNS:
        url = f"sqlite:///{tmp / (name + '.db')}"
        code, err = _finish(_start(_config(tmp, url, name)))
        assert code == 0, err
        out[name] = _ledger(url, name)
    assert out["alpha"]["fingerprint"] != out["beta"]["fingerprint"], "the two runs must differ to tell them apart"
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_runs_write_one_database_at_once(backend: str, tmp_path: Path,
                                             alone: dict[str, dict[str, Any]]) -> None:
    from storage import open_storage

    with database(backend, tmp_path, "shared") as url:
        procs = {name: _start(_config(tmp_path, url, name)) for name in RUNS}  # same moment, fresh database
        for name, proc in procs.items():
            code, err = _finish(proc)
            assert code == 0, f"{name}: {err}"
        with open_storage(url, create=False) as store:
            runs = store.list_runs()
            assert sorted((r.name, r.status) for r in runs) == [("alpha", "finished"), ("beta", "finished")]
            per_run = {r.name: store.table_counts(r.id) for r in runs}
            whole = store.table_counts()
        for table, n in whole.items():  # nothing outside the two runs, nothing counted twice
            if table in per_run["alpha"]:
                assert n == per_run["alpha"][table] + per_run["beta"][table], table
        for name in RUNS:
            got = _ledger(url, name)
            want = alone[name]
            assert got["status"] == "finished" and got["fill_ids_unique"]
            assert got["fingerprint"] == want["fingerprint"], f"{name}: the ledger differs from the run alone"
            assert got["trades"] == want["trades"] and got["outcomes"] == want["outcomes"]
            assert got["counts"] == want["counts"], f"{name}: rows leaked in or went missing"
            assert got["packs"] == want["packs"] and got["verdicts"] == want["verdicts"]


# A process that opens a database, but only after another one has also looked and seen no schema in it: both
# then set out to create the schema (each announces itself with a file and waits for the other's).
OPEN_AFTER_BOTH_LOOKED = r"""
import sys, time
from pathlib import Path
import storage.db
from storage import open_storage

url, me, other = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
real = storage.db._stored_revisions


def stored_then_wait(conn, tables):
    out = real(conn, tables)
    if not out:
        me.touch()
        deadline = time.monotonic() + 30
        while not other.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    return out


storage.db._stored_revisions = stored_then_wait
open_storage(url).close()
print("raced" if other.exists() else "alone")
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_processes_open_a_new_database_at_once(backend: str, tmp_path: Path) -> None:
    """Both see an empty database and set out to create the schema: one does, the other waits and finds it.

    (Before the migration took a lock on PostgreSQL, the second failed: "cannot migrate the schema: integrity
    error: duplicate key value violates unique constraint pg_type_typname_nsp_index", exit code 4.)
    """
    from sqlalchemy import create_engine, text

    with database(backend, tmp_path, "fresh") as url:
        a, b = tmp_path / "a.looked", tmp_path / "b.looked"
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_AFTER_BOTH_LOOKED, url, str(me), str(other)], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}) for me, other in ((a, b), (b, a))]
        results = [p.communicate(timeout=120) for p in procs]
        for p, (out, err) in zip(procs, results, strict=True):
            assert p.returncode == 0, err.strip().splitlines()[-1:]
            assert out.strip() == "raced", "the two did not race"
        eng = create_engine(url)
        try:
            with eng.connect() as c:
                assert c.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [SCHEMA_REVISION]
        finally:
            eng.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_run_name_twice_at_once_is_refused_not_taken_over(backend: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """While a process writes run "alpha", another `paper` of "alpha" must not resume it under its feet.

    (It did: it read the half-written run, failed with "signal ... was not reviewed in the recorded run (the
    code or config changed since the run started)" and marked the other process's run failed.)
    """
    from engine.app import run_replay
    from engine.config import load_config
    from engine.errors import StorageError
    from storage import open_storage
    from storage.store import Storage

    with database(backend, tmp_path, "same") as url:
        cfg = _config(tmp_path, url, "alpha")
        # another process that is writing "alpha" right now (claims are per process: POSIX locks, server sessions)
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys\nfrom storage import open_storage\ns = open_storage(sys.argv[1])\n"
             "assert s.claim_run_name('alpha')\nprint('claimed', flush=True)\nsys.stdin.read()\ns.close()", url],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "claimed"
            monkeypatch.setattr(Storage, "CLAIM_WAIT_S", 0.3)
            with pytest.raises(StorageError) as e:
                run_replay(load_config([cfg], env={}))
            with open_storage(url) as store:
                assert str(e.value) == (
                    f"{store.url_masked}: another tradevet process is writing run 'alpha': let it finish or stop it "
                    "(Ctrl-C or SIGTERM) and start again to resume it, or choose another run.name")
                assert store.list_runs() == [], "the refused process must not have created or touched a run"
        finally:
            holder.communicate(input="", timeout=30)
        # the claim went with its holder: the same command now runs
        assert run_replay(load_config([cfg], env={})).run_id == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_run_name_in_two_processes(backend: str, tmp_path: Path, alone: dict[str, dict[str, Any]]) -> None:
    """Two real processes, the second started while the first replays: the first run is never taken over.

    The second either waits out the first (which finishes within the claim's wait) and then starts a new run
    of that name, or refuses with one line; in both cases the first run is finished and whole.
    """
    from storage import open_storage

    with database(backend, tmp_path, "twice") as url:
        cfg = _config(tmp_path, url, "alpha", bars=6000)
        first = _start(cfg)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # start the second once the first has written some slices
            with contextlib.suppress(Exception), open_storage(url, create=False) as store:
                runs = store.list_runs()
                if runs and runs[0].last_slice_ms is not None:
                    break
            time.sleep(0.05)
        code2, err2 = _finish(_start(cfg))
        code1, err1 = _finish(first)
        assert code1 == 0, err1
        assert code2 == 0 or (code2 == 4 and "another tradevet process is writing run 'alpha'" in err2), err2
        with open_storage(url, create=False) as store:
            runs = store.list_runs()
            assert runs[0].status == "finished"
            assert len(runs) == (2 if code2 == 0 else 1)
            counts = [store.table_counts(r.id) for r in runs]
        assert all(c == counts[0] for c in counts), "both runs of the same config must be identical"
