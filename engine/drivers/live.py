"""Live driver: a polling feed + an APScheduler tick at each bar close → Pipeline.step per slice → recorder.

``PaperLoop`` mirrors ``engine.drivers.replay.Replay``: the same ``Pipeline.step`` consumes every slice; only the
feed (live polling instead of a finite list) and the clock that times the ticks differ. The shared
``SliceSink`` does what both drivers do per slice: step, record (one transaction), observe, report.

Clocks: ``clock`` here is the loop's clock — when to tick, what has closed. Give the *pipeline* its own
``SimClock``: ``Pipeline.step`` advances it to each slice's close, so gate locks and cooldowns read market
time, exactly as in a replay, even while a back-fill after a pause processes hours of bars in a second.

Stopping: SIGINT/SIGTERM (or ``stop()``) lets the slice in progress finish and commit, stops the scheduler
and returns normally. A second SIGINT interrupts at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC
from typing import Any, Protocol

from engine.core.pipeline import Pipeline, StepStats
from engine.errors import DataError
from engine.ports import Clock, Recorder
from engine.types import Bar, SliceRecord, ms_to_dt

__all__ = ["LiveFeed", "PaperLoop", "SliceSink", "status_line"]

log = logging.getLogger("tradevet.live")


class LiveFeed(Protocol):
    """What the loop needs of a feed: history once, then the bars closed since the last call."""

    symbols: tuple[str, ...]
    timeframe: str
    timeframe_ms: int

    def warmup(self, n_bars: int) -> list[tuple[Bar, ...]]: ...
    def poll(self) -> list[tuple[Bar, ...]]: ...


def status_line(rec: SliceRecord, equity: float, open_positions: int) -> str:
    """One line per slice: time, bars, signals, verdicts, equity, open positions."""
    kinds = Counter(str(r.verdict.verdict) for r in rec.reviews)
    blocked = len(rec.signals) - len(rec.reviews)
    when = ms_to_dt(rec.close_ms).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f"{when}  bars {len(rec.bars)}  signals {len(rec.signals)} (blocked {blocked})  "
            f"verdicts accept {kinds['accept']} modify {kinds['modify']} veto {kinds['veto']}  "
            f"fills {len(rec.fills)}  equity {equity:,.2f}  open {open_positions}")


class SliceSink:
    """One slice of bars → ``pipeline.step`` → ``recorder.record_slice`` (one transaction) → metrics, status."""

    def __init__(self, pipeline: Pipeline, recorder: Recorder | None, *, metrics: Any = None,
                 status: Callable[[str], None] | None = None,
                 on_slice: Callable[[SliceRecord], None] | None = None) -> None:
        self.pipeline = pipeline
        self.recorder = recorder
        self.metrics = metrics
        self.status = status
        self.on_slice = on_slice

    def __call__(self, bars: Sequence[Bar]) -> SliceRecord:
        rec = self.pipeline.step(bars)
        if self.recorder is not None:
            self.recorder.record_slice(rec)
        self.observe(rec)
        return rec

    def observe(self, rec: SliceRecord) -> None:
        """Metrics, status line and the ``on_slice`` hook for a record already stepped and stored."""
        p = self.pipeline
        equity = p.portfolio.equity(p.market.marks())
        open_positions = p.portfolio.open_count()
        if self.metrics is not None:
            self.metrics.observe_slice(rec, equity, open_positions)
        line = status_line(rec, equity, open_positions)
        if self.status is not None:
            self.status(line)
        else:
            log.info(line)
        if self.on_slice is not None:
            self.on_slice(rec)


class PaperLoop:
    """Warm-up, then one tick per bar close (+ ``settle_s``): poll the feed, step and record each slice.

    ``skip_until_ms`` (resume): slices closing at or before it were processed by the run already and are
    skipped; the warm-up then fetches just the bars closed since. ``starting_equity`` (a new run): the
    ledger's first deposit, made just before the first slice. ``scheduler_factory`` returns an APScheduler
    3.x scheduler (or anything with ``add_job``/``start``/``shutdown``); by default a BackgroundScheduler
    with one worker thread.
    """

    def __init__(self, pipeline: Pipeline, feed: LiveFeed, recorder: Recorder | None, *, clock: Clock,
                 settle_s: float = 2.0, status: Callable[[str], None] | None = None, metrics: Any = None,
                 scheduler_factory: Callable[[], Any] | None = None, warmup_bars: int | None = None,
                 skip_until_ms: int | None = None, starting_equity: float | None = None,
                 on_slice: Callable[[SliceRecord], None] | None = None, install_signals: bool = True) -> None:
        self.pipeline = pipeline
        self.feed = feed
        self.recorder = recorder
        self.clock = clock
        self.settle_s = max(0.0, settle_s)
        self.scheduler_factory = scheduler_factory
        self.warmup_bars = warmup_bars if warmup_bars is not None else _cfg_warmup(pipeline)
        self.skip_until_ms = skip_until_ms
        self.starting_equity = starting_equity
        self.install_signals = install_signals
        self.sink = SliceSink(pipeline, recorder, metrics=metrics, status=status, on_slice=on_slice)
        self.ticks = 0
        self.skipped = 0
        self.warmed_up = False
        self._stop_flag = False  # the only thing a signal handler touches (no locks in handlers)
        self._stopped = threading.Event()
        self._tick_lock = threading.Lock()
        self._error: BaseException | None = None
        self._max_ticks: int | None = None
        if pipeline.clock is clock:
            log.warning("the pipeline reads the loop's clock: gate locks and cooldowns would see wall time, not "
                        "market time (a back-fill would differ from a replay); give the pipeline its own SimClock")

    # ------------------------------------------------------------------------------------ control
    def stop(self) -> None:
        """Ask the loop to stop after the slice in progress (thread-safe; not for signal handlers)."""
        self._stop_flag = True
        self._stopped.set()

    @property
    def stopping(self) -> bool:
        return self._stop_flag or self._stopped.is_set()

    # ---------------------------------------------------------------------------------------- run
    def run(self) -> StepStats:
        """Warm up, then tick at each bar close until stopped. Raises: DataError, StorageError (after stopping)."""
        restore = self._install_handlers() if self.install_signals else None
        try:
            if not self.warmed_up:
                self.warmup()
            if not self.stopping and self._error is None:
                self._schedule_and_wait()
        finally:
            if restore is not None:
                restore()
        if self._error is not None:
            raise self._error
        return self.pipeline.stats

    def run_for(self, n_ticks: int) -> StepStats:
        """``run()`` that stops by itself after ``n_ticks`` scheduled ticks."""
        self._max_ticks = n_ticks
        return self.run()

    def warmup(self) -> list[SliceRecord]:
        """Fetch history (or, when resuming, the bars missed since ``skip_until_ms``) and process it."""
        n = self.warmup_bars
        if self.skip_until_ms is not None:
            # the pipeline already holds the run's history: fetch only what closed since its last slice
            n = max(0, (self.clock.now_ms() - self.skip_until_ms) // self.feed.timeframe_ms)
        slices = self.feed.warmup(n)
        self.warmed_up = True
        out = self._process(slices)
        log.info("warm-up: %d slices processed, %d skipped", len(out), self.skipped)
        return out

    def run_once(self) -> list[SliceRecord]:
        """One tick: poll news and the feed, process every new slice. Raises: DataError, StorageError."""
        with self._tick_lock:
            if not self.warmed_up:
                return self.warmup()
            self._poll_news()
            slices = self.feed.poll()
            self.ticks += 1
            return self._process(slices)

    # ---------------------------------------------------------------------------------- internals
    def _process(self, slices: Iterable[tuple[Bar, ...]]) -> list[SliceRecord]:
        out: list[SliceRecord] = []
        for bars in slices:
            if self.stopping:
                break  # the slices not processed are fetched again on resume (they are after its last slice)
            if not bars:
                continue
            if self.skip_until_ms is not None and bars[0].close_ms <= self.skip_until_ms:
                self.skipped += 1
                continue
            if self.starting_equity is not None:
                self.pipeline.open_ledger(self.starting_equity, bars[0].open_ms)
                self.starting_equity = None
            out.append(self.sink(bars))
        return out

    def _poll_news(self) -> None:
        try:
            self.pipeline.news.poll()
        except Exception as e:  # a news source must never stop trading
            log.warning("news poll failed: %s: %s", type(e).__name__, e)

    def _scheduled_tick(self) -> None:
        if self.stopping:
            return
        try:
            self.run_once()
        except DataError as e:
            log.error("stopping: %s", e)
            self._error = e
            self.stop()
            return
        except BaseException as e:  # storage or a bug: stop cleanly and let run() raise it
            log.exception("stopping after an error in a tick")
            self._error = e
            self.stop()
            return
        if self._max_ticks is not None and self.ticks >= self._max_ticks:
            self.stop()

    def _schedule_and_wait(self) -> None:
        from apscheduler.triggers.interval import IntervalTrigger

        tf = self.feed.timeframe_ms
        offset = _grid_offset(self.feed)
        now = self.clock.now_ms()
        next_close = ((now - offset) // tf + 1) * tf + offset
        first = ms_to_dt(next_close + round(self.settle_s * 1000))
        trigger = IntervalTrigger(seconds=tf / 1000, start_date=first, timezone=UTC)
        scheduler = self.scheduler_factory() if self.scheduler_factory is not None else _default_scheduler()
        grace = max(1, int(tf // 1000))  # a tick later than one bar is dropped: the next one back-fills it
        scheduler.add_job(self._scheduled_tick, trigger, id="paper-tick", name="paper loop tick", coalesce=True,
                          max_instances=1, misfire_grace_time=grace, replace_existing=True)
        scheduler.start()
        log.info("paper loop: ticking every %g s, first at %s", tf / 1000, first.isoformat())
        try:
            # short waits so a signal handler's flag is seen promptly without the handler touching a lock
            while not self._stop_flag and not self._stopped.wait(0.2):
                pass
        finally:
            self._stop_flag = True
            scheduler.shutdown(wait=True)  # the tick in progress finishes its slice and commits

    def _install_handlers(self) -> Callable[[], None] | None:
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum: int, frame: Any) -> None:
            if self._stop_flag and signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: the user wants out now
            self._stop_flag = True

        for sig in previous:
            signal.signal(sig, handler)

        def restore() -> None:
            for sig, h in previous.items():
                signal.signal(sig, h if h is not None else signal.SIG_DFL)

        return restore


def _cfg_warmup(pipeline: Pipeline) -> int:
    return int(pipeline.cfg.market.ccxt.warmup_bars)


def _grid_offset(feed: LiveFeed) -> int:
    from engine.inputs.feeds.ccxt_feed import bar_grid_offset_ms

    return bar_grid_offset_ms(feed.timeframe)


def _default_scheduler() -> Any:
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    # one worker: ticks never overlap, and the pipeline's event loop is only ever run by one thread at a time
    return BackgroundScheduler(timezone=UTC, executors={"default": ThreadPoolExecutor(1)})
