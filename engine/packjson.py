"""A context pack's canonical JSON and content hash, written fast: ``ContextPack.build`` seals every pack with ``seal``.

The text is exactly ``canonical_json(pack.to_dict())`` — sorted keys, no whitespace, floats at 12 significant
digits — but written piece by piece with f-strings for the field types the dataclasses declare, instead of
building dicts and walking them with ``json.dumps``: a replay seals a pack per reviewed signal. The recent
trades, most of a pack and the same list in every pack of a strategy until one of its trades closes, are kept
as text per list (caches keyed by identity, holding their keys' objects, emptied when full). Any value the
fast writer does not render exactly as ``json`` does takes the generic path, so the text never depends on
which path wrote it (tests/test_context_fast.py holds the two side by side).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

# The value types of engine.types are read here by their attributes only (engine.types imports this module,
# not the other way round): the annotations name them as text.
ContextPack = CorrelatedPosition = NewsFlag = RegimeInfo = Signal = TradeStats = TradeSummary = Any

__all__ = ["canonical_json", "content_hash", "pack_json_generic", "seal"]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()  # engine.types.ms_to_dt(ms).isoformat()


def _canon(obj: Any) -> Any:
    # Floats are rounded to 12 significant digits so that the same numbers computed along two
    # code paths (replay vs rebuild) serialise identically; NaN/inf have no JSON form → None.
    if isinstance(obj, float):
        if not math.isfinite(obj):
            return None
        return float(f"{obj:.12g}")
    if isinstance(obj, dict):
        return {str(k): _canon(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canon(v) for v in obj]
    if isinstance(obj, StrEnum):
        return str(obj)
    return obj


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, floats at 12 significant digits."""
    return json.dumps(_canon(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _num(x: float | None) -> float | None:
    """A float as canonical JSON writes it (12 significant digits; NaN/inf → None)."""
    if x is None:
        return None
    return float(f"{x:.12g}") if math.isfinite(x) else None


def _dumps_rounded(d: dict[str, Any]) -> str:
    """canonical_json for dicts whose floats already went through ``_num`` (the to_dict methods here):
    the same text without a second recursive pass. Falls back to the full pass if anything slipped."""
    try:
        return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError):
        return canonical_json(d)


def content_hash(text: str) -> str:
    """SHA-256 hex digest of a canonical JSON text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=8192)
def _summary_dict(t: TradeSummary) -> dict[str, Any]:
    # The same closed trades appear in many packs; their (immutable) dicts are built once.
    return t.to_dict()


@functools.lru_cache(maxsize=8192)
def _summary_json(t: TradeSummary) -> str:
    return _dumps_rounded(_summary_dict(t))


def pack_json_generic(pack: ContextPack) -> str:
    """The pack's canonical JSON, byte for byte ``_dumps_rounded(pack.to_dict())`` piece by piece, through
    the ``to_dict`` methods and ``json``: the reference the fast writer below must reproduce exactly."""
    d = {
        "signal": pack.signal.to_dict(),
        "recent_trades": None,
        "trade_stats": pack.trade_stats.to_dict(),
        "regime": pack.regime.to_dict(),
        "correlated_positions": [c.to_dict() for c in pack.correlated],
        "news": [n.to_dict() for n in pack.news],
        "gate_note": pack.gate_note,
        "equity": _num(pack.equity),
    }
    if pack.version != "context-v1":  # context-v1 packs were written without it (their hashes are kept)
        d["version"] = pack.version
    trades = "[" + ",".join(_summary_json(t) for t in pack.recent_trades) + "]"
    parts = []
    for key in sorted(d):
        value = trades if key == "recent_trades" else _dumps_rounded(d[key]) if isinstance(d[key], (dict, list)) \
            else json.dumps(d[key], ensure_ascii=False, allow_nan=False)
        parts.append(f"{json.dumps(key)}:{value}")
    return "{" + ",".join(parts) + "}"


# The fast writer: the same text as _pack_json_generic for the field types the dataclasses declare, written
# with f-strings in sorted-key order instead of dicts + json.dumps. Any other type (an int where a float is
# declared, a float subclass, a non-finite raw price, ...) raises _Slow and the whole pack takes the
# generic path, so the text never depends on which path wrote it.


class _Slow(Exception):
    """A value the fast writer does not render exactly as ``json`` does: use the generic path."""


_jstr = json.encoder.encode_basestring  # what json.dumps(ensure_ascii=False) writes a str with
_isfinite = math.isfinite


def _js(x: object) -> str:
    """A str field."""
    if type(x) is str:
        return _jstr(x)
    raise _Slow


def _ji(x: object) -> str:
    """An int field."""
    if type(x) is int:
        return int.__repr__(x)
    raise _Slow


def _jn(x: object) -> str:
    """``_num(x)`` as JSON, ``repr(float(f"{x:.12g}"))`` (NaN/inf → null), without the round trip: that float's
    shortest repr has the same digits as the 12-digit text (two decimals of at most 12 significant digits
    are never within one float of each other), so the two only differ in layout — positional text lacks
    repr's ".0" when integral, and exponents are laid out alike only from 1e16 up or below 1e-4."""
    if type(x) is float:
        if not _isfinite(x):
            return "null"
        s = f"{x:.12g}"
        if "e" in s:
            return float.__repr__(float(s))
        return s if "." in s else s + ".0"
    if x is None:
        return "null"
    raise _Slow


_INF = math.inf
_DAY_MS = 86_400_000
_ISO_FAST_END = 4_102_444_800_000  # 2100-01-01
_ISO_DATES: dict[int, str] = {}
_ISO_TIMES: dict[int, str] = {}


def _iso_ms(ms: int) -> str:
    """``engine.types.ms_to_dt(ms).isoformat()``, from cached date and time-of-day texts for 1970 ≤ t < 2100: there
    ``fromtimestamp(ms / 1000)`` is the exact millisecond (the float is within 0.25 µs of it, and is rounded
    to the microsecond)."""
    if type(ms) is int and 0 <= ms < _ISO_FAST_END:
        day, rem = divmod(ms, _DAY_MS)
        sec, milli = divmod(rem, 1000)
        date = _ISO_DATES.get(day)
        if date is None:
            if len(_ISO_DATES) >= 4096:
                _ISO_DATES.clear()
            date = _ISO_DATES[day] = datetime.fromtimestamp(day * _DAY_MS / 1000, tz=UTC).date().isoformat()
        tod = _ISO_TIMES.get(sec)
        if tod is None:
            if len(_ISO_TIMES) >= 4096:
                _ISO_TIMES.clear()
            tod = _ISO_TIMES[sec] = f"{sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}"
        return f"{date}T{tod}.{milli:03d}000+00:00" if milli else f"{date}T{tod}+00:00"
    return _iso(ms)


def _signal_json(s: Signal) -> str:
    entry, stop, target, size = s.entry, s.stop_loss, s.take_profit, s.size_hint
    sid, strategy, symbol, timeframe, ms = s.id, s.strategy_id, s.symbol, s.timeframe, s.created_ms
    if not (type(entry) is float and type(stop) is float and type(target) is float and type(size) is float
            and -_INF < entry < _INF and -_INF < stop < _INF and -_INF < target < _INF and -_INF < size < _INF
            and type(sid) is str and type(strategy) is str and type(symbol) is str and type(timeframe) is str
            and type(ms) is int):
        raise _Slow
    return (f'{{"created_at":{_jstr(_iso_ms(ms))},"created_ms":{ms!r},"entry":{entry!r},'
            f'"id":{_jstr(sid)},"side":{_jstr(str(s.side))},"size_hint":{size!r},"stop_loss":{stop!r},'
            f'"strategy_id":{_jstr(strategy)},"symbol":{_jstr(symbol)},'
            f'"tags":[{",".join([_js(t) for t in s.tags])}],"take_profit":{target!r},'
            f'"timeframe":{_jstr(timeframe)}}}')


def _stats_json(t: TradeStats) -> str:
    return f'{{"count":{_ji(t.count)},"loss_streak":{_ji(t.loss_streak)},"win_rate":{_jn(t.win_rate)}}}'


def _regime_json(r: RegimeInfo) -> str:
    if r.block_bars is None:  # the fixed-threshold tag (context-v1): no z, no blocks
        return (f'{{"k":{_ji(r.k)},"lookback_bars":{_ji(r.lookback_bars)},'
                f'"realized_vol_ann":{_jn(r.realized_vol_ann)},"tag":{_jstr(str(r.tag))},'
                f'"variance_ratio":{_jn(r.variance_ratio)},"vol_percentile":{_jn(r.vol_percentile)}}}')
    return (f'{{"block_bars":{_ji(r.block_bars)},"k":{_ji(r.k)},"lookback_bars":{_ji(r.lookback_bars)},'
            f'"realized_vol_ann":{_jn(r.realized_vol_ann)},"tag":{_jstr(str(r.tag))},'
            f'"variance_ratio":{_jn(r.variance_ratio)},"vol_percentile":{_jn(r.vol_percentile)},"z":{_jn(r.z)}}}')


def _correlated_json(c: CorrelatedPosition) -> str:
    return (f'{{"corr":{_jn(c.corr)},"side":{_jstr(str(c.side))},"size_pct_equity":{_jn(c.size_pct_equity)},'
            f'"strategy_id":{_js(c.strategy_id)},"symbol":{_js(c.symbol)},'
            f'"unrealized_pnl_pct":{_jn(c.unrealized_pnl_pct)}}}')


def _news_json(n: NewsFlag) -> str:
    return (f'{{"age_min":{_jn(n.age_min)},"category":{_jstr(str(n.category))},"headline":{_js(n.headline)},'
            f'"source":{_js(n.source)}}}')


# The recent trades are most of a pack and the same list recurs in every pack of a strategy until one of
# its trades closes: their JSON (text and UTF-8) is kept per list, and each summary's per summary, keyed by
# identity (the summaries are immutable, and the portfolio hands out the same object for a trade every
# time). Each entry holds the objects of its key, so no key's ids can be taken by other objects while it
# is here; both caches are emptied when full.
_TRADES_JSON: dict[tuple[int, ...], tuple[tuple[TradeSummary, ...], str, bytes]] = {}
_TRADES_JSON_MAX = 256
_SUMMARY_JSON: dict[int, tuple[TradeSummary, str]] = {}
_SUMMARY_JSON_MAX = 8192


def _summary_json_of(t: TradeSummary) -> str:
    hit = _SUMMARY_JSON.get(id(t))
    if hit is None:
        if len(_SUMMARY_JSON) >= _SUMMARY_JSON_MAX:
            _SUMMARY_JSON.clear()
        hit = _SUMMARY_JSON[id(t)] = (t, _summary_json_fast(t))
    return hit[1]


def _summary_json_fast(t: TradeSummary) -> str:
    """``_summary_json(t)`` written with f-strings in sorted-key order (a replay whose strategy closes a trade
    before most packs writes a new summary for most packs)."""
    closed, opened = t.closed_ms, t.opened_ms
    try:
        return (f'{{"closed_at":{_jstr(_iso_ms(_int(closed)))},"closed_ms":{_ji(closed)},'
                f'"exit_reason":{_js(t.exit_reason)},"opened_at":{_jstr(_iso_ms(_int(opened)))},'
                f'"opened_ms":{_ji(opened)},"pnl_pct":{_jn(t.pnl_pct)},"r_multiple":{_jn(t.r_multiple)},'
                f'"side":{_jstr(str(t.side))},"symbol":{_js(t.symbol)}}}')
    except _Slow:
        return _summary_json(t)


def _int(x: object) -> int:
    if type(x) is int:
        return x
    raise _Slow


def _trades_json(trades: tuple[TradeSummary, ...]) -> tuple[str, bytes]:
    key = tuple(map(id, trades))
    hit = _TRADES_JSON.get(key)
    if hit is None:
        text = "[" + ",".join([_summary_json_of(t) for t in trades]) + "]"
        if len(_TRADES_JSON) >= _TRADES_JSON_MAX:
            _TRADES_JSON.clear()
        hit = _TRADES_JSON[key] = (tuple(trades), text, text.encode("utf-8"))
    return hit[1], hit[2]


def seal(pack: ContextPack) -> tuple[str, str]:
    """The pack's canonical JSON (exactly ``pack_json_generic``) and its content hash."""
    try:
        head = (f'{{"correlated_positions":[{",".join([_correlated_json(c) for c in pack.correlated])}],'
                f'"equity":{_jn(pack.equity)},"gate_note":{_js(pack.gate_note)},'
                f'"news":[{",".join([_news_json(n) for n in pack.news])}],"recent_trades":')
        version = "" if pack.version == "context-v1" else f',"version":{_js(pack.version)}'
        tail = (f',"regime":{_regime_json(pack.regime)},"signal":{_signal_json(pack.signal)},'
                f'"trade_stats":{_stats_json(pack.trade_stats)}{version}}}')
    except _Slow:
        text = pack_json_generic(pack)
        return text, content_hash(text)
    trades, trades_utf8 = _trades_json(pack.recent_trades)
    # UTF-8 is concatenative: hashing the encoded pieces is hashing the encoded text, without re-encoding
    # the (cached) trades inside a text that the gate note's "≥" has made non-ASCII
    digest = hashlib.sha256(head.encode("utf-8") + trades_utf8 + tail.encode("utf-8")).hexdigest()
    return head + trades + tail, digest
