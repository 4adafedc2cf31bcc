"""Composition root of ``tradevet sweep``: a base config and a search space → trial replays on Dask → the
walk-forward, out-of-sample leaderboard (``engine.recorded.sweep``).

A space file names config keys and their values::

    method: grid                 # grid (every combination) | random (``samples`` draws, seeded)
    samples: 20                  # random only
    seed: 1                      # random only: the sampler's seed
    params:
      reviewer.tiers.rules.params.veto_streak: [3, 4, 5]       # a list of values
      policy.min_confidence: {low: 0.2, high: 0.5}             # random only: uniform in [low, high]
      strategies.sma.params.fast: {values: [8, 12]}            # the same as a list

A key is a dotted path into the effective config; a list is entered by an element's ``id`` (strategies),
``name`` (reviewer tiers) or ``kind`` (gates), or by its index. Under a plug-in's ``params`` any name may be
set (the plug-in's ``Params`` model judges it); anywhere else the key must exist.

Every trial is one replay of the whole data with its config, recorded as a run of kind ``trial`` linked to the
sweep's own run (kind ``sweep``); its figures per walk-forward span are read back from what it recorded. Even a
key that only changes the reviewer or the clamp is run as a replay, not as a recorded-signal backtest: a verdict
changes what is traded, and what is traded changes the gates (open positions, cooldowns, loss streaks) and the
next signals' context packs, so a backtest's figures would be those of another run.

Every trial's config is validated — and its strategies, gates and tiers built — before anything is recorded: a
bad key or value is one line naming the trial. Started again with the same base config, space and windows, a
sweep resumes: the trials already recorded are not run again.

Raises (``run_sweep``): ConfigError (bad input), DataError, StorageError.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import itertools
import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.config import LoadedConfig, load_config
from engine.config.load import read_yaml
from engine.errors import ConfigError
from engine.ports import RunStore
from engine.recorded.sweep import Leaderboard, SpanFigures, Window, leaderboard, span_figures, walk_forward
from engine.value import _client, _storage_package, check_environment, numeric_environment, record_replay, run_tasks

__all__ = ["Space", "TrialDone", "TrialTask", "apply_key", "load_space", "run_sweep", "trial_assignments",
           "trial_task"]

log = logging.getLogger("tradevet.sweep")

_LIST_KEYS = ("id", "name", "kind")  # how an element of a config list is named in a key


# ----------------------------------------------------------------------------------------------- the space


class _Range(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    values: list[Any] | None = Field(None, min_length=1)
    low: float | None = None
    high: float | None = None
    integer: bool = False


class Space(BaseModel):
    """A search space (the space file). Validated at the boundary: one line per mistake."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = Field("grid", pattern="^(grid|random)$")
    samples: int = Field(20, ge=1, le=100_000)
    seed: int = 0
    params: dict[str, _Range | list[Any]] = Field(..., min_length=1)

    @field_validator("params")
    @classmethod
    def _params(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, spec in v.items():
            if isinstance(spec, list) and not spec:
                raise ValueError(f"{key}: expected at least one value (got [])")
            if isinstance(spec, _Range):
                if spec.values is None and (spec.low is None or spec.high is None):
                    raise ValueError(f"{key}: expected a list of values, {{values: [...]}} or {{low: L, high: H}}")
                if spec.values is None and spec.low is not None and spec.high is not None and spec.low > spec.high:
                    raise ValueError(f"{key}: low must be <= high (got low {spec.low}, high {spec.high})")
        return v

    def canonical(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def load_space(path: Path) -> Space:
    """Raises: ConfigError ``space.yaml: params.x: ...``."""
    from engine.config.wording import explain_error

    data = read_yaml(path)
    try:
        space = Space.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith(("_Range", "list[")))
        raise ConfigError(f"{path}: {loc}: {explain_error(err, Space)}") from None
    if space.method == "grid":
        for key, spec in space.params.items():
            if isinstance(spec, _Range) and spec.values is None:
                raise ConfigError(f"{path}: params.{key}: a grid needs a list of values (a range {{low, high}} is "
                                  "for method: random)")
    return space


def trial_assignments(space: Space) -> list[dict[str, Any]]:
    """The trials of ``space``, in order: every combination (grid, keys in file order) or ``samples`` seeded draws."""
    keys = list(space.params)

    def values(spec: Any) -> list[Any]:
        return list(spec) if isinstance(spec, list) else list(spec.values or [])

    if space.method == "grid":
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(values(space.params[k])
                                                                                      for k in keys))]
    rng = random.Random(space.seed)
    out: list[dict[str, Any]] = []
    for _ in range(space.samples):
        trial: dict[str, Any] = {}
        for k in keys:
            spec = space.params[k]
            if isinstance(spec, list) or spec.values is not None:
                trial[k] = rng.choice(values(spec))
            elif spec.integer:
                trial[k] = rng.randint(int(spec.low), int(spec.high))  # type: ignore[arg-type]
            else:
                trial[k] = rng.uniform(spec.low, spec.high)  # type: ignore[arg-type]
        out.append(trial)
    return out


def apply_key(data: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted ``key`` of a config's plain data to ``value`` (module docstring for the key's form).
    Raises: ConfigError naming the key and what it could have been."""
    parts = key.split(".")
    node: Any = data
    trail: list[str] = []
    under_params = False
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(trail) or "the config"
        if isinstance(node, list):
            found = _element(node, part)
            if found is None:
                names = [str(e.get(k)) for e in node if isinstance(e, dict) for k in _LIST_KEYS if k in e][:20]
                raise ConfigError(f"space: params.{key}: {where} has no element {part!r} (known: "
                                  f"{', '.join(names) or 'none'}; or an index 0..{len(node) - 1})")
            if last:
                raise ConfigError(f"space: params.{key}: expected a key inside {where}[{part}], not the element")
            node = found
        elif isinstance(node, dict):
            if part not in node and not under_params:
                known = ", ".join(sorted(node))
                raise ConfigError(f"space: params.{key}: unknown key {part!r} in {where} (known keys: {known})")
            if last:
                node[part] = value
                return
            if part not in node:
                node[part] = {}
            node = node[part]
            under_params = under_params or part == "params"
        else:
            raise ConfigError(f"space: params.{key}: {where} is a value ({node!r}), not a section")
        trail.append(part)


def _element(items: list[Any], part: str) -> Any:
    for e in items:
        if isinstance(e, dict) and any(str(e.get(k)) == part for k in _LIST_KEYS if k in e):
            return e
    if part.isdigit() and int(part) < len(items):
        return items[int(part)]
    return None


def _show(assignment: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in assignment.items())


# ----------------------------------------------------------------------------------------------- trials


@dataclass(frozen=True)
class TrialTask:
    """Everything a worker needs (plain data: it is pickled to the worker)."""

    db_url: str
    sweep_id: int
    sweep_name: str
    number: int
    data: dict[str, Any]  # the trial's whole effective config
    masked_paths: frozenset[str]
    config_hash: str
    environment: dict[str, str] | None = None  # the client's ``numeric_environment``: the worker checks its own

    @property
    def run_name(self) -> str:
        return f"{self.sweep_name}~trial-{self.number:03d}"


@dataclass(frozen=True)
class TrialDone:
    number: int
    run_id: int
    reused: bool


def _trial_loaded(data: Mapping[str, Any], masked: frozenset[str]) -> LoadedConfig:
    loaded = load_config(overrides=copy.deepcopy(dict(data)), include_default=False, env={})
    return dataclasses.replace(loaded, masked_paths=masked)  # the base's secrets stay masked in what is stored


def trial_task(task: TrialTask) -> TrialDone:
    """One trial replayed and recorded as a run of kind ``trial`` (or the one recorded before). Runs on a Dask
    worker (or anywhere). Raises: ConfigError, DataError, StorageError; a half-written run is deleted first."""
    from engine.app import build_feed, build_pipeline

    check_environment(task.environment)
    store = _storage_package().open_storage(task.db_url)
    quiet = logging.getLogger("tradevet")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the sweep said the base config's warnings once
    try:
        for child in store.child_runs(task.sweep_id, kind="trial"):
            if child.name != task.run_name:
                continue
            if child.status == "finished" and child.config_hash == task.config_hash:
                return TrialDone(task.number, child.id, True)
            store.delete_run(child.id)  # half-written: a dead worker, an interrupted sweep
        loaded = _trial_loaded(task.data, task.masked_paths)
        cfg = loaded.config
        feed = build_feed(loaded)
        pipeline = build_pipeline(loaded, feed=feed)
        run_id = store.create_run(task.run_name, json.dumps(loaded.effective(), sort_keys=True), loaded.hash,
                                  cfg.run.seed, pipeline.mode, cfg.execution.starting_equity, kind="trial",
                                  parent_id=task.sweep_id)
        record_replay(store, run_id, loaded, feed, pipeline)
        return TrialDone(task.number, run_id, False)
    finally:
        store.close()
        quiet.setLevel(level)


# ----------------------------------------------------------------------------------------------- the sweep


def _validate(base: LoadedConfig, assignments: Sequence[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """Each trial's whole config (data, hash), validated and its plug-ins built. Raises: ConfigError naming the
    trial."""
    from engine.app import build_strategies, build_tiers
    from engine.core.gates import build_gates

    plain = base.config.model_dump(mode="json")
    out: list[tuple[dict[str, Any], str]] = []
    for n, assignment in enumerate(assignments, start=1):
        data = copy.deepcopy(plain)
        for key, value in assignment.items():
            apply_key(data, key, value)
        try:
            loaded = _trial_loaded(data, base.masked_paths)
            cfg = loaded.config
            build_strategies(cfg)
            build_gates(cfg.gates)
            build_tiers(cfg.reviewer)
        except ConfigError as e:
            where = f"{e.path}: " if e.path else ""
            raise ConfigError(f"trial {n} ({_show(assignment)}): {where}{e.message}") from None
        out.append((data, loaded.hash))
    return out


def _data_span(base: LoadedConfig) -> tuple[int, int]:
    from engine.app import build_feed
    from engine.errors import DataError

    if base.config.market.source == "ccxt":
        raise ConfigError("market.source: a sweep replays a finite data set (synthetic or files), not a live "
                          "exchange (got ccxt)")
    feed = build_feed(base)
    try:
        arrays = feed.arrays() or {}
        starts = [int(cols["open_ms"][0]) for cols in arrays.values() if len(cols["open_ms"])]
        ends = [int(cols["close_ms"][-1]) for cols in arrays.values() if len(cols["close_ms"])]
    finally:
        feed.close()
    if not starts:
        raise DataError("market: the feed produced no bars")
    return min(starts), max(ends)


def run_sweep(store: RunStore, base: LoadedConfig, space: Space, *, db_url: str, windows: int = 3,
              train_ms: int | None = None, test_ms: int | None = None, cluster: str | None = None,
              workers: int | None = None, alpha: float = 0.05, name: str | None = None,
              progress: Callable[[int, int], None] | None = None,
              say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a sweep and return its leaderboard as plain data (module docstring)."""
    say = say or (lambda line: log.warning(line))
    assignments = trial_assignments(space)
    trials = _validate(base, assignments)
    start_ms, end_ms = _data_span(base)
    try:
        wins = walk_forward(start_ms, end_ms, windows, train_ms=train_ms, test_ms=test_ms)
    except ValueError as e:
        raise ConfigError(f"--windows: {e}") from None
    if cluster is not None and base.masked_paths:
        raise ConfigError(f"--cluster {cluster}: the base config holds secrets ({', '.join(sorted(base.masked_paths))})"
                          " that every trial would carry to workers elsewhere: sweep on this machine, or keep them "
                          "in the environment of the workers instead of the config")
    sweep_name = name or f"{base.config.run.name}-sweep"
    identity = hashlib.sha256("\x1f".join([base.hash, space.canonical(), json.dumps(
        [w.to_dict() for w in wins], sort_keys=True)]).encode()).hexdigest()[:16]
    sweep_id = _open_sweep(store, sweep_name, identity, base, space, assignments, wins)
    here = numeric_environment()
    tasks = [TrialTask(db_url, sweep_id, sweep_name, n, data, base.masked_paths, h, here)
             for n, (data, h) in enumerate(trials, start=1)]
    try:
        with _client(cluster, db_url, workers) as client:
            done = run_tasks(client, trial_task, tasks, label=lambda t: f"trial {t.number}",
                             key=lambda t: f"tradevet-sweep-{sweep_id}-{t.number:03d}", progress=progress, say=say,
                             what="sweep")
    except BaseException:
        # after a local cluster closed (its workers with it): the trials not finished are deleted, the finished
        # ones stay, so that the same command started again resumes the sweep
        with contextlib.suppress(Exception):
            for child in store.child_runs(sweep_id, kind="trial"):
                if child.status != "finished":
                    store.delete_run(child.id)
        raise
    runs = {d.number: d.run_id for d in done}
    reused = sum(1 for d in done if d.reused)
    board = _leaderboard(store, [(n, a, runs[n]) for n, a in enumerate(assignments, start=1)], wins,
                         base.config.execution.starting_equity, alpha)
    store.set_run_status(sweep_id, "finished")
    return {"sweep_id": sweep_id, "sweep": sweep_name, "n_trials": len(tasks), "reused": reused,
            "windows": [w.to_dict() for w in wins], **board.to_dict()}


def _open_sweep(store: RunStore, name: str, identity: str, base: LoadedConfig, space: Space,
                assignments: Sequence[dict[str, Any]], wins: Sequence[Window]) -> int:
    """The sweep's own run: the latest one of this name with the same base config, space and windows (a
    resumed sweep), or a new one."""
    with contextlib.suppress(Exception):
        previous = store.resolve_run(name)
        if previous.kind == "sweep" and previous.config_hash == identity:
            if previous.status != "finished":
                store.set_run_status(previous.id, "running")
            return previous.id
    record = {"sweep": {"base": base.effective(), "space": space.model_dump(mode="json"), "trials": assignments,
                        "windows": [w.to_dict() for w in wins]}}
    return store.create_run(name, json.dumps(record, sort_keys=True, default=str), identity, base.config.run.seed,
                            base.config.reviewer.mode, base.config.execution.starting_equity, kind="sweep")


def _leaderboard(store: RunStore, trials: Sequence[tuple[int, dict[str, Any], int]], wins: Sequence[Window],
                 starting_equity: float, alpha: float) -> Leaderboard:
    figures: dict[int, dict[str, SpanFigures]] = {}
    tests = [w.test for w in wins]
    for n, _, run_id in trials:
        rec = store.records(run_id)
        reviews, outcomes, trades = rec.load_reviews(), rec.load_outcomes(), rec.load_trades()
        per: dict[str, SpanFigures] = {"oos": span_figures(reviews, outcomes, trades, tests, starting_equity)}
        for w in wins:
            per[f"train:{w.index}"] = span_figures(reviews, outcomes, trades, [w.train], starting_equity)
            per[f"test:{w.index}"] = span_figures(reviews, outcomes, trades, [w.test], starting_equity)
        figures[n] = per
    return leaderboard(trials, figures, wins, alpha=alpha)
