"""`tradevet value`: the reviewer-off replay and random-reviewer baselines, on a real Dask LocalCluster (127.0.0.1)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.app import run_replay
from engine.cli import main
from engine.config import load_config
from engine.recorded.scorecard import run_scorecard
from engine.recorded.value import RunMetrics, SampledReviewer, VerdictMix, compare
from engine.types import OutcomeKind, VerdictKind
from engine.value import run_value
from storage import open_storage

pytest.importorskip("distributed")

BARS = 2000
RETIRE = {"retire": {"min_vetoes": 20, "window_days": 30}}
# the product's own random reviewer (reviewer/chance.py): vetoes by a hash of (seed, signal id)
COIN = {"name": "coin", "provider": "chance", "params": {"veto_rate": 0.4, "confidence": 0.9}}


def _record(path: Path, tier: dict[str, Any]) -> tuple[str, int]:
    url = f"sqlite:///{path}"
    loaded = load_config(overrides={"run": {"name": "val", "db_url": url}, "market": {"synthetic": {"bars": BARS}},
                                    "reviewer": {"tiers": [tier]}, "scoring": RETIRE}, env={})
    return url, run_replay(loaded).run_id


@pytest.fixture(scope="module")
def coin(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int, Path]:
    """A run whose reviewer is random by construction (vetoes by a hash of the signal id)."""
    d = tmp_path_factory.mktemp("coin")
    url, run_id = _record(d / "coin.db", COIN)
    shutil.copy(d / "coin.db", d / "pristine.db")  # before any replay: tests that replay it again copy this
    return url, run_id, d


@pytest.fixture(scope="module")
def coin_valued(coin: tuple[str, int, Path]) -> dict[str, Any]:
    url, run_id, _ = coin
    with open_storage(url) as store:
        return run_value(store, run_id, db_url=url, n=19, workers=2)


def test_a_random_reviewer_is_unremarkable_and_retired_within_the_window(
        coin: tuple[str, int, Path], coin_valued: dict[str, Any]) -> None:
    url, run_id, _ = coin
    with open_storage(url) as store:
        card = run_scorecard(store, run_id)
        children = store.child_runs(run_id)
    # the retire rule against chance fires inside the window (30 days > the whole run) ...
    assert card.retired and card.retire[0]["window"]["check"]["retire"]
    assert card.retire[0]["data"]["vetoes"] >= 20
    # ... and in money it sits inside the random reviewers' distribution
    rnd = coin_valued["random"]
    assert rnd["n"] == 19 and len(rnd["run_ids"]) == 19
    for metric in ("pnl", "sharpe", "profit_factor"):
        c = rnd["compare"][metric]
        assert 5 <= c["percentile"] <= 95 and c["p_value"] > 0.05, (metric, c)
    # every replay is a finished counterfactual run linked to the parent; the scorecard reports them
    assert len(children) == 20 and {c.kind for c in children} == {"counterfactual"}
    assert {c.parent_id for c in children} == {run_id} and {c.status for c in children} == {"finished"}
    assert card.value["random"]["fingerprint"] == rnd["fingerprint"]
    assert card.counterfactual["run_id"] == coin_valued["reviewer_off"]["run_id"]


def test_the_reviewer_off_replay_is_a_possible_run(coin: tuple[str, int, Path], coin_valued: dict[str, Any]) -> None:
    url, run_id, _ = coin
    off = coin_valued["reviewer_off"]
    with open_storage(url) as store:
        real = store.get_run(run_id)
        run = store.get_run(off["run_id"])
        rec = store.recorder(off["run_id"])
        reviews, trades, fills = rec.load_reviews(), rec.load_trades(), rec.load_fills()
        parent_signals = {s.id for s in store.recorder(run_id).load_signals()}
    assert run.reviewer_mode == "off" and run.config_hash == real.config_hash
    assert all(r.verdict.verdict is VerdictKind.ACCEPT and r.decision.action.value == "execute" for r in reviews)
    # the same gates, limits and sizing: the ledger never goes below zero cash, PnL is the sum of its trades
    cash = 0.0
    for f in fills:
        cash += f.cash_delta
        assert cash >= -1e-6
    assert off["pnl"] == pytest.approx(sum(t.pnl for t in trades))
    assert off["trades"] == len(trades) > 0
    assert parent_signals & {r.pack.signal.id for r in reviews}  # the same market, the same strategies
    assert off["reviewer_value_pnl"] == pytest.approx(coin_valued["real"]["pnl"] - off["pnl"])


def test_same_seed_same_distribution_locally_and_on_a_cluster_by_address(
        coin: tuple[str, int, Path], coin_valued: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    import dask
    from distributed import LocalCluster

    _, run_id, d = coin
    shutil.copy(d / "pristine.db", d / "again.db")
    other = f"sqlite:///{d / 'again.db'}"
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address="127.0.0.1:0") as cluster:
        assert main(["value", "--run", str(run_id), "--db", other, "-n", "19", "--cluster", cluster.scheduler_address,
                     "--json", "--no-progress"]) == 0
    again = json.loads(capsys.readouterr().out)["value"]
    assert again["random"]["fingerprint"] == coin_valued["random"]["fingerprint"]
    assert again["random"]["metrics"] == coin_valued["random"]["metrics"]
    assert again["reviewer_off"]["pnl"] == coin_valued["reviewer_off"]["pnl"]
    # another seed is another distribution
    with open_storage(other) as store:
        third = run_value(store, run_id, db_url=other, n=3, seed=12345, workers=2)
    assert third["random"]["seed"] == 12345 and third["random"]["metrics"] != coin_valued["random"]["metrics"][:3]


def test_an_oracle_reviewer_beats_every_random_baseline_and_is_not_retired(
        coin: tuple[str, int, Path], tmp_path: Path) -> None:
    url, run_id, _ = coin
    with open_storage(url) as store:
        losers = sorted(o.signal_id for o in store.recorder(run_id).load_outcomes()
                        if o.kind is OutcomeKind.SHADOW and o.filled and o.pnl_pct < 0)
    ourl, oid = _record(tmp_path / "oracle.db", {"name": "oracle", "provider": "tests.value_hooks:OracleTier",
                                                 "params": {"losers": losers}})
    with open_storage(ourl) as store:
        card = run_scorecard(store, oid)
        assert not card.retired and card.veto_precision.value == 1.0 and card.veto_precision.n >= 20
        v = run_value(store, oid, db_url=ourl, n=19, workers=2)
    for metric in ("pnl", "sharpe", "profit_factor"):
        c = v["random"]["compare"][metric]
        assert c["percentile"] == 100.0 and c["p_value"] == pytest.approx(1 / 20), (metric, c)
    assert v["random"]["compare"]["pnl"]["real"] > v["random"]["compare"]["pnl"]["random"]["max"]
    assert v["reviewer_off"]["reviewer_value_pnl"] > 0


def test_a_dead_worker_fails_its_replay_which_is_retried_once_and_said(
        coin: tuple[str, int, Path], tmp_path: Path) -> None:
    import dask
    from distributed import Client, LocalCluster

    from tests.value_hooks import KillWorkerOnce

    _, run_id, d = coin
    shutil.copy(d / "pristine.db", tmp_path / "kill.db")
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    said: list[str] = []
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        client.register_plugin(KillWorkerOnce("random-s7-001"))
        with open_storage(url) as store:
            v = run_value(store, run_id, db_url=url, n=3, cluster=cluster.scheduler_address, say=said.append)
            children = store.child_runs(run_id)
    assert any("random-s7-001" in line and "retrying it once" in line for line in said), said
    assert v["random"]["n"] == 3 and len(children) == 4 and {c.status for c in children} == {"finished"}


def test_ctrl_c_leaves_no_half_written_run(coin: tuple[str, int, Path], tmp_path: Path) -> None:
    _, run_id, d = coin
    shutil.copy(d / "pristine.db", tmp_path / "int.db")
    url = f"sqlite:///{tmp_path / 'int.db'}"

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with open_storage(url) as store:
        with pytest.raises(KeyboardInterrupt):
            run_value(store, run_id, db_url=url, n=6, workers=2, progress=interrupt)
        assert all(c.status == "finished" for c in store.child_runs(run_id))
        assert run_scorecard(store, run_id).reviewed > 0  # the parent is untouched


@pytest.mark.parametrize(("args", "expected"), [
    (["-n", "0"], "-n: the number of random-reviewer replays must be at least 1 (got 0)"),
    (["--cluster", "tcp://127.0.0.1:1"], "--cluster tcp://127.0.0.1:1: cannot reach a Dask scheduler there"),
    (["--cluster", "tcp://10.11.12.13:8786"], "--cluster tcp://10.11.12.13:8786: a SQLite database"),
])
def test_bad_input_is_one_line_and_exit_2(coin: tuple[str, int, Path], args: list[str], expected: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    url, run_id, _ = coin
    assert main(["value", "--run", str(run_id), "--db", url, "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {expected}"), err


# ------------------------------------------------------------------------------------------- pure parts


def test_the_random_reviewer_draws_the_real_mix_independent_of_order(coin: tuple[str, int, Path]) -> None:
    url, run_id, _ = coin
    with open_storage(url) as store:
        reviews = store.recorder(run_id).load_reviews()
    mix = VerdictMix.of(reviews)
    a = SampledReviewer(mix, seed=7, index=0)
    packs = [r.pack for r in reviews]
    forward = a.review_many_sync(packs)
    backward = list(reversed(SampledReviewer(mix, seed=7, index=0).review_many_sync(packs[::-1])))
    assert forward == backward
    assert forward != SampledReviewer(mix, seed=7, index=1).review_many_sync(packs)
    vetoes = sum(v.verdict is VerdictKind.VETO for v in forward) / len(forward)
    assert abs(vetoes - mix.rates()["veto"]) < 0.12
    with pytest.raises(ValueError, match="at least one recorded verdict"):
        SampledReviewer(VerdictMix(()), seed=1, index=0)


def test_percentile_and_p_value_of_the_real_run_among_the_random() -> None:
    base = [RunMetrics(10, float(x), float(10 - x), float(x) / 10, 1.0 + x / 10) for x in range(10)]
    best = compare(RunMetrics(10, 100.0, 0.0, 5.0, 9.0), base)
    assert best["pnl"]["percentile"] == 100.0 and best["pnl"]["p_value"] == pytest.approx(1 / 11)
    assert best["max_drawdown_pct"]["percentile"] == 100.0  # lower drawdown is better
    mid = compare(base[4], base)
    assert mid["pnl"]["percentile"] == pytest.approx(45.0) and mid["pnl"]["p_value"] == pytest.approx(7 / 11)


def test_the_report_draws_the_reviewer_off_line_and_the_random_band_in_chromium(
        coin: tuple[str, int, Path], coin_valued: dict[str, Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_report import CHROMIUM, _chromium, _section

    url, run_id, _ = coin
    out = tmp_path / "value.html"
    assert main(["report", "--run", str(run_id), "--db", url, "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    kpis = page[page.index('<div class="kpis">'):]
    assert kpis.index("Lift over chance") < kpis.index("Veto precision")  # the lift leads the first card
    equity = _section(page, "equity")
    assert 'class="series reviewer-off"' in equity and 'class="band random-band"' in equity
    assert f"{coin_valued['random']['n']} random reviewers" in equity and "gate-only" not in page
    # and `score` says the same in one line each
    assert main(["score", "--run", str(run_id), "--db", url]) == 0
    text = capsys.readouterr().out
    assert "PnL vs reviewer off" in text and "random reviewers" in text and "lift over chance" in text
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium)")
    dom = _chromium(["--dump-dom", out.resolve().as_uri()], tmp_path / "profile")
    shown = _section(dom.stdout, "equity")
    assert 'class="series reviewer-off"' in shown and "random-band" in shown and "Uncaught" not in dom.stderr


def test_ctrl_c_in_the_command_exits_130(coin: tuple[str, int, Path], monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import engine.value

    def interrupted(*a: Any, **k: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.value, "run_value", interrupted)
    url, run_id, _ = coin
    assert main(["value", "--run", str(run_id), "--db", url, "--no-progress"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_a_live_run_is_replayed_from_its_recorded_bars(coin: tuple[str, int, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorded feed steps through the same slices as the source: the reviewer-off replay of a run from its
    recorded bars (what a live run gets) is the replay from its configured source, fill for fill."""
    from engine.app import build_feed
    from engine.inputs.feeds.recorded import RecordedFeed
    from engine.value import ReplaySpec, ReplayTask, loaded_from_stored, replay_task

    _, run_id, d = coin
    runs = {}
    for recorded in (False, True):
        db = tmp_path / f"rec-{recorded}.db"
        shutil.copy(d / "pristine.db", db)
        with open_storage(f"sqlite:///{db}") as store:
            info = store.get_run(run_id)
        if recorded:  # a recorded run knows no exchange minimums; give it the source's to compare like for like
            limits = build_feed(loaded_from_stored(info.config_json)).limits()
            monkeypatch.setattr(RecordedFeed, "limits", lambda self, limits=limits: limits)
        done = replay_task(ReplayTask(f"sqlite:///{db}", run_id, info.name, info.config_json, info.config_hash,
                                      info.seed, info.starting_equity, None, None, ReplaySpec("off"), recorded,
                                      info.last_slice_ms))
        with open_storage(f"sqlite:///{db}") as store:
            runs[recorded] = (done, store.recorder(done.run_id).load_fills(), store.recorder(done.run_id).load_trades())
    (a, fills_a, trades_a), (b, fills_b, trades_b) = runs[False], runs[True]
    assert fills_a == fills_b and trades_a == trades_b and len(trades_a) > 10
    assert a.metrics == b.metrics


def test_value_of_a_stopped_live_run_replays_what_it_recorded(coin: tuple[str, int, Path], tmp_path: Path) -> None:
    from sqlalchemy import text

    _, run_id, d = coin
    shutil.copy(d / "pristine.db", tmp_path / "live.db")
    url = f"sqlite:///{tmp_path / 'live.db'}"
    with open_storage(url) as store:
        cfg = json.loads(store.get_run(run_id).config_json)
        cfg["market"]["source"] = "ccxt"  # as if it had been a live run: there is no exchange to replay from
        with store.engine.begin() as conn:
            conn.execute(text("UPDATE runs SET config_json = :c, status = 'stopped' WHERE id = :i"),
                         {"c": json.dumps(cfg, sort_keys=True), "i": run_id})
        v = run_value(store, run_id, db_url=url, n=2, workers=2)
        assert v["random"]["n"] == 2 and v["reviewer_off"]["trades"] > 10
        assert all(c.status == "finished" for c in store.child_runs(run_id))


@pytest.mark.postgres
def test_postgresql_and_a_cluster_by_address_give_the_local_sqlite_distribution(
        coin: tuple[str, int, Path], coin_valued: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """Workers reach PostgreSQL by URL: the same run recorded there, valued on a cluster by address, gives the
    distribution valued locally on SQLite, bit for bit."""
    import os

    import dask
    from distributed import LocalCluster

    from tests.test_crash import pg_database

    if not os.environ.get("TRADEVET_PG_URL"):
        pytest.skip("TRADEVET_PG_URL is not set")
    with pg_database("value") as url:
        loaded = load_config(overrides={"run": {"name": "val", "db_url": url}, "market": {"synthetic": {"bars": BARS}},
                                        "reviewer": {"tiers": [COIN]}, "scoring": RETIRE}, env={})
        pg_run = run_replay(loaded).run_id
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
                LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                             dashboard_address="127.0.0.1:0") as cluster:
            assert main(["value", "--run", str(pg_run), "--db", url, "-n", "19", "--cluster",
                         cluster.scheduler_address, "--json", "--no-progress"]) == 0
        got = json.loads(capsys.readouterr().out)["value"]
    assert got["random"]["fingerprint"] == coin_valued["random"]["fingerprint"]
    assert got["reviewer_off"]["pnl"] == coin_valued["reviewer_off"]["pnl"]


# --------------------------------------------------------------------------- workers that compute other bits


def test_environment_mismatch_names_the_first_difference() -> None:
    from engine.value import environment_mismatch, numeric_environment

    here = numeric_environment()
    assert set(here) == {"python", "numpy", "pandas", "numba", "code"} and len(here["code"]) == 16
    assert environment_mismatch(here, dict(here)) is None
    assert environment_mismatch(here, {**here, "numpy": "1.26.4"}) == f"it runs numpy 1.26.4, here {here['numpy']}"
    assert environment_mismatch(here, {**here, "numba": "0.60.0"}) == f"it runs numba 0.60.0, here {here['numba']}"
    assert environment_mismatch(here, {**here, "code": "0" * 16, "numpy": "1"}).startswith(  # type: ignore[union-attr]
        f"its copy of the project's code differs (digest {'0' * 16}, here {here['code']})")
    assert environment_mismatch(here, {}) == "its copy of the project's code differs (digest unknown, here " \
        f"{here['code']})"


@pytest.mark.slow
def test_a_cluster_worker_with_other_code_is_refused_in_one_line(tmp_path: Path) -> None:
    """A worker running a changed copy of the project would record trials that are other runs than a local one
    (same config and seed, other bits): the cluster is refused before any task, naming the worker."""
    import os
    import subprocess
    import sys

    from distributed import Client, LocalCluster

    from engine.errors import ConfigError
    from engine.value import _client

    root = Path(__file__).resolve().parents[1]
    copy = tmp_path / "project"
    for pkg in ("engine", "strategies", "reviewer", "storage"):
        shutil.copytree(root / pkg, copy / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    changed = copy / "engine" / "core" / "fills.py"
    changed.write_text(changed.read_text() + "\n# a worker's stale or edited copy\n")
    with LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        env = {**os.environ, "PYTHONPATH": str(copy)}
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
                                   "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1", "--no-dashboard"],
                                  env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with Client(cluster.scheduler_address, timeout=10) as c:
                c.wait_for_workers(1, timeout=60)
            with pytest.raises(ConfigError) as err, \
                    _client(cluster.scheduler_address, f"sqlite:///{tmp_path / 'x.db'}", None):
                pass
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"--cluster {cluster.scheduler_address}: worker tcp://127.0.0.1:")
    assert "would not compute this machine's bits: its copy of the project's code differs (digest " in msg


def test_a_task_refuses_to_run_where_the_bits_would_differ() -> None:
    """The worker checks again before each task: one that joined after the client's check is caught too."""
    from engine.errors import ConfigError
    from engine.value import check_environment, numeric_environment

    here = numeric_environment()
    check_environment(here)  # the same: runs
    check_environment(None)  # not asked
    with pytest.raises(ConfigError, match=r"^this process would not compute the client's bits: it runs pandas "
                                          rf"{re.escape(here['pandas'])}, the client 0\.1 \(install the same code "
                                          r"and versions there\)$"):
        check_environment({**here, "pandas": "0.1"})
