"""The report's page: report data → one self-contained HTML document (charts, figures, tables, its one script).

A Content-Security-Policy admits no network and no script but the page's own (by hash), so even recorded text
that slipped through escaping could not run or fetch anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from engine.recorded.report.charts import (
    CHARTS,
    chart_cost,
    chart_equity,
    chart_latency,
    chart_mix,
    chart_precision,
    chart_rates,
    chart_timeline,
    vetoes_table,
)
from engine.recorded.report.svg import (
    esc,
    html_table,
    ms_text,
    num_text,
    when_text,
)
from engine.recorded.show import pct, pvalue, rate


def _random_text(value: dict[str, Any]) -> str:
    rnd = value.get("random")
    if not rnd:
        return ""
    cmp_ = rnd.get("compare", {}).get("pnl", {})
    return (f" · beats {num_text(cmp_.get('percentile'), 0)} % of {rnd['n']} random reviewers "
            f"(p {pvalue(cmp_.get('p_value'))})")


def _kpis(d: dict[str, Any]) -> str:
    c = d["card"]
    vp, base, rv = c["veto_precision"], c["base_loss_rate"], c.get("random_veto", {})
    cf = c.get("counterfactual", {})
    rates = c["rates"]
    good = vp.get("value") is not None and base.get("value") is not None and vp["value"] > base["value"]
    p = rv.get("p_value")
    lift = c.get("lift") or {}
    lci = lift.get("ci95")
    cards = [
        ("Lift over chance", "—" if lift.get("value") is None else f"{lift['value'] * 100:+.1f} pts",
         f"95 % CI {'—' if not lci else f'{lci[0] * 100:+.1f} to {lci[1] * 100:+.1f}'} · exact p {pvalue(p)} · "
         f"precision {pct(vp.get('value'))} vs base {pct(base.get('value'))}",
         "" if lift.get("value") is None else "good" if lift["value"] > 0 and p is not None and p < 0.05 else "bad"),
        ("Veto precision", pct(vp.get("value")),
         f"95 % CI {pct(vp['ci95'][0]) if vp.get('ci95') else '—'}–{pct(vp['ci95'][1]) if vp.get('ci95') else '—'}"
         f" · {vp['k']}/{vp['n']} scored vetoes", "good" if good and p is not None and p < 0.05 else ""),
        ("Base loss rate", pct(base.get("value")),
         f"random veto at the same rate: p-value {pvalue(p)}", ""),
        ("Realized PnL", num_text(c["pnl"].get("pnl"), sign=True),
         f"{num_text(c['pnl'].get('return_pct'), 2, True)} % · {c['pnl'].get('trades', 0)} trades",
         "good" if (c["pnl"].get("pnl") or 0) >= 0 else "bad"),
        ("Reviewer value", "—" if not cf.get("run_id") else num_text(cf.get("reviewer_value_pnl"), sign=True),
         (f"realized − reviewer-off replay ({num_text(cf.get('pnl'), sign=True)})" if cf.get("run_id") else
          "not replayed yet: tradevet value --run RUN") + _random_text(c.get("value") or {}),
         "" if not cf.get("run_id") else "good" if (cf.get("reviewer_value_pnl") or 0) >= 0 else "bad"),
        ("Fallthrough", pct(rates["fallthrough"].get("value")), "alarm above 5 %",
         "bad" if (rates["fallthrough"].get("value") or 0) > 0.05 else "good"),
        ("Fallback", pct(rates["fallback"].get("value"), 2), "target below 1 %",
         "bad" if (rates["fallback"].get("value") or 0) >= 0.01 else "good"),
        ("Cost", f"${c.get('cost', {}).get('usd', 0.0):,.2f}", f"{c.get('cost', {}).get('cache_hits', 0):,} cache hits",
         ""),
    ]
    return '<div class="kpis">' + "".join(
        f'<div class="kpi {cls}"><div class="kpi-label">{esc(k)}</div><div class="kpi-value">{esc(v)}</div>'
        f'<div class="kpi-sub">{esc(s)}</div></div>' for k, v, s, cls in cards) + "</div>"


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
        ("Veto precision (95 % CI)", rate(c["veto_precision"])),
        ("Base loss rate", rate(c["base_loss_rate"])),
        ("Random veto at the same rate", f"expected {pct(rv.get('expected'))}, 95 % range "
         f"{pct(rng[0]) if rng else '—'}–{pct(rng[1]) if rng else '—'}, p-value {pvalue(rv.get('p_value'))} "
         f"(one-sided exact hypergeometric)"),
        ("Accept precision", rate(c["accept_precision"])),
        ("Ambiguous outcomes (apart)", f"{amb.get('reviewed', 0)} reviewed, {amb.get('vetoes', 0)} vetoed; veto "
         f"precision counting them {rate(amb.get('veto_precision_with_ambiguous'))}"),
        ("Modify improvement", f"loss avoided {num_text(c['modify']['loss_avoided_pct'], 2, True)} % vs gain given up "
         f"{num_text(c['modify']['gain_given_up_pct'], 2, True)} % → net {num_text(c['modify']['net_pct'], 2, True)} % "
         f"over {mod.get('n', 0)} modifications ({mod.get('losers', 0)} losers, {mod.get('winners', 0)} winners)"),
        ("Fallthrough / fallback", f"{rate(c['rates']['fallthrough'])} / {rate(c['rates']['fallback'])}"),
        ("Cascade latency", f"p50 {ms_text(lat.get('p50_ms'))}, p95 {ms_text(lat.get('p95_ms'))}"),
        ("Cost", f"${cost.get('usd', 0.0):,.4f}; tokens in {cost.get('input_tokens', 0):,} / out "
                 f"{cost.get('output_tokens', 0):,}"),
        ("PnL: realized vs reviewer off (replay)", f"{num_text(c['pnl'].get('pnl'), sign=True)} vs "
         f"{num_text(cf.get('pnl'), sign=True)}" if cf.get("run_id") else "not replayed yet (tradevet value)"),
        (f"Trailing {tr.get('window_days', 14):g} days", f"veto precision {rate(tr.get('veto_precision'))}, base "
         f"{rate(tr.get('base_loss_rate'))}"),
    ]
    return ('<section class="card" id="figures"><header><h2>Scorecard</h2></header><table class="kv">'
            + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) + "</table></section>")


def _breakdown(d: dict[str, Any]) -> str:
    head = ["", "reviewed", "vetoes", "veto precision", "base loss rate", "p-value", "accept precision",
            "modify net %", "fallthrough", "fallback", "p50 / p95", "cost $"]
    parts = []
    for dim in ("tier", "strategy", "regime", "symbol"):
        rows = []
        for key, f in d["card"]["breakdown"].get(dim, {}).items():
            rows.append([key, f["reviewed"], f["vetoes"], rate(f["veto_precision"]), rate(f["base_loss_rate"]),
                         pvalue(f.get("p_value")), rate(f.get("accept_precision")),
                         num_text(f.get("modify_net_pct"), 2, True), pct((f.get("fallthrough") or {}).get("value")),
                         pct((f.get("fallback") or {}).get("value")),
                         f"{ms_text(f.get('latency_p50_ms'))} / {ms_text(f.get('latency_p95_ms'))}",
                         f"{f.get('cost_usd', 0.0):,.4f}"])
        parts.append(f"<h3>by {dim}</h3>" + html_table([dim, *head[1:]], rows, f"breakdown-{dim}"))
    return ('<section class="card" id="breakdown"><header><h2>Every figure by tier, strategy, regime and symbol'
            '</h2></header>' + "".join(parts) + "</section>")


def _analysis(d: dict[str, Any]) -> str:
    """Which context fields predict outcomes (``engine.recorded.analysis``), all signals."""
    a = d.get("analysis")
    if not a:
        return ""
    tests = {t["field"]: t for t in a["tests"] if t["scope"] == "all"}
    rows = []
    for name, buckets in a["buckets"].get("all", {}).items():
        t = tests.get(name) or {}
        for i, b in enumerate(buckets):
            lr = "—" if b["loss_rate"] is None else (
                f"{b['loss_rate'] * 100:.1f} % [{b['ci95'][0] * 100:.1f}–{b['ci95'][1] * 100:.1f}]")
            first = i == 0
            rows.append([name if first else "", b["label"], f"{b['scored']}/{b['reviewed']}", lr,
                         num_text(b["mean_r"], 2, True), b["ambiguous"],
                         pvalue(t.get("p_value")) if first else "", pvalue(t.get("q_value")) if first else "",
                         "informative" if first and t.get("informative") else ""])
    found = [f for f, t in tests.items() if t["informative"]]
    intro = (f"<p>Shadow-trade loss rate (Wilson 95 %) and mean R per bucket of each context field; {a['scored']} "
             f"scored signals, {a['ambiguous']} ambiguous apart. Test per field: chi-square, p from "
             f"{a['permutations']} seeded permutations; Benjamini–Hochberg q ≤ {a['alpha']:g} = informative. "
             f"Informative here: <b>{esc(', '.join(found) or 'none')}</b>.</p>")
    return ('<section class="card" id="analysis"><header><h2>Which context fields predict outcomes</h2></header>'
            + intro + html_table(["field", "bucket", "scored/reviewed", "loss rate", "mean R", "ambiguous", "p", "q",
                                  ""], rows, "analysis") + "</section>")


def _gate_warnings(d: dict[str, Any]) -> str:
    lines = d["card"].get("warnings") or []
    if not lines:
        return ""
    return ('<section class="card banner" id="gate-warnings"><header><h2>Gates that blocked nearly everything'
            '</h2></header><ul>' + "".join(f"<li>{esc(x)}</li>" for x in lines) + "</ul></section>")


def _retire_banner(d: dict[str, Any]) -> str:
    retire = d["card"].get("retire") or []
    if not retire:
        return ""
    items = "".join(f"<li><b>{esc(when_text(r['at_ms']))} UTC</b> — {esc(r['message'])}</li>" for r in retire)
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

CSS = """
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
.series{stroke-width:2}.series.reviewer-off,.series.base{stroke-width:1.6}
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
    span = f"{when_text(d['start_ms'])} → {when_text(d['end_ms'])} UTC" if d["start_ms"] is not None else "no reviews"
    meta = (f"status <b>{esc(run['status'])}</b> · reviewer mode <b>{esc(run['reviewer_mode'])}</b> · tiers "
            f"{esc(', '.join(str(t) for t in run['tiers']) or '—')} · {esc(span)} · "
            f"config <code>{esc(run['config_hash'])}"
            f"</code> · {esc(run['db'])} · generated {esc(d['generated_at'])}"
            f"<br>{esc(d['card'].get('account', {}).get('summary', ''))}")
    sections = [
        _retire_banner(d), _gate_warnings(d), _kpis(d),
        chart_equity(d),
        '<div class="grid2">', chart_precision(d), chart_rates(d), "</div>",
        chart_mix(d),
        '<div class="grid2">', chart_latency(d), chart_cost(d), "</div>",
        chart_timeline(d),
        vetoes_table("vetoes-best", "Best vetoes", "Vetoed signals whose shadow trade lost the most: the losses the "
                      "reviewer avoided. Rationales as the reviewer wrote them.", d["vetoes_best"]),
        vetoes_table("vetoes-worst", "Worst vetoes", "Vetoed signals whose shadow trade gained the most: the gains "
                      "the reviewer gave up.", d["vetoes_worst"]),
        _figures(d), _breakdown(d), _analysis(d),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{esc(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{esc(title)}</h1><div class=\"meta\">{meta}</div>"
        + "".join(sections)
        + "<footer>tradevet operations report · veto precision is judged by each signal's shadow trade (the signal "
          "simulated as emitted, net of fees); ambiguous outcomes are reported apart.</footer>"
        f"</main><script>{_SCRIPT}</script></body></html>\n"
    )
