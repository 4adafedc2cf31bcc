"""The report's charts: plain report data (``engine.recorded.report.data``) → one titled SVG chart or table each.

Each chart sits in an element with a stable ``id`` and ``data-chart`` (``CHARTS``): tests and users' tooling read
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.recorded.report.svg import (
    COLORS,
    HALF_W,
    Plot,
    chart_box,
    draw_frame,
    draw_hline,
    draw_line,
    empty_note,
    esc,
    fx,
    hbars,
    html_table,
    legend_html,
    ms_text,
    nice_ticks,
    num_text,
    svg_doc,
    when_text,
    window_label,
)
from engine.recorded.show import pvalue, rate

# Stable chart ids (also the values of data-chart). Tests and users' tooling may rely on them.
CHARTS = ("equity", "verdict-mix", "veto-precision", "reviewer-rates", "tier-latency", "tier-cost", "timeline",
          "vetoes-best", "vetoes-worst")


def chart_equity(d: dict[str, Any]) -> str:
    eq = d["equity"]
    real, off, band = eq["realized"], eq.get("reviewer_off") or [], eq.get("random_band") or []
    start_eq = d["run"]["starting_equity"]
    x0 = d["start_ms"] if d["start_ms"] is not None else 0
    x1 = d["end_ms"] if d["end_ms"] is not None else x0 + 1
    ys = [start_eq, *(v for _, v in real), *(v for _, v in off), *(b[1] for b in band), *(b[3] for b in band)]
    lo, hi, ticks = nice_ticks(min(ys), max(ys))
    p = Plot(x0, max(x1, x0 + 1), lo, hi)
    body = draw_frame(p, ticks, lambda v: f"{v:,.0f}")
    body.append(draw_hline(p, start_eq, "#9aa3af", "starting equity"))
    if band:  # the central 90 % of the random reviewers' equity at each time
        upper = [f"{fx(p.sx(t))},{fx(p.sy(h))}" for t, _, _, h in band]
        lower = [f"{fx(p.sx(t))},{fx(p.sy(lo_))}" for t, lo_, _, _ in reversed(band)]
        body.append(f'<polygon class="band random-band" points="{" ".join(upper + lower)}" '
                    f'fill="{COLORS["random"]}" fill-opacity="0.18" stroke="none"/>')
        body.append(draw_line(p, [(t, m) for t, _, m, _ in band], "series random-median", COLORS["random"],
                              dash="2 3"))
    if off:
        body.append(draw_line(p, [(x0, start_eq), *off], "series reviewer-off", COLORS["reviewer_off"], step=True,
                              dash="7 4"))
    body.append(draw_line(p, [(x0, start_eq), *real], "series realized", COLORS["realized"], step=True))
    if not real and not off:
        body.append(empty_note(p, "no closed trades"))
    value = d["card"].get("value") or {}
    off_card, rnd = value.get("reviewer_off"), value.get("random")
    if not value:
        sub = (f"Realized (booked trades) {num_text(d['card']['pnl'].get('pnl'), sign=True)}. No counterfactual "
               f"replays yet: `tradevet value --run {d['run']['id']}` replays the run with the reviewer off and with "
               "random reviewers of the same verdict mix, and draws them here.")
    else:
        cmp_ = (rnd or {}).get("compare", {}).get("pnl", {})
        sub = (f"Realized (booked trades) {num_text(d['card']['pnl'].get('pnl'), sign=True)}"
               + (f" vs reviewer off {num_text(off_card.get('pnl'), sign=True)} (a real replay: same config, data, "
                  "seed, gates, limits, sizing and fills, every reviewed signal accepted)" if off_card else "")
               + (f"; the band holds the central 90 % of {rnd['n']} random reviewers with the real verdict mix — "
                  f"the reviewer's PnL beats {num_text(cmp_.get('percentile'), 0)} % of them (empirical p "
                  f"{pvalue(cmp_.get('p_value'))})." if rnd else "."))
    legend = legend_html([("realized equity", COLORS["realized"], "line"),
                          ("reviewer off (replay)", COLORS["reviewer_off"], "dash"),
                          ("random reviewers, 90 % band and median", COLORS["random"], "band")])
    return chart_box("equity", "Equity vs the reviewer-off replay and random reviewers", esc(sub),
                     svg_doc(p, body, "equity chart"), legend)


def chart_mix(d: dict[str, Any]) -> str:
    mix = d["mix"]
    x0 = mix[0]["start_ms"] if mix else 0
    x1 = mix[-1]["end_ms"] if mix else 1
    top = max([m["accept"] + m["modify"] + m["veto"] for m in mix] or [1])
    _, hi, ticks = nice_ticks(0, max(1, top))
    p = Plot(x0, x1, 0, hi)
    body = draw_frame(p, ticks, lambda v: f"{v:g}")
    for m in mix:
        xa, xb = p.sx(m["start_ms"]), p.sx(m["end_ms"])
        width = max(1.0, (xb - xa) * 0.86)
        base = 0
        tip = (f"{when_text(m['start_ms'])} – {when_text(m['end_ms'])}: accept {m['accept']}, modify {m['modify']}, "
               f"veto {m['veto']}")
        for kind in ("accept", "modify", "veto"):
            n = m[kind]
            if not n:
                continue
            y_top, y_bot = p.sy(base + n), p.sy(base)
            body.append(f'<rect class="bar bar-{kind}" x="{fx(xa + (xb - xa) * 0.07)}" y="{fx(y_top)}" '
                        f'width="{fx(width)}" height="{fx(max(0.5, y_bot - y_top))}" fill="{COLORS[kind]}">'
                        f'<title>{esc(tip)}</title></rect>')
            base += n
    if not mix:
        body.append(empty_note(p, "no reviewed signals"))
    v = d["card"]["verdicts"]
    sub = f"Reviewed signals per period by verdict — accept {v.get('accept', 0)}, modify {v.get('modify', 0)}, " \
          f"veto {v.get('veto', 0)}."
    legend = legend_html([(k, COLORS[k], "box") for k in ("accept", "modify", "veto")])
    return chart_box("verdict-mix", "Verdict mix over time", esc(sub), svg_doc(p, body, "verdict mix chart"), legend)


def chart_precision(d: dict[str, Any]) -> str:
    roll = d["rolling"]
    x0 = roll[0]["t_ms"] if roll else 0
    x1 = roll[-1]["t_ms"] if roll else 1
    p = Plot(x0, max(x1, x0 + 1), 0.0, 1.0, w=HALF_W, h=320)
    body = draw_frame(p, [0, 0.25, 0.5, 0.75, 1.0], lambda v: f"{v * 100:.0f} %")
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
        upper = [f"{fx(p.sx(pt['t_ms']))},{fx(p.sy(pt['veto_precision']['ci95'][1]))}" for pt in seg]
        lower = [f"{fx(p.sx(pt['t_ms']))},{fx(p.sy(pt['veto_precision']['ci95'][0]))}" for pt in reversed(seg)]
        body.append(f'<polygon class="band" points="{" ".join(upper + lower)}" fill="{COLORS["band"]}" '
                    f'fill-opacity="0.14" stroke="none"/>')
    body.append(draw_line(p, [(pt["t_ms"], pt["base_loss_rate"]["value"]) for pt in roll], "series base",
                      COLORS["base"], dash="7 4"))
    body.append(draw_line(p, [(pt["t_ms"], pt["veto_precision"]["value"]) for pt in roll], "series precision",
                      COLORS["precision"]))
    for pt in roll[:: max(1, len(roll) // 40)]:
        vp = pt["veto_precision"]
        if vp["n"]:
            tip = (f"{when_text(pt['t_ms'])}: veto precision {rate(vp)}; base loss rate "
                   f"{rate(pt['base_loss_rate'])}")
            body.append(f'<circle class="pt" cx="{fx(p.sx(pt["t_ms"]))}" cy="{fx(p.sy(vp["value"]))}" r="2.6" '
                        f'fill="{COLORS["precision"]}"><title>{esc(tip)}</title></circle>')
    if not any(pt["veto_precision"]["n"] for pt in roll):
        body.append(empty_note(p, "no scored vetoes yet"))
    c = d["card"]
    rv = c.get("random_veto", {})
    sub = (f"Trailing {window_label(d['window_ms'])} by signal time, with its Wilson 95 % band, against the base "
           f"loss rate (what vetoing at random scores). Whole run: {rate(c['veto_precision'])} vs base "
           f"{rate(c['base_loss_rate'])}; p-value {pvalue(rv.get('p_value'))}.")
    legend = legend_html([("veto precision", COLORS["precision"], "line"), ("95 % interval", COLORS["band"], "band"),
                      ("base loss rate = random veto", COLORS["base"], "dash")])
    return chart_box("veto-precision", "Rolling veto precision", esc(sub), svg_doc(p, body, "veto precision chart"),
                     legend)


def chart_rates(d: dict[str, Any]) -> str:
    roll = d["rolling"]
    x0 = roll[0]["t_ms"] if roll else 0
    x1 = roll[-1]["t_ms"] if roll else 1
    vals = [pt[k]["value"] for pt in roll for k in ("fallthrough", "fallback") if pt[k]["value"] is not None]
    _, hi, ticks = nice_ticks(0.0, min(1.0, max(0.08, *(vals or [0.0])) * 1.1))
    hi, ticks = min(hi, 1.0), [t for t in ticks if t <= 1.0]  # a rate never exceeds 100 %
    p = Plot(x0, max(x1, x0 + 1), 0.0, hi, w=HALF_W, h=320)
    body = draw_frame(p, ticks, lambda v: f"{v * 100:.0f} %" if hi >= 0.1 else f"{v * 100:.1f} %")
    body.append(draw_hline(p, 0.05, COLORS["fallthrough"], "fallthrough alarm 5 %"))
    body.append(draw_hline(p, 0.01, COLORS["fallback"], "fallback target 1 %", left=True))
    body.append(draw_line(p, [(pt["t_ms"], pt["fallthrough"]["value"]) for pt in roll], "series fallthrough",
                      COLORS["fallthrough"]))
    body.append(draw_line(p, [(pt["t_ms"], pt["fallback"]["value"]) for pt in roll], "series fallback",
                      COLORS["fallback"]))
    if not roll:
        body.append(empty_note(p, "no reviews"))
    c = d["card"]["rates"]
    sub = (f"Trailing {window_label(d['window_ms'])}. Fallthrough: not answered by the first tier (alarm above "
           f"5 %), whole run {rate(c['fallthrough'])}. Fallback: answered by no tier (target below 1 %), "
           f"whole run {rate(c['fallback'])}.")
    legend = legend_html([("fallthrough", COLORS["fallthrough"], "line"), ("fallback", COLORS["fallback"], "line")])
    return chart_box("reviewer-rates", "Fallthrough and fallback rates", esc(sub),
                     svg_doc(p, body, "reviewer rates chart"),
                  legend)


def chart_latency(d: dict[str, Any]) -> str:
    tiers = d["card"]["tiers"]
    rows = [(name, [("p50", t["latency_p50_ms"], COLORS["p50"]), ("p95", t["latency_p95_ms"], COLORS["p95"])])
            for name, t in tiers.items()]
    lat = d["card"].get("latency", {})
    sub = (f"Per tier, over its real calls (cache reads and calls refused by an open breaker excluded). "
           f"Whole cascade per review: p50 {ms_text(lat.get('p50_ms'))}, p95 {ms_text(lat.get('p95_ms'))}.")
    table = html_table(["tier", "answered", "cache hits", "calls", "failures", "p50", "p95"],
                   [[n, t["answered"], t.get("cache_hits", 0), t.get("calls", 0),
                     ", ".join(f"{k} {v}" for k, v in sorted(t["failures"].items())) or "—",
                     ms_text(t["latency_p50_ms"]), ms_text(t["latency_p95_ms"])] for n, t in tiers.items()], "tiers")
    errors = html_table(["tier", "kind", "count", "error"], [[e["tier"], e["kind"], e["count"], e["error"]]
                                                          for e in d.get("errors", [])], "tier-errors", cls="events")
    legend = legend_html([("p50", COLORS["p50"], "box"), ("p95", COLORS["p95"], "box")])
    return chart_box("tier-latency", "Latency per tier", esc(sub),
                  hbars(rows, lambda v: ms_text(v), "tier latency chart", "no real tier calls", w=HALF_W), legend,
                  table + f"<h3>most frequent tier failures</h3>{errors}")


def chart_cost(d: dict[str, Any]) -> str:
    tiers = d["card"]["tiers"]
    rows = [(name, [("cost", t["cost_usd"], COLORS["precision"])]) for name, t in tiers.items()]
    cost = d["card"].get("cost", {})
    sub = (f"USD of real calls; a verdict served from the cache costs nothing. Total ${cost.get('usd', 0.0):,.4f}, "
           f"tokens in {cost.get('input_tokens', 0):,} / out {cost.get('output_tokens', 0):,} "
           f"(cached input {cost.get('cached_tokens', 0):,}), cache hits {cost.get('cache_hits', 0):,}.")
    table = html_table(["tier", "input tokens", "output tokens", "cached tokens", "cost $"],
                   [[n, f"{t['input_tokens']:,}", f"{t['output_tokens']:,}", f"{t.get('cached_tokens', 0):,}",
                     f"{t['cost_usd']:,.4f}"] for n, t in tiers.items()], "tier-cost")
    return chart_box("tier-cost", "Cost per tier", esc(sub),
                  hbars(rows, lambda v: f"${v:,.4f}", "tier cost chart", "no paid calls: every tier cost $0",
                         w=HALF_W), "", table + _spend_tables(d["card"].get("spend") or {}))


def _spend_tables(spend: dict[str, Any]) -> str:
    """Cost per UTC day and tier (wall clock of the calls), each budget's caps and use, the budget events."""
    if not spend:
        return ""
    days = html_table(["day (UTC)", "tier", "calls", "cost $"],
                      [[x["day"] or "unknown", x["tier"], f"{x['calls']:,}", f"{x['cost_usd']:,.4f}"]
                       for x in spend.get("by_day", [])], "cost-per-day")
    budgets = spend.get("budgets", {})
    out = days
    if budgets:
        def caps(c: dict[str, Any]) -> str:
            return ", ".join(f"{k} {v:g}" for k, v in c.items() if k != "scope" and v is not None)

        out += html_table(["tier", "caps", "scope", "run calls", "run cost $", "busiest day", "tightest cap used",
                           "times exhausted"],
                          [[n, caps(b["caps"]), b["caps"].get("scope", "run"), f"{b['run_calls']:,}",
                            f"{b['run_usd']:,.4f}", b["busiest_day"] or "—",
                            "—" if b.get("used_share") is None else f"{b['used_share']:.0%}", b["exhausted"]]
                           for n, b in budgets.items()], "tier-budgets")
    events = spend.get("events", [])
    if events:
        out += html_table(["tier", "budget event"], [[e["tier"], e["message"]] for e in events], "budget-events")
    return out


def chart_timeline(d: dict[str, Any]) -> str:
    events = [e for e in d["events"] if e["kind"] in ("breaker", "retire")]
    others = [e for e in d["events"] if e["kind"] not in ("breaker", "retire")]
    lanes = ["retire", *sorted({f"breaker {e['subject']}" for e in events if e["kind"] == "breaker"}), "other"]
    x0 = d["start_ms"] if d["start_ms"] is not None else min([e["at_ms"] for e in d["events"]] or [0])
    x1 = d["end_ms"] if d["end_ms"] is not None else max([e["at_ms"] for e in d["events"]] or [1])
    lane_h = 30
    h = 16 + 34 + lane_h * len(lanes)
    p = Plot(x0, max(x1, x0 + 1), 0, len(lanes), h=h, left=150)
    body = draw_frame(p, [], str)
    for i, lane in enumerate(lanes):
        yc = p.top + lane_h * i + lane_h / 2
        body.append(f'<line class="lane" x1="{p.left}" x2="{p.w - p.right}" y1="{fx(yc)}" y2="{fx(yc)}"/>')
        body.append(f'<text class="cat" x="{p.left - 10}" y="{fx(yc)}" text-anchor="end" '
                    f'dominant-baseline="middle">{esc(lane)}</text>')
    for e in [*events, *others]:
        lane = "retire" if e["kind"] == "retire" else f"breaker {e['subject']}" if e["kind"] == "breaker" else "other"
        yc = p.top + lane_h * lanes.index(lane) + lane_h / 2
        x = p.sx(min(max(e["at_ms"], p.x0), p.x1))
        tip = f"{when_text(e['at_ms'])} {e['kind']} {e['subject']}: {e['message']}"
        color = COLORS.get(e["kind"], COLORS["other"])
        if e["kind"] == "retire":
            shape = (f'<path class="mark mark-retire" d="M{fx(x)} {fx(yc - 9)} L{fx(x + 9)} {fx(yc)} L{fx(x)} '
                     f'{fx(yc + 9)} L{fx(x - 9)} {fx(yc)} Z" fill="{color}">')
            body.append(f'{shape}<title>{esc(tip)}</title></path>')
        else:
            opened = e["kind"] == "breaker" and "→ open" in e["message"]
            fill = color if opened or e["kind"] != "breaker" else "#ffffff"
            body.append(f'<circle class="mark mark-{esc(e["kind"])}" cx="{fx(x)}" cy="{fx(yc)}" r="6" fill="{fill}" '
                        f'stroke="{color}" stroke-width="2"><title>{esc(tip)}</title></circle>')
    if not d["events"]:
        body.append(empty_note(p, "no events recorded"))
    n_b = sum(1 for e in events if e["kind"] == "breaker")
    n_r = sum(1 for e in events if e["kind"] == "retire")
    sub = (f"Breaker transitions ({n_b}; filled = opened), retire decisions ({n_r}) and other run events "
           f"({len(others)}), on the run clock.")
    listing = html_table(["time (UTC)", "kind", "subject", "message"],
                     [[when_text(e["at_ms"]), e["kind"], e["subject"], e["message"]] for e in d["events"][:300]],
                     "events", cls="events")
    legend = legend_html([("breaker opened", COLORS["breaker"], "box"), ("retire", COLORS["retire"], "box"),
                      ("other", COLORS["other"], "box")])
    return chart_box("timeline", "Breaker and retire events", esc(sub), svg_doc(p, body, "event timeline"), legend,
                  f'<details class="events"><summary>All events ({len(d["events"])})</summary>{listing}</details>')


def vetoes_table(key: str, title: str, sub: str, rows: Sequence[dict[str, Any]]) -> str:
    body = []
    for v in rows:
        pnl_cls = "neg" if v["pnl_pct"] < 0 else "pos"
        news = "".join(f'<li>{esc(h)}</li>' for h in v["news"])
        body.append(
            f'<tr><td class="nowrap">{esc(when_text(v["created_ms"]))}</td><td>{esc(v["symbol"])}<div class="muted">'
            f'{esc(v["strategy"])} · {esc(v["side"])}</div></td>'
            f'<td class="num {pnl_cls}">{num_text(v["pnl_pct"], 2, True)} %'
            f'<div class="muted">{esc(v["exit_reason"])}{" · ambiguous" if v["ambiguous"] else ""}</div></td>'
            f'<td class="num">{v["confidence"]:.2f}<div class="muted">{esc(v["tier"])}'
            f'{"" if v["acted"] else " · not acted on"}</div></td>'
            f'<td class="rationale">{esc(v["rationale"]) or "<span class=muted>—</span>"}'
            f'{f"<ul class=news>{news}</ul>" if news else ""}</td></tr>')
    if not body:
        body.append('<tr><td colspan="5" class="muted">no scored vetoes</td></tr>')
    table = ('<table class="data"><thead><tr><th>signal time (UTC)</th><th>symbol</th><th>shadow pnl</th>'
             f'<th>confidence</th><th>rationale</th></tr></thead><tbody>{"".join(body)}</tbody></table>')
    # a small sparkline of the shown shadow outcomes, so the section holds a chart like the others
    p = Plot(0, max(1, len(rows)), 0, 1, h=46, left=8, right=8, top=6, bottom=6, w=1120)
    vals = [v["pnl_pct"] for v in rows] or [0.0]
    p.y0, p.y1 = min(0.0, *vals), max(0.0, *vals)
    if p.y1 - p.y0 <= 0:
        p.y1 = p.y0 + 1.0
    spark = [f'<line class="grid" x1="{p.left}" x2="{p.w - p.right}" y1="{fx(p.sy(0))}" y2="{fx(p.sy(0))}"/>']
    for i, v in enumerate(rows):
        xa, xb = p.sx(i), p.sx(i + 1)
        y_a, y_b = sorted((p.sy(0), p.sy(v["pnl_pct"])))
        color = COLORS["accept"] if v["pnl_pct"] < 0 else COLORS["veto"]
        spark.append(f'<rect class="bar" x="{fx(xa + 2)}" y="{fx(y_a)}" width="{fx(max(1.0, xb - xa - 4))}" '
                     f'height="{fx(max(0.5, y_b - y_a))}" fill="{color}"><title>{esc(v["symbol"])} '
                     f'{num_text(v["pnl_pct"], 2, True)} %</title></rect>')
    if not rows:
        spark.append(empty_note(p, "no scored vetoes"))
    return chart_box(key, title, esc(sub), svg_doc(p, spark, title), "", f'<div class="table-wrap">{table}</div>')


