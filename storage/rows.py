"""Row codecs: pipeline value types ⇄ plain column dicts/tuples (in: ``engine.types`` values or rows; out: the other).

Kept free of SQLAlchemy so the hot path (a dict per bar) stays a plain function call. JSON written
here is ``json.dumps`` with ``repr`` floats, not ``canonical_json``: stored numbers must read back
bit for bit, and only context packs are hashed (they carry their own canonical JSON).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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
)

__all__ = [
    "VERDICT_FIELDS",
    "bar_row",
    "decision_row",
    "dumps",
    "event_key",
    "event_row",
    "fill_row",
    "gate_rows",
    "news_row",
    "outcome_row",
    "pack_row",
    "row_to_bar",
    "row_to_decision",
    "row_to_event",
    "row_to_fill",
    "row_to_gate",
    "row_to_news",
    "row_to_outcome",
    "row_to_signal",
    "row_to_trade",
    "row_to_verdict",
    "signal_row",
    "trade_row",
    "verdict_from_json",
    "verdict_row",
    "verdict_to_json",
]

# Every Verdict field stored in its own column (attempts go to a JSON column of their own).
VERDICT_FIELDS = (
    "verdict", "confidence", "rationale", "modified_size_pct", "modified_sl", "source", "tier", "model",
    "prompt_version", "latency_ms", "input_tokens", "output_tokens", "cached_tokens", "cost_usd", "error",
    "raw_reply",
)


def dumps(obj: Any) -> str:
    """Compact JSON that keeps key order and exact floats."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _freeze(v: Any) -> Any:
    # The value types are immutable: JSON lists come back as tuples.
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return {k: _freeze(x) for k, x in v.items()}
    return v


# --------------------------------------------------------------------------------------------- bars


def bar_row(run_id: int, b: Bar) -> dict[str, Any]:
    return {"run_id": run_id, "symbol": b.symbol, "close_ms": b.close_ms, "open_ms": b.open_ms, "open": b.open,
            "high": b.high, "low": b.low, "close": b.close, "volume": b.volume}


def row_to_bar(r: Sequence[Any]) -> Bar:
    # column order: symbol, open_ms, close_ms, open, high, low, close, volume (as Bar's fields)
    return Bar(r[0], int(r[1]), int(r[2]), float(r[3]), float(r[4]), float(r[5]), float(r[6]), float(r[7]))


# ------------------------------------------------------------------------------------------ signals


def signal_row(run_id: int, s: Signal, status: str) -> dict[str, Any]:
    return {"run_id": run_id, "id": s.id, "strategy_id": s.strategy_id, "symbol": s.symbol, "side": str(s.side),
            "created_ms": s.created_ms, "entry": s.entry, "stop_loss": s.stop_loss, "take_profit": s.take_profit,
            "size_hint": s.size_hint, "timeframe": s.timeframe, "tags": dumps(list(s.tags)), "status": status}


def row_to_signal(r: Any) -> Signal:
    return Signal(id=r.id, strategy_id=r.strategy_id, symbol=r.symbol, side=Side(r.side), created_ms=int(r.created_ms),
                  entry=r.entry, stop_loss=r.stop_loss, take_profit=r.take_profit, size_hint=r.size_hint,
                  timeframe=r.timeframe, tags=tuple(json.loads(r.tags)))


def gate_rows(run_id: int, results: Iterable[tuple[str, GateResult]]) -> list[dict[str, Any]]:
    """Rows with ``seq`` = position among the results of the same signal (the gates' evaluation order)."""
    seen: dict[str, int] = {}
    out: list[dict[str, Any]] = []
    for signal_id, g in results:
        seq = seen.get(signal_id, 0)
        seen[signal_id] = seq + 1
        out.append({"run_id": run_id, "signal_id": signal_id, "seq": seq, "gate": g.gate, "passed": g.passed,
                    "reason": g.reason, "until_ms": g.until_ms})
    return out


def row_to_gate(r: Any) -> tuple[str, GateResult]:
    return r.signal_id, GateResult(r.gate, bool(r.passed), r.reason, None if r.until_ms is None else int(r.until_ms))


# ------------------------------------------------------------------------------------------ reviews


def pack_row(run_id: int, p: ContextPack) -> dict[str, Any]:
    if not p.json or not p.hash:
        raise ValueError(f"context pack of {p.signal.id} is not sealed (build it with ContextPack.build)")
    return {"run_id": run_id, "signal_id": p.signal.id, "hash": p.hash, "regime_tag": str(p.regime.tag),
            "json": p.json}


def _attempts_json(attempts: Iterable[TierAttempt]) -> str:
    return dumps([{"tier": a.tier, "ok": a.ok, "kind": a.kind, "latency_ms": a.latency_ms, "error": a.error}
                  for a in attempts])


def _attempts(text: str) -> tuple[TierAttempt, ...]:
    return tuple(TierAttempt(a["tier"], bool(a["ok"]), a["kind"], float(a["latency_ms"]), a.get("error", ""))
                 for a in json.loads(text))


def _verdict_fields(v: Verdict) -> dict[str, Any]:
    d = {f: getattr(v, f) for f in VERDICT_FIELDS}
    d["verdict"] = str(v.verdict)
    return d


def verdict_row(run_id: int, signal_id: str, v: Verdict, mode: str) -> dict[str, Any]:
    return {"run_id": run_id, "signal_id": signal_id, **_verdict_fields(v),
            "attempts": _attempts_json(v.attempts), "mode": mode}


def _verdict(d: Mapping[str, Any], attempts: tuple[TierAttempt, ...]) -> Verdict:
    return Verdict(
        verdict=VerdictKind(d["verdict"]), confidence=float(d["confidence"]), rationale=d["rationale"],
        modified_size_pct=d["modified_size_pct"], modified_sl=d["modified_sl"], source=d["source"],
        tier=d["tier"], model=d["model"], prompt_version=d["prompt_version"], latency_ms=float(d["latency_ms"]),
        input_tokens=int(d["input_tokens"]), output_tokens=int(d["output_tokens"]),
        cached_tokens=int(d["cached_tokens"]), cost_usd=float(d["cost_usd"]), error=d["error"],
        raw_reply=d["raw_reply"], attempts=attempts,
    )


def row_to_verdict(r: Any) -> Verdict:
    return _verdict(r._mapping, _attempts(r.attempts))


def verdict_to_json(v: Verdict) -> str:
    """Everything in a Verdict except ``attempts`` (they describe one cascade run, not the answer)."""
    return dumps(_verdict_fields(v))


def verdict_from_json(text: str) -> Verdict:
    return _verdict(json.loads(text), ())


def decision_row(run_id: int, d: Decision) -> dict[str, Any]:
    return {"run_id": run_id, "signal_id": d.signal_id, "action": str(d.action), "size_pct": d.size_pct,
            "stop_loss": d.stop_loss, "take_profit": d.take_profit, "clamps": dumps(list(d.clamps)),
            "reason": d.reason}


def row_to_decision(r: Any) -> Decision:
    return Decision(r.signal_id, Action(r.action), r.size_pct, r.stop_loss, r.take_profit,
                    tuple(json.loads(r.clamps)), r.reason)


# ---------------------------------------------------------------------------------------- execution


def fill_row(run_id: int, f: Fill) -> dict[str, Any]:
    return {"run_id": run_id, "id": f.id, "signal_id": f.signal_id, "symbol": f.symbol, "side": str(f.side),
            "kind": str(f.kind), "filled_ms": f.filled_ms, "requested_price": f.requested_price,
            "fill_price": f.fill_price, "qty": f.qty, "fee": f.fee, "reason": f.reason, "ambiguous": f.ambiguous,
            "gap": f.gap}


def row_to_fill(r: Any) -> Fill:
    return Fill(id=r.id, signal_id=r.signal_id, symbol=r.symbol, side=Side(r.side), kind=FillKind(r.kind),
                filled_ms=int(r.filled_ms), requested_price=r.requested_price, fill_price=r.fill_price, qty=r.qty,
                fee=r.fee, reason=r.reason, ambiguous=bool(r.ambiguous), gap=bool(r.gap))


def trade_row(run_id: int, t: Trade) -> dict[str, Any]:
    return {"run_id": run_id, "signal_id": t.signal_id, "strategy_id": t.strategy_id, "symbol": t.symbol,
            "side": str(t.side), "qty": t.qty, "entry_price": t.entry_price, "exit_price": t.exit_price,
            "opened_ms": t.opened_ms, "closed_ms": t.closed_ms, "pnl": t.pnl, "pnl_pct": t.pnl_pct,
            "r_multiple": t.r_multiple, "fees": t.fees, "exit_reason": str(t.exit_reason),
            "bars_held": t.bars_held, "ambiguous": t.ambiguous}


def row_to_trade(r: Any) -> Trade:
    return Trade(signal_id=r.signal_id, strategy_id=r.strategy_id, symbol=r.symbol, side=Side(r.side), qty=r.qty,
                 entry_price=r.entry_price, exit_price=r.exit_price, opened_ms=int(r.opened_ms),
                 closed_ms=int(r.closed_ms), pnl=r.pnl, pnl_pct=r.pnl_pct, r_multiple=r.r_multiple, fees=r.fees,
                 exit_reason=ExitReason(r.exit_reason), bars_held=int(r.bars_held), ambiguous=bool(r.ambiguous))


def outcome_row(run_id: int, o: Outcome) -> dict[str, Any]:
    return {"run_id": run_id, "signal_id": o.signal_id, "kind": str(o.kind), "filled": o.filled,
            "pnl_pct": o.pnl_pct, "r_multiple": o.r_multiple, "exit_reason": o.exit_reason,
            "ambiguous": o.ambiguous, "opened_ms": o.opened_ms, "closed_ms": o.closed_ms, "note": o.note}


def row_to_outcome(r: Any) -> Outcome:
    return Outcome(signal_id=r.signal_id, kind=OutcomeKind(r.kind), filled=bool(r.filled), pnl_pct=r.pnl_pct,
                   r_multiple=r.r_multiple, exit_reason=r.exit_reason, ambiguous=bool(r.ambiguous),
                   opened_ms=None if r.opened_ms is None else int(r.opened_ms),
                   closed_ms=None if r.closed_ms is None else int(r.closed_ms), note=r.note)


# ----------------------------------------------------------------------------------- events and news


def event_key(e: Event) -> tuple[str, int, str, str, str]:
    """What makes two events the same event: every field, data as stored."""
    return (e.kind, int(e.at_ms), e.subject, e.message, dumps([[k, v] for k, v in e.data]))


def event_row(run_id: int, seq: int, key: tuple[str, int, str, str, str]) -> dict[str, Any]:
    kind, at_ms, subject, message, data = key
    return {"run_id": run_id, "seq": seq, "kind": kind, "at_ms": at_ms, "subject": subject, "message": message,
            "data": data}


def row_to_event(r: Any) -> Event:
    return Event(r.kind, int(r.at_ms), r.subject, r.message, tuple((k, _freeze(v)) for k, v in json.loads(r.data)))


def news_row(run_id: int, n: NewsItem) -> dict[str, Any]:
    return {"run_id": run_id, "id": n.id, "published_ms": n.published_ms, "symbols": dumps(list(n.symbols)),
            "headline": n.headline, "source": n.source, "category": str(n.category)}


def row_to_news(r: Any) -> NewsItem:
    return NewsItem(r.id, int(r.published_ms), tuple(json.loads(r.symbols)), r.headline, r.source,
                    NewsCategory(r.category))
