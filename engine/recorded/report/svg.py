"""The report's drawing kit: formatting of figures and times, and server-side SVG (axes, lines, bars, legends).

Everything here returns text with every recorded string HTML-escaped (``esc``); the charts are built from these
pieces in ``engine.recorded.report.charts``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.types import ms_to_dt

COLORS = {"accept": "#2f9e66", "modify": "#e0a100", "veto": "#d6453d", "realized": "#2563eb",
           "reviewer_off": "#7b8594", "random": "#e0a100", "base": "#7b8594", "precision": "#7c3aed", "band": "#7c3aed",
           "fallthrough": "#e07b00", "fallback": "#d6453d", "p50": "#2563eb", "p95": "#93b4f5",
           "breaker": "#e07b00", "retire": "#d6453d", "other": "#7b8594"}
HALF_W = 600  # viewBox width of the charts shown two abreast


def esc(x: Any) -> str:
    """HTML-escape anything recorded (quotes included: values also land in attributes)."""
    return html.escape("" if x is None else str(x), quote=True)


def num_text(x: float | None, digits: int = 2, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:+,.{digits}f}" if sign else f"{x:,.{digits}f}"


def ms_text(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.0f} ms" if x >= 100 else f"{x:.2f} ms" if x >= 1 else f"{x * 1000:.0f} µs"


def when_text(ms: int | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return "—" if ms is None else ms_to_dt(int(ms)).strftime(fmt)


@dataclass
class Plot:
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


def nice_ticks(lo: float, hi: float, n: int = 5) -> tuple[float, float, list[float]]:
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


def time_ticks(lo: float, hi: float, n: int = 7) -> list[tuple[float, str]]:
    span = max(1.0, hi - lo)
    step = next((s for s in _TIME_STEPS if span / s <= n), _TIME_STEPS[-1])
    fmt = "%b %d" if step >= 86_400_000 else "%m-%d %H:%M" if span > 86_400_000 else "%H:%M"
    t = math.ceil(lo / step) * step
    out = []
    while t <= hi:
        out.append((t, ms_to_dt(int(t)).strftime(fmt)))
        t += step
    return out


def fx(x: float) -> str:
    return f"{x:.1f}"


def draw_frame(p: Plot, yticks: Sequence[float], y_fmt: Callable[[float], str], *, time_axis: bool = True,
           xticks: Sequence[tuple[float, str]] = ()) -> list[str]:
    out = [f'<rect class="plot-bg" x="{p.left}" y="{p.top}" width="{p.w - p.left - p.right}" '
           f'height="{p.h - p.top - p.bottom}"/>']
    for y in yticks:
        yy = fx(p.sy(y))
        out.append(f'<line class="grid" x1="{p.left}" x2="{p.w - p.right}" y1="{yy}" y2="{yy}"/>')
        out.append(f'<text class="tick" x="{p.left - 8}" y="{yy}" text-anchor="end" dominant-baseline="middle">'
                   f'{esc(y_fmt(y))}</text>')
    ticks = time_ticks(p.x0, p.x1) if time_axis else xticks
    for x, label in ticks:
        xx = fx(p.sx(x))
        out.append(f'<line class="grid grid-x" x1="{xx}" x2="{xx}" y1="{p.top}" y2="{p.h - p.bottom}"/>')
        out.append(f'<text class="tick" x="{xx}" y="{p.h - p.bottom + 18}" text-anchor="middle">{esc(label)}</text>')
    return out


def svg_doc(p: Plot, body: Sequence[str], label: str) -> str:
    return (f'<svg viewBox="0 0 {p.w} {p.h}" role="img" aria-label="{esc(label)}" '
            f'xmlns="http://www.w3.org/2000/svg">{"".join(body)}</svg>')


def draw_line(p: Plot, pts: Sequence[tuple[float, float | None]], cls: str, color: str, *, step: bool = False,
          dash: str = "") -> str:
    """A polyline; ``None`` values break it (no data in that window)."""
    parts: list[str] = []
    pen = False
    prev_y: float | None = None
    for x, y in pts:
        if y is None:
            pen = False
            continue
        X, Y = fx(p.sx(x)), fx(p.sy(y))
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


def draw_hline(p: Plot, y: float, color: str, label: str, *, left: bool = False) -> str:
    yy = fx(p.sy(y))
    x, anchor = (p.left + 4, "start") if left else (p.w - p.right - 4, "end")
    return (f'<line class="ref" x1="{p.left}" x2="{p.w - p.right}" y1="{yy}" y2="{yy}" stroke="{color}" '
            f'stroke-dasharray="6 4"/><text class="ref-label" x="{x}" y="{fx(p.sy(y) - 5)}" '
            f'text-anchor="{anchor}" fill="{color}">{esc(label)}</text>')


def empty_note(p: Plot, text: str) -> str:
    return (f'<text class="empty" x="{fx((p.left + p.w - p.right) / 2)}" y="{fx((p.top + p.h - p.bottom) / 2)}" '
            f'text-anchor="middle">{esc(text)}</text>')


def legend_html(items: Sequence[tuple[str, str, str]]) -> str:
    """(label, color, style: line | dash | box | band)."""
    spans = []
    for label, color, style in items:
        spans.append(f'<span class="key key-{style}" style="--c:{color}"><i></i>{esc(label)}</span>')
    return f'<div class="legend">{"".join(spans)}</div>'


def chart_box(key: str, title: str, sub: str, svg: str, legend: str = "", extra: str = "") -> str:
    return (f'<section class="card chart" id="chart-{key}" data-chart="{key}"><header><h2>{esc(title)}</h2>'
            f'<p class="sub">{sub}</p></header>{legend}<div class="svg-wrap">{svg}</div>{extra}</section>')


def window_label(ms: int) -> str:
    days = ms / 86_400_000
    return f"{days:.3g} days" if days >= 1 else f"{ms / 3_600_000:.3g} hours"


def hbars(rows: Sequence[tuple[str, list[tuple[str, float | None, str]]]], fmt: Callable[[float], str],
           label: str, empty: str, *, w: int = 1120) -> str:
    """Horizontal grouped bars: rows of (name, [(series, value, color)])."""
    vals = [v for _, series in rows for _, v, _ in series if v is not None]
    _, hi, ticks = nice_ticks(0.0, max(vals or [1.0]) or 1.0)
    group_h = 18 * max(1, max((len(s) for _, s in rows), default=1)) + 14
    h = 16 + 34 + group_h * max(1, len(rows))
    p = Plot(0.0, hi, 0, 1, w=w, h=h, left=120, right=90)
    body = draw_frame(p, [], str, time_axis=False, xticks=[(t, fmt(t)) for t in ticks[:: max(1, len(ticks) // 4)]])
    y = p.top + 8
    for name, series in rows:
        body.append(f'<text class="cat" x="{p.left - 10}" y="{fx(y + (group_h - 14) / 2)}" text-anchor="end" '
                    f'dominant-baseline="middle">{esc(name)}</text>')
        for sname, v, color in series:
            w = 0.0 if v is None else p.sx(v) - p.left
            body.append(f'<rect class="bar" x="{p.left}" y="{fx(y)}" width="{fx(max(w, 0.0))}" height="14" '
                        f'fill="{color}"><title>{esc(f"{name} {sname}: " + ("—" if v is None else fmt(v)))}</title>'
                        f'</rect>')
            body.append(f'<text class="val" x="{fx(p.left + max(w, 0.0) + 6)}" y="{fx(y + 7)}" '
                        f'dominant-baseline="middle">{esc(sname)} {esc("—" if v is None else fmt(v))}</text>')
            y += 18
        y += 14
    if not rows or not vals or not any(vals):
        body.append(empty_note(p, empty))
    return svg_doc(p, body, label)


def html_table(head: Sequence[str], rows: Sequence[Sequence[Any]], key: str, cls: str = "") -> str:
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    if not rows:
        trs = f'<tr><td colspan="{len(head)}" class="muted">none</td></tr>'
    return (f'<div class="table-wrap"><table class="data {cls}" id="table-{esc(key)}"><thead><tr>{th}</tr></thead>'
            f'<tbody>{trs}</tbody></table></div>')
