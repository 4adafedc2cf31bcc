"""Operations report: a recorded run → one self-contained HTML dashboard (inline SVG charts, no network).

``report_data`` gathers plain data from a run (scorecard, series, events, best and worst vetoes);
``render_html`` turns it into a page. Every chart is server-side SVG inside an element with a stable
``id`` and ``data-chart``; the page's one small script only checks that the charts are there and adds
``#report-ready`` (tests read it). Every recorded string (headlines, rationales, tier and symbol names,
event messages) is HTML-escaped, and a Content-Security-Policy admits no network and no script but
the page's own (by hash), so even text that slipped through could not run or fetch anything.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.config import stored_value
from engine.core.scored import is_finished
from engine.ports import RunReader
from engine.recorded.series import counterfactual_series, rolling_series, verdict_mix_series
from engine.types import OutcomeKind, VerdictKind, ms_to_dt

__all__ = ["CHARTS", "render_html", "report_data", "write_report"]

# Stable chart ids (also the values of data-chart). Tests and users' tooling may rely on them.
CHARTS = ("equity", "verdict-mix", "veto-precision", "reviewer-rates", "tier-latency", "tier-cost", "timeline",
          "vetoes-best", "vetoes-worst")

_COLORS = {"accept": "#2f9e66", "modify": "#e0a100", "veto": "#d6453d", "realized": "#2563eb",
           "gate_only": "#7b8594", "base": "#7b8594", "precision": "#7c3aed", "band": "#7c3aed",
           "fallthrough": "#e07b00", "fallback": "#d6453d", "p50": "#2563eb", "p95": "#93b4f5",
           "breaker": "#e07b00", "retire": "#d6453d", "other": "#7b8594"}
_HALF_W = 600  # viewBox width of the charts shown two abreast
_MAX_POINTS = 900  # equity steps kept per line (the page stays small; the shape does not change)
_TOP_VETOES = 8


def _e(x: Any) -> str:
    """HTML-escape anything recorded (quotes included: values also land in attributes)."""
    return html.escape("" if x is None else str(x), quote=True)


# ---------------------------------------------------------------------------------------------- data


def report_data(reader: RunReader, run_id: int, *, window_days: float | None = None,
                points: int = 120) -> dict[str, Any]:
    """Everything the page shows, as plain data (JSON-serialisable). Raises: StorageError."""
    from engine.recorded.scorecard import run_scorecard
    from engine.recorded.stored import load_stored

    run = reader.get_run(run_id)
    rec = reader.records(run_id)
    stored = load_stored(reader, run_id, realized=True)  # hash-checked; packs as scoring needs them; read once
    outcomes = stored.outcomes
    trades = rec.load_trades()
    events = rec.load_events()
    card = run_scorecard(reader, run_id, stored=stored, trades=trades, events=events)
    reviews = stored.records
    retire_days = float(stored_value(run.config_json, "scoring.retire.window_days", 14.0))
    times = [r.pack.signal.created_ms for r in reviews]
    span = (max(times) - min(times)) if times else 0
    if window_days is None:
        # the retire rule's window when the run is long enough to show several of them; else a quarter of the run
        window_ms = int(retire_days * 86_400_000) if span >= 3 * retire_days * 86_400_000 else max(3_600_000, span // 4)
    else:
        window_ms = int(window_days * 86_400_000)
    shadow = {o.signal_id: o for o in outcomes if o.kind is OutcomeKind.SHADOW}
    vetoes = []
    for r in reviews:
        o = shadow.get(r.pack.signal.id)
        if r.verdict.verdict is not VerdictKind.VETO or o is None or not is_finished(o.filled, o.exit_reason):
            continue
        s, v = r.pack.signal, r.verdict
        vetoes.append({"signal_id": s.id, "symbol": s.symbol, "strategy": s.strategy_id, "side": str(s.side),
                       "created_ms": s.created_ms, "confidence": v.confidence, "tier": v.tier or v.source,
                       "rationale": v.rationale, "pnl_pct": o.pnl_pct, "r_multiple": o.r_multiple,
                       "exit_reason": o.exit_reason, "ambiguous": o.ambiguous,
                       "acted": r.decision.action.value == "skip", "news": []})
    vetoes.sort(key=lambda x: (x["pnl_pct"], x["signal_id"]))
    best = [v for v in vetoes if v["pnl_pct"] < 0][:_TOP_VETOES]  # the largest losses the vetoes avoided
    worst = [v for v in reversed(vetoes) if v["pnl_pct"] >= 0][:_TOP_VETOES]  # the largest gains they gave up
    shown = reader.packs(run_id, [v["signal_id"] for v in [*best, *worst]])  # only these are rebuilt in full
    for v in [*best, *worst]:
        v["news"] = [n.headline for n in shown[v["signal_id"]].news]
    errors: Counter[tuple[str, str, str]] = Counter()
    for r in reviews:
        for a in r.verdict.attempts:
            if not a.ok:
                errors[(a.tier, a.kind, a.error)] += 1
    paths = counterfactual_series(reviews, outcomes, trades, run.starting_equity)
    start_ms = min([*times, *(t for t, _ in paths["realized"][:1])]) if times else None
    return {
        "run": {"id": run.id, "name": run.name, "status": run.status, "reviewer_mode": run.reviewer_mode,
                "config_hash": run.config_hash, "created_at": run.created_at.isoformat(), "db": reader.url_masked,
                "starting_equity": run.starting_equity,
                "tiers": [t.get("name") for t in stored_value(run.config_json, "reviewer.tiers", [])
                          if isinstance(t, dict)]},
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "card": card.to_dict(),
        "window_ms": window_ms,
        "start_ms": start_ms,
        "end_ms": max([*times, *(t for t, _ in paths["realized"][-1:]), *(t for t, _ in paths["gate_only"][-1:])])
        if times else None,
        "equity": {k: _thin(v) for k, v in paths.items()},
        "mix": verdict_mix_series(reviews, buckets=60),
        "rolling": rolling_series(reviews, outcomes, window_ms=window_ms, points=points),
        "events": [{"kind": e.kind, "at_ms": e.at_ms, "subject": e.subject, "message": e.message} for e in events],
        "errors": [{"tier": t, "kind": k, "error": e, "count": n} for (t, k, e), n in errors.most_common(10)],
        "vetoes_best": best,
        "vetoes_worst": worst,
    }


def _thin(path: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    if len(path) <= _MAX_POINTS:
        return list(path)
    step = len(path) / _MAX_POINTS
    return [path[int(i * step)] for i in range(_MAX_POINTS)] + [path[-1]]


def write_report(reader: RunReader, run_id: int, out: Any, *, window_days: float | None = None) -> int:
    """Write the page for ``run_id`` to ``out`` (a path). Returns its size in bytes.

    Raises: StorageError, DataError (the file cannot be written).
    """
    from pathlib import Path

    from engine.errors import DataError

    page = render_html(report_data(reader, run_id, window_days=window_days))
    path = Path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as e:
        raise DataError(f"{path}: cannot write the report ({e.strerror or e})") from e
    return len(page.encode("utf-8"))


# -------------------------------------------------------------------------------------------- format


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x * 100:.{digits}f} %"


def _num(x: float | None, digits: int = 2, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:+,.{digits}f}" if sign else f"{x:,.{digits}f}"


def _ms(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.0f} ms" if x >= 100 else f"{x:.2f} ms" if x >= 1 else f"{x * 1000:.0f} µs"


def _pval(p: float | None) -> str:
    if p is None:
        return "—"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


def _rate(r: dict[str, Any] | None) -> str:
    if not r or not r.get("n"):
        return "— (n = 0)"
    lo, hi = r["ci95"]
    return f"{r['value'] * 100:.1f} % [{lo * 100:.1f}–{hi * 100:.1f}] ({r['k']}/{r['n']})"


def _when(ms: int | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return "—" if ms is None else ms_to_dt(int(ms)).strftime(fmt)


# -------------------------------------------------------------------------------------------- charts


@dataclass
class _Plot:
    """Data → pixel mapping of one chart area inside an SVG viewBox."""

    x0: float
    x1: float
    y0: float
    y1: float
    w: int = 1120
    h: int = 300
    left: int = 70
    right: int = 20
    top: int = 16
    bottom: int = 34

    def sx(self, x: float) -> float:
        return self.left + (x - self.x0) / ((self.x1 - self.x0) or 1) * (self.w - self.left - self.right)

    def sy(self, y: float) -> float:
        return self.top + (1 - (y - self.y0) / ((self.y1 - self.y0) or 1)) * (self.h - self.top - self.bottom)


def _nice(lo: float, hi: float, n: int = 5) -> tuple[float, float, list[float]]:
    """A rounded axis range and its ticks (1, 2, 2.5, 5 × 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        pad = abs(hi) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    a, b = math.floor(lo / step) * step, math.ceil(hi / step) * step
    k = round((b - a) / step)
    return a, b, [a + i * step for i in range(k + 1)]


_TIME_STEPS = [60_000 * m for m in (1, 5, 15, 30, 60, 180, 360, 720, 1440, 2880, 10080, 20160, 43200, 129600, 525600)]


def _time_ticks(lo: float, hi: float, n: int = 7) -> list[tuple[float, str]]:
    span = max(1.0, hi - lo)
    step = next((s for s in _TIME_STEPS if span / s <= n), _TIME_STEPS[-1])
    fmt = "%b %d" if step >= 86_400_000 else "%m-%d %H:%M" if span > 86_400_000 else "%H:%M"
    t = math.ceil(lo / step) * step
    out = []
    while t <= hi:
        out.append((t, ms_to_dt(int(t)).strftime(fmt)))
        t += step
    return out


def _f(x: float) -> str:
    return f"{x:.1f}"


def _frame(p: _Plot, yticks: Sequence[float], y_fmt: Callable[[float], str], *, time_axis: bool = True,
           xticks: Sequence[tuple[float, str]] = ()) -> list[str]:
    out = [f'<rect class="plot-bg" x="{p.left}" y="{p.top}" width="{p.w - p.left - p.right}" '
           f'height="{p.h - p.top - p.bottom}"/>']
    for y in yticks:
        yy = _f(p.sy(y))
        out.append(f'<line class="grid" x1="{p.left}" x2="{p.w - p.right}" y1="{yy}" y2="{yy}"/>')
        out.append(f'<text class="tick" x="{p.left - 8}" y="{yy}" text-anchor="end" dominant-baseline="middle">'
                   f'{_e(y_fmt(y))}</text>')
    ticks = _time_ticks(p.x0, p.x1) if time_axis else xticks
    for x, label in ticks:
        xx = _f(p.sx(x))
        out.append(f'<line class="grid grid-x" x1="{xx}" x2="{xx}" y1="{p.top}" y2="{p.h - p.bottom}"/>')
        out.append(f'<text class="tick" x="{xx}" y="{p.h - p.bottom + 18}" text-anchor="middle">{_e(label)}</text>')
    return out


def _svg(p: _Plot, body: Sequence[str], label: str) -> str:
    return (f'<svg viewBox="0 0 {p.w} {p.h}" role="img" aria-label="{_e(label)}" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(body)}</svg>')


def _line(p: _Plot, pts: Sequence[tuple[float, float | None]], cls: str, color: str, *, step: bool = False,
          dash: str = "") -> str:
    """A polyline; ``None`` values break it (no data in that window)."""
    parts: list[str] = []
    pen = False
    prev_y: float | None = None
    for x, y in pts:
        if y is None:
            pen = False
            continue
        X, Y = _f(p.sx(x)), _f(p.sy(y))
        if not pen:
            parts.append(f"M{X} {Y}")
            pen = True
        elif step and prev_y is not None:
            parts.append(f"H{X}V{Y}")
        else:
            parts.append(f"L{X} {Y}")
        prev_y = y
    if not parts:
        return ""
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<path class="{cls}" d="{" ".join(parts)}" fill="none" stroke="{color}"{dash_attr}/>'


def _hline(p: _Plot, y: float, color: str, label: str, *, left: bool = False) -> str:
    yy = _f(p.sy(y))
    x, anchor = (p.left + 4, "start") if left else (p.w - p.right - 4, "end")
    return (f'<line class="ref" x1="{p.left}" x2="{p.w - p.right}" y1="{yy}" y2="{yy}" stroke="{color}" '
            f'stroke-dasharray="6 4"/><text class="ref-label" x="{x}" y="{_f(p.sy(y) - 5)}" '
            f'text-anchor="{anchor}" fill="{color}">{_e(label)}</text>')


def _empty_note(p: _Plot, text: str) -> str:
    return (f'<text class="empty" x="{_f((p.left + p.w - p.right) / 2)}" y="{_f((p.top + p.h - p.bottom) / 2)}" '
            f'text-anchor="middle">{_e(text)}</text>')


def _legend(items: Sequence[tuple[str, str, str]]) -> str:
    """(label, color, style: line | dash | box | band)."""
    spans = []
    for label, color, style in items:
        spans.append(f'<span class="key key-{style}" style="--c:{color}"><i></i>{_e(label)}</span>')
    return f'<div class="legend">{"".join(spans)}</div>'


def _chart(key: str, title: str, sub: str, svg: str, legend: str = "", extra: str = "") -> str:
    return (f'<section class="card chart" id="chart-{key}" data-chart="{key}"><header><h2>{_e(title)}</h2>'
            f'<p class="sub">{sub}</p></header>{legend}<div class="svg-wrap">{svg}</div>{extra}</section>')


def _chart_equity(d: dict[str, Any]) -> str:
    real, gate = d["equity"]["realized"], d["equity"]["gate_only"]
    start_eq = d["run"]["starting_equity"]
    x0 = d["start_ms"] if d["start_ms"] is not None else 0
    x1 = d["end_ms"] if d["end_ms"] is not None else x0 + 1
    ys = [start_eq, *(v for _, v in real), *(v for _, v in gate)]
    lo, hi, ticks = _nice(min(ys), max(ys))
    p = _Plot(x0, max(x1, x0 + 1), lo, hi)
    body = _frame(p, ticks, lambda v: f"{v:,.0f}")
    body.append(_hline(p, start_eq, "#9aa3af", "starting equity"))
    body.append(_line(p, [(x0, start_eq), *gate], "series gate-only", _COLORS["gate_only"], step=True, dash="7 4"))
    body.append(_line(p, [(x0, start_eq), *real], "series realized", _COLORS["realized"], step=True))
    if not real and not gate:
        body.append(_empty_note(p, "no closed trades"))
    cf = d["card"].get("counterfactual", {})
    sub = (f"Realized (booked trades) {_num(d['card']['pnl'].get('pnl'), sign=True)} vs gate-only "
           f"{_num(cf.get('gate_only_pnl'), sign=True)} — the reviewer off, every reviewed signal executed as "
           "emitted: shadow pnl % × size_hint × equity at the signal time, per signal, no compounding. It knows "
           "no position limits or buying power, so the more the reviewer vetoed, the more it overstates what a "
           "reviewer-off run could have traded.")
    legend = _legend([("realized equity", _COLORS["realized"], "line"),
                      ("gate-only counterfactual", _COLORS["gate_only"], "dash")])
    return _chart("equity", "Equity vs the gate-only counterfactual", _e(sub), _svg(p, body, "equity chart"), legend)


def _chart_mix(d: dict[str, Any]) -> str:
    mix = d["mix"]
    x0 = mix[0]["start_ms"] if mix else 0
    x1 = mix[-1]["end_ms"] if mix else 1
    top = max([m["accept"] + m["modify"] + m["veto"] for m in mix] or [1])
    _, hi, ticks = _nice(0, max(1, top))
    p = _Plot(x0, x1, 0, hi)
    body = _frame(p, ticks, lambda v: f"{v:g}")
    for m in mix:
        xa, xb = p.sx(m["start_ms"]), p.sx(m["end_ms"])
        width = max(1.0, (xb - xa) * 0.86)
        base = 0
        tip = (f"{_when(m['start_ms'])} – {_when(m['end_ms'])}: accept {m['accept']}, modify {m['modify']}, "
               f"veto {m['veto']}")
        for kind in ("accept", "modify", "veto"):
            n = m[kind]
            if not n:
                continue
            y_top, y_bot = p.sy(base + n), p.sy(base)
            body.append(f'<rect class="bar bar-{kind}" x="{_f(xa + (xb - xa) * 0.07)}" y="{_f(y_top)}" '
                        f'width="{_f(width)}" height="{_f(max(0.5, y_bot - y_top))}" fill="{_COLORS[kind]}">'
                        f'<title>{_e(tip)}</title></rect>')
            base += n
    if not mix:
        body.append(_empty_note(p, "no reviewed signals"))
    v = d["card"]["verdicts"]
    sub = f"Reviewed signals per period by verdict — accept {v.get('accept', 0)}, modify {v.get('modify', 0)}, " \
          f"veto {v.get('veto', 0)}."
    legend = _legend([(k, _COLORS[k], "box") for k in ("accept", "modify", "veto")])
    return _chart("verdict-mix", "Verdict mix over time", _e(sub), _svg(p, body, "verdict mix chart"), legend)


def _window_label(ms: int) -> str:
    days = ms / 86_400_000
    return f"{days:.3g} days" if days >= 1 else f"{ms / 3_600_000:.3g} hours"


def _chart_precision(d: dict[str, Any]) -> str:
    roll = d["rolling"]
    x0 = roll[0]["t_ms"] if roll else 0
    x1 = roll[-1]["t_ms"] if roll else 1
    p = _Plot(x0, max(x1, x0 + 1), 0.0, 1.0, w=_HALF_W, h=320)
    body = _frame(p, [0, 0.25, 0.5, 0.75, 1.0], lambda v: f"{v * 100:.0f} %")
    # the Wilson band: one polygon per run of windows that have scored vetoes
    runs: list[list[dict[str, Any]]] = [[]]
    for pt in roll:
        if pt["veto_precision"]["n"]:
            runs[-1].append(pt)
        elif runs[-1]:
            runs.append([])
    for seg in runs:
        if not seg:
            continue
        upper = [f"{_f(p.sx(pt['t_ms']))},{_f(p.sy(pt['veto_precision']['ci95'][1]))}" for pt in seg]
        lower = [f"{_f(p.sx(pt['t_ms']))},{_f(p.sy(pt['veto_precision']['ci95'][0]))}" for pt in reversed(seg)]
        body.append(f'<polygon class="band" points="{" ".join(upper + lower)}" fill="{_COLORS["band"]}" '
                    f'fill-opacity="0.14" stroke="none"/>')
    body.append(_line(p, [(pt["t_ms"], pt["base_loss_rate"]["value"]) for pt in roll], "series base",
                      _COLORS["base"], dash="7 4"))
    body.append(_line(p, [(pt["t_ms"], pt["veto_precision"]["value"]) for pt in roll], "series precision",
                      _COLORS["precision"]))
    for pt in roll[:: max(1, len(roll) // 40)]:
        vp = pt["veto_precision"]
        if vp["n"]:
            tip = (f"{_when(pt['t_ms'])}: veto precision {_rate(vp)}; base loss rate "
                   f"{_rate(pt['base_loss_rate'])}")
            body.append(f'<circle class="pt" cx="{_f(p.sx(pt["t_ms"]))}" cy="{_f(p.sy(vp["value"]))}" r="2.6" '
                        f'fill="{_COLORS["precision"]}"><title>{_e(tip)}</title></circle>')
    if not any(pt["veto_precision"]["n"] for pt in roll):
        body.append(_empty_note(p, "no scored vetoes yet"))
    c = d["card"]
    rv = c.get("random_veto", {})
    sub = (f"Trailing {_window_label(d['window_ms'])} by signal time, with its Wilson 95 % band, against the base "
           f"loss rate (what vetoing at random scores). Whole run: {_rate(c['veto_precision'])} vs base "
           f"{_rate(c['base_loss_rate'])}; p-value {_pval(rv.get('p_value'))}.")
    legend = _legend([("veto precision", _COLORS["precision"], "line"), ("95 % interval", _COLORS["band"], "band"),
                      ("base loss rate = random veto", _COLORS["base"], "dash")])
    return _chart("veto-precision", "Rolling veto precision", _e(sub), _svg(p, body, "veto precision chart"), legend)


def _chart_rates(d: dict[str, Any]) -> str:
    roll = d["rolling"]
    x0 = roll[0]["t_ms"] if roll else 0
    x1 = roll[-1]["t_ms"] if roll else 1
    vals = [pt[k]["value"] for pt in roll for k in ("fallthrough", "fallback") if pt[k]["value"] is not None]
    _, hi, ticks = _nice(0.0, min(1.0, max(0.08, *(vals or [0.0])) * 1.1))
    hi, ticks = min(hi, 1.0), [t for t in ticks if t <= 1.0]  # a rate never exceeds 100 %
    p = _Plot(x0, max(x1, x0 + 1), 0.0, hi, w=_HALF_W, h=320)
    body = _frame(p, ticks, lambda v: f"{v * 100:.0f} %" if hi >= 0.1 else f"{v * 100:.1f} %")
    body.append(_hline(p, 0.05, _COLORS["fallthrough"], "fallthrough alarm 5 %"))
    body.append(_hline(p, 0.01, _COLORS["fallback"], "fallback target 1 %", left=True))
    body.append(_line(p, [(pt["t_ms"], pt["fallthrough"]["value"]) for pt in roll], "series fallthrough",
                      _COLORS["fallthrough"]))
    body.append(_line(p, [(pt["t_ms"], pt["fallback"]["value"]) for pt in roll], "series fallback",
                      _COLORS["fallback"]))
    if not roll:
        body.append(_empty_note(p, "no reviews"))
    c = d["card"]["rates"]
    sub = (f"Trailing {_window_label(d['window_ms'])}. Fallthrough: not answered by the first tier (alarm above "
           f"5 %), whole run {_rate(c['fallthrough'])}. Fallback: answered by no tier (target below 1 %), "
           f"whole run {_rate(c['fallback'])}.")
    legend = _legend([("fallthrough", _COLORS["fallthrough"], "line"), ("fallback", _COLORS["fallback"], "line")])
    return _chart("reviewer-rates", "Fallthrough and fallback rates", _e(sub), _svg(p, body, "reviewer rates chart"),
                  legend)


def _hbars(rows: Sequence[tuple[str, list[tuple[str, float | None, str]]]], fmt: Callable[[float], str],
           label: str, empty: str, *, w: int = 1120) -> str:
    """Horizontal grouped bars: rows of (name, [(series, value, color)])."""
    vals = [v for _, series in rows for _, v, _ in series if v is not None]
    _, hi, ticks = _nice(0.0, max(vals or [1.0]) or 1.0)
    group_h = 18 * max(1, max((len(s) for _, s in rows), default=1)) + 14
    h = 16 + 34 + group_h * max(1, len(rows))
    p = _Plot(0.0, hi, 0, 1, w=w, h=h, left=120, right=90)
    body = _frame(p, [], str, time_axis=False, xticks=[(t, fmt(t)) for t in ticks[:: max(1, len(ticks) // 4)]])
    y = p.top + 8
    for name, series in rows:
        body.append(f'<text class="cat" x="{p.left - 10}" y="{_f(y + (group_h - 14) / 2)}" text-anchor="end" '
                    f'dominant-baseline="middle">{_e(name)}</text>')
        for sname, v, color in series:
            w = 0.0 if v is None else p.sx(v) - p.left
            body.append(f'<rect class="bar" x="{p.left}" y="{_f(y)}" width="{_f(max(w, 0.0))}" height="14" '
                        f'fill="{color}"><title>{_e(f"{name} {sname}: " + ("—" if v is None else fmt(v)))}</title>'
                        f'</rect>')
            body.append(f'<text class="val" x="{_f(p.left + max(w, 0.0) + 6)}" y="{_f(y + 7)}" '
                        f'dominant-baseline="middle">{_e(sname)} {_e("—" if v is None else fmt(v))}</text>')
            y += 18
        y += 14
    if not rows or not vals or not any(vals):
        body.append(_empty_note(p, empty))
    return _svg(p, body, label)


def _chart_latency(d: dict[str, Any]) -> str:
    tiers = d["card"]["tiers"]
    rows = [(name, [("p50", t["latency_p50_ms"], _COLORS["p50"]), ("p95", t["latency_p95_ms"], _COLORS["p95"])])
            for name, t in tiers.items()]
    lat = d["card"].get("latency", {})
    sub = (f"Per tier, over its real calls (cache reads and calls refused by an open breaker excluded). "
           f"Whole cascade per review: p50 {_ms(lat.get('p50_ms'))}, p95 {_ms(lat.get('p95_ms'))}.")
    table = _table(["tier", "answered", "cache hits", "calls", "failures", "p50", "p95"],
                   [[n, t["answered"], t.get("cache_hits", 0), t.get("calls", 0),
                     ", ".join(f"{k} {v}" for k, v in sorted(t["failures"].items())) or "—",
                     _ms(t["latency_p50_ms"]), _ms(t["latency_p95_ms"])] for n, t in tiers.items()], "tiers")
    errors = _table(["tier", "kind", "count", "error"], [[e["tier"], e["kind"], e["count"], e["error"]]
                                                          for e in d.get("errors", [])], "tier-errors", cls="events")
    legend = _legend([("p50", _COLORS["p50"], "box"), ("p95", _COLORS["p95"], "box")])
    return _chart("tier-latency", "Latency per tier", _e(sub),
                  _hbars(rows, lambda v: _ms(v), "tier latency chart", "no real tier calls", w=_HALF_W), legend,
                  table + f"<h3>most frequent tier failures</h3>{errors}")


def _chart_cost(d: dict[str, Any]) -> str:
    tiers = d["card"]["tiers"]
    rows = [(name, [("cost", t["cost_usd"], _COLORS["precision"])]) for name, t in tiers.items()]
    cost = d["card"].get("cost", {})
    sub = (f"USD of real calls; a verdict served from the cache costs nothing. Total ${cost.get('usd', 0.0):,.4f}, "
           f"tokens in {cost.get('input_tokens', 0):,} / out {cost.get('output_tokens', 0):,} "
           f"(cached input {cost.get('cached_tokens', 0):,}), cache hits {cost.get('cache_hits', 0):,}.")
    table = _table(["tier", "input tokens", "output tokens", "cached tokens", "cost $"],
                   [[n, f"{t['input_tokens']:,}", f"{t['output_tokens']:,}", f"{t.get('cached_tokens', 0):,}",
                     f"{t['cost_usd']:,.4f}"] for n, t in tiers.items()], "tier-cost")
    return _chart("tier-cost", "Cost per tier", _e(sub),
                  _hbars(rows, lambda v: f"${v:,.4f}", "tier cost chart", "no paid calls: every tier cost $0",
                         w=_HALF_W), "", table)


def _chart_timeline(d: dict[str, Any]) -> str:
    events = [e for e in d["events"] if e["kind"] in ("breaker", "retire")]
    others = [e for e in d["events"] if e["kind"] not in ("breaker", "retire")]
    lanes = ["retire", *sorted({f"breaker {e['subject']}" for e in events if e["kind"] == "breaker"}), "other"]
    x0 = d["start_ms"] if d["start_ms"] is not None else min([e["at_ms"] for e in d["events"]] or [0])
    x1 = d["end_ms"] if d["end_ms"] is not None else max([e["at_ms"] for e in d["events"]] or [1])
    lane_h = 30
    h = 16 + 34 + lane_h * len(lanes)
    p = _Plot(x0, max(x1, x0 + 1), 0, len(lanes), h=h, left=150)
    body = _frame(p, [], str)
    for i, lane in enumerate(lanes):
        yc = p.top + lane_h * i + lane_h / 2
        body.append(f'<line class="lane" x1="{p.left}" x2="{p.w - p.right}" y1="{_f(yc)}" y2="{_f(yc)}"/>')
        body.append(f'<text class="cat" x="{p.left - 10}" y="{_f(yc)}" text-anchor="end" '
                    f'dominant-baseline="middle">{_e(lane)}</text>')
    for e in [*events, *others]:
        lane = "retire" if e["kind"] == "retire" else f"breaker {e['subject']}" if e["kind"] == "breaker" else "other"
        yc = p.top + lane_h * lanes.index(lane) + lane_h / 2
        x = p.sx(min(max(e["at_ms"], p.x0), p.x1))
        tip = f"{_when(e['at_ms'])} {e['kind']} {e['subject']}: {e['message']}"
        color = _COLORS.get(e["kind"], _COLORS["other"])
        if e["kind"] == "retire":
            shape = (f'<path class="mark mark-retire" d="M{_f(x)} {_f(yc - 9)} L{_f(x + 9)} {_f(yc)} L{_f(x)} '
                     f'{_f(yc + 9)} L{_f(x - 9)} {_f(yc)} Z" fill="{color}">')
            body.append(f'{shape}<title>{_e(tip)}</title></path>')
        else:
            opened = e["kind"] == "breaker" and "→ open" in e["message"]
            fill = color if opened or e["kind"] != "breaker" else "#ffffff"
            body.append(f'<circle class="mark mark-{_e(e["kind"])}" cx="{_f(x)}" cy="{_f(yc)}" r="6" fill="{fill}" '
                        f'stroke="{color}" stroke-width="2"><title>{_e(tip)}</title></circle>')
    if not d["events"]:
        body.append(_empty_note(p, "no events recorded"))
    n_b = sum(1 for e in events if e["kind"] == "breaker")
    n_r = sum(1 for e in events if e["kind"] == "retire")
    sub = (f"Breaker transitions ({n_b}; filled = opened), retire decisions ({n_r}) and other run events "
           f"({len(others)}), on the run clock.")
    listing = _table(["time (UTC)", "kind", "subject", "message"],
                     [[_when(e["at_ms"]), e["kind"], e["subject"], e["message"]] for e in d["events"][:300]],
                     "events", cls="events")
    legend = _legend([("breaker opened", _COLORS["breaker"], "box"), ("retire", _COLORS["retire"], "box"),
                      ("other", _COLORS["other"], "box")])
    return _chart("timeline", "Breaker and retire events", _e(sub), _svg(p, body, "event timeline"), legend,
                  f'<details class="events"><summary>All events ({len(d["events"])})</summary>{listing}</details>')


def _vetoes_table(key: str, title: str, sub: str, rows: Sequence[dict[str, Any]]) -> str:
    body = []
    for v in rows:
        pnl_cls = "neg" if v["pnl_pct"] < 0 else "pos"
        news = "".join(f'<li>{_e(h)}</li>' for h in v["news"])
        body.append(
            f'<tr><td class="nowrap">{_e(_when(v["created_ms"]))}</td><td>{_e(v["symbol"])}<div class="muted">'
            f'{_e(v["strategy"])} · {_e(v["side"])}</div></td><td class="num {pnl_cls}">{_num(v["pnl_pct"], 2, True)} %'
            f'<div class="muted">{_e(v["exit_reason"])}{" · ambiguous" if v["ambiguous"] else ""}</div></td>'
            f'<td class="num">{v["confidence"]:.2f}<div class="muted">{_e(v["tier"])}'
            f'{"" if v["acted"] else " · not acted on"}</div></td>'
            f'<td class="rationale">{_e(v["rationale"]) or "<span class=muted>—</span>"}'
            f'{f"<ul class=news>{news}</ul>" if news else ""}</td></tr>')
    if not body:
        body.append('<tr><td colspan="5" class="muted">no scored vetoes</td></tr>')
    table = ('<table class="data"><thead><tr><th>signal time (UTC)</th><th>symbol</th><th>shadow pnl</th>'
             f'<th>confidence</th><th>rationale</th></tr></thead><tbody>{"".join(body)}</tbody></table>')
    # a small sparkline of the shown shadow outcomes, so the section holds a chart like the others
    p = _Plot(0, max(1, len(rows)), 0, 1, h=46, left=8, right=8, top=6, bottom=6, w=1120)
    vals = [v["pnl_pct"] for v in rows] or [0.0]
    p.y0, p.y1 = min(0.0, *vals), max(0.0, *vals)
    if p.y1 - p.y0 <= 0:
        p.y1 = p.y0 + 1.0
    spark = [f'<line class="grid" x1="{p.left}" x2="{p.w - p.right}" y1="{_f(p.sy(0))}" y2="{_f(p.sy(0))}"/>']
    for i, v in enumerate(rows):
        xa, xb = p.sx(i), p.sx(i + 1)
        y_a, y_b = sorted((p.sy(0), p.sy(v["pnl_pct"])))
        color = _COLORS["accept"] if v["pnl_pct"] < 0 else _COLORS["veto"]
        spark.append(f'<rect class="bar" x="{_f(xa + 2)}" y="{_f(y_a)}" width="{_f(max(1.0, xb - xa - 4))}" '
                     f'height="{_f(max(0.5, y_b - y_a))}" fill="{color}"><title>{_e(v["symbol"])} '
                     f'{_num(v["pnl_pct"], 2, True)} %</title></rect>')
    if not rows:
        spark.append(_empty_note(p, "no scored vetoes"))
    return _chart(key, title, _e(sub), _svg(p, spark, title), "", f'<div class="table-wrap">{table}</div>')


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], key: str, cls: str = "") -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    if not rows:
        trs = f'<tr><td colspan="{len(head)}" class="muted">none</td></tr>'
    return (f'<div class="table-wrap"><table class="data {cls}" id="table-{_e(key)}"><thead><tr>{th}</tr></thead>'
            f'<tbody>{trs}</tbody></table></div>')


# ---------------------------------------------------------------------------------------------- page


def _kpis(d: dict[str, Any]) -> str:
    c = d["card"]
    vp, base, rv = c["veto_precision"], c["base_loss_rate"], c.get("random_veto", {})
    cf = c.get("counterfactual", {})
    rates = c["rates"]
    good = vp.get("value") is not None and base.get("value") is not None and vp["value"] > base["value"]
    p = rv.get("p_value")
    cards = [
        ("Veto precision", _pct(vp.get("value")),
         f"95 % CI {_pct(vp['ci95'][0]) if vp.get('ci95') else '—'}–{_pct(vp['ci95'][1]) if vp.get('ci95') else '—'}"
         f" · {vp['k']}/{vp['n']} scored vetoes", "good" if good and p is not None and p < 0.05 else ""),
        ("Base loss rate", _pct(base.get("value")),
         f"random veto at the same rate: p-value {_pval(p)}", ""),
        ("Realized PnL", _num(c["pnl"].get("pnl"), sign=True),
         f"{_num(c['pnl'].get('return_pct'), 2, True)} % · {c['pnl'].get('trades', 0)} trades",
         "good" if (c["pnl"].get("pnl") or 0) >= 0 else "bad"),
        ("Gate-only PnL", _num(cf.get("gate_only_pnl"), sign=True),
         f"reviewer value (est.) {_num(cf.get('reviewer_value_est'), sign=True)}",
         "good" if (cf.get("reviewer_value_est") or 0) >= 0 else "bad"),
        ("Fallthrough", _pct(rates["fallthrough"].get("value")), "alarm above 5 %",
         "bad" if (rates["fallthrough"].get("value") or 0) > 0.05 else "good"),
        ("Fallback", _pct(rates["fallback"].get("value"), 2), "target below 1 %",
         "bad" if (rates["fallback"].get("value") or 0) >= 0.01 else "good"),
        ("Cost", f"${c.get('cost', {}).get('usd', 0.0):,.2f}", f"{c.get('cost', {}).get('cache_hits', 0):,} cache hits",
         ""),
    ]
    return '<div class="kpis">' + "".join(
        f'<div class="kpi {cls}"><div class="kpi-label">{_e(k)}</div><div class="kpi-value">{_e(v)}</div>'
        f'<div class="kpi-sub">{_e(s)}</div></div>' for k, v, s, cls in cards) + "</div>"


def _figures(d: dict[str, Any]) -> str:
    c = d["card"]
    rv, amb, mod, cf, tr = (c.get("random_veto", {}), c.get("ambiguous", {}), c.get("modify", {}),
                            c.get("counterfactual", {}), c.get("trailing", {}))
    lat, cost = c.get("latency", {}), c.get("cost", {})
    rng = rv.get("range95")
    rows = [
        ("Signals", f"{c['signals']:,} (blocked by gates {c['blocked']:,}, reviewed {c['reviewed']:,}, "
                    f"executed {c['executed']:,})"),
        ("Verdicts", ", ".join(f"{k} {c['verdicts'].get(k, 0):,}" for k in ("accept", "modify", "veto"))),
        ("Answered by", ", ".join(f"{k} {v:,}" for k, v in sorted(c["sources"].items())) or "—"),
        ("Veto precision (95 % CI)", _rate(c["veto_precision"])),
        ("Base loss rate", _rate(c["base_loss_rate"])),
        ("Random veto at the same rate", f"expected {_pct(rv.get('expected'))}, 95 % range "
         f"{_pct(rng[0]) if rng else '—'}–{_pct(rng[1]) if rng else '—'}, p-value {_pval(rv.get('p_value'))} "
         f"(one-sided exact hypergeometric)"),
        ("Accept precision", _rate(c["accept_precision"])),
        ("Ambiguous outcomes (apart)", f"{amb.get('reviewed', 0)} reviewed, {amb.get('vetoes', 0)} vetoed; veto "
         f"precision counting them {_rate(amb.get('veto_precision_with_ambiguous'))}"),
        ("Modify improvement", f"loss avoided {_num(c['modify']['loss_avoided_pct'], 2, True)} % vs gain given up "
         f"{_num(c['modify']['gain_given_up_pct'], 2, True)} % → net {_num(c['modify']['net_pct'], 2, True)} % "
         f"over {mod.get('n', 0)} modifications ({mod.get('losers', 0)} losers, {mod.get('winners', 0)} winners)"),
        ("Fallthrough / fallback", f"{_rate(c['rates']['fallthrough'])} / {_rate(c['rates']['fallback'])}"),
        ("Cascade latency", f"p50 {_ms(lat.get('p50_ms'))}, p95 {_ms(lat.get('p95_ms'))}"),
        ("Cost", f"${cost.get('usd', 0.0):,.4f}; tokens in {cost.get('input_tokens', 0):,} / out "
                 f"{cost.get('output_tokens', 0):,}"),
        ("PnL: realized vs gate-only", f"{_num(cf.get('realized_pnl'), sign=True)} vs "
         f"{_num(cf.get('gate_only_pnl'), sign=True)}; same convention: reviewed "
         f"{_num(cf.get('reviewed_est_pnl'), sign=True)}, reviewer value "
         f"{_num(cf.get('reviewer_value_est'), sign=True)}"),
        (f"Trailing {tr.get('window_days', 14):g} days", f"veto precision {_rate(tr.get('veto_precision'))}, base "
         f"{_rate(tr.get('base_loss_rate'))}"),
    ]
    return ('<section class="card" id="figures"><header><h2>Scorecard</h2></header><table class="kv">'
            + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table></section>")


def _breakdown(d: dict[str, Any]) -> str:
    head = ["", "reviewed", "vetoes", "veto precision", "base loss rate", "p-value", "accept precision",
            "modify net %", "fallthrough", "fallback", "p50 / p95", "cost $", "gate-only PnL", "reviewed PnL (est.)"]
    parts = []
    for dim in ("tier", "strategy", "regime", "symbol"):
        rows = []
        for key, f in d["card"]["breakdown"].get(dim, {}).items():
            rows.append([key, f["reviewed"], f["vetoes"], _rate(f["veto_precision"]), _rate(f["base_loss_rate"]),
                         _pval(f.get("p_value")), _rate(f.get("accept_precision")),
                         _num(f.get("modify_net_pct"), 2, True), _pct((f.get("fallthrough") or {}).get("value")),
                         _pct((f.get("fallback") or {}).get("value")),
                         f"{_ms(f.get('latency_p50_ms'))} / {_ms(f.get('latency_p95_ms'))}",
                         f"{f.get('cost_usd', 0.0):,.4f}", _num(f.get("gate_only_pnl"), sign=True),
                         _num(f.get("reviewed_est_pnl"), sign=True)])
        parts.append(f"<h3>by {dim}</h3>" + _table([dim, *head[1:]], rows, f"breakdown-{dim}"))
    return ('<section class="card" id="breakdown"><header><h2>Every figure by tier, strategy, regime and symbol'
            '</h2></header>' + "".join(parts) + "</section>")


def _retire_banner(d: dict[str, Any]) -> str:
    retire = d["card"].get("retire") or []
    if not retire:
        return ""
    items = "".join(f"<li><b>{_e(_when(r['at_ms']))} UTC</b> — {_e(r['message'])}</li>" for r in retire)
    return (f'<div class="banner bad" id="retired"><b>The reviewer was retired to shadow mode.</b><ul>{items}</ul>'
            "</div>")


_SCRIPT = """(function () {
  var keys = CHART_KEYS;
  var missing = keys.filter(function (k) {
    var el = document.getElementById('chart-' + k);
    return !el || !el.querySelector('svg *');
  });
  var m = document.createElement('div');
  m.id = 'report-ready';
  m.hidden = true;
  m.setAttribute('data-charts', String(keys.length - missing.length));
  m.setAttribute('data-missing', missing.join(','));
  document.body.appendChild(m);
})();""".replace("CHART_KEYS", json.dumps(list(CHARTS)))

_CSS = """
:root{--fg:#16202c;--muted:#667085;--line:#e4e7ec;--bg:#f5f7fa;--card:#fff;--good:#2f9e66;--bad:#d6453d}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",
Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:0}h3{font-size:13px;margin:18px 0 6px;
text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.meta{color:var(--muted);font-size:13px;margin-bottom:18px}.meta code{background:#eef1f5;padding:1px 5px;
border-radius:4px}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin:0 0 18px}
.kpi{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px;
border-top:3px solid #cbd2dc}
.kpi.good{border-top-color:var(--good)}.kpi.bad{border-top-color:var(--bad)}
.kpi-label{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.kpi-value{font-size:22px;font-weight:650;margin:2px 0;font-variant-numeric:tabular-nums}
.kpi-sub{font-size:12px;color:var(--muted)}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}@media (max-width:1000px){.grid2{grid-template-columns:1fr}}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 18px;margin:0 0 16px;
box-shadow:0 1px 2px rgba(16,24,40,.04)}
.card header{margin-bottom:8px}.sub{color:var(--muted);margin:4px 0 0;font-size:13px}
.svg-wrap svg{width:100%;height:auto;display:block}
.plot-bg{fill:#fbfcfd}.grid{stroke:#e9ecf1;stroke-width:1}.grid-x{stroke-dasharray:2 4}
.tick{fill:#7a8494;font-size:11px}.cat{fill:#344054;font-size:12px}.val{fill:#475467;font-size:11px}
.ref-label{font-size:11px}.empty{fill:#98a2b3;font-size:14px}.lane{stroke:#eef0f3;stroke-width:1}
.series{stroke-width:2}.series.gate-only,.series.base{stroke-width:1.6}
.legend{display:flex;flex-wrap:wrap;gap:14px;font-size:12px;color:#475467;margin:2px 0 6px}
.key i{display:inline-block;width:18px;height:0;border-top:2px solid var(--c);vertical-align:middle;margin-right:6px}
.key-dash i{border-top-style:dashed}.key-box i,.key-band i{height:10px;width:10px;border:0;background:var(--c);
border-radius:2px}.key-band i{opacity:.25;width:18px}
.table-wrap{overflow-x:auto}
table.data{border-collapse:collapse;width:100%;font-size:12.5px;margin-top:8px}
table.data th{text-align:left;font-weight:600;color:#475467;border-bottom:1px solid var(--line);padding:6px 8px;
white-space:nowrap;background:#fafbfc}
table.data td{border-bottom:1px solid #f0f2f5;padding:6px 8px;vertical-align:top;font-variant-numeric:tabular-nums}
table.kv{border-collapse:collapse;width:100%}table.kv th{text-align:left;font-weight:600;color:#475467;
padding:5px 12px 5px 0;width:260px;vertical-align:top}table.kv td{padding:5px 0;border-bottom:1px solid #f0f2f5}
.num{text-align:right;white-space:nowrap}.neg{color:var(--good)}.pos{color:var(--bad)}.nowrap{white-space:nowrap}
.muted{color:var(--muted);font-size:11.5px}.rationale{max-width:560px;white-space:pre-wrap;word-break:break-word}
ul.news{margin:4px 0 0 16px;padding:0;color:#475467;font-size:12px}
.banner{border-radius:10px;padding:12px 16px;margin:0 0 16px}.banner.bad{background:#fdecea;border:1px solid #f5c2bd}
.banner ul{margin:6px 0 0 18px;padding:0}
details.events summary{cursor:pointer;color:#475467;margin-top:8px}
footer{color:var(--muted);font-size:12px;margin-top:24px}
@media print{body{background:#fff}.card{box-shadow:none;break-inside:avoid}}
"""


def render_html(d: dict[str, Any]) -> str:
    """The whole page. Every recorded string is escaped; the page needs no network."""
    run = d["run"]
    script_hash = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
    csp = (f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{script_hash}'; "
           "base-uri 'none'; form-action 'none'")
    title = f"tradevet report — run {run['id']} ({run['name']})"
    span = f"{_when(d['start_ms'])} → {_when(d['end_ms'])} UTC" if d["start_ms"] is not None else "no reviews"
    meta = (f"status <b>{_e(run['status'])}</b> · reviewer mode <b>{_e(run['reviewer_mode'])}</b> · tiers "
            f"{_e(', '.join(str(t) for t in run['tiers']) or '—')} · {_e(span)} · config <code>{_e(run['config_hash'])}"
            f"</code> · {_e(run['db'])} · generated {_e(d['generated_at'])}")
    sections = [
        _retire_banner(d), _kpis(d),
        _chart_equity(d),
        '<div class="grid2">', _chart_precision(d), _chart_rates(d), "</div>",
        _chart_mix(d),
        '<div class="grid2">', _chart_latency(d), _chart_cost(d), "</div>",
        _chart_timeline(d),
        _vetoes_table("vetoes-best", "Best vetoes", "Vetoed signals whose shadow trade lost the most: the losses the "
                      "reviewer avoided. Rationales as the reviewer wrote them.", d["vetoes_best"]),
        _vetoes_table("vetoes-worst", "Worst vetoes", "Vetoed signals whose shadow trade gained the most: the gains "
                      "the reviewer gave up.", d["vetoes_worst"]),
        _figures(d), _breakdown(d),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{_e(title)}</h1><div class=\"meta\">{meta}</div>"
        + "".join(sections)
        + "<footer>tradevet operations report · veto precision is judged by each signal's shadow trade (the signal "
          "simulated as emitted, net of fees); ambiguous outcomes are reported apart.</footer>"
        f"</main><script>{_SCRIPT}</script></body></html>\n"
    )
