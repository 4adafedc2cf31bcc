"""The read side over recorded runs, through the ``RunReader`` port only: a run read once (``stored``), the
scorecard (``scorecard``, over ``columns``), the backtest of verdict quality on recorded signals, signal
transfer (JSONL export and import), the report's series and page, and how figures are shown (``show``)."""

from __future__ import annotations

from engine import lazy

_EXPORTS = {
    "StoredRun": "stored", "load_stored": "stored",
    "SignalColumns": "columns", "VerdictColumns": "columns",
    "Rate": "scorecard", "Scorecard": "scorecard", "run_scorecard": "scorecard", "score": "scorecard",
    "score_columns": "scorecard",
    "band_series": "series", "realized_series": "series", "rolling_series": "series", "verdict_mix_series": "series",
    "BacktestResult": "backtest", "run_backtest": "backtest",
    "export_run": "transfer", "import_file": "transfer",
    "render_html": "report", "report_data": "report", "write_report": "report",
    "pct": "show", "pvalue": "show", "rate": "show",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy(__name__, _EXPORTS)
