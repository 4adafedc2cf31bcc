"""Composition root of ``tradevet value``: a recorded run → its counterfactual replays on Dask → their stored runs.

The replays (``engine.recorded.value``: reviewer off, N random reviewers with the real run's verdict mix) are
independent tasks. They run on Dask distributed: a ``LocalCluster`` on this machine's cores by default (worker
processes, one thread each, on 127.0.0.1), or an existing cluster by address (``--cluster tcp://HOST:8786``). Each
task opens the database by URL, replays the run with its reviewer replaced and records the replay as a run of
kind ``counterfactual`` linked to the parent; only that run's id and metrics travel back. So:

- the workers must reach the database: a SQLite file only works with workers on this machine (a cluster whose
  address or workers are elsewhere is refused with one line); a PostgreSQL URL works from anywhere;
- the workers of an existing cluster must compute this machine's bits: a worker with another copy of the
  project's code, or other numpy, pandas, numba or Python versions, is refused with one line (``numeric_environment``);
- a live run (``market.source: ccxt``) is replayed from the bars and news it recorded
  (``engine.inputs.feeds.recorded``), not from the exchange;
- a replay that finished before (same label, same config, for a live run the same last bar) is not run again:
  the replays are deterministic, so it is the same run. One left half-written (a dead worker, an interrupted
  command) is deleted and run again;
- a worker that dies mid-replay fails its task (the local cluster allows it no silent retry); the task is
  resubmitted once and the command says so; a second death is an error;
- Ctrl-C cancels the tasks, closes a local cluster (its workers with it) and deletes the replays not finished:
  no half-written run is left behind.

Raises (``run_value``): ConfigError (bad input: N < 1, an unreachable cluster, SQLite with a remote cluster, a run
that cannot be replayed), DataError, StorageError.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from engine.config import LoadedConfig, load_config, stored_value
from engine.errors import ConfigError
from engine.ports import RunStore
from engine.recorded.value import RunMetrics, SampledReviewer, VerdictMix, value_summary
from engine.types import SliceRecord, Trade

__all__ = ["ReplayDone", "ReplaySpec", "ReplayTask", "loaded_from_stored", "record_replay", "replay_task", "run_tasks",
           "run_value"]

log = logging.getLogger("tradevet.value")

_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


@dataclass(frozen=True)
class ReplaySpec:
    reviewer: str  # off | random
    seed: int = 0
    index: int = 0

    @property
    def label(self) -> str:
        return "reviewer-off" if self.reviewer == "off" else f"random-s{self.seed}-{self.index:03d}"


@dataclass(frozen=True)
class ReplayTask:
    """Everything a worker needs (plain data: it is pickled to the worker)."""

    db_url: str
    parent_id: int
    parent_name: str
    config_json: str
    config_hash: str
    run_seed: int
    starting_equity: float
    mix: VerdictMix | None
    mix_rates: dict[str, Any] | None
    spec: ReplaySpec
    recorded: bool = False  # replay the parent's recorded bars (a live run) instead of its configured source
    parent_last_slice_ms: int | None = None
    environment: dict[str, str] | None = None  # the client's ``numeric_environment``: the worker checks its own

    @property
    def run_name(self) -> str:
        return f"{self.parent_name}~{self.spec.label}"


@dataclass(frozen=True)
class ReplayDone:
    label: str
    run_id: int
    metrics: dict[str, Any]
    reused: bool


def loaded_from_stored(config_json: str, *, reviewer_mode: str | None = None, recorded: bool = False) -> LoadedConfig:
    """A run's stored effective config, validated again, with its reviewer tiers left out (a replay replaces the
    reviewer, so no tier — and no API key — is needed); ``reviewer_mode`` overrides the mode; ``recorded``: the
    news come with the recorded feed (``news.source: synthetic``). Raises: ConfigError."""
    try:
        data = json.loads(config_json) if config_json else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or "market" not in data:
        raise ConfigError("the run has no stored effective config to replay (an imported run?)")
    data = {k: v for k, v in data.items() if k != "counterfactual"}
    reviewer = dict(data.get("reviewer") or {})
    reviewer["tiers"] = [{"name": "rules", "provider": "rules"}]
    if reviewer_mode is not None:
        reviewer["mode"] = reviewer_mode
    data["reviewer"] = reviewer
    if recorded:
        data["news"] = {**dict(data.get("news") or {}), "source": "synthetic"}
    return load_config(overrides=data, include_default=False, env={})


def replay_task(task: ReplayTask) -> ReplayDone:
    """One counterfactual replay, recorded as a run (module docstring). Runs on a Dask worker (or anywhere).

    Raises: ConfigError, DataError, StorageError; a half-written run is deleted before the error leaves.
    """
    from engine.app import build_feed, build_pipeline

    check_environment(task.environment)
    open_storage = _storage_package().open_storage
    quiet = logging.getLogger("tradevet")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the parent run said these warnings already (data gaps, the retire line)
    store = open_storage(task.db_url)
    try:
        for child in store.child_runs(task.parent_id):
            if child.name != task.run_name:
                continue
            same_data = not task.recorded or child.last_slice_ms == task.parent_last_slice_ms  # a live run goes on
            if child.status == "finished" and child.config_hash == task.config_hash and same_data:
                trades = store.records(child.id).load_trades()
                return ReplayDone(task.spec.label, child.id, RunMetrics.of(trades, task.starting_equity).to_dict(),
                                  True)
            store.delete_run(child.id)  # half-written: a dead worker, an interrupted command
        off = task.spec.reviewer == "off"
        loaded = loaded_from_stored(task.config_json, reviewer_mode="off" if off else None,
                                    recorded=task.recorded)
        cfg = loaded.config
        reviewer = None
        if not off:
            assert task.mix is not None
            reviewer = SampledReviewer(task.mix, seed=task.spec.seed, index=task.spec.index, mode=cfg.reviewer.mode)
        if task.recorded:  # a live run: its recorded bars and news, slice by slice
            from engine.inputs.feeds.recorded import RecordedFeed

            records = store.records(task.parent_id)
            feed: Any = RecordedFeed(records.load_bars(), cfg.market.symbols, cfg.market.timeframe,
                                     records.load_news())
        else:
            feed = build_feed(loaded)
        pipeline = build_pipeline(loaded, feed=feed, reviewer=reviewer)
        stored = json.loads(task.config_json)
        stored["counterfactual"] = {"of": task.parent_id, "reviewer": task.spec.reviewer, "seed": task.spec.seed,
                                    "index": task.spec.index, "label": task.spec.label, "mix": task.mix_rates}
        run_id = store.create_run(task.run_name, json.dumps(stored, sort_keys=True), task.config_hash, task.run_seed,
                                  pipeline.mode, task.starting_equity, kind="counterfactual",
                                  parent_id=task.parent_id)
        trades = record_replay(store, run_id, loaded, feed, pipeline)
        return ReplayDone(task.spec.label, run_id, RunMetrics.of(trades, task.starting_equity).to_dict(), False)
    finally:
        store.close()
        quiet.setLevel(level)


def record_replay(store: Any, run_id: int, loaded: LoadedConfig, feed: Any, pipeline: Any) -> list[Trade]:
    """Step ``pipeline`` over ``feed`` into the new run ``run_id`` (in this process: a worker may not start
    children), mark it finished and return its trades. On any error, or Ctrl-C, the half-written run is deleted
    before the error leaves. Raises: DataError (no bars), StorageError."""
    from engine.drivers.replay import Replay
    from engine.errors import DataError

    cfg = loaded.config
    trades: list[Trade] = []

    def collect(rec: SliceRecord) -> None:
        if rec.trades:
            trades.extend(rec.trades)

    recorder = None
    try:
        slices = feed.slices()
        first = next(slices, None)
        if first is None:
            raise DataError("market: the feed produced no bars")
        pipeline.open_ledger(cfg.execution.starting_equity, first[0].open_ms)

        def chained() -> Iterator[Any]:
            yield first
            yield from slices

        recorder = store.recorder(run_id)
        Replay(pipeline, chained(), recorder, on_slice=collect).run()
        recorder.close()
        if pipeline.mode != cfg.reviewer.mode:
            store.set_reviewer_mode(run_id, pipeline.mode)
        store.set_run_status(run_id, "finished")
    except BaseException:
        if recorder is not None:
            with contextlib.suppress(Exception):
                recorder.abort()
        with contextlib.suppress(Exception):
            store.delete_run(run_id)
        raise
    finally:
        pipeline.close()
        feed.close()
    return trades


def _storage_package() -> Any:
    """``storage``, this project's package. A Dask worker puts its own directory first on ``sys.path``, and that
    directory holds a bare ``storage/`` (the worker's spill space), which would be imported as an empty namespace
    package in our package's place: it is looked up here without such directories."""
    import importlib
    import os
    import sys

    mod = sys.modules.get("storage")
    if mod is not None and getattr(mod, "__file__", None):
        return mod
    sys.modules.pop("storage", None)
    saved = sys.path[:]
    sys.path[:] = [p for p in saved if not (os.path.isdir(os.path.join(p or ".", "storage"))
                                            and not os.path.isfile(os.path.join(p or ".", "storage", "__init__.py")))]
    try:
        return importlib.import_module("storage")
    finally:
        sys.path[:] = saved


# ----------------------------------------------------------------------------------------- the cluster


def _is_sqlite(url: str) -> bool:
    return url.strip().lower().startswith("sqlite")


def _host(address: str) -> str:
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    return parts.hostname or ""


def _loopback(host: str) -> bool:
    return host.startswith(_LOOPBACK) or host in ("localhost", "::1")


@contextlib.contextmanager
def _client(cluster: str | None, db_url: str, workers: int | None) -> Iterator[Any]:
    """A Dask client on a new LocalCluster (``cluster`` None) or on the cluster at ``cluster``.
    Raises: ConfigError (unreachable, or SQLite with workers elsewhere)."""
    import dask
    from distributed import Client, LocalCluster

    for name in ("distributed", "tornado", "bokeh"):  # their INFO lines are not the user's business
        logging.getLogger(name).setLevel(logging.ERROR)

    if cluster is None:
        import os

        n = workers or max(1, min(os.cpu_count() or 1, 8))
        # a dead worker fails its task at once (we resubmit it once, and say so) instead of Dask's silent retries
        with dask.config.set({"distributed.scheduler.allowed-failures": 0, "distributed.worker.daemon": False,
                              "distributed.logging.distributed": "error"}):
            lc = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                              dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR)
            client = Client(lc)
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.close()
            with contextlib.suppress(Exception):
                lc.close()
        return
    if _is_sqlite(db_url) and not _loopback(_host(cluster)):
        raise ConfigError(f"--cluster {cluster}: a SQLite database ({db_url}) is a file on this machine, which "
                          "workers elsewhere cannot reach: use a PostgreSQL URL (--db postgresql+psycopg://...)")
    try:
        client = Client(cluster, timeout=5)
    except (OSError, TimeoutError) as e:
        raise ConfigError(f"--cluster {cluster}: cannot reach a Dask scheduler there ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else 'no answer'})") from None
    try:
        _same_bits_everywhere(client, cluster)
        if _is_sqlite(db_url):
            hosts = {_host(w) for w in client.scheduler_info().get("workers", {})}
            remote = sorted(h for h in hosts if not _loopback(h))
            if remote:
                raise ConfigError(f"--cluster {cluster}: workers on {', '.join(remote)} cannot reach the SQLite file "
                                  f"{db_url}: use a PostgreSQL URL (--db postgresql+psycopg://...)")
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()


_PROJECT_PACKAGES = ("engine", "strategies", "reviewer", "storage")


def numeric_environment() -> dict[str, str]:
    """What a run's bits depend on besides its config and seed, on this process's machine: the interpreter, the
    numpy, pandas and numba versions, and a digest of this project's code (every ``.py`` file of its packages).

    The CPU does not appear: every figure that could follow it (exp, log, BLAS) is computed CPU-independently
    (``engine.core.portable``; ``engine.core.kernels`` compiles without fast-math). Memoised: a process's code
    and libraries do not change under it."""
    return dict(_environment())


@functools.lru_cache(maxsize=1)
def _environment() -> tuple[tuple[str, str], ...]:
    import hashlib
    import platform
    from importlib.metadata import version
    from pathlib import Path

    import numpy
    import pandas

    root = Path(__file__).resolve().parents[1]  # the packages sit side by side (the project's fixed layout)
    h = hashlib.sha256()
    for pkg in _PROJECT_PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return (("python", platform.python_version()), ("numpy", numpy.__version__), ("pandas", pandas.__version__),
            ("numba", version("numba")), ("code", h.hexdigest()[:16]))


def environment_mismatch(here: dict[str, str], there: dict[str, str], here_name: str = "here") -> str | None:
    """The first difference between two ``numeric_environment``s in words ("it" is ``there``, ``here_name`` is
    ``here``); None when they are equal."""
    for key in ("code", "numpy", "pandas", "numba", "python"):
        a, b = here.get(key) or "unknown", there.get(key) or "unknown"
        if a != b:
            if key == "code":
                return f"its copy of the project's code differs (digest {b}, {here_name} {a})"
            return f"it runs {key} {b}, {here_name} {a}"
    return None


def check_environment(expected: dict[str, str] | None) -> None:
    """On a worker, before a task: refuse to run it when this process would not compute the client's bits (a
    worker that joined the cluster after the client's check, or on a local cluster). None: not asked.
    Raises: ConfigError naming this worker and the difference."""
    if expected is None:
        return
    diff = environment_mismatch(expected, numeric_environment(), "the client")
    if diff is not None:
        where = "this process"
        with contextlib.suppress(Exception):  # outside a Dask worker there is no worker address
            from distributed import get_worker

            where = f"worker {get_worker().address}"
        raise ConfigError(f"{where} would not compute the client's bits: {diff} (install the same code and "
                          "versions there)")


def _same_bits_everywhere(client: Any, cluster: str) -> None:
    """Refuse a cluster with a worker that would not compute this machine's bits (other code, numpy, pandas,
    numba or Python): the same config and seed must give the same run on any machine, and a trial or replay run there
    would silently be another run. Raises: ConfigError naming the worker and the difference."""
    here = numeric_environment()
    try:
        theirs = client.run(numeric_environment)
    except Exception as e:  # a worker that cannot even import the project is as wrong as one with other code
        raise ConfigError(f"--cluster {cluster}: cannot read the workers' numeric environment "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'}): "
                          "they need this project installed") from None
    for worker, env in sorted(theirs.items()):
        diff = environment_mismatch(here, env)
        if diff is not None:
            raise ConfigError(f"--cluster {cluster}: worker {worker} would not compute this machine's bits: {diff} "
                              "(install the same code and versions there)")


def run_value(store: RunStore, run_id: int, *, db_url: str, n: int = 50, seed: int | None = None,
              cluster: str | None = None, workers: int | None = None,
              progress: Callable[[int, int], None] | None = None,
              say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Replay ``run_id`` with the reviewer off and with ``n`` random reviewers (seed: the run's unless given), on
    Dask, and return ``value_summary`` of what was stored. Raises: see the module docstring."""
    say = say or (lambda line: log.warning(line))
    if n < 1:
        raise ConfigError(f"-n: the number of random-reviewer replays must be at least 1 (got {n})")
    info = store.get_run(run_id)
    if info.kind == "counterfactual":
        raise ConfigError(f"run {run_id} ({info.name}) is itself a counterfactual replay: value its parent run "
                          f"{info.parent_id}")
    source = stored_value(info.config_json, "market.source", None)
    if source not in ("synthetic", "files", "ccxt"):
        raise ConfigError(f"run {run_id} ({info.name}): market.source {source!r} cannot be replayed (expected "
                          "synthetic, files or ccxt)")
    recorded = source == "ccxt"  # a live run: replayed from the bars it recorded
    if info.status != "finished" and not (recorded and info.status == "stopped"):
        raise ConfigError(f"run {run_id} ({info.name}) is {info.status}: only a finished run (or a stopped live run) "
                          "can be replayed")
    loaded_from_stored(info.config_json, recorded=recorded)  # a config error here, once, not on every worker
    reviews = store.records(run_id).load_reviews()
    mix = VerdictMix.of(reviews)
    if not mix.shapes:
        raise ConfigError(f"run {run_id} ({info.name}) has no reviewed signals: there is nothing to value")
    seed = info.seed if seed is None else seed
    rates = mix.rates()
    specs = [ReplaySpec("off"), *(ReplaySpec("random", seed, k) for k in range(n))]
    here = numeric_environment()
    tasks = [ReplayTask(db_url, run_id, info.name, info.config_json, info.config_hash, info.seed,
                        info.starting_equity, mix if s.reviewer == "random" else None, rates, s, recorded,
                        info.last_slice_ms, here)
             for s in specs]
    try:
        with _client(cluster, db_url, workers) as client:
            _gather(client, tasks, progress, say)
    except BaseException:
        _cleanup(store, run_id)  # after a local cluster closed: none of its workers is still writing
        raise
    return value_summary(store, run_id, seed=seed)


def _gather(client: Any, tasks: Sequence[ReplayTask], progress: Callable[[int, int], None] | None,
            say: Callable[[str], None]) -> list[ReplayDone]:
    return run_tasks(client, replay_task, tasks, label=lambda t: t.spec.label,
                     key=lambda t: f"tradevet-value-{t.parent_id}-{t.spec.label}", progress=progress, say=say,
                     what="value")


def run_tasks(client: Any, fn: Callable[[Any], Any], tasks: Sequence[Any], *, label: Callable[[Any], str],
              key: Callable[[Any], str], progress: Callable[[int, int], None] | None, say: Callable[[str], None],
              what: str) -> list[Any]:
    """``fn`` of every task on the Dask ``client``, results in completion order. A task whose worker dies is
    resubmitted once, and ``say`` says so; a second death, or any error a task raises, cancels the rest and
    leaves. Ctrl-C cancels them too."""
    from distributed import as_completed
    from distributed.client import FutureCancelledError

    try:
        from distributed.scheduler import KilledWorker
    except ImportError:  # pragma: no cover - older layouts
        from distributed import KilledWorker  # type: ignore[no-redef,attr-defined]

    total = len(tasks)
    futures = {client.submit(fn, t, key=f"{key(t)}-a1", pure=False): t for t in tasks}
    retried: set[str] = set()
    out: list[Any] = []
    ac = as_completed(list(futures))
    try:
        for fut in ac:
            task = futures[fut]
            try:
                out.append(fut.result())
            except (KilledWorker, FutureCancelledError) as e:
                name = label(task)
                if name in retried or (isinstance(e, FutureCancelledError) and not _lost(e)):
                    raise
                retried.add(name)
                say(f"{what}: the worker running {name} died ({type(e).__name__}); retrying it once")
                again = client.submit(fn, task, key=f"{key(task)}-a2", pure=False)
                futures[again] = task
                ac.add(again)
                continue
            if progress is not None:
                progress(len(out), total)
    except BaseException:
        with contextlib.suppress(Exception):
            client.cancel(list(futures), force=True)
        raise
    return out


def _lost(e: BaseException) -> bool:
    """A cancelled future whose worker was lost (a remote cluster's way of saying so)."""
    text = str(e).lower()
    return "lost" in text or "worker" in text


def _cleanup(store: RunStore, run_id: int) -> None:
    """Delete the counterfactual replays of ``run_id`` that did not finish."""
    with contextlib.suppress(Exception):
        for child in store.child_runs(run_id):
            if child.status != "finished":
                store.delete_run(child.id)
