"""Operations metrics: each SliceRecord (+ equity, open positions) → Prometheus series on 127.0.0.1:PORT/metrics.

A private ``CollectorRegistry`` per ``Metrics`` (several can live in one process, e.g. in tests); with
``port=None`` every method is a no-op and prometheus_client is never imported.

Series (prefix ``tradevet_``): ``bars_total``, ``signals_total``, ``blocked_total``, ``reviewed_total``,
``verdicts_total{verdict}``, ``tier_attempts_total{tier,outcome,kind}``, ``tier_latency_seconds{tier}``,
``tokens_total{tier,direction}``, ``cost_usd_total{tier}``, ``breaker_state{tier}`` (0 closed, 1 half-open,
2 open), ``breaker_transitions_total{tier,to}``,
``equity``, ``open_positions``, ``fallthrough_total``, ``fallback_total``, ``fills_total{kind}``,
``last_slice_timestamp_seconds``; spend: ``cost_usd_today{tier}`` (real calls of the current UTC day, wall clock),
``budget_limit{tier,cap}``, ``budget_used{tier,cap}`` (calls or USD of the cap's window), ``budget_exhausted{tier}``
(0/1), ``budget_events_total{tier,event}`` (exhausted | back).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engine.types import SliceRecord

__all__ = ["BREAKER_STATES", "Metrics"]

log = logging.getLogger("tradevet.metrics")

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class Metrics:
    """Prometheus exporter of the paper loop. ``observe_slice`` after each committed slice.

    ``port=0`` picks a free port (see ``port``/``url``). Raises: ConfigError when the port is taken.
    """

    def __init__(self, port: int | None, *, addr: str = "127.0.0.1", tiers: Sequence[str] = (),
                 budgets: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None) -> None:
        self.enabled = port is not None
        self.budgets = budgets  # the reviewer's ``budget_use``: read after each slice
        self._today = 0  # UTC day (ms) of cost_usd_today
        self.port: int | None = None
        self._server: Any = None
        if not self.enabled:
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

        r = self.registry = CollectorRegistry()
        p = "tradevet_"
        self.bars = Counter(f"{p}bars", "Bars processed.", registry=r)
        self.signals = Counter(f"{p}signals", "Signals emitted by strategies.", registry=r)
        self.blocked = Counter(f"{p}blocked", "Signals blocked by a gate.", registry=r)
        self.reviewed = Counter(f"{p}reviewed", "Signals that reached the reviewer.", registry=r)
        self.verdicts = Counter(f"{p}verdicts", "Verdicts by kind.", ["verdict"], registry=r)
        self.attempts = Counter(f"{p}tier_attempts", "Tier attempts by outcome (success/failure) and kind.",
                                ["tier", "outcome", "kind"], registry=r)
        self.latency = Histogram(f"{p}tier_latency_seconds", "Latency of tier calls (cache hits excluded).",
                                 ["tier"], registry=r,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32))
        self.tokens = Counter(f"{p}tokens", "Reviewer tokens by tier and direction.", ["tier", "direction"],
                              registry=r)
        self.cost = Counter(f"{p}cost_usd", "Reviewer cost in USD by tier.", ["tier"], registry=r)
        self.breaker = Gauge(f"{p}breaker_state", "Circuit breaker per tier: 0 closed, 1 half-open, 2 open.",
                             ["tier"], registry=r)
        self.breaker_transitions = Counter(f"{p}breaker_transitions", "Circuit breaker transitions per tier, by "
                                           "the state entered (open: the tier started failing).", ["tier", "to"],
                                           registry=r)
        self.equity = Gauge(f"{p}equity", "Paper equity at the last slice (quote currency).", registry=r)
        self.open_positions = Gauge(f"{p}open_positions", "Open positions at the last slice.", registry=r)
        self.fallthrough = Counter(f"{p}fallthrough", "Reviews not answered by the first tier tried.", registry=r)
        self.fallback = Counter(f"{p}fallback", "Reviews answered by no tier (fail-open fallback).", registry=r)
        self.fills = Counter(f"{p}fills", "Fills by kind.", ["kind"], registry=r)
        self.last_slice = Gauge(f"{p}last_slice_timestamp_seconds", "Close time of the last slice processed.",
                                registry=r)
        self.cost_today = Gauge(f"{p}cost_usd_today", "Cost in USD of the real calls of the current UTC day (wall "
                                "clock), by tier.", ["tier"], registry=r)
        self.budget_limit = Gauge(f"{p}budget_limit", "A tier budget's cap (calls or USD).", ["tier", "cap"],
                                  registry=r)
        self.budget_used = Gauge(f"{p}budget_used", "What is used of a tier budget's cap in its window (calls or "
                                 "USD).", ["tier", "cap"], registry=r)
        self.budget_exhausted = Gauge(f"{p}budget_exhausted", "1 while a tier is skipped for its budget.", ["tier"],
                                      registry=r)
        self.budget_events = Counter(f"{p}budget_events", "Budget events per tier: exhausted | back.",
                                     ["tier", "event"], registry=r)
        # series that exist from the start, so a dashboard shows zeros rather than "no data"
        for kind in ("accept", "modify", "veto"):
            self.verdicts.labels(kind)
        for tier in tiers:
            self.breaker.labels(tier).set(0)
        try:
            self._server, _thread = start_http_server(port, addr=addr, registry=r)
        except OSError as e:
            from engine.errors import ConfigError

            raise ConfigError(f"metrics port {port} on {addr}: cannot listen ({e.strerror or e})") from None
        self.port = int(self._server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", addr, self.port)

    @property
    def url(self) -> str | None:
        return None if self.port is None else f"http://127.0.0.1:{self.port}/metrics"

    def observe_slice(self, rec: SliceRecord, equity: float, open_positions: int) -> None:
        """Count one committed slice and set the gauges."""
        if not self.enabled:
            return
        self.bars.inc(len(rec.bars))
        self.signals.inc(len(rec.signals))
        self.blocked.inc(max(0, len(rec.signals) - len(rec.reviews)))
        self.reviewed.inc(len(rec.reviews))
        for rv in rec.reviews:
            v = rv.verdict
            self.verdicts.labels(str(v.verdict)).inc()
            for a in v.attempts:
                self.attempts.labels(a.tier, "success" if a.ok else "failure", a.kind).inc()
                if a.kind not in ("cache", "breaker_open", "budget"):  # none is a call to the provider
                    self.latency.labels(a.tier).observe(max(0.0, a.latency_ms) / 1000)
            if v.tier:
                if v.input_tokens:
                    self.tokens.labels(v.tier, "input").inc(v.input_tokens)
                if v.output_tokens:
                    self.tokens.labels(v.tier, "output").inc(v.output_tokens)
                if v.cost_usd:
                    self.cost.labels(v.tier).inc(v.cost_usd)
                if v.reviewed_at_ms and v.source == v.tier:
                    self._cost_today(v.tier, v.reviewed_at_ms, v.cost_usd)
            if v.source == "fallback":
                self.fallback.inc()
            if v.source == "fallback" or any(not a.ok for a in v.attempts):
                self.fallthrough.inc()
        for e in rec.events:
            if e.kind == "budget":
                self.budget_events.labels(e.subject, e.message.split(":", 1)[0]).inc()
            if e.kind == "breaker":
                state = dict(e.data).get("to")
                if state in BREAKER_STATES:
                    self.breaker.labels(e.subject).set(BREAKER_STATES[state])
                    self.breaker_transitions.labels(e.subject, state).inc()
        for f in rec.fills:
            self.fills.labels(str(f.kind)).inc()
        self.equity.set(equity)
        self.open_positions.set(open_positions)
        if rec.bars:
            self.last_slice.set(rec.close_ms / 1000)
        if self.budgets is not None:
            self.observe_budgets(self.budgets())

    def observe_budgets(self, use: Mapping[str, Mapping[str, Any]]) -> None:
        """Set the budget gauges from ``Reviewer.budget_use()``."""
        if not self.enabled:
            return
        for tier, b in use.items():
            for cap, used in (("calls_per_day", b["day_calls"]), ("usd_per_day", b["day_usd"]),
                              ("usd_per_run", b["run_usd"])):
                if b.get(cap) is not None:
                    self.budget_limit.labels(tier, cap).set(b[cap])
                    self.budget_used.labels(tier, cap).set(used)
            self.budget_exhausted.labels(tier).set(1 if b.get("exhausted") else 0)

    def _cost_today(self, tier: str, at_ms: int, usd: float) -> None:
        day = at_ms - at_ms % 86_400_000
        if day > self._today:
            if self._today:
                self.cost_today.clear()  # a new UTC day: every tier starts at zero
            self._today = day
        if day == self._today:
            self.cost_today.labels(tier).inc(usd)

    def close(self) -> None:
        """Stop the HTTP server (its thread is a daemon; this frees the port)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
