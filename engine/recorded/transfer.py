"""Signal transfer: a recorded run ⇄ a JSONL file (signals, packs, verdicts, decisions, outcomes, the bars behind them).

A user can backtest signals recorded elsewhere: ``export_run`` writes one header line (format name and
version, the source run and its stored effective config) and then one JSON object per line —
``bar``, ``signal`` (with its gate results, its review: stored pack JSON + hash, verdict, decision, mode —
and its realized and shadow outcomes), ``fill``, ``trade``, ``event``. The bars are those the outcomes
were simulated on: per symbol, from each reviewed signal's bar to the close of its latest outcome.

``import_file`` checks every line (a bad one is a ``DataError`` "file.jsonl:12: what was expected and
what was found"), verifies every pack's JSON against its hash and its signal, and records the lot as a
new run through the store's recorder (batches of slices, rows grouped by time). The schema has no "imported"
run status: the new run is "finished", and an ``import`` event on its timeline says where it came from.

Like ``engine.app``, a composition root: it talks to ``storage`` (imported inside the functions).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from types import UnionType
from typing import Any

from engine.config import parse_timeframe, stored_value
from engine.errors import DataError
from engine.ports import RunReader, RunStore
from engine.recorded.stored import load_stored
from engine.types import (
    Bar,
    Decision,
    Event,
    Fill,
    FillKind,
    GateResult,
    Outcome,
    PackRef,
    ReviewRecord,
    Signal,
    SliceRecord,
    Trade,
    Verdict,
    content_hash,
    freeze,
)

__all__ = ["FORMAT", "VERSION", "ExportSummary", "ImportSummary", "export_run", "import_file"]

FORMAT = "tradevet-signals"
VERSION = 1
_BATCH_SLICES = 256  # slices per transaction on import
_MODES = ("active", "shadow", "off")


# ------------------------------------------------------------------------------------------- codecs


def _encode(obj: Any) -> Any:
    """A value type → plain JSON data: dataclass fields by name, enums as their value, tuples as lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, (tuple, list)):
        return [_encode(x) for x in obj]
    return obj


def _shown(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


class _Bad(Exception):
    """A decoding problem at a dotted path inside one line (turned into a DataError with file and line)."""


def _conv(tp: Any, v: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return freeze(v)
    if origin in (typing.Union, UnionType):
        if v is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _conv(inner[0], v, where)
    if origin is tuple:
        if not isinstance(v, list):
            raise _Bad(f"{where}: expected a list, found {_shown(v)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_conv(args[0], x, f"{where}[{i}]") for i, x in enumerate(v))
        if len(v) != len(args):
            raise _Bad(f"{where}: expected a list of {len(args)} items, found {_shown(v)}")
        return tuple(_conv(a, x, f"{where}[{i}]") for i, (a, x) in enumerate(zip(args, v, strict=True)))
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(v)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in tp)  # type: ignore[attr-defined]
            raise _Bad(f"{where}: expected one of {allowed}, found {_shown(v)}") from None
    if tp is bool:
        if not isinstance(v, bool):
            raise _Bad(f"{where}: expected true or false, found {_shown(v)}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not v.is_integer()):
            raise _Bad(f"{where}: expected an integer, found {_shown(v)}")
        return int(v)
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _Bad(f"{where}: expected a number, found {_shown(v)}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise _Bad(f"{where}: expected a string, found {_shown(v)}")
        return v
    if dataclasses.is_dataclass(tp):
        return _decode(tp, v, where)  # type: ignore[arg-type]
    raise _Bad(f"{where}: cannot decode a {tp!r}")  # a new field type in engine.types: teach _conv


_HINTS: dict[type, dict[str, Any]] = {}


def _decode(cls: type, v: Any, where: str) -> Any:
    """Plain data → the value type ``cls``, every field checked. Raises: _Bad naming the dotted path."""
    if not isinstance(v, dict):
        raise _Bad(f"{where}: expected an object, found {_shown(v)}")
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(v) - set(fields))
    if unknown:
        raise _Bad(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(fields)})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in v:
            kwargs[name] = _conv(hints[name], v[name], f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _Bad(f"{where}: missing key {name!r}")
    return cls(**kwargs)


# -------------------------------------------------------------------------------------------- export


@dataclasses.dataclass(frozen=True)
class ExportSummary:
    path: str
    signals: int
    reviewed: int
    bars: int
    fills: int
    trades: int
    events: int


def _bar_windows(reviews: Sequence[ReviewRecord], outcomes: Sequence[Outcome],
                 timeframe_ms: int) -> dict[str, list[tuple[int, int]]]:
    """Per symbol, merged [from, to] close-time windows: each reviewed signal's bar to its latest outcome's close."""
    last: dict[str, int] = {}
    for o in outcomes:
        if o.closed_ms is not None:
            last[o.signal_id] = max(last.get(o.signal_id, o.closed_ms), o.closed_ms)
    raw: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for r in reviews:
        sig = r.pack.signal
        # an entry that never filled was still decided on the next bar: keep that one
        end = max(last.get(sig.id, 0), sig.created_ms + timeframe_ms)
        raw[sig.symbol].append((sig.created_ms, end))
    merged: dict[str, list[tuple[int, int]]] = {}
    for sym, spans in raw.items():
        spans.sort()
        out = [spans[0]]
        for a, b in spans[1:]:
            if a <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], b))
            else:
                out.append((a, b))
        merged[sym] = out
    return merged


def _timeframe_ms(config_json: str, reviews: Sequence[ReviewRecord]) -> int:
    fallback = reviews[0].pack.signal.timeframe if reviews else "5m"
    try:
        return parse_timeframe(str(stored_value(config_json, "market.timeframe", fallback)))
    except Exception:
        return parse_timeframe(fallback)


def export_run(reader: RunReader, run_id: int, out: Path) -> ExportSummary:
    """Write run ``run_id`` to ``out`` as JSONL. Raises: StorageError, DataError (cannot write the file)."""
    run = reader.get_run(run_id)
    rec = reader.records(run_id)
    signals = rec.load_signals()
    gates: dict[str, list[GateResult]] = defaultdict(list)
    for sid, g in rec.load_gate_results():
        gates[sid].append(g)
    # packs travel as their stored JSON, checked against the stored hash (no rebuild needed to copy them)
    reviews = {r.pack.signal.id: r for r in load_stored(reader, run_id, keep_json=True).records}
    outcomes = rec.load_outcomes()
    by_signal: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        by_signal[o.signal_id].append(o)
    fills, trades, events = rec.load_fills(), rec.load_trades(), rec.load_events()
    windows = _bar_windows(list(reviews.values()), outcomes, _timeframe_ms(run.config_json, list(reviews.values())))
    bars: list[Bar] = []
    for sym, spans in sorted(windows.items()):
        starts = [a for a, _ in spans]
        for b in rec.load_bars(sym, since_ms=spans[0][0]):
            i = bisect_right(starts, b.close_ms) - 1
            if i >= 0 and b.close_ms <= spans[i][1]:
                bars.append(b)
    bars.sort(key=lambda b: (b.close_ms, b.symbol))
    try:
        config = json.loads(run.config_json) if run.config_json else {}
    except ValueError:
        config = {}
    header = {
        "format": FORMAT, "version": VERSION, "exported_at": datetime.now(UTC).isoformat(),
        "source": {"run_id": run.id, "name": run.name, "status": run.status, "config_hash": run.config_hash,
                   "seed": run.seed, "reviewer_mode": run.reviewer_mode, "starting_equity": run.starting_equity,
                   "db": reader.url_masked},
        "config": config,
        "counts": {"bars": len(bars), "signals": len(signals), "reviewed": len(reviews), "fills": len(fills),
                   "trades": len(trades), "events": len(events)},
    }

    def lines() -> Iterator[dict[str, Any]]:
        yield header
        for b in bars:
            yield {"type": "bar", **_encode(b)}
        for s in signals:
            r = reviews.get(s.id)
            review = None if r is None else {
                "pack": {"hash": r.pack.hash, "json": r.pack.json}, "verdict": _encode(r.verdict),
                "decision": _encode(r.decision), "mode": r.mode}
            yield {"type": "signal", "signal": _encode(s), "status": "reviewed" if r is not None else "blocked",
                   "gates": [_encode(g) for g in gates.get(s.id, [])], "review": review,
                   "outcomes": [_encode(o) for o in by_signal.get(s.id, [])]}
        for f in fills:
            yield {"type": "fill", **_encode(f)}
        for t in trades:
            yield {"type": "trade", **_encode(t)}
        for e in events:
            yield {"type": "event", **_encode(e)}

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as fh:
            for obj in lines():
                fh.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")))
                fh.write("\n")
    except OSError as e:
        raise DataError(f"{out}: cannot write the export ({e.strerror or e})") from e
    return ExportSummary(str(out), len(signals), len(reviews), len(bars), len(fills), len(trades), len(events))


# -------------------------------------------------------------------------------------------- import


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    run_id: int
    name: str
    source_run: str
    signals: int
    reviewed: int
    bars: int
    fills: int
    trades: int
    events: int


@dataclasses.dataclass
class _Parsed:
    header: dict[str, Any]
    bars: list[Bar] = dataclasses.field(default_factory=list)
    signals: list[Signal] = dataclasses.field(default_factory=list)
    gates: list[tuple[str, GateResult]] = dataclasses.field(default_factory=list)
    reviews: dict[str, ReviewRecord] = dataclasses.field(default_factory=dict)
    outcomes: list[Outcome] = dataclasses.field(default_factory=list)
    fills: list[tuple[int, Fill]] = dataclasses.field(default_factory=list)  # (line, fill)
    trades: list[tuple[int, Trade]] = dataclasses.field(default_factory=list)
    events: list[Event] = dataclasses.field(default_factory=list)


def _header(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        got = obj.get("format") if isinstance(obj, dict) else obj
        raise DataError(f"{where}: expected a header line with \"format\": \"{FORMAT}\", found {_shown(got)}")
    if obj.get("version") != VERSION:
        raise DataError(f"{where}: expected format version {VERSION}, found {_shown(obj.get('version'))} "
                        "(written by another tradevet version)")
    src = obj.get("source")
    if not isinstance(src, dict) or not isinstance(src.get("starting_equity"), (int, float)):
        raise DataError(f"{where}: header.source: expected an object with starting_equity, found {_shown(src)}")
    if not isinstance(obj.get("config", {}), dict):
        raise DataError(f"{where}: header.config: expected an object, found {_shown(obj.get('config'))}")
    return obj


def _signal_line(obj: dict[str, Any], p: _Parsed, seen: set[str]) -> None:
    sig: Signal = _decode(Signal, obj.get("signal"), "signal")
    if sig.id in seen:
        raise _Bad(f"signal.id: signal {sig.id!r} appears twice")
    status = obj.get("status")
    if status not in ("reviewed", "blocked"):
        raise _Bad(f"status: expected reviewed or blocked, found {_shown(status)}")
    gates = obj.get("gates", [])
    if not isinstance(gates, list):
        raise _Bad(f"gates: expected a list, found {_shown(gates)}")
    results = [_decode(GateResult, g, f"gates[{i}]") for i, g in enumerate(gates)]
    review = obj.get("review")
    rec: ReviewRecord | None = None
    if status == "reviewed":
        if not isinstance(review, dict):
            raise _Bad(f"review: expected an object for a reviewed signal, found {_shown(review)}")
        rec = _review(review, sig)
    elif review is not None:
        raise _Bad(f"review: expected null for a blocked signal, found {_shown(review)}")
    raw_outcomes = obj.get("outcomes", [])
    if not isinstance(raw_outcomes, list):
        raise _Bad(f"outcomes: expected a list, found {_shown(raw_outcomes)}")
    outs = [_decode(Outcome, o, f"outcomes[{i}]") for i, o in enumerate(raw_outcomes)]
    kinds = [o.kind for o in outs]
    if len(set(kinds)) != len(kinds):
        raise _Bad("outcomes: expected at most one realized and one shadow outcome")
    for i, o in enumerate(outs):
        if o.signal_id != sig.id:
            raise _Bad(f"outcomes[{i}].signal_id: expected {sig.id!r}, found {o.signal_id!r}")
    if outs and rec is None:
        raise _Bad("outcomes: a blocked signal has no outcomes")
    extra = sorted(set(obj) - {"type", "signal", "status", "gates", "review", "outcomes"})
    if extra:
        raise _Bad(f"unknown key {extra[0]!r}")
    seen.add(sig.id)
    p.signals.append(sig)
    p.gates.extend((sig.id, g) for g in results)
    if rec is not None:
        p.reviews[sig.id] = rec
    p.outcomes.extend(outs)


def _review(review: dict[str, Any], sig: Signal) -> ReviewRecord:
    extra = sorted(set(review) - {"pack", "verdict", "decision", "mode"})
    if extra:
        raise _Bad(f"review: unknown key {extra[0]!r}")
    pack = review.get("pack")
    if not isinstance(pack, dict) or not isinstance(pack.get("json"), str) or not isinstance(pack.get("hash"), str):
        raise _Bad(f"review.pack: expected an object with json and hash strings, found {_shown(pack)}")
    text, stored = pack["json"], pack["hash"]
    computed = content_hash(text)
    if computed != stored:
        raise _Bad(f"review.pack.hash: the pack's JSON hashes to {computed[:12]}…, not the stored {stored[:12]}… "
                   "(the pack was altered)")
    try:
        parsed = json.loads(text)
        pack_signal = parsed["signal"]["id"]
        equity = float(parsed["equity"])
    except (ValueError, KeyError, TypeError) as e:
        raise _Bad(f"review.pack.json: expected a context pack with signal and equity ({type(e).__name__}: {e})") \
            from None
    if pack_signal != sig.id:
        raise _Bad(f"review.pack.json: the pack is for signal {pack_signal!r}, not {sig.id!r}")
    verdict: Verdict = _decode(Verdict, review.get("verdict"), "review.verdict")
    decision: Decision = _decode(Decision, review.get("decision"), "review.decision")
    if decision.signal_id != sig.id:
        raise _Bad(f"review.decision.signal_id: expected {sig.id!r}, found {decision.signal_id!r}")
    mode = review.get("mode")
    if mode not in _MODES:
        raise _Bad(f"review.mode: expected one of {', '.join(_MODES)}, found {_shown(mode)}")
    regime = parsed.get("regime", {}).get("tag", "unknown") if isinstance(parsed.get("regime"), dict) else "unknown"
    return ReviewRecord(PackRef(sig, stored, str(regime), equity, text), verdict, decision, str(mode))


def _read(path: Path) -> _Parsed:
    try:
        fh = path.open("r", encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror or e})") from e
    parsed: _Parsed | None = None
    seen: set[str] = set()
    with fh:
        n = 0
        try:
            for n, line in enumerate(fh, start=1):
                where = f"{path}:{n}"
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise DataError(f"{where}: expected one JSON object per line ({e.msg} at column {e.colno})") \
                        from None
                if parsed is None:
                    parsed = _Parsed(_header(obj, where))
                    continue
                if not isinstance(obj, dict):
                    raise DataError(f"{where}: expected a JSON object, found {_shown(obj)}")
                kind = obj.get("type")
                try:
                    if kind == "bar":
                        parsed.bars.append(_decode(Bar, {k: v for k, v in obj.items() if k != "type"}, "bar"))
                    elif kind == "signal":
                        _signal_line(obj, parsed, seen)
                    elif kind == "fill":
                        parsed.fills.append((n, _decode(Fill, {k: v for k, v in obj.items() if k != "type"}, "fill")))
                    elif kind == "trade":
                        parsed.trades.append((n, _decode(Trade, {k: v for k, v in obj.items() if k != "type"},
                                                         "trade")))
                    elif kind == "event":
                        parsed.events.append(_decode(Event, {k: v for k, v in obj.items() if k != "type"}, "event"))
                    else:
                        raise _Bad(f"type: expected one of bar, signal, fill, trade, event, found {_shown(kind)}")
                except _Bad as e:
                    raise DataError(f"{where}: {e}") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{n + 1}: expected UTF-8 text ({e.reason})") from None
    if parsed is None:
        raise DataError(f"{path}: empty file (expected a header line with \"format\": \"{FORMAT}\")")
    for line, f in parsed.fills:
        if f.kind is not FillKind.DEPOSIT and f.signal_id not in parsed.reviews:
            raise DataError(f"{path}:{line}: fill.signal_id: expected a reviewed signal of this file, "
                            f"found {f.signal_id!r}")
    for line, t in parsed.trades:
        if t.signal_id not in parsed.reviews:
            raise DataError(f"{path}:{line}: trade.signal_id: expected a reviewed signal of this file, "
                            f"found {t.signal_id!r}")
    return parsed


def import_file(store: RunStore, path: Path, *, name: str | None = None) -> ImportSummary:
    """Record the JSONL file at ``path`` as a new run in ``store``. Raises: DataError, StorageError."""
    p = _read(path)
    src = p.header["source"]
    config = p.header.get("config") or {}
    source_name = str(src.get("name", "run"))
    run_name = name or f"{source_name}-imported"
    config_json = json.dumps(config, sort_keys=True)
    mode = src.get("reviewer_mode") if src.get("reviewer_mode") in _MODES else "active"
    run_id = store.create_run(run_name, config_json, str(src.get("config_hash", "")), int(src.get("seed", 0) or 0),
                              mode, float(src["starting_equity"]))
    try:
        slices: dict[int, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
        created = {s.id: s.created_ms for s in p.signals}
        for b in p.bars:
            slices[b.close_ms]["bars"].append(b)
        for s in p.signals:
            slices[s.created_ms]["signals"].append(s)
        for sid, g in p.gates:
            slices[created[sid]]["gates"].append((sid, g))
        for sid, r in p.reviews.items():
            slices[created[sid]]["reviews"].append(r)
        # rows that point at a signal are written with or after it (foreign keys)
        for o in p.outcomes:
            slices[max(created[o.signal_id], o.closed_ms or 0)]["outcomes"].append(o)
        for _, f in p.fills:
            at = f.filled_ms if f.kind is FillKind.DEPOSIT else max(created[f.signal_id], f.filled_ms)
            slices[at]["fills"].append(f)
        for _, t in p.trades:
            slices[max(created[t.signal_id], t.closed_ms)]["trades"].append(t)
        for e in p.events:
            slices[e.at_ms]["events"].append(e)
        last = max(slices) if slices else 0
        origin = (f"imported from {path.name}: run {src.get('run_id')} ({source_name}) of {src.get('db', '?')}, "
                  f"exported {p.header.get('exported_at', '?')}")
        slices[last]["events"].append(Event("import", last, "run", origin))
        records = [
            SliceRecord(close_ms=t, bars=tuple(d["bars"]), signals=tuple(d["signals"]),
                        gate_results=tuple(d["gates"]), reviews=tuple(d["reviews"]), fills=tuple(d["fills"]),
                        trades=tuple(d["trades"]), outcomes=tuple(d["outcomes"]), events=tuple(d["events"]))
            for t, d in sorted(slices.items())
        ]
        rec = store.recorder(run_id)
        for i in range(0, len(records), _BATCH_SLICES):
            batch = rec.new_batch()
            for r in records[i:i + _BATCH_SLICES]:
                batch.add(r)
            rec.write_batch(batch)
        rec.close()
        store.set_run_status(run_id, "finished")
    except BaseException:
        store.set_run_status(run_id, "failed")
        raise
    return ImportSummary(run_id, run_name, f"{src.get('run_id')} ({source_name})", len(p.signals), len(p.reviews),
                         len(p.bars), len(p.fills), len(p.trades), len(p.events))
