"""Operations report: a recorded run → one self-contained HTML dashboard (inline SVG charts, no network).

``report_data`` gathers plain data from a run (scorecard, series, events, best and worst vetoes);
``render_html`` turns it into a page. Every chart is server-side SVG inside an element with a stable
``id`` and ``data-chart``; the page's one small script only checks that the charts are there and adds
``#report-ready`` (tests read it). Every recorded string (headlines, rationales, tier and symbol names,
event messages) is HTML-escaped, and a Content-Security-Policy admits no network and no script but
the page's own (by hash), so even text that slipped through could not run or fetch anything.
"""

from __future__ import annotations

from engine.recorded.report.charts import CHARTS
from engine.recorded.report.data import report_data, write_report
from engine.recorded.report.page import render_html

__all__ = ["CHARTS", "render_html", "report_data", "write_report"]
