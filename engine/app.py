"""Composition root: a LoadedConfig → strategies, gates, feed, news, reviewer, storage, wired into a run.

The only engine module allowed to import ``strategies``, ``reviewer`` and ``storage``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.clock import SimClock
from engine.config import Config, LoadedConfig, ReviewerConfig, TierConfig, build_params, resolve
from engine.core.pipeline import Pipeline, StepStats
from engine.errors import ConfigError, describe
from engine.ports import Clock, Feed, Reviewer, RunReader, RunStore, Strategy, Tier, VerdictCache
from engine.types import SliceRecord

if TYPE_CHECKING:
    from engine.recorded.backtest import BacktestEstimate, BacktestResult

__all__ = [
    "PaperResult",
    "build_pipeline",
    "build_reviewer",
    "build_strategies",
    "build_tier",
    "build_tiers",
    "check_plugins",
    "run_backtest",
    "run_live",
    "run_replay",
]

log = logging.getLogger("tradevet")


def build_strategies(cfg: Config) -> list[Strategy]:
    """Instantiate configured strategies. Raises: ConfigError naming ``strategies[i]``."""
    from strategies import REGISTRY

    out: list[Strategy] = []
    for i, sc in enumerate(cfg.strategies):
        path = f"strategies[{i}]"
        cls = resolve(sc.kind, REGISTRY, what="strategy kind", path=f"{path}.kind")
        params = build_params(getattr(cls, "Params", None), sc.params, path=f"{path}.params")
        symbols = None if sc.symbols == "all" else tuple(sc.symbols)
        try:
            strat = cls(sc.id, params, symbols=symbols, timeframe=cfg.market.timeframe)
        except TypeError as e:
            raise ConfigError(f"{sc.kind!r} cannot be built as a strategy ({e})", path=f"{path}.kind") from None
        if not callable(getattr(strat, "evaluate", None)):
            raise ConfigError(f"{sc.kind!r} has no evaluate(history) method", path=f"{path}.kind")
        if not callable(getattr(strat, "candidates", None)):
            strat = _EveryBar(strat)  # user code without a candidates mask: evaluated on every bar
        out.append(strat)
    return out


class _EveryBar:
    """A strategy that offers no ``candidates`` mask (user code that predates it): ``evaluate`` on every bar."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.id: str = inner.id
        self.symbols: tuple[str, ...] | None = inner.symbols
        self.timeframe: str = inner.timeframe

    def evaluate(self, history: Any) -> Any:
        return self.inner.evaluate(history)

    def candidates(self, history: Any) -> None:
        return None


def build_tier(i: int, tc: TierConfig, *, registry: Mapping[str, Any] | None = None,
               env: Mapping[str, str] | None = None) -> Tier:
    """The configured tier ``reviewer.tiers[i]``: its provider resolved against ``reviewer.TIERS`` (or
    "module:Class" user code), its params validated by the class's ``Params`` model, its API key read from the
    environment once and handed to the tier only.

    Raises: ConfigError at ``reviewer.tiers[i]`` (unknown provider, bad params, a key missing, a class that does
    not build a tier).
    """
    import os

    if registry is None:
        from reviewer import TIERS as registry
    env = os.environ if env is None else env
    path = f"reviewer.tiers[{i}]"
    cls = resolve(tc.provider, registry, what="tier provider", path=f"{path}.provider")
    build_params(getattr(cls, "Params", None), tc.params, path=f"{path}.params")
    api_key: str | None = None
    if tc.api_key_env:
        api_key = env.get(tc.api_key_env) or None
        if api_key is None:
            raise ConfigError(f"environment variable {tc.api_key_env} is not set (tier {tc.name!r}; list it "
                              "in `disabled` to skip the tier)", path=f"{path}.api_key_env")
    try:
        tier = cls(tc, api_key)
    except ConfigError as e:
        raise e.under(path) from e
    except Exception as e:  # the message is the exception's own; the key is never formatted into it
        raise ConfigError(f"cannot build tier {tc.name!r} ({tc.provider}): {describe(e)}", path=path) from e
    if getattr(tier, "name", None) != tc.name:
        # breakers, stats, the cache key and every stored verdict are keyed by the configured name
        raise ConfigError(f"{tc.provider!r} built a tier named {getattr(tier, 'name', None)!r}, expected "
                          f"{tc.name!r}", path=f"{path}.provider")
    for attr in ("model", "timeout_s", "max_concurrency", "prompt_version", "endpoint"):
        if not hasattr(tier, attr):
            raise ConfigError(f"{tc.provider!r} built a tier without a {attr!r} attribute", path=f"{path}.provider")
    if not callable(getattr(tier, "review", None)) or not callable(getattr(tier, "aclose", None)):
        raise ConfigError(f"{tc.provider!r} built a tier without review(pack) and aclose()", path=f"{path}.provider")
    return tier


def build_tiers(cfg: ReviewerConfig, *, disabled: Collection[str] = (), registry: Mapping[str, Any] | None = None,
                env: Mapping[str, str] | None = None) -> list[Tier]:
    """The configured reviewer tiers, in order, skipping ``disabled`` (``build_tier`` each).
    Raises: ConfigError at ``reviewer.tiers[i]``."""
    skip = set(disabled)
    return [build_tier(i, tc, registry=registry, env=env) for i, tc in enumerate(cfg.tiers) if tc.name not in skip]


def build_reviewer(cfg: ReviewerConfig, *, cache: VerdictCache | None = None, disabled: Collection[str] = (),
                   registry: Mapping[str, Any] | None = None, clock_s: Callable[[], float] | None = None,
                   env: Mapping[str, str] | None = None, wall: Clock | None = None) -> Reviewer:
    """The configured cascade: ``build_tiers`` wired by ``reviewer.build_cascade`` (breakers, deadline, fallback).

    ``env`` defaults to ``os.environ``; ``clock_s`` to the monotonic clock, ``wall`` (the clock of tier budgets'
    UTC days and of each call's ``reviewed_at_ms``) to the wall clock — tests pass fake ones.
    Raises: ConfigError (see ``build_tiers``).
    """
    from reviewer import build_cascade

    tiers = build_tiers(cfg, disabled=disabled, registry=registry, env=env)
    if clock_s is None:
        return build_cascade(cfg, tiers, cache=cache, wall=wall)
    return build_cascade(cfg, tiers, cache=cache, clock_s=clock_s, wall=wall)


def check_plugins(loaded: LoadedConfig) -> None:
    """What ``config check`` adds to validation: every plug-in the config names resolves and takes its params —
    strategies and gates are built, each tier's provider is resolved and its params validated (without building
    the tier: that needs its API key and SDK). Raises: ConfigError naming the file and the key."""
    from engine.core.gates import build_gates
    from reviewer import TIERS

    cfg = loaded.config
    with loaded.blaming():
        build_strategies(cfg)
        build_gates(cfg.gates)
        for i, tc in enumerate(cfg.reviewer.tiers):
            cls = resolve(tc.provider, TIERS, what="tier provider", path=f"reviewer.tiers[{i}].provider")
            build_params(getattr(cls, "Params", None), tc.params, path=f"reviewer.tiers[{i}].params")


def build_pipeline(loaded: LoadedConfig, *, feed: Feed, cache: VerdictCache | None = None, clock: Clock | None = None,
                   reviewer: Reviewer | None = None, preload: bool = True, wall: Clock | None = None) -> Pipeline:
    """Wire one pipeline from config. ``reviewer`` may be given (tests); otherwise built from config.
    A finite replay feed (one with ``arrays()``) is preloaded unless ``preload`` is false (the same run,
    bar by bar: the tests compare both)."""
    from engine.core.gates import build_gates
    from engine.inputs.news import build_news_source

    cfg = loaded.config
    with loaded.blaming():  # a plug-in's config error names the file that configured it
        if reviewer is None and cfg.reviewer.mode != "off":
            reviewer = build_reviewer(cfg.reviewer, cache=cache if cfg.reviewer.cache else None,
                                      disabled=[name for name, _ in loaded.disabled_tiers], wall=wall)
        strategies = build_strategies(cfg)
        gates = build_gates(cfg.gates)
        news = build_news_source(cfg.news, feed)
    pipeline = Pipeline(
        cfg,
        strategies=strategies,
        gates=gates,
        reviewer=reviewer,
        news=news,
        clock=clock if clock is not None else SimClock(),
        limits=feed.limits(),
        symbols=list(feed.symbols),
    )
    arrays = feed.arrays() if preload else None
    if arrays is not None:  # a finite replay feed: its whole series is known in advance
        pipeline.preload(arrays)
    return pipeline


def build_feed(loaded: LoadedConfig) -> Feed:
    from engine.inputs.feeds import build_feed as _build

    cfg = loaded.config
    return _build(cfg.market, seed=cfg.run.seed, with_news=cfg.news.source == "synthetic")


@dataclass(frozen=True)
class PaperResult:
    run_id: int
    run_name: str
    stats: StepStats
    db_url: str


def run_replay(loaded: LoadedConfig, *, progress: Callable[[int, int | None], None] | None = None,
               storage: RunStore | None = None, fresh: bool = False,
               metrics_port: int | None = None, wall: Clock | None = None) -> PaperResult:
    """Replay a finite feed (synthetic or files) through the pipeline into a run.

    An interrupted run of the same name (status running or stopped) is resumed unless ``fresh``: its state
    is rebuilt from what it recorded (see ``engine.drivers.resume``) and the replay continues after its last slice.

    Raises: ConfigError, DataError, StorageError.
    """
    from engine.drivers.replay import Replay
    from engine.drivers.resume import catch_up
    from engine.errors import DataError
    from storage import open_storage

    cfg = loaded.config
    for w in loaded.warnings:
        log.warning(w)
    feed = build_feed(loaded)
    own = storage is None
    store = storage if storage is not None else open_storage(cfg.run.db_url)
    pipeline = None
    run_id = None
    resumed = False
    phase = "setup"  # setup | catch-up | replay: what an error interrupted (see _status_after_error)
    try:
        # plug-ins (strategies, gates, news, tiers) are built before the run is touched, so that a config or
        # data error in them leaves no failed run behind and an interrupted run still resumable
        pipeline = build_pipeline(loaded, feed=feed, cache=store.verdict_cache(), wall=wall)
        run_id, resumed = _open_or_resume(store, loaded, fresh)
        if pipeline.reviewer is not None:
            from engine.recorded.spend import recorded_spend

            pipeline.reviewer.seed_spend(recorded_spend(store, run_id))
        total = feed.n_slices
        phase = "catch-up"
        last_ms = catch_up(pipeline, store.records(run_id), list(feed.symbols)) if resumed else None
        phase = "setup"
        if pipeline.ended:  # the interrupted run had already written everything: it only needs its status
            store.set_run_status(run_id, "finished")
            store.set_reviewer_mode(run_id, pipeline.mode)
            return PaperResult(run_id, cfg.run.name, pipeline.stats, store.url_masked)
        slices = feed.slices()
        done = [0]
        if last_ms is not None:
            log.warning("resuming run %s (%s) after %s", run_id, cfg.run.name, last_ms)

            def after(it):  # type: ignore[no-untyped-def]
                for sl in it:
                    if sl[0].close_ms > last_ms:
                        yield sl
                    else:
                        done[0] += 1  # already recorded: counted for the progress bar only

            slices = after(slices)
        first = next(slices, None)
        if first is None and last_ms is None:
            raise DataError("market: the feed produced no bars")
        if last_ms is None:
            pipeline.open_ledger(cfg.execution.starting_equity, first[0].open_ms)  # type: ignore[index]

        def chained():  # type: ignore[no-untyped-def]
            if first is not None:
                yield first
            yield from slices

        metrics = None
        if metrics_port is not None:
            from engine.drivers.metrics import Metrics

            metrics = Metrics(metrics_port, tiers=[t.name for t in cfg.reviewer.tiers],
                              budgets=pipeline.reviewer.budget_use if pipeline.reviewer is not None else None)

        def on_slice(rec: SliceRecord) -> None:
            done[0] += 1
            if metrics is not None:
                metrics.observe_slice(rec, pipeline.portfolio.equity(pipeline.market.marks()),
                                      len(pipeline.portfolio.positions))
            if progress is not None and (done[0] % 50 == 0 or (total and done[0] >= total)):
                progress(done[0], total)

        phase = "replay"
        # a long replay into a file or server database records from a child process (storage decides)
        recorder = store.recorder(run_id, expected_bars=feed.n_bars)
        try:
            stats = Replay(pipeline, chained(), recorder, on_slice=on_slice).run()
            recorder.close()  # every batch committed (or its StorageError raised) before the run's status
        except BaseException:
            recorder.abort()  # the batches already sent are whole slices: committed before the status
            raise
        if progress is not None:
            progress(min(done[0], total or done[0]), total)
        if pipeline.mode != store.get_run(run_id).reviewer_mode:
            # the retire rule switched the reviewer to shadow mode during the replay: the run row must say
            # so (`runs`, reports), not keep the mode the run started with
            store.set_reviewer_mode(run_id, pipeline.mode)
        store.set_run_status(run_id, "finished")
        return PaperResult(run_id, cfg.run.name, stats, store.url_masked)
    except BaseException as exc:
        _record_interruption(store, run_id, exc, resumed=resumed, phase=phase)
        raise
    finally:
        if pipeline is not None:
            pipeline.close()
        if own:
            store.close()


def _record_interruption(store: RunStore, run_id: int | None, exc: BaseException, *, resumed: bool, phase: str,
                         live: bool = False) -> None:
    """Leave the run in the status this interruption calls for: ``stopped`` after Ctrl-C (resumable),
    else ``_status_after_error``. Never raises: the original error is what the user needs to see."""
    if run_id is None:
        return
    status = "stopped" if isinstance(exc, KeyboardInterrupt) else _status_after_error(resumed, phase, live=live)
    with contextlib.suppress(Exception):
        store.set_run_status(run_id, status)


def _status_after_error(resumed: bool, phase: str, *, live: bool = False) -> str:
    """The status a run gets when an error ends this session.

    ``failed`` (history: the next start begins a new run), except where nothing would be gained by
    abandoning the run: a resumed run that failed while setting up (a busy metrics port, a locked database)
    is unchanged, so it stays ``stopped`` and the next start resumes it; and a live run is never finished,
    so one stopped by an error (the exchange or the database down for too long) stays resumable too, or a
    restart would open a new ledger and reset the paper wallet. A run whose recorded ledger cannot be
    reproduced (``catch-up``) is ``failed`` either way.
    """
    if phase == "catch-up":
        return "failed"
    if live or (resumed and phase == "setup"):
        return "stopped"
    return "failed"


def _open_or_resume(store: RunStore, loaded: LoadedConfig, fresh: bool) -> tuple[int, bool]:
    """(run id, resumed): the interrupted run of this name with the same config, or a new run.

    Raises: ConfigError when the interrupted run was started under another config; StorageError when
    another process is writing a run of this name (``Storage.claim_run_name``).
    """
    import json

    from engine.errors import StorageError

    cfg = loaded.config
    if not store.claim_run_name(cfg.run.name):
        # another process is writing a run of this name: it must not be "resumed" (and marked failed) under it
        raise StorageError(
            f"{store.url_masked}: another tradevet process is writing run {cfg.run.name!r}: let it finish or stop "
            "it (Ctrl-C or SIGTERM) and start again to resume it, or choose another run.name"
        )
    previous = None if fresh else store.find_resumable_run(cfg.run.name)
    if previous is not None and previous.config_hash != loaded.hash:
        raise ConfigError(
            f"run {previous.id} ({previous.name}) was interrupted under config {previous.config_hash}, "
            f"this config is {loaded.hash}: restore that config to resume it, or pass --fresh for a new run"
        )
    if previous is not None:
        store.set_run_status(previous.id, "running")
        return previous.id, True
    run_id = store.create_run(cfg.run.name, json.dumps(loaded.effective(), sort_keys=True), loaded.hash,
                              cfg.run.seed, cfg.reviewer.mode, cfg.execution.starting_equity)
    return run_id, False


def run_live(loaded: LoadedConfig, *, fresh: bool = False, metrics_port: int | None = None,
             status: Callable[[str], None] | None = None, storage: RunStore | None = None,
             scheduler_factory: Callable[[], Any] | None = None, install_signals: bool = True,
             max_ticks: int | None = None, wall: Clock | None = None) -> PaperResult:
    """Paper-trade live: the ccxt feed polled at each bar close by ``PaperLoop`` until SIGINT/SIGTERM.

    The pipeline runs on its own ``SimClock`` advanced to each bar's close (gates and cooldowns count
    market time, also while back-filling after a pause); the loop and the feed read the wall clock.

    Raises: ConfigError, DataError, StorageError.
    """
    from engine.clock import WallClock
    from engine.drivers.live import PaperLoop
    from engine.drivers.resume import catch_up
    from storage import open_storage

    cfg = loaded.config
    for w in loaded.warnings:
        log.warning(w)
    feed = build_feed(loaded)
    feed.load()
    own = storage is None
    store = storage if storage is not None else open_storage(cfg.run.db_url)
    pipeline = None
    metrics = None
    run_id = None
    resumed = False
    phase = "setup"
    try:
        pipeline = build_pipeline(loaded, feed=feed, cache=store.verdict_cache(), clock=SimClock(), wall=wall)
        run_id, resumed = _open_or_resume(store, loaded, fresh)
        if pipeline.reviewer is not None:
            from engine.recorded.spend import recorded_spend

            pipeline.reviewer.seed_spend(recorded_spend(store, run_id))
        recorder = store.recorder(run_id)
        phase = "catch-up"
        last_ms = catch_up(pipeline, recorder, list(feed.symbols)) if resumed else None
        phase = "setup"
        if pipeline.ended:  # the interrupted run had already written everything: it only needs its status
            store.set_run_status(run_id, "finished")
            store.set_reviewer_mode(run_id, pipeline.mode)
            return PaperResult(run_id, cfg.run.name, pipeline.stats, store.url_masked)
        if metrics_port is not None:
            from engine.drivers.metrics import Metrics

            metrics = Metrics(metrics_port, tiers=[t.name for t in cfg.reviewer.tiers],
                              budgets=pipeline.reviewer.budget_use if pipeline.reviewer is not None else None)
        loop = PaperLoop(pipeline, feed, recorder, clock=WallClock(), settle_s=cfg.market.ccxt.settle_s,
                         status=status, metrics=metrics, scheduler_factory=scheduler_factory,
                         skip_until_ms=last_ms, starting_equity=None if last_ms is not None else
                         cfg.execution.starting_equity, install_signals=install_signals)
        phase = "replay"
        stats = loop.run_for(max_ticks) if max_ticks is not None else loop.run()
        store.set_run_status(run_id, "stopped")  # a live run is never finished: it can always resume
        store.set_reviewer_mode(run_id, pipeline.mode)
        return PaperResult(run_id, cfg.run.name, stats, store.url_masked)
    except BaseException as exc:
        _record_interruption(store, run_id, exc, resumed=resumed, phase=phase, live=True)
        raise
    finally:
        if pipeline is not None:
            pipeline.close()
        if metrics is not None:
            metrics.close()
        feed.close()
        if own:
            store.close()


def estimate_backtest(store: RunReader, run_id: int, paths: Sequence[Path], **kw: Any) -> BacktestEstimate | None:
    """``engine.recorded.backtest.estimate_backtest`` with the reviewers built here (``build_reviewer``).
    Raises: ConfigError, StorageError."""
    from engine.recorded.backtest import estimate_backtest as estimate

    return estimate(store, run_id, paths, build_reviewer=build_reviewer, **kw)


def run_backtest(store: RunReader, run_id: int, paths: Sequence[Path], **kw: Any) -> BacktestResult:
    """``engine.recorded.backtest.run_backtest`` with the reviewers built here, from each file's ``reviewer:``
    section (``build_reviewer``). Raises: ConfigError, StorageError."""
    from engine.recorded.backtest import run_backtest as backtest

    return backtest(store, run_id, paths, build_reviewer=build_reviewer, **kw)
