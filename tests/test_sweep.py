"""`tradevet sweep`: trials on a real Dask LocalCluster (127.0.0.1), walk-forward, out-of-sample ranking with
corrections for the number of trials, resume, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.cli import main
from engine.errors import ConfigError
from engine.recorded.sweep import SpanFigures, Window, leaderboard, walk_forward
from engine.recorded.value import RunMetrics
from engine.sweep import Space, apply_key, trial_assignments

pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[1]
DAY = 86_400_000


def _base(tmp: Path, name: str = "sw", bars: int = 1500, **extra: Any) -> Path:
    f = tmp / f"{name}.yaml"
    f.write_text(yaml.safe_dump({"run": {"name": name, "db_url": f"sqlite:///{tmp / (name + '.db')}"},
                                 "market": {"synthetic": {"bars": bars}}, **extra}))
    return f


def _space(tmp: Path, params: dict[str, Any], **extra: Any) -> Path:
    f = tmp / "space.yaml"
    f.write_text(yaml.safe_dump({"params": params, **extra}))
    return f


def _sweep(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any] | str]:
    code = main(["sweep", *args, "--no-progress", "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else err.strip())


CHANCE = {"reviewer": {"tiers": [{"name": "chance", "provider": "chance", "params": {"veto_rate": 0.3}}]}}


# ------------------------------------------------------------------------------------------- pure parts


def test_a_key_reaches_list_elements_by_id_name_kind_or_index_and_unknown_keys_are_named() -> None:
    data = {"strategies": [{"id": "sma", "kind": "sma_cross", "params": {}}],
            "gates": [{"kind": "cooldown", "params": {"bars": 3}}],
            "reviewer": {"tiers": [{"name": "rules", "provider": "rules", "params": {}}]},
            "policy": {"min_confidence": 0.3}}
    apply_key(data, "strategies.sma.params.fast", 8)
    apply_key(data, "gates.cooldown.params.bars", 5)
    apply_key(data, "reviewer.tiers.0.params.veto_streak", 4)
    apply_key(data, "policy.min_confidence", 0.5)
    assert data["strategies"][0]["params"] == {"fast": 8}
    assert data["gates"][0]["params"] == {"bars": 5}
    assert data["reviewer"]["tiers"][0]["params"] == {"veto_streak": 4}
    assert data["policy"]["min_confidence"] == 0.5
    with pytest.raises(ConfigError, match=r"unknown key 'min_confidense' in policy \(known keys: min_confidence\)"):
        apply_key(data, "policy.min_confidense", 1)
    with pytest.raises(ConfigError, match=r"strategies has no element 'ema' \(known: sma, sma_cross"):
        apply_key(data, "strategies.ema.params.fast", 1)


def test_grid_is_every_combination_and_random_is_seeded() -> None:
    grid = trial_assignments(Space.model_validate({"params": {"a": [1, 2], "b": {"values": ["x", "y", "z"]}}}))
    assert grid == [{"a": a, "b": b} for a in (1, 2) for b in ("x", "y", "z")]
    space = Space.model_validate({"method": "random", "samples": 5, "seed": 3,
                                  "params": {"a": {"low": 0.1, "high": 0.9}, "b": [1, 2, 3]}})
    one, two = trial_assignments(space), trial_assignments(space)
    assert one == two and len(one) == 5 and all(0.1 <= t["a"] <= 0.9 for t in one)
    assert one != trial_assignments(space.model_copy(update={"seed": 4}))


def test_walk_forward_windows_roll_by_the_test_span_and_must_fit() -> None:
    ws = walk_forward(0, 8 * DAY, 3)
    assert [(w.train, w.test) for w in ws] == [((0, 2 * DAY), (2 * DAY, 4 * DAY)),
                                               ((2 * DAY, 4 * DAY), (4 * DAY, 6 * DAY)),
                                               ((4 * DAY, 6 * DAY), (6 * DAY, 8 * DAY))]
    assert walk_forward(0, 10 * DAY, 2, train_ms=4 * DAY, test_ms=3 * DAY)[1].test == (7 * DAY, 10 * DAY)
    with pytest.raises(ValueError, match=r"3 windows of train 5.00 days .* need 11.00 days of data; the data "
                                         r"holds 8.00 days"):
        walk_forward(0, 8 * DAY, 3, train_ms=5 * DAY, test_ms=2 * DAY)


def _figures(vetoes: int, vetoes_lost: int, scored: int, lost: int) -> SpanFigures:
    return SpanFigures(scored, {"accept": scored - vetoes, "modify": 0, "veto": vetoes}, vetoes, vetoes_lost, scored,
                       lost, RunMetrics(0, 0.0, 0.0, None, None), ())


def test_the_correction_for_the_number_of_trials_removes_a_lucky_winner_and_keeps_a_real_one() -> None:
    wins = [Window(0, (0, 1), (1, 2))]

    def board(best: SpanFigures, others: int) -> Any:
        trials = [(n, {"k": n}, n) for n in range(1, others + 2)]
        figs = {n: {"train:0": _figures(40, 24, 200, 120), "test:0": _figures(40, 24, 200, 120),
                    "oos": _figures(40, 24, 200, 120)} for n in range(2, others + 2)}  # lift 0: chance
        figs[1] = {"train:0": best, "test:0": best, "oos": best}
        return leaderboard(trials, figs, wins, alpha=0.05)

    lucky = _figures(40, 31, 200, 120)  # precision 0.775 vs base 0.6: p ≈ 0.013 on its own
    alone = board(lucky, 0)
    assert alone.trials[0]["oos"]["p_value"] < 0.05 and alone.winner == 1
    among = board(lucky, 19)  # the same figures, found among 20 trials
    assert among.winner is None and among.trials[0]["trial"] == 1 and among.trials[0]["lift_p_holm"] > 0.05
    assert "no trial beats chance after the search" in among.summary
    real = board(_figures(40, 38, 200, 120), 19)  # precision 0.95: p ≈ 1e-6, beyond any luck of 20 trials
    assert real.winner == 1 and "trial 1 beats chance after the search" in real.summary


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("space", "extra", "message"), [
    ({"params": {"policy.min_confidense": [0.5]}}, (),
     "space: params.policy.min_confidense: unknown key 'min_confidense' in policy (known keys: max_size_pct, "
     "min_confidence, min_size_pct)"),
    ({"params": {"reviewer.tiers.rules.params.veto_streak": [3, 0]}}, (),
     "trial 2 (reviewer.tiers.rules.params.veto_streak=0): reviewer.tiers[0].params.veto_streak: must be >= 1 "
     "(got 0)"),
    ({"params": {}}, (), "params: must not be empty (got {})"),
    ({"params": {"policy.min_confidence": {"low": 0.1, "high": 0.5}}}, (),
     "params.policy.min_confidence: a grid needs a list of values (a range {low, high} is for method: random)"),
    ({"params": {"policy.min_confidence": [0.4]}}, ("--train", "30d"),
     "--windows: 3 windows of train 30.00 days + test"),
    ({"params": {"policy.min_confidence": [0.4]}}, ("--windows", "0"),
     "--windows: expected at least 1 walk-forward window (got 0)"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              space: dict[str, Any], extra: tuple[str, ...],
                                                              message: str) -> None:
    base = _base(tmp_path)
    sp = tmp_path / "space.yaml"
    sp.write_text(yaml.safe_dump(space))
    code, err = _sweep(capsys, "-c", str(base), "--space", str(sp), *extra)
    assert code == 2
    assert isinstance(err, str) and len(err.splitlines()) == 1 and message in err, err
    db = tmp_path / "sw.db"
    if db.exists():
        from storage import open_storage

        with open_storage(f"sqlite:///{db}") as store:
            assert store.list_runs() == []


# ------------------------------------------------------------------------------------------ on a cluster


def test_a_sweep_of_noise_shows_no_winner_and_runs_the_same_on_a_cluster_by_address(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every trial is a reviewer that vetoes at random (a seed apart): whatever leads the table is luck, and the
    corrected figures say so. The same sweep sent to a 2-worker cluster by its address gives the same table."""
    from distributed import LocalCluster

    seeds = list(range(1, 9))
    space = _space(tmp_path, {"reviewer.tiers.chance.params.seed": seeds})
    page = tmp_path / "sweep.html"
    code, local = _sweep(capsys, "-c", str(_base(tmp_path, "noise", **CHANCE)), "--space", str(space),
                         "--workers", "2", "--html", str(page))
    assert code == 0 and isinstance(local, dict)
    assert local["n_trials"] == 8 and local["reused"] == 0 and local["winner"] is None
    assert all(r["lift_p_holm"] > 0.05 for r in local["trials"])
    assert "no trial beats chance after the search" in local["summary"]
    assert sorted(r["params"]["reviewer.tiers.chance.params.seed"] for r in local["trials"]) == seeds
    html = page.read_text()  # the report page: the verdict after the search, the lift chart, both tables
    assert "no trial beats chance after the search" in html and 'id="chart-sweep-lift"' in html
    assert html.count("<tr>") == 1 + 8 + 1 + 3 and "<script" not in html
    assert len(local["windows"]) == 3 and all(w["chosen"] in range(1, 9) for w in local["windows"])
    # the trials are really different runs (a seed changes the vetoes), each a recorded run linked to the sweep
    assert len({r["oos"]["vetoes"] for r in local["trials"]}) > 1
    from storage import open_storage

    with open_storage(f"sqlite:///{tmp_path / 'noise.db'}") as store:
        trials = store.child_runs(local["sweep_id"], kind="trial")
        assert len(trials) == 8 and all(t.status == "finished" for t in trials)

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster:
        code, remote = _sweep(capsys, "-c", str(_base(tmp_path, "noise2", **CHANCE)), "--space", str(space),
                              "--cluster", cluster.scheduler_address)
    assert code == 0 and isinstance(remote, dict)

    def table(r: dict[str, Any]) -> Any:
        return ([{k: v for k, v in t.items() if k != "run_id"} for t in r["trials"]], r["windows"], r["selected"])

    assert table(remote) == table(local)


def test_a_sweep_killed_halfway_resumes_without_rerunning_recorded_trials(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = _base(tmp_path, "kill", **CHANCE)
    space = _space(tmp_path, {"reviewer.tiers.chance.params.seed": [1, 2, 3, 4, 5, 6]})
    cmd = [sys.executable, "-m", "engine.cli", "sweep", "-c", str(base), "--space", str(space), "--workers", "1",
           "--no-progress", "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)
    from storage import open_storage

    url = f"sqlite:///{tmp_path / 'kill.db'}"
    deadline = time.monotonic() + 240
    finished = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if not (tmp_path / "kill.db").exists():
                continue
            try:
                with open_storage(url) as store:
                    sweeps = [r for r in store.list_runs() if r.kind == "sweep"]
                    finished = sum(1 for t in store.child_runs(sweeps[0].id, kind="trial")
                                   if t.status == "finished") if sweeps else 0
            except Exception:  # the database is being created
                continue
            if finished >= 2:
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the command, its cluster and its workers
        proc.wait(timeout=30)
    assert 2 <= finished < 6, f"the kill should land halfway ({finished} of 6 trials finished)"
    code, resumed = _sweep(capsys, "-c", str(base), "--space", str(space), "--workers", "2")
    assert code == 0 and isinstance(resumed, dict)
    assert resumed["reused"] >= finished and resumed["n_trials"] == 6
    with open_storage(url) as store:
        assert len([r for r in store.list_runs() if r.kind == "sweep"]) == 1
        trials = store.child_runs(resumed["sweep_id"], kind="trial")
        assert len(trials) == 6 and all(t.status == "finished" for t in trials), "a half-written trial was kept"
    # the same table as an uninterrupted sweep of the same space
    code, whole = _sweep(capsys, "-c", str(_base(tmp_path, "whole", **CHANCE)), "--space", str(space),
                         "--workers", "2")
    assert code == 0 and isinstance(whole, dict)
    strip = lambda r: [{k: v for k, v in t.items() if k != "run_id"} for t in r["trials"]]  # noqa: E731
    assert strip(resumed) == strip(whole) and resumed["windows"] == whole["windows"]
