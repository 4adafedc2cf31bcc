"""PaperLoop: ticks that trade, parity with Replay, resume, the APScheduler wiring, SIGTERM, metrics.

The feed is the real CcxtFeed (real ccxt) against the fake Binance on 127.0.0.1. Deterministic tests drive
the loop tick by tick (``run_once``) with a SimClock the test advances; the scheduler tests use 1s bars on
the wall clock and take a few seconds each.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.app import build_pipeline
from engine.clock import SimClock, WallClock
from engine.config import LoadedConfig, load_config
from engine.core.pipeline import Pipeline
from engine.drivers.live import PaperLoop, SliceSink, status_line
from engine.drivers.metrics import Metrics
from engine.drivers.replay import RecordBatch, Replay, fills_fingerprint
from engine.errors import DataError
from engine.inputs.feeds.ccxt_feed import CcxtFeed
from engine.types import Bar, FillKind, SliceRecord
from tests.conftest import record_digest
from tests.fake_exchange import FakeExchange, make_bars

T0 = 1_735_689_600_000
TF = 300_000
SYMS = ["BTC/USDT", "ETH/USDT"]
ROOT = Path(__file__).resolve().parents[1]

STRATEGIES = [
    {"id": "fast_sma", "kind": "sma_cross", "symbols": "all",
     "params": {"fast": 3, "slow": 8, "atr_period": 5, "atr_stop": 1.5, "rr": 1.5, "size_hint": 0.1}},
    {"id": "rsi", "kind": "rsi_reversion", "symbols": "all",
     "params": {"period": 5, "lower": 35, "upper": 65, "atr_period": 5, "atr_stop": 1.5, "rr": 1.5,
                "size_hint": 0.1}},
]


def _loaded(ex: FakeExchange, timeframe: str = "5m", **over: Any) -> LoadedConfig:
    data: dict[str, Any] = {
        "run": {"db_url": "sqlite://"},
        "market": {"source": "ccxt", "symbols": SYMS, "timeframe": timeframe,
                   "ccxt": {"urls": ex.ccxt_urls(), "options": {"fetchMarkets": {"types": ["spot"]}},
                            "warmup_bars": 300, "settle_s": 0.15}},
        "strategies": STRATEGIES,
        "news": {"source": "none"},
        "execution": {"max_bars_held": 12},
    }
    data.update(over)
    return load_config(overrides=data, env={})


def _feed(loaded: LoadedConfig, clock: Any, **kw: Any) -> CcxtFeed:
    m = loaded.config.market
    return CcxtFeed(m.ccxt, m.symbols, m.timeframe, clock=clock, min_notional_default=m.limits.min_notional,
                    backoff_s=0.01, backoff_max_s=0.05, rate_limit_ms=kw.pop("rate_limit_ms", 5), **kw)


class ListRecorder:
    """Recorder double: keeps every SliceRecord in order (one 'transaction' = one append)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.records: list[SliceRecord] = []
        self.delay_s = delay_s

    def record_slice(self, record: SliceRecord) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.records.append(record)

    def new_batch(self) -> RecordBatch:
        return RecordBatch()

    def write_batch(self, batch: RecordBatch) -> None:
        for r in batch:
            self.record_slice(r)

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _summary(records: list[SliceRecord]) -> tuple[Any, ...]:
    fills = [f for r in records for f in r.fills]
    decisions = [rv.decision for r in records for rv in r.reviews]
    return fills_fingerprint(fills), decisions, record_digest(records), [r.close_ms for r in records]


class World:
    """The fake exchange and the loop's clock, moved together."""

    def __init__(self, ex: FakeExchange, clock: SimClock) -> None:
        self.ex, self.clock = ex, clock

    def advance(self, ms: int) -> None:
        self.ex.now_ms += ms
        self.clock.advance_to(self.ex.now_ms)


@pytest.fixture
def bars() -> dict[str, list[Bar]]:
    return make_bars(SYMS, "5m", T0, 1200, seed=11, vol=0.012)


@pytest.fixture
def world(bars: dict[str, list[Bar]]) -> Iterator[World]:
    now = T0 + 300 * TF + 2_000  # 300 bars closed, settle 2 s
    with FakeExchange(bars, timeframe="5m", now_ms=now) as ex:
        yield World(ex, SimClock(now))


def _loop(world: World, *, recorder: Any = None, **kw: Any) -> tuple[PaperLoop, ListRecorder, list[str]]:
    loaded = _loaded(world.ex)
    feed = _feed(loaded, world.clock)
    pipeline = build_pipeline(loaded, feed=feed, clock=SimClock())
    rec = recorder if recorder is not None else ListRecorder()
    lines: list[str] = []
    kw.setdefault("starting_equity", loaded.config.execution.starting_equity)
    loop = PaperLoop(pipeline, feed, rec, clock=world.clock, status=lines.append, install_signals=False, **kw)
    return loop, rec, lines


# ------------------------------------------------------------------------------------- tick by tick


def test_a_few_ticks_trade_and_every_slice_is_recorded_once(world: World) -> None:
    loop, rec, lines = _loop(world)
    try:
        warm = loop.warmup()
        assert len(warm) == 300
        for _ in range(120):
            world.advance(TF)
            assert len(loop.run_once()) == 1
    finally:
        loop.pipeline.close()
    closes = [r.close_ms for r in rec.records]
    assert closes == [T0 + (i + 1) * TF for i in range(420)]
    kinds = {f.kind for r in rec.records for f in r.fills}
    assert {FillKind.DEPOSIT, FillKind.ENTRY, FillKind.EXIT} <= kinds
    assert sum(len(r.reviews) for r in rec.records) > 0
    assert len(lines) == 420 and "equity" in lines[-1] and "verdicts accept" in lines[-1]
    assert loop.pipeline.stats.slices == 420


def test_parity_paper_loop_and_replay_make_the_same_decisions_and_fills(world: World,
                                                                        bars: dict[str, list[Bar]]) -> None:
    loop, live, _ = _loop(world)
    try:
        loop.warmup()
        # irregular ticks: on time, late (a back-fill of several bars), early (nothing closed yet)
        steps = [TF, TF, 3 * TF + TF // 2, TF // 4, TF // 4, 7 * TF, TF] * 25
        for step in steps:
            world.advance(step)
            loop.run_once()
    finally:
        loop.pipeline.close()
    n = len(live.records)
    assert n > 600

    loaded = _loaded(world.ex)
    slices = [tuple(bars[s][i] for s in SYMS) for i in range(n)]

    class ListFeed:
        symbols = tuple(SYMS)
        n_slices = n_bars = None

        def limits(self) -> Any:
            return _feed(loaded, world.clock).limits()  # the same exchange minimums as the live run

        def arrays(self) -> None:  # not preloaded: bar by bar, as live
            return None

    pipeline = build_pipeline(loaded, feed=ListFeed(), clock=SimClock())
    replayed = ListRecorder()
    try:
        pipeline.open_ledger(loaded.config.execution.starting_equity, slices[0][0].open_ms)
        Replay(pipeline, slices, replayed, batch_slices=1, finish=False).run()
    finally:
        pipeline.close()
    a, b = _summary(live.records), _summary(replayed.records)
    assert sum(1 for r in live.records for f in r.fills if f.kind is FillKind.ENTRY) >= 5
    assert a[0] == b[0], "fills differ"
    assert a[1] == b[1], "decisions differ"
    assert a[3] == b[3]
    assert a[2] == b[2], "records differ"


class MemoryRunRecorder(ListRecorder):
    """The Recorder reads ``engine.drivers.resume.catch_up`` needs, over records kept in the order they were made."""

    def last_slice_ms(self) -> int | None:
        return self.records[-1].close_ms if self.records else None

    def load_fills(self) -> list[Any]:
        # the Recorder contract (as storage implements it): by fill time, then fill id
        return sorted((f for r in self.records for f in r.fills), key=lambda f: (f.filled_ms, f.id))

    def load_bars(self) -> list[Bar]:
        return [b for r in self.records for b in r.bars]

    def load_reviews(self) -> list[Any]:
        return [rv for r in self.records for rv in r.reviews]

    def load_events(self) -> list[Any]:
        return [e for r in self.records for e in r.events]


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_resume_skips_recorded_slices_and_back_fills_the_missed_bars(world: World, tmp_path: Path,
                                                                     backend: str) -> None:
    from engine.drivers.resume import catch_up

    stores: list[Any] = []

    def new_run(name: str) -> Any:
        if backend == "memory":
            return MemoryRunRecorder()
        from storage import open_storage

        store = open_storage(f"sqlite:///{tmp_path / name}")
        stores.append(store)
        return store.recorder(store.create_run("live", "{}", "h", 7, "active", 10_000.0))

    start = world.ex.now_ms
    try:
        # the reference: one uninterrupted session
        reference = new_run("a.db")
        loop, _, _ = _loop(world, recorder=reference)
        try:
            loop.warmup()
            for _ in range(60):
                world.advance(TF)
                loop.run_once()
        finally:
            loop.pipeline.close()

        # the same market, stopped after 20 ticks, restarted 25 bars later
        world.ex.now_ms = start
        world.clock = SimClock(start)
        recorder = new_run("b.db")
        loop, _, _ = _loop(world, recorder=recorder)
        try:
            loop.warmup()
            for _ in range(20):
                world.advance(TF)
                loop.run_once()
        finally:
            loop.pipeline.close()
        world.advance(25 * TF)  # down for 25 bars
        loaded = _loaded(world.ex)
        feed = _feed(loaded, world.clock)
        pipeline = build_pipeline(loaded, feed=feed, clock=SimClock())
        try:
            last = catch_up(pipeline, recorder, feed.symbols)
            assert last == T0 + 320 * TF
            lines: list[str] = []
            loop = PaperLoop(pipeline, feed, recorder, clock=world.clock, status=lines.append,
                             install_signals=False, skip_until_ms=last)
            loop.warmup()
            assert len(lines) == 25 and loop.skipped == 0  # exactly the bars missed, none twice
            for _ in range(15):
                world.advance(TF)
                loop.run_once()
        finally:
            pipeline.close()
        assert recorder.last_slice_ms() == reference.last_slice_ms() == T0 + 360 * TF
        assert fills_fingerprint(recorder.load_fills()) == fills_fingerprint(reference.load_fills())
        assert len(reference.load_fills()) > 10
    finally:
        for store in stores:
            store.close()


def test_skip_until_drops_slices_already_processed(world: World) -> None:
    loop, rec, _ = _loop(world, skip_until_ms=T0 + 295 * TF, starting_equity=None)
    asked: list[int] = []
    inner = loop.feed

    class GenerousFeed:
        """Returns more history than asked for: the loop must still not process a slice twice."""

        symbols, timeframe, timeframe_ms = inner.symbols, "5m", TF

        def warmup(self, n: int) -> list[tuple[Bar, ...]]:
            asked.append(n)
            return inner.warmup(300)

        def poll(self) -> list[tuple[Bar, ...]]:
            return inner.poll()

    loop.feed = GenerousFeed()
    try:
        loop.warmup()
    finally:
        loop.pipeline.close()
    assert asked == [5]  # only the bars closed since the last recorded slice are needed
    assert loop.skipped == 295
    assert [r.close_ms for r in rec.records] == [T0 + (i + 1) * TF for i in range(295, 300)]


def test_news_source_is_polled_each_tick(world: World) -> None:
    loop, _, _ = _loop(world)

    class CountingNews:
        polls = 0

        def items(self, start_ms: int, end_ms: int) -> tuple[()]:
            return ()

        def poll(self) -> None:
            CountingNews.polls += 1
            raise RuntimeError("a broken news source must not stop the loop")

    loop.pipeline.news = CountingNews()  # type: ignore[assignment]
    try:
        loop.warmup()
        for _ in range(3):
            world.advance(TF)
            assert len(loop.run_once()) == 1
    finally:
        loop.pipeline.close()
    assert CountingNews.polls == 3


def test_a_shared_clock_is_warned_about(world: World, caplog: pytest.LogCaptureFixture) -> None:
    loaded = _loaded(world.ex)
    feed = _feed(loaded, world.clock)
    pipeline = build_pipeline(loaded, feed=feed, clock=world.clock)
    try:
        PaperLoop(pipeline, feed, None, clock=world.clock, install_signals=False)
    finally:
        pipeline.close()
    assert "give the pipeline its own SimClock" in caplog.text


def test_status_line_reads_well(world: World) -> None:
    loop, rec, _ = _loop(world)
    try:
        loop.warmup()
    finally:
        loop.pipeline.close()
    line = status_line(rec.records[-1], 10_123.456, 2)
    assert line.startswith("2025-01-02T01:00:00Z  bars 2  signals")
    assert line.endswith("equity 10,123.46  open 2")


# ----------------------------------------------------------------------------------------- scheduler


class RecordingScheduler:
    def __init__(self, loop_ref: list[PaperLoop]) -> None:
        self.loop_ref = loop_ref
        self.jobs: list[tuple[Any, Any, dict[str, Any]]] = []
        self.shut = False

    def add_job(self, func: Any, trigger: Any, **kw: Any) -> None:
        self.jobs.append((func, trigger, kw))

    def start(self) -> None:
        func = self.jobs[0][0]
        func()  # one tick, as the real scheduler would fire it
        self.loop_ref[0].stop()

    def shutdown(self, wait: bool = True) -> None:
        self.shut = True


def test_the_tick_is_aligned_to_bar_closes_plus_settle_coalesced_and_single(world: World) -> None:
    ref: list[PaperLoop] = []
    sched = RecordingScheduler(ref)
    loop, rec, _ = _loop(world, settle_s=2.5, scheduler_factory=lambda: sched)
    ref.append(loop)
    try:
        loop.run()
    finally:
        loop.pipeline.close()
    (_, trigger, kw), = sched.jobs
    assert kw["coalesce"] is True and kw["max_instances"] == 1 and kw["misfire_grace_time"] >= 1
    assert trigger.interval.total_seconds() == 300
    first = int(trigger.start_date.timestamp() * 1000)
    assert first == T0 + 301 * TF + 2_500  # the next bar close after now, plus the settle delay
    assert sched.shut and loop.ticks == 1 and len(rec.records) == 300


@pytest.fixture
def live_1s() -> Iterator[FakeExchange]:
    now = time.time_ns() // 1_000_000
    start = (now // 1000 - 120) * 1000
    b = make_bars(SYMS, "1s", start, 600, seed=4)
    with FakeExchange(b, timeframe="1s", now_fn=lambda: time.time_ns() // 1_000_000) as ex:
        yield ex


def test_real_scheduler_ticks_each_second_on_the_wall_clock(live_1s: FakeExchange) -> None:
    loaded = _loaded(live_1s, timeframe="1s")
    feed = _feed(loaded, WallClock())
    pipeline = build_pipeline(loaded, feed=feed, clock=SimClock())
    rec = ListRecorder()
    loop = PaperLoop(pipeline, feed, rec, clock=WallClock(), settle_s=0.15, warmup_bars=60, install_signals=False,
                     starting_equity=10_000)
    t = time.monotonic()
    try:
        loop.run_for(3)
    finally:
        pipeline.close()
    took = time.monotonic() - t
    closes = [r.close_ms for r in rec.records]
    assert len(closes) >= 62 and closes == sorted(set(closes))
    assert all(b - a == 1000 for a, b in itertools.pairwise(closes))  # no gap, no duplicate
    assert loop.ticks == 3 and took < 10


def test_sigterm_finishes_the_slice_in_progress_and_returns(live_1s: FakeExchange) -> None:
    loaded = _loaded(live_1s, timeframe="1s")
    feed = _feed(loaded, WallClock())
    pipeline = build_pipeline(loaded, feed=feed, clock=SimClock())
    rec = ListRecorder(delay_s=0.3)  # slow commits: the signal lands while a slice is being written
    loop = PaperLoop(pipeline, feed, rec, clock=WallClock(), settle_s=0.1, warmup_bars=2)
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed from the main thread")
    before = signal.getsignal(signal.SIGTERM)

    def kill_soon() -> None:
        while len(rec.records) < 3:
            time.sleep(0.05)
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=kill_soon, daemon=True).start()
    try:
        stats = loop.run()
    finally:
        pipeline.close()
    assert stats.slices == len(rec.records) >= 3  # every slice stepped was committed
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_to_a_running_process_exits_zero_after_committing() -> None:
    script = textwrap.dedent("""
        import sys, time
        from engine.app import build_pipeline
        from engine.clock import SimClock, WallClock
        from engine.config import load_config
        from engine.inputs.feeds.ccxt_feed import CcxtFeed
        from engine.drivers.live import PaperLoop
        from tests.fake_exchange import FakeExchange, make_bars

        now = time.time_ns() // 1_000_000
        bars = make_bars(["BTC/USDT"], "1s", (now // 1000 - 30) * 1000, 600, seed=1)
        with FakeExchange(bars, timeframe="1s", now_fn=lambda: time.time_ns() // 1_000_000) as ex:
            loaded = load_config(overrides={"market": {"source": "ccxt", "symbols": ["BTC/USDT"], "timeframe": "1s",
                "ccxt": {"urls": ex.ccxt_urls(), "options": {"fetchMarkets": {"types": ["spot"]}}}},
                "news": {"source": "none"}, "run": {"db_url": "sqlite://"}}, env={})
            m = loaded.config.market
            feed = CcxtFeed(m.ccxt, m.symbols, m.timeframe, clock=WallClock())
            pipeline = build_pipeline(loaded, feed=feed, clock=SimClock())
            committed = []
            def record(rec):
                time.sleep(0.2)
                committed.append(rec.close_ms)
            recorder = type("R", (), {"record_slice": staticmethod(record)})()
            loop = PaperLoop(pipeline, feed, recorder, clock=WallClock(), settle_s=0.1, warmup_bars=1,
                             status=lambda line: print("slice", line, flush=True))
            stats = loop.run()
            pipeline.close()
            print(f"stopped after {stats.slices} slices, {len(committed)} committed", flush=True)
        sys.exit(0)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    seen = 0
    deadline = time.monotonic() + 60
    while seen < 3 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line.startswith("slice")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    last = out.strip().splitlines()[-1]
    n_status = seen + sum(1 for ln in out.splitlines() if ln.startswith("slice"))
    assert last == f"stopped after {n_status} slices, {n_status} committed"


def test_a_permanent_feed_error_in_a_tick_stops_the_loop_and_is_raised(live_1s: FakeExchange) -> None:
    loaded = _loaded(live_1s, timeframe="1s")
    feed = _feed(loaded, WallClock())
    pipeline = build_pipeline(loaded, feed=feed, clock=SimClock())
    loop = PaperLoop(pipeline, feed, ListRecorder(), clock=WallClock(), settle_s=0.1, warmup_bars=3,
                     install_signals=False,
                     status=lambda _line: live_1s._by_id.pop("ETHUSDT", None))  # delisted after the warm-up
    try:
        with pytest.raises(DataError, match="Invalid symbol"):
            loop.run()
    finally:
        pipeline.close()


# ------------------------------------------------------------------------------------------- metrics


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def test_metrics_are_scraped_over_127_0_0_1(world: World) -> None:
    metrics = Metrics(0, tiers=["rules"])
    other = Metrics(0)  # a private registry each: two can live in one process
    try:
        assert metrics.port and metrics.port != other.port
        loop, rec, _ = _loop(world, metrics=metrics)
        try:
            loop.warmup()
            for _ in range(30):
                world.advance(TF)
                loop.run_once()
        finally:
            loop.pipeline.close()
        assert metrics.url is not None and metrics.url.startswith("http://127.0.0.1:")
        text = _scrape(metrics.url)
        bars = sum(len(r.bars) for r in rec.records)
        reviewed = sum(len(r.reviews) for r in rec.records)
        assert f"tradevet_bars_total {float(bars)}" in text
        assert f"tradevet_reviewed_total {float(reviewed)}" in text
        assert 'tradevet_verdicts_total{verdict="veto"}' in text
        assert 'tradevet_tier_attempts_total{kind="ok",outcome="success",tier="rules"}' in text
        assert 'tradevet_tier_latency_seconds_bucket{le="0.05",tier="rules"}' in text
        assert 'tradevet_breaker_state{tier="rules"} 0.0' in text
        assert "tradevet_equity " in text and "tradevet_open_positions " in text
        assert "tradevet_fallback_total 0.0" in text and "tradevet_fallthrough_total" in text
        assert "tradevet_bars_total 0.0" in _scrape(other.url or "")  # its own registry saw nothing
    finally:
        metrics.close()
        other.close()


def test_metrics_follow_breaker_events_fallbacks_and_cost() -> None:
    from engine.types import Action, Decision, Event, ReviewRecord, TierAttempt, Verdict, VerdictKind
    from tests.conftest import make_pack

    metrics = Metrics(0)
    try:
        pack = make_pack()
        verdict = Verdict(VerdictKind.VETO, 0.9, source="haiku", tier="haiku", input_tokens=1200, output_tokens=80,
                          cost_usd=0.0042, attempts=(TierAttempt("sonnet", False, "timeout", 8000.0),
                                                     TierAttempt("haiku", True, "ok", 900.0)))
        fallback = Verdict(VerdictKind.ACCEPT, 0.0, source="fallback",
                           attempts=(TierAttempt("sonnet", False, "breaker_open", 0.01),))
        reviews = tuple(ReviewRecord(pack, v, Decision(pack.signal.id, Action.SKIP, 0, 1, 1), "active")
                        for v in (verdict, fallback))
        ev = Event("breaker", 0, "sonnet", "closed → open", (("from", "closed"), ("to", "open"), ("reason", "x")))
        metrics.observe_slice(SliceRecord(T0, (), signals=(pack.signal,) * 3, reviews=reviews, events=(ev,)),
                              9_876.5, 1)
        text = _scrape(metrics.url or "")
    finally:
        metrics.close()
    assert 'tradevet_breaker_state{tier="sonnet"} 2.0' in text
    assert 'tradevet_breaker_transitions_total{tier="sonnet",to="open"} 1.0' in text
    assert "tradevet_fallback_total 1.0" in text and "tradevet_fallthrough_total 2.0" in text
    assert "tradevet_blocked_total 1.0" in text
    assert 'tradevet_tokens_total{direction="input",tier="haiku"} 1200.0' in text
    assert 'tradevet_cost_usd_total{tier="haiku"} 0.0042' in text
    assert 'tradevet_tier_attempts_total{kind="timeout",outcome="failure",tier="sonnet"} 1.0' in text
    assert 'tradevet_tier_latency_seconds_count{tier="sonnet"} 1.0' in text  # breaker_open is not a call
    assert "tradevet_equity 9876.5" in text


def test_a_metrics_port_in_use_is_a_clear_error() -> None:
    from engine.errors import ConfigError

    first = Metrics(0)
    try:
        with pytest.raises(ConfigError, match=f"metrics port {first.port} on 127.0.0.1: cannot listen"):
            Metrics(first.port)
    finally:
        first.close()


def test_metrics_without_a_port_do_nothing() -> None:
    m = Metrics(None)
    m.observe_slice(SliceRecord(T0, ()), 1.0, 0)
    m.close()
    assert m.url is None and not m.enabled


def test_slice_sink_steps_records_and_reports(world: World) -> None:
    loaded = _loaded(world.ex)
    feed = _feed(loaded, world.clock)
    pipeline: Pipeline = build_pipeline(loaded, feed=feed, clock=SimClock())
    rec = ListRecorder()
    seen: list[SliceRecord] = []
    lines: list[str] = []
    sink = SliceSink(pipeline, rec, status=lines.append, on_slice=seen.append)
    try:
        out = [sink(s) for s in feed.warmup(5)]
    finally:
        pipeline.close()
    assert out == rec.records == seen and len(lines) == 5
