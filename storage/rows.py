"""Row codecs, one per direction: pipeline value types → plain column tuples (``*_values``), and stored columns →
value types (``CONVERT``, one converter per column that needs one; ``row_to_*`` build whole objects with them,
``column`` converts a whole column for the bulk readers).

Each row shape is defined once, as a ``*_values`` function returning a tuple in the order of its table's
columns (``COLUMNS``; a test keeps that order equal to ``storage.models``): the recorder strings them
together into the driver's parameters.

Kept free of SQLAlchemy so the hot path (a tuple per bar) stays a plain function call. JSON written
here is ``json.dumps`` with ``repr`` floats, not ``canonical_json``: stored numbers must read back
bit for bit, and only context packs are hashed (they carry their own canonical JSON).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from engine import types
from engine.types import (
    Action,
    Bar,
    ContextPack,
    Decision,
    Event,
    ExitReason,
    Fill,
    FillKind,
    GateResult,
    NewsCategory,
    NewsItem,
    Outcome,
    OutcomeKind,
    Side,
    Signal,
    TierAttempt,
    Trade,
    Verdict,
    VerdictKind,
    freeze,
)

__all__ = [
    "CACHE_FIELDS",
    "COLUMNS",
    "CONVERT",
    "VERDICT_FIELDS",
    "add_gate_values",
    "attempts_of",
    "bar_values",
    "column",
    "decision_values",
    "dumps",
    "event_key",
    "event_values",
    "fill_values",
    "news_values",
    "outcome_values",
    "pack_values",
    "row_to_decision",
    "row_to_event",
    "row_to_fill",
    "row_to_gate",
    "row_to_news",
    "row_to_outcome",
    "row_to_signal",
    "row_to_trade",
    "row_to_verdict",
    "signal_values",
    "strings_of",
    "trade_values",
    "verdict_from_json",
    "verdict_to_json",
    "verdict_values",
]

# Every Verdict field stored in its own column (attempts go to a JSON column of their own).
VERDICT_FIELDS = tuple(f for f in types.VERDICT_FIELDS if f != "attempts")
# What a verdict-cache entry holds: the answer, not when one run's call was made (a cache answer is no call).
CACHE_FIELDS = tuple(f for f in VERDICT_FIELDS if f != "reviewed_at_ms")

# Column order of each run-scoped table: the order of the ``*_values`` tuples.
COLUMNS: dict[str, tuple[str, ...]] = {
    "bars": ("run_id", "close_ms", "symbol", "open_ms", "open", "high", "low", "close", "volume"),
    "signals": ("run_id", "id", "strategy_id", "symbol", "side", "created_ms", "entry", "stop_loss", "take_profit",
                "size_hint", "timeframe", "tags", "status"),
    "gate_results": ("run_id", "signal_id", "seq", "gate", "passed", "reason", "until_ms"),
    "context_packs": ("run_id", "signal_id", "hash", "regime_tag", "json"),
    "verdicts": ("run_id", "signal_id", *CACHE_FIELDS, "attempts", "mode", "reviewed_at_ms"),
    "decisions": ("run_id", "signal_id", "action", "size_pct", "stop_loss", "take_profit", "clamps", "reason"),
    "fills": ("run_id", "id", "signal_id", "symbol", "side", "kind", "filled_ms", "requested_price", "fill_price",
              "qty", "fee", "reason", "ambiguous", "gap"),
    "trades": ("run_id", "signal_id", "strategy_id", "symbol", "side", "qty", "entry_price", "exit_price",
               "opened_ms", "closed_ms", "pnl", "pnl_pct", "r_multiple", "fees", "exit_reason", "bars_held",
               "ambiguous"),
    "outcomes": ("run_id", "signal_id", "kind", "filled", "pnl_pct", "r_multiple", "exit_reason", "ambiguous",
                 "opened_ms", "closed_ms", "note"),
    "events": ("run_id", "seq", "kind", "at_ms", "subject", "message", "data"),
    "news_items": ("run_id", "id", "published_ms", "symbols", "headline", "source", "category"),
    "pack_digests": ("run_id", "signal_id", "hash", "regime_tag", "equity"),  # derived (storage.bulk.PackCheck)
}


def dumps(obj: Any) -> str:
    """Compact JSON that keeps key order and exact floats."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


_STRINGS_JSON: dict[tuple[str, ...], str] = {}
_STRINGS_JSON_MAX = 4096


def _strings_json(items: tuple[str, ...]) -> str:
    """``dumps(list(items))``, remembered for tuples of plain str (signal tags, clamps: a few distinct values)."""
    if type(items) is tuple and all(type(x) is str for x in items):
        text = _STRINGS_JSON.get(items)
        if text is None:
            text = dumps(list(items))
            if len(_STRINGS_JSON) < _STRINGS_JSON_MAX:
                _STRINGS_JSON[items] = text
        return text
    return dumps(list(items))


# ------------------------------------------------------------------------------------------ decoding
# What a stored column holds that is not already its field's value. Columns not named here are taken as stored
# (both backends hand back str, int and float for them).


def strings_of(text: str) -> tuple[str, ...]:
    """A JSON list of strings (signal tags, clamps) → a tuple."""
    return () if text == "[]" else tuple(json.loads(text))


def attempts_of(text: str) -> tuple[TierAttempt, ...]:
    """A verdict's stored attempts (JSON) → TierAttempt tuples."""
    if text == "[]":
        return ()
    return tuple(TierAttempt(a["tier"], bool(a["ok"]), a["kind"], float(a["latency_ms"]), a.get("error", ""))
                 for a in json.loads(text))


def _int_or_none(v: Any) -> int | None:
    return None if v is None else int(v)


_SIDES = {str(x): x for x in Side}
_VERDICT_KINDS = {str(x): x for x in VerdictKind}
_ACTIONS = {str(x): x for x in Action}
_OUTCOME_KINDS = {str(x): x for x in OutcomeKind}

CONVERT: dict[str, dict[str, Callable[[Any], Any]]] = {
    "signals": {"side": _SIDES.__getitem__, "created_ms": int, "tags": strings_of},
    "verdicts": {"verdict": _VERDICT_KINDS.__getitem__, "confidence": float, "latency_ms": float, "input_tokens": int,
                 "output_tokens": int, "cached_tokens": int, "cost_usd": float, "attempts": attempts_of,
                 "reviewed_at_ms": int},
    "decisions": {"action": _ACTIONS.__getitem__, "clamps": strings_of},
    "outcomes": {"kind": _OUTCOME_KINDS.__getitem__, "filled": bool, "ambiguous": bool, "opened_ms": _int_or_none,
                 "closed_ms": _int_or_none},
    "fills": {"side": _SIDES.__getitem__, "kind": FillKind, "filled_ms": int, "ambiguous": bool, "gap": bool},
    "trades": {"side": _SIDES.__getitem__, "opened_ms": int, "closed_ms": int, "exit_reason": ExitReason,
               "bars_held": int, "ambiguous": bool},
}


# Converters that parse text (a few distinct values in a column: "[]", the same tags): called once per distinct
# value, the (immutable) result shared by the rows that hold it.
_PARSERS = frozenset({strings_of, attempts_of})


def column(table: str, name: str, values: Sequence[Any]) -> list[Any]:
    """A whole stored column of ``table`` converted as its value type holds it."""
    convert = CONVERT.get(table, {}).get(name)
    if convert is None:
        return list(values)
    if convert in _PARSERS:
        parsed = {v: convert(v) for v in dict.fromkeys(values)}
        return list(map(parsed.__getitem__, values))
    if convert is _int_or_none and None not in values:
        convert = int
    return list(map(convert, values))


def _decode(table: str, r: Any, fields: Sequence[str]) -> list[Any]:
    """The values of ``fields`` of row ``r`` (anything with those attributes), converted for ``table``."""
    convert = CONVERT.get(table, {})
    out = []
    for f in fields:
        v = getattr(r, f)
        c = convert.get(f)
        out.append(v if c is None else c(v))
    return out


# --------------------------------------------------------------------------------------------- bars


def bar_values(run_id: int, b: Bar) -> tuple[Any, ...]:
    return (run_id, b.close_ms, b.symbol, b.open_ms, b.open, b.high, b.low, b.close, b.volume)


# ------------------------------------------------------------------------------------------ signals


def signal_values(run_id: int, s: Signal, status: str) -> tuple[Any, ...]:
    return (run_id, s.id, s.strategy_id, s.symbol, str(s.side), s.created_ms, s.entry, s.stop_loss, s.take_profit,
            s.size_hint, s.timeframe, _strings_json(s.tags), status)


_SIGNAL_FIELDS = ("id", "strategy_id", "symbol", "side", "created_ms", "entry", "stop_loss", "take_profit", "size_hint",
                  "timeframe", "tags")


def row_to_signal(r: Any) -> Signal:
    return Signal(*_decode("signals", r, _SIGNAL_FIELDS))


def add_gate_values(out: list[Any], run_id: int, results: Iterable[tuple[str, GateResult]]) -> int:
    """Append the rows' column values to ``out`` (flat, row after row); returns the number of rows.

    ``seq`` = position among the results of the same signal (the gates' evaluation order).
    """
    seen: dict[str, int] = {}
    get = seen.get
    ext = out.extend
    n = 0
    for signal_id, g in results:
        seq = get(signal_id, 0)
        seen[signal_id] = seq + 1
        ext((run_id, signal_id, seq, g.gate, g.passed, g.reason, g.until_ms))
        n += 1
    return n


def row_to_gate(r: Any) -> tuple[str, GateResult]:
    return r.signal_id, GateResult(r.gate, bool(r.passed), r.reason, None if r.until_ms is None else int(r.until_ms))


# ------------------------------------------------------------------------------------------ reviews


def pack_values(run_id: int, p: ContextPack) -> tuple[Any, ...]:
    if not p.json or not p.hash:
        raise ValueError(f"context pack of {p.signal.id} is not sealed (build it with ContextPack.build)")
    return (run_id, p.signal.id, p.hash, p.regime_tag, p.json)


def _attempts_json(attempts: Iterable[TierAttempt]) -> str:
    return dumps([{"tier": a.tier, "ok": a.ok, "kind": a.kind, "latency_ms": a.latency_ms, "error": a.error}
                  for a in attempts])


def _verdict_fields(v: Verdict) -> dict[str, Any]:
    d = {f: getattr(v, f) for f in CACHE_FIELDS}
    d["verdict"] = str(v.verdict)
    return d


def verdict_values(run_id: int, signal_id: str, v: Verdict, mode: str) -> tuple[Any, ...]:
    return (run_id, signal_id, *_verdict_fields(v).values(), _attempts_json(v.attempts), mode, v.reviewed_at_ms)


def row_to_verdict(r: Any) -> Verdict:
    return Verdict(*_decode("verdicts", r, types.VERDICT_FIELDS))


def verdict_to_json(v: Verdict) -> str:
    """Everything in a Verdict except ``attempts`` (they describe one cascade run, not the answer)."""
    return dumps(_verdict_fields(v))


def verdict_from_json(text: str) -> Verdict:
    """A verdict-cache entry (``verdict_to_json``) → Verdict, every field converted. Raises: ValueError, KeyError."""
    d = json.loads(text)
    convert = CONVERT["verdicts"]
    return Verdict(**{f: (convert[f](d[f]) if f in convert else d[f]) for f in CACHE_FIELDS})


def decision_values(run_id: int, d: Decision) -> tuple[Any, ...]:
    return (run_id, d.signal_id, str(d.action), d.size_pct, d.stop_loss, d.take_profit, _strings_json(d.clamps),
            d.reason)


def row_to_decision(r: Any) -> Decision:
    return Decision(r.signal_id, *_decode("decisions", r, types.DECISION_FIELDS))


# ---------------------------------------------------------------------------------------- execution


def fill_values(run_id: int, f: Fill) -> tuple[Any, ...]:
    return (run_id, f.id, f.signal_id, f.symbol, str(f.side), str(f.kind), f.filled_ms, f.requested_price,
            f.fill_price, f.qty, f.fee, f.reason, f.ambiguous, f.gap)


def row_to_fill(r: Any) -> Fill:
    return Fill(*_decode("fills", r, COLUMNS["fills"][1:]))


def trade_values(run_id: int, t: Trade) -> tuple[Any, ...]:
    return (run_id, t.signal_id, t.strategy_id, t.symbol, str(t.side), t.qty, t.entry_price, t.exit_price,
            t.opened_ms, t.closed_ms, t.pnl, t.pnl_pct, t.r_multiple, t.fees, str(t.exit_reason), t.bars_held,
            t.ambiguous)


def row_to_trade(r: Any) -> Trade:
    return Trade(*_decode("trades", r, COLUMNS["trades"][1:]))


def outcome_values(run_id: int, o: Outcome) -> tuple[Any, ...]:
    return (run_id, o.signal_id, str(o.kind), o.filled, o.pnl_pct, o.r_multiple, o.exit_reason, o.ambiguous,
            o.opened_ms, o.closed_ms, o.note)


def row_to_outcome(r: Any) -> Outcome:
    return Outcome(*_decode("outcomes", r, types.OUTCOME_FIELDS))


# ----------------------------------------------------------------------------------- events and news


def event_key(e: Event) -> tuple[str, int, str, str, str]:
    """What makes two events the same event: every field, data as stored."""
    return (e.kind, int(e.at_ms), e.subject, e.message, dumps([[k, v] for k, v in e.data]))


def event_values(run_id: int, seq: int, key: tuple[str, int, str, str, str]) -> tuple[Any, ...]:
    kind, at_ms, subject, message, data = key
    return (run_id, seq, kind, at_ms, subject, message, data)


def row_to_event(r: Any) -> Event:
    return Event(r.kind, int(r.at_ms), r.subject, r.message, tuple((k, freeze(v)) for k, v in json.loads(r.data)))


def news_values(run_id: int, n: NewsItem) -> tuple[Any, ...]:
    return (run_id, n.id, n.published_ms, dumps(list(n.symbols)), n.headline, n.source, str(n.category))


def row_to_news(r: Any) -> NewsItem:
    return NewsItem(r.id, int(r.published_ms), tuple(json.loads(r.symbols)), r.headline, r.source,
                    NewsCategory(r.category))
