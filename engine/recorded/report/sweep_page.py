"""A sweep's page: the leaderboard of ``tradevet sweep`` → one self-contained HTML document (no script, no network).

The out-of-sample lift of every trial is drawn with its 95 % interval against zero (chance), the leaderboard and
the walk-forward choices are tables, and the first line is the sweep's verdict after the correction for the number
of trials. Every string is escaped; the page's Content-Security-Policy admits no network and no script.
"""

from __future__ import annotations

from typing import Any

from engine.recorded.report.page import CSS
from engine.recorded.report.svg import esc, html_table, when_text

__all__ = ["render_sweep_html"]


_WINDOW_HEAD = ["window", "train", "test", "chosen", "train lift", "test lift", "test p", "test PnL"]


def _f(x: Any, spec: str = ".3g") -> str:
    return "—" if x is None else format(x, spec)


def _lift_chart(trials: list[dict[str, Any]]) -> str:
    """Each trial's out-of-sample lift (points) with its interval, on one axis with zero marked."""
    rows = [(t["trial"], t["oos"]["lift"], t["oos"]["lift_ci"]) for t in trials]
    vals = [v * 100 for _, v, ci in rows if v is not None] + [c * 100 for _, _, ci in rows if ci for c in ci]
    lo, hi = min([0.0, *vals]) - 1, max([0.0, *vals]) + 1
    w, left, right, row_h = 900, 90, 30, 22
    h = 30 + row_h * max(1, len(rows))

    def sx(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (w - left - right)

    body = [f'<line x1="{sx(0):.1f}" y1="10" x2="{sx(0):.1f}" y2="{h - 16}" stroke="#98a2b3" stroke-dasharray="3 3"/>',
            f'<text class="tick" x="{sx(0):.1f}" y="{h - 4}" text-anchor="middle">0 (chance)</text>']
    for i, (n, v, ci) in enumerate(rows):
        y = 20 + i * row_h
        body.append(f'<text class="cat" x="{left - 10}" y="{y}" text-anchor="end" dominant-baseline="middle">'
                    f'trial {esc(n)}</text>')
        if ci:
            body.append(f'<line x1="{sx(ci[0] * 100):.1f}" y1="{y}" x2="{sx(ci[1] * 100):.1f}" y2="{y}" '
                        'stroke="#4f6bed" stroke-width="2"/>')
        if v is not None:
            body.append(f'<circle cx="{sx(v * 100):.1f}" cy="{y}" r="4" fill="#16202c"><title>'
                        f'{esc(f"trial {n}: {v * 100:+.1f} points")}</title></circle>')
    return (f'<div class="svg-wrap" id="chart-sweep-lift" data-chart="sweep-lift"><svg xmlns="http://www.w3.org/2000/'
            f'svg" viewBox="0 0 {w} {h}" role="img" aria-label="out-of-sample lift per trial">{"".join(body)}'
            "</svg></div>")


def render_sweep_html(r: dict[str, Any]) -> str:
    title = f"tradevet sweep — {r['sweep']} (run {r['sweep_id']})"
    csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"
    wins = r["windows"]
    span = (f"{when_text(wins[0]['train_ms'][0])} → {when_text(wins[-1]['test_ms'][1])} UTC" if wins else "")
    head = ["trial", "params", "OOS lift", "95 % CI", "p", "Holm p", "BH q", "PnL", "max DD %", "trades",
            "deflated Sharpe", "veto / modify / accept", "chosen in windows"]
    rows = []
    for t in r["trials"]:
        o, ci, v = t["oos"], t["oos"]["lift_ci"], t["oos"]["verdicts"]
        rows.append([t["trial"], ", ".join(f"{k}={val}" for k, val in t["params"].items()),
                     "—" if o["lift"] is None else f"{o['lift'] * 100:+.1f}",
                     "—" if ci is None else f"[{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]", _f(o["p_value"]),
                     _f(t["lift_p_holm"]), _f(t["lift_q_bh"]), f"{o['pnl']:+.2f}", f"{o['max_drawdown_pct']:.2f}",
                     o["trades"], _f(t["deflated_sharpe"], ".2f"), f"{v['veto']} / {v['modify']} / {v['accept']}",
                     ", ".join(map(str, t["chosen_in"])) or "—"])
    wrows = [[w["index"], f"{when_text(w['train_ms'][0])} → {when_text(w['train_ms'][1])}",
              f"{when_text(w['test_ms'][0])} → {when_text(w['test_ms'][1])}", w["chosen"],
              _f(w["train"]["lift"], "+.3f"), _f(w["test"]["lift"], "+.3f"), _f(w["test"]["p_value"]),
              f"{w['test']['pnl']:+.2f}"] for w in wins]
    verdict_cls = "good" if r["winner"] is not None else "bad"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{esc(title)}</h1><div class=\"meta\">{esc(r['n_trials'])} trials ({esc(r['reused'])} already recorded) · "
        f"{len(wins)} walk-forward windows · {esc(span)} · alpha {esc(r['alpha'])}</div>"
        f'<div class="kpi {verdict_cls}" id="sweep-verdict"><div class="kpi-label">after the search</div>'
        f'<div class="kpi-sub">{esc(r["summary"])}</div></div>'
        '<section class="card"><header><h2>Out-of-sample lift per trial</h2><p class="sub">Veto precision − base '
        "loss rate over the test spans, with its 95 % interval; left of the dashed line is worse than vetoing at "
        f"random.</p></header>{_lift_chart(r['trials'])}</section>"
        '<section class="card"><header><h2>Leaderboard</h2><p class="sub">Ranked by out-of-sample lift. Holm and '
        "BH adjust the lift's exact p-value for the number of trials; the deflated Sharpe ratio is the probability "
        "that the per-trade Sharpe ratio beats the best that luck gives that many trials.</p></header>"
        f"{html_table(head, rows, 'sweep-trials')}</section>"
        '<section class="card"><header><h2>Walk-forward</h2><p class="sub">In each window the trial with the best '
        "train lift, reported on the test span that follows.</p></header>"
        f"{html_table(_WINDOW_HEAD, wrows, 'sweep-windows')}"
        "</section><footer>tradevet sweep report · a trial's figures are read back from the replay it recorded; "
        "a signal belongs to the span it was created in, a trade to the span it closed in.</footer>"
        "</main></body></html>\n")
