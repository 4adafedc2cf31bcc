"""The report's data: a recorded run (through a ``RunReader``) → everything the page shows, as plain data; and the
page written to a file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from engine.config import stored_value
from engine.core.scored import is_finished
from engine.ports import RunReader
from engine.recorded.report.page import render_html
from engine.recorded.series import band_series, realized_series, rolling_series, verdict_mix_series
from engine.recorded.value import value_summary
from engine.types import OutcomeKind, VerdictKind

_MAX_POINTS = 900  # equity steps kept per line (the page stays small; the shape does not change)
_TOP_VETOES = 8


def report_data(reader: RunReader, run_id: int, *, window_days: float | None = None,
                points: int = 120) -> dict[str, Any]:
    """Everything the page shows, as plain data (JSON-serialisable). Raises: StorageError."""
    from engine.recorded.scorecard import run_scorecard
    from engine.recorded.stored import load_stored

    run = reader.get_run(run_id)
    rec = reader.records(run_id)
    # hash-checked; packs as scoring needs them, with their JSON for the feature analysis; read once
    stored = load_stored(reader, run_id, realized=True, keep_json=True)
    outcomes = stored.outcomes
    trades = rec.load_trades()
    events = rec.load_events()
    # the counterfactual replays' figures and equity steps, read once for the scorecard and the equity chart
    value = value_summary(reader, run_id, real_trades=trades, curves=True)
    card = run_scorecard(reader, run_id, stored=stored, trades=trades, events=events, value=value)
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
    realized = realized_series(trades, run.starting_equity)
    # the reviewer-off replay and the random band, from the counterfactual runs (``tradevet value``), if any
    curves = value.get("curves", {})
    off = list(curves.get("reviewer_off") or [])
    randoms = list(curves.get("random") or [])
    ends = [t for p in (realized, off, *randoms) for t, _ in p[-1:]]
    start_ms = min([*times, *(t for t, _ in realized[:1])]) if times else None
    end_ms = max([*times, *ends]) if times else None
    band = band_series(randoms, start_ms, end_ms, run.starting_equity) if randoms and start_ms is not None \
        and end_ms is not None else []
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
        "end_ms": end_ms,
        "equity": {"realized": _thin(realized), "reviewer_off": _thin(off), "random_band": band,
                   "random_n": len(randoms)},
        "mix": verdict_mix_series(reviews, buckets=60),
        "rolling": rolling_series(reviews, outcomes, window_ms=window_ms, points=points),
        "events": [{"kind": e.kind, "at_ms": e.at_ms, "subject": e.subject, "message": e.message} for e in events],
        "errors": [{"tier": t, "kind": k, "error": e, "count": n} for (t, k, e), n in errors.most_common(10)],
        "vetoes_best": best,
        "vetoes_worst": worst,
        "analysis": _analysis(reader, run_id, stored),
    }


def _analysis(reader: RunReader, run_id: int, stored: Any) -> dict[str, Any] | None:
    from engine.recorded.analysis import analyze

    a = analyze(reader, run_id, permutations=999, stored=stored)
    return a.to_dict() if a.reviewed else None


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
