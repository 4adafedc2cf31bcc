"""Crash safety: `tradevet paper` SIGKILLed at many points, rerun until it finishes, ends with the very ledger
of an uninterrupted run — on SQLite, and on PostgreSQL when TRADEVET_PG_URL names a throwaway server.

Two kinds of kills:

* at named points, by the process itself (a child wrapper patches one function to SIGKILL its own process):
  inside the schema migration, right after the run row is created, inside a slice batch's transaction (rows
  inserted, not committed), right after a batch committed, with batches in flight to the background writer
  of a long replay (a child process: it must die with the run), between the last commit (which carries the
  end-of-data exits of the positions still open) and the "finished" status, and during the final scorecard;
* at seeded random moments, from outside, spread over start-up, the replay and its end.

A background writer killed under a running replay ends the command with one line (exit 4); the next start
records the same ledger.

After each kill the database state is classified (no run yet / run without slices / mid-replay / all slices
recorded / finished) and counted; the totals are printed (``pytest -s``).

The live loop (ccxt against the fake exchange, 1 s bars) is SIGKILLed twice and restarted: no gap, no
duplicate bar, no duplicate fill.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import pg_database
from tests.test_cli_live import _live_yaml

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("TRADEVET_PG_URL")
BARS = 1439  # 3 symbols × 1,434 5m bars; the run ends with positions open: its last batch carries end-of-data exits
KILLS: Counter[str] = Counter()  # where the kills of this module landed, for the summary line

# The child: `tradevet paper` with one function patched to SIGKILL its own process at a named point.
CHILD = r"""
import os, signal, sys, time

point = os.environ.get("TV_CRASH_POINT", "")
nth = int(os.environ.get("TV_CRASH_N", "1"))
calls = [0]


def die():
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def after_nth(obj, name):
    orig = getattr(obj, name)

    def wrapper(*a, **k):
        out = orig(*a, **k)
        calls[0] += 1
        if calls[0] == nth:
            die()
        return out

    setattr(obj, name, wrapper)


if point == "trace":  # no kill: say when the run was opened (created or resumed) and when the command ended
    import engine.app

    orig_open = engine.app._open_or_resume

    def open_or_resume(*a, **k):
        out = orig_open(*a, **k)
        print(f"tv-trace opened {time.monotonic()}", file=sys.stderr, flush=True)
        return out

    engine.app._open_or_resume = open_or_resume
    import storage.store

    orig_status = storage.store.Storage.set_run_status

    def set_status(self, run_id, status):
        out = orig_status(self, run_id, status)
        if status == "finished":
            print(f"tv-trace finished {time.monotonic()}", file=sys.stderr, flush=True)
        return out

    storage.store.Storage.set_run_status = set_status
elif point == "migration":  # the schema's DDL ran inside the migration's transaction, not committed
    import alembic.command

    after_nth(alembic.command, "upgrade")
elif point == "run-created":
    import storage.store as r

    after_nth(r.Storage, "create_run")
elif point == "mid-transaction":  # the n-th INSERT of a slice batch executed; its transaction is open
    import storage.sql as r

    after_nth(r.Insert, "run")
elif point == "after-commit":  # the n-th slice batch committed
    import storage.recorder as r

    after_nth(r.RunRecorder, "_write")
elif point in ("writer-in-flight", "writer-killed"):  # a replay recording from a child process (storage.writer)
    import storage.store
    import storage.writer as w

    storage.store.Storage.WRITE_BEHIND_MIN_BARS = 0
    orig_write_batch = w.BackgroundWriter.write_batch

    def write_batch(self, batch):
        orig_write_batch(self, batch)
        calls[0] += 1
        if calls[0] == nth:
            print(f"tv-writer {self._child.pid}", file=sys.stderr, flush=True)
            if point == "writer-in-flight":  # the n-th batch sent, maybe not committed: the parent dies
                die()
            os.kill(self._child.pid, signal.SIGKILL)  # the writer dies; the parent goes on stepping

    w.BackgroundWriter.write_batch = write_batch
elif point == "before-finished":  # every slice committed (end-of-data record included), status still running
    import storage.store as r

    orig_status = r.Storage.set_run_status

    def set_run_status(self, run_id, status):
        if status == "finished":
            die()
        return orig_status(self, run_id, status)

    r.Storage.set_run_status = set_run_status
elif point == "scorecard":  # the run is finished; the scorecard is being computed
    import engine.recorded.scorecard

    def run_scorecard(*a, **k):
        die()

    engine.recorded.scorecard.run_scorecard = run_scorecard

from engine.cli import main

code = main(sys.argv[1:])
if point == "trace":
    print(f"tv-trace exit {time.monotonic()}", file=sys.stderr, flush=True)
sys.exit(code)
"""


# ------------------------------------------------------------------------------------------ databases


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextlib.contextmanager
def database(backend: str, tmp_path: Path, tag: str) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / (tag + '.db')}"
        return
    if not PG_URL:
        pytest.skip("TRADEVET_PG_URL is not set")
    with pg_database(tag) as url:
        yield url


# ------------------------------------------------------------------------------------------ running


def _config(tmp_path: Path, url: str, tag: str, bars: int = BARS, **extra: Any) -> Path:
    f = tmp_path / f"{tag}.yaml"
    # (the retire rule off: BARS is chosen so that the run ends with positions open, under these decisions)
    f.write_text(yaml.safe_dump({"run": {"name": "crash", "db_url": url}, "market": {"synthetic": {"bars": bars}},
                                 "scoring": {"retire": {"enabled": False}}, **extra}))
    return f


def _cmd(config: Path) -> list[str]:
    return [sys.executable, "-c", CHILD, "paper", "-c", str(config), "--no-progress", "--json"]


def _env(point: str = "", n: int = 1) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "TV_CRASH_POINT": point, "TV_CRASH_N": str(n)}


def _run(config: Path, point: str = "", n: int = 1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(config), cwd=ROOT, env=_env(point, n), capture_output=True, text=True,
                          timeout=240, check=False)


def _kill_at_random(config: Path, rng: random.Random, ref: dict[str, Any], done: float) -> int:
    """Start the command and SIGKILL it at a seeded random moment; return its exit code (0: it ended first).

    One kill in five comes during start-up (imports, migration, opening the run); the others come a random
    time after the run was opened (created or resumed), spread over a little more than what is left of the
    replay (``done``: the share of slices already recorded; a resumed run first steps through those again,
    without writing), so they land in the catch-up of a resumed run, mid-replay (inside or between batch
    transactions), after the last commit, or during the final scorecard.
    """
    proc = subprocess.Popen(_cmd(config), cwd=ROOT, env=_env("trace"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        if rng.random() < 0.2:
            delay = rng.uniform(0.05, ref["startup_s"])
        else:
            for line in proc.stderr:
                if line.startswith("tv-trace opened"):
                    break
            delay = rng.uniform(0.0, 1.15 * (ref["finished_s"] - ref["startup_s"]) * (1.0 - 0.6 * done))
        try:
            return proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            return proc.wait(timeout=60)
    finally:
        proc.stderr.close()


def _state(url: str, final_ms: int) -> str:
    """Where a kill left the database: what the restart will find."""
    from engine.errors import StorageError
    from storage import open_storage

    try:
        store = open_storage(url, create=False)
    except StorageError:
        return "no database or schema yet"
    try:
        runs = store.list_runs()
        if not runs:
            return "schema, no run yet"
        r = runs[-1]
        if r.status == "finished":
            return "finished (scorecard or exit)"
        if r.last_slice_ms is None:
            return "run created, no slice"
        if r.last_slice_ms < final_ms:
            return "mid-replay"
        return "all slices recorded, not finished"
    finally:
        store.close()


def _done(url: str, ref: dict[str, Any]) -> float:
    """The share of the replay's slices the database holds (0 when there is no run yet)."""
    from engine.errors import StorageError
    from storage import open_storage

    try:
        with open_storage(url, create=False) as store:
            runs = store.list_runs()
    except StorageError:
        return 0.0
    if not runs or runs[-1].last_slice_ms is None:
        return 0.0
    first, last = ref["first_slice_ms"], ref["last_slice_ms"]
    return min(1.0, max(0.0, (runs[-1].last_slice_ms - first) / (last - first)))


def _ledger(url: str, run_id: int | None = None) -> dict[str, Any]:
    """Everything the comparison needs of one run, read back from storage."""
    from engine.drivers.replay import fills_fingerprint
    from storage import open_storage

    with open_storage(url, create=False) as store:
        runs = store.list_runs()
        info = runs[-1] if run_id is None else store.get_run(run_id)
        rec = store.recorder(info.id)
        fills = rec.load_fills()
        signals = rec.load_signals()
        counts = store.table_counts(info.id)
        return {
            "runs": [(r.name, r.status) for r in runs],
            "status": info.status,
            "last_slice_ms": info.last_slice_ms,
            "fingerprint": fills_fingerprint(fills),
            "fill_ids_unique": len({f.id for f in fills}) == len(fills),
            "signal_ids_unique": len({s.id for s in signals}) == len(signals),
            "trades": rec.load_trades(),
            "outcomes": rec.load_outcomes(),
            "counts": counts,
            "bars_unique": len({(b.symbol, b.close_ms) for b in rec.load_bars()}) == counts["bars"],
        }


def _assert_same_run(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["status"] == "finished"
    assert got["fill_ids_unique"] and got["signal_ids_unique"] and got["bars_unique"], "duplicate ids"
    assert got["fingerprint"] == want["fingerprint"], "the ledger differs from the uninterrupted run's"
    assert got["trades"] == want["trades"]
    assert got["outcomes"] == want["outcomes"]
    assert got["counts"] == want["counts"], "a table gained or lost rows"
    assert got["last_slice_ms"] == want["last_slice_ms"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted run (SQLite), with the times its start-up and its whole run took here."""
    tmp = tmp_path_factory.mktemp("reference")
    url = f"sqlite:///{tmp / 'ref.db'}"
    cfg = _config(tmp, url, "ref")
    timing = _timing(cfg)
    ref = _ledger(url)
    assert ref["runs"] == [("crash", "finished")] and ref["counts"]["fills"] > 100
    from storage import open_storage

    with open_storage(url) as store:
        ref["first_slice_ms"] = min(b.close_ms for b in store.recorder(1).load_bars())
        reasons = {f.reason for f in store.recorder(1).load_fills() if f.filled_ms == ref["last_slice_ms"]}
    assert "end" in reasons, "the reference must end with positions marked out at the end of its data"
    ref.update(timing)
    return ref


def _timing(cfg: Path) -> dict[str, float]:
    """One uninterrupted run of ``cfg``: seconds from the command's start to the run opened, and to its end."""
    t0 = time.monotonic()
    done = _run(cfg, "trace")
    assert done.returncode == 0, done.stderr
    marks = dict(line.split()[1:3] for line in done.stderr.splitlines() if line.startswith("tv-trace"))
    return {"startup_s": float(marks["opened"]) - t0, "finished_s": float(marks["finished"]) - t0,
            "total_s": float(marks["exit"]) - t0}


def teardown_module() -> None:
    if KILLS:
        total = sum(KILLS.values())
        where = ", ".join(f"{k}: {v}" for k, v in sorted(KILLS.items()))
        print(f"\ntest_crash: {total} SIGKILLs, every one recovered to the uninterrupted ledger ({where})")


# ------------------------------------------------------------------------------------ named points

POINTS = [
    ("migration", 1),
    ("run-created", 1),
    ("mid-transaction", 3),  # the third INSERT of the first batch: bars, signals, gate results in, not committed
    ("mid-transaction", 40),
    ("after-commit", 5),
    ("scorecard", 1),
]
# PostgreSQL replays are slower (~4 s a run here): it gets the points where the backend matters (transactional
# DDL, a transaction cut by a dropped connection, a committed batch); the others are backend-independent logic.
PG_POINTS = [("migration", 1), ("mid-transaction", 3), ("after-commit", 5)]
POINT_CASES = [pytest.param("sqlite", p, n, id=f"sqlite-{p}-{n}") for p, n in POINTS] + [
    pytest.param("postgresql", p, n, id=f"postgresql-{p}-{n}", marks=pytest.mark.postgres) for p, n in PG_POINTS]


@pytest.mark.parametrize(("backend", "point", "n"), POINT_CASES)
def test_kill_at_a_named_point_then_rerun(backend: str, tmp_path: Path, reference: dict[str, Any], point: str,
                                          n: int) -> None:
    with database(backend, tmp_path, "point") as url:
        cfg = _config(tmp_path, url, "point")
        killed = _run(cfg, point, n)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        KILLS[f"{point} ({backend})"] += 1
        state = _state(url, reference["last_slice_ms"])
        again = _run(cfg)
        assert again.returncode == 0, again.stderr
        runs = _ledger(url)["runs"]
        if point == "scorecard":
            # the run had finished; the rerun is a new run of the same name, as after any finished run
            assert state == "finished (scorecard or exit)" and runs == [("crash", "finished")] * 2
            for run_id in (1, 2):
                _assert_same_run(_ledger(url, run_id), reference)
        else:
            assert runs == [("crash", "finished")], f"the rerun must resume the run ({state})"
            _assert_same_run(_ledger(url), reference)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_after_the_last_commit_then_rerun(backend: str, tmp_path: Path, reference: dict[str, Any]) -> None:
    """Killed between the final batch and the "finished" status: the rerun completes the same run.

    The final batch carries the end-of-data exits (positions marked out at the last close), which stepping
    the recorded bars again does not produce. (This was a bug: the resume refused with "the recorded ledger
    (271 fills) cannot be reproduced (269 regenerated ...)", exit 4, and marked the complete run failed.)
    """
    with database(backend, tmp_path, "last") as url:
        cfg = _config(tmp_path, url, "last")
        assert _run(cfg, "before-finished").returncode == -signal.SIGKILL
        KILLS[f"before-finished ({backend})"] += 1
        assert _state(url, reference["last_slice_ms"]) == "all slices recorded, not finished"
        again = _run(cfg)
        assert again.returncode == 0, again.stderr
        got = _ledger(url)
        assert got["runs"] == [("crash", "finished")]
        _assert_same_run(got, reference)


def test_a_hedging_account_killed_mid_transaction_resumes_to_its_uninterrupted_ledger(
        tmp_path: Path, reference: dict[str, Any]) -> None:
    """The other account mode (positions per signal, shorts on futures): the same kill -9 and rerun as the
    named points above (which run the default netting account) give the uninterrupted hedging run."""
    hedging = {"execution": {"account": "hedging"}}
    ref_url = f"sqlite:///{tmp_path / 'href.db'}"
    market = {"synthetic": {"bars": BARS}, "type": "futures"}
    assert _run(_config(tmp_path, ref_url, "href", market=market, **hedging)).returncode == 0
    want = _ledger(ref_url)
    url = f"sqlite:///{tmp_path / 'hedge.db'}"
    cfg = _config(tmp_path, url, "hedge", market=market, **hedging)
    killed = _run(cfg, "mid-transaction", 3)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    KILLS["mid-transaction (sqlite, hedging)"] += 1
    again = _run(cfg)
    assert again.returncode == 0, again.stderr
    got = _ledger(url)
    assert got["runs"] == [("crash", "finished")]
    _assert_same_run(got, want)
    # the account mode changes what is traded: this is not the (netting, spot) reference's ledger
    assert want["fingerprint"] != reference["fingerprint"] and want["counts"]["fills"] > reference["counts"]["fills"]


def _writer_pid(stderr: str) -> int:
    return int(next(line.split()[1] for line in stderr.splitlines() if line.startswith("tv-writer")))


def _gone(pid: int, wait_s: float = 10.0) -> bool:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split()[2] == "Z":  # ended, not reaped (its parent is gone)
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_with_batches_in_flight_to_the_writer_then_rerun(backend: str, tmp_path: Path,
                                                              reference: dict[str, Any]) -> None:
    """A replay recording from a child process, SIGKILLed right after sending its third batch: the writer
    dies with it (no commit after the parent's death), and the rerun resumes to the uninterrupted ledger."""
    with database(backend, tmp_path, "inflight") as url:
        cfg = _config(tmp_path, url, "inflight")
        killed = _run(cfg, "writer-in-flight", 3)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert _gone(_writer_pid(killed.stderr)), "the writer outlived the run"
        KILLS[f"writer-in-flight ({backend})"] += 1
        state = _state(url, reference["last_slice_ms"])
        again = _run(cfg)
        assert again.returncode == 0, again.stderr
        got = _ledger(url)
        assert got["runs"] == [("crash", "finished")], f"the rerun must resume the run ({state})"
        _assert_same_run(got, reference)


def test_a_killed_writer_fails_the_run_with_one_line_and_a_rerun_completes(tmp_path: Path,
                                                                         reference: dict[str, Any]) -> None:
    """The writer SIGKILLed under a running replay: the command ends with the storage exit code and one line
    naming the slices it could not record; the run is failed (as after any storage error mid-replay), holds
    whole slices only, and the next start records the same ledger as an uninterrupted run."""
    url = f"sqlite:///{tmp_path / 'wk.db'}"
    cfg = _config(tmp_path, url, "wk")
    p = _run(cfg, "writer-killed", 2)
    assert p.returncode == 4, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if "background writer" in ln]
    assert len(lines) == 1 and "ended with exit code -9 before committing it" in lines[0], p.stderr
    assert "cannot record slices" in lines[0] and "of run 1" in lines[0]
    first = _ledger(url, 1)
    assert first["status"] == "failed" and first["bars_unique"]
    assert first["counts"]["bars"] % 3 == 0 and first["counts"]["bars"] < reference["counts"]["bars"]
    again = _run(cfg)
    assert again.returncode == 0, again.stderr
    got = _ledger(url)
    assert got["runs"] == [("crash", "failed"), ("crash", "finished")]
    _assert_same_run(got, reference)


# ------------------------------------------------------------------------------------ random kills


SEEDS = {"sqlite": (11, 12, 13), "postgresql": (21, 22)}
KILLS_PER_SEED = {"sqlite": 4, "postgresql": 3}


@pytest.mark.parametrize("backend", BACKENDS)
def test_random_kills_then_rerun_until_finished(backend: str, tmp_path: Path, reference: dict[str, Any]) -> None:
    """Each seed spends its kill budget on one or more rounds; a round is one database and one run, killed
    and restarted until it finishes (a kill that lands after the run finished ends the round too)."""
    landed: Counter[str] = Counter()
    kills = rounds = 0
    # the kill moments spread over this backend's own run time, measured here under the machine's present
    # load (a server database starts and commits at its own pace; the reference ran on SQLite earlier)
    with database(backend, tmp_path, "timing") as url:
        timing = _timing(_config(tmp_path, url, "timing"))
    for seed in SEEDS[backend]:
        rng = random.Random(seed)
        budget = KILLS_PER_SEED[backend]
        while budget > 0:
            rounds += 1
            with database(backend, tmp_path, f"random{seed}_{rounds}") as url:
                cfg = _config(tmp_path, url, f"random{seed}_{rounds}")
                done = False  # the command has done its work: the run is finished
                while not done and budget > 0:
                    code = _kill_at_random(cfg, rng, {**reference, **timing}, _done(url, reference))
                    if code == 0:  # it finished before the kill came
                        done = True
                        break
                    assert code == -signal.SIGKILL
                    kills += 1
                    budget -= 1
                    state = _state(url, reference["last_slice_ms"])
                    landed[state] += 1
                    KILLS[f"random: {state} ({backend})"] += 1
                    done = state.startswith("finished")  # killed while printing the scorecard
                if not done:
                    again = _run(cfg)  # rerun the same command until it finishes: once more is always enough
                    assert again.returncode == 0, again.stderr
                got = _ledger(url)
                assert got["runs"] == [("crash", "finished")], "every restart must resume the one run"
                _assert_same_run(got, reference)
    print(f"\n{backend}: {kills} random SIGKILLs in {rounds} runs landed at {dict(landed)}")
    assert kills == len(SEEDS[backend]) * KILLS_PER_SEED[backend]
    assert landed["mid-replay"] > 0, landed  # the spread of the kill moments did reach the replay


# ----------------------------------------------------------------------------------------------- live


def _live_until(cmd: list[str], slices: int, sig: int, timeout_s: float = 60) -> tuple[int, str]:
    """Run live until ``slices`` status lines were printed, then send ``sig``; return the exit code and the
    last lines printed."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stderr is not None
    seen, deadline, lines = 0, time.monotonic() + timeout_s, []
    while seen < slices and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        seen += line.startswith("20")  # one status line per processed slice: "2025-...Z  bars 2 ..."
    proc.send_signal(sig)
    rest = proc.stderr.read()
    proc.stderr.close()
    return proc.wait(timeout=60), "".join(lines[-5:]) + rest[-3000:]


def test_live_loop_killed_twice_resumes_without_gap_or_duplicate(tmp_path: Path) -> None:
    from engine.drivers.replay import fills_fingerprint
    from storage import open_storage
    from tests.fake_exchange import FakeExchange, make_bars

    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    start = (now_ms() // 1000 - 400) * 1000
    bars = make_bars(["BTC/USDT", "ETH/USDT"], "1s", start, 3000, seed=4, vol=0.004)
    url = f"sqlite:///{tmp_path / 'live.db'}"
    with FakeExchange(bars, timeframe="1s", now_fn=now_ms) as ex:
        cmd = [sys.executable, "-m", "engine.cli", "paper", "-c", str(_live_yaml(tmp_path, ex, url))]
        code, err = _live_until(cmd, 303, signal.SIGKILL)  # warm-up + 3 live bars, then killed
        assert code == -signal.SIGKILL, err
        with open_storage(url) as store:
            first = store.list_runs()
            assert [r.status for r in first] == ["running"]  # a SIGKILL leaves no chance to say "stopped"
        time.sleep(1.5)  # bars close while it is down: the restart back-fills them
        code, err = _live_until(cmd, 3, signal.SIGKILL)
        assert code == -signal.SIGKILL, err
        time.sleep(1.2)
        code, err = _live_until(cmd, 2, signal.SIGTERM)
        assert code == 0, err  # the third start stops cleanly
    KILLS["live loop"] += 2
    with open_storage(url) as store:
        runs = store.list_runs()
        assert [(r.id, r.status) for r in runs] == [(1, "stopped")], "each restart must resume the one run"
        rec = store.recorder(1)
        assert runs[0].last_slice_ms is not None and runs[0].last_slice_ms > (first[0].last_slice_ms or 0)
        bars_seen = rec.load_bars()
        for sym in ("BTC/USDT", "ETH/USDT"):
            closes = [b.close_ms for b in bars_seen if b.symbol == sym]
            assert closes == sorted(set(closes)), f"{sym}: a duplicate bar"
            assert all(b - a == 1000 for a, b in itertools.pairwise(closes)), f"{sym}: a gap"
            served = {b.close_ms: b for b in ex.bars[sym]}
            assert all(served[b.close_ms] == b for b in bars_seen if b.symbol == sym), "a bar differs from the feed"
        fills = rec.load_fills()
        assert len({f.id for f in fills}) == len(fills), "a duplicate fill"
        entries = {f.signal_id for f in fills if f.kind.value == "entry"}
        assert all(f.signal_id in entries for f in fills if f.kind.value == "exit"), "an exit without its entry"
        assert fills_fingerprint(fills)  # (the restarts re-derived this ledger from the bars and checked it)


def test_live_run_stopped_by_a_storage_error_stays_resumable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live run is never finished: an error that stops it must not make the next start open a new ledger."""
    import storage.recorder
    from engine.app import run_live
    from engine.config import load_config
    from engine.errors import StorageError
    from storage import open_storage
    from tests.fake_exchange import FakeExchange, make_bars

    def now_ms() -> int:
        return time.time_ns() // 1_000_000

    start = (now_ms() // 1000 - 400) * 1000
    bars = make_bars(["BTC/USDT", "ETH/USDT"], "1s", start, 3000, seed=5, vol=0.004)
    url = f"sqlite:///{tmp_path / 'live.db'}"
    real = storage.recorder.RunRecorder.record_slice
    calls = [0]

    def failing(self: Any, record: Any) -> None:
        calls[0] += 1
        if calls[0] > 302:  # the warm-up and two live slices are recorded, then the database "goes away"
            raise StorageError(f"{url}: cannot record slice {record.close_ms}: disk I/O error")
        real(self, record)

    with FakeExchange(bars, timeframe="1s", now_fn=now_ms) as ex:
        loaded = load_config([_live_yaml(tmp_path, ex, url)], env={})
        with monkeypatch.context() as m:
            m.setattr(storage.recorder.RunRecorder, "record_slice", failing)
            with pytest.raises(StorageError, match="disk I/O error"):
                run_live(loaded, install_signals=False)
        with open_storage(url) as store:
            assert [(r.id, r.status) for r in store.list_runs()] == [(1, "stopped")]
            deposits = [f for f in store.recorder(1).load_fills() if f.kind.value == "deposit"]
        res = run_live(loaded, install_signals=False, max_ticks=2)
    assert res.run_id == 1
    with open_storage(url) as store:
        fills = store.recorder(1).load_fills()
        assert [f for f in fills if f.kind.value == "deposit"] == deposits, "a restart must not reset the wallet"


# ------------------------------------------------------------------------------------ PostgreSQL plans


@pytest.mark.postgres
def test_reading_reviews_back_right_after_a_run_is_linear_on_postgresql(tmp_path: Path) -> None:
    """The resume (and the scorecard) read a run's reviews back right after it was written: on a new
    PostgreSQL database, before autovacuum has analyzed anything, that join must not be planned as nested
    loops that compare every pack with every signal (it was: 139,092 rows compared and thrown away for 268
    reviews; 4 s here, hours for 10,000). Counted in rows, not timed."""
    import json

    from sqlalchemy import event

    from engine.app import run_replay
    from engine.config import load_config
    from storage import open_storage

    if not PG_URL:
        pytest.skip("TRADEVET_PG_URL is not set")
    with pg_database("plan") as url:
        run_replay(load_config(overrides={"run": {"name": "plan", "db_url": url},
                                          "market": {"synthetic": {"bars": BARS}},
                                          "scoring": {"retire": {"enabled": False}}}, env={}))
        with open_storage(url) as store:
            seen: list[tuple[str, Any]] = []

            def capture(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
                if "context_packs" in statement and "JOIN" in statement:
                    seen.append((statement, params))

            event.listen(store.engine, "before_cursor_execute", capture)
            reviews = store.recorder(1).load_reviews()
            event.remove(store.engine, "before_cursor_execute", capture)
            assert len(seen) == 1 and len(reviews) > 100
            statement, params = seen[0]
            with store.engine.connect() as conn:
                plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params).scalar()
    plan = json.loads(plan) if isinstance(plan, str) else plan

    def removed(node: dict[str, Any]) -> int:
        return int(node.get("Rows Removed by Join Filter", 0)) + sum(removed(c) for c in node.get("Plans", []))

    assert removed(plan[0]["Plan"]) <= 4 * len(reviews), "the reviews' join compares rows quadratically"
