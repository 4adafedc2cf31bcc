"""The operations report: self-contained, every recorded string escaped, and really rendered by a browser."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from engine.app import run_replay
from engine.cli import main
from engine.config import load_config
from engine.recorded.report import CHARTS, render_html, report_data

# What a compromised or confused model could write: it must reach the page as text, never as markup.
HOSTILE = ("</td></tr></table><script>document.body.setAttribute('data-pwned','1')</script>"
           "<img src=x onerror=\"document.body.setAttribute('data-pwned','2')\"> & \"quotes\"")
ERROR = "<svg onload=\"document.body.setAttribute('data-pwned','3')\">server said no"

REVIEWER = {
    "tiers": [
        {"name": "llm", "provider": "scripted",
         "breaker": {"failure_threshold": 3, "recovery_timeout_s": 0.01},
         "params": {"script": [
             {"raise": "server", "message": ERROR}, {"raise": "server", "message": ERROR},
             {"raise": "server", "message": ERROR},
             {"verdict": "veto", "confidence": 0.8, "rationale": HOSTILE, "cost_usd": 0.002,
              "input_tokens": 800, "output_tokens": 60},
             {"verdict": "accept", "confidence": 0.7, "rationale": "fine", "cost_usd": 0.002,
              "input_tokens": 800, "output_tokens": 30},
             {"verdict": "veto", "confidence": 0.8, "rationale": HOSTILE, "cost_usd": 0.002,
              "input_tokens": 800, "output_tokens": 60},
         ]}},
        {"name": "rules", "provider": "rules"},
    ],
}
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int, Path]:
    d = tmp_path_factory.mktemp("report")
    news = d / "news.jsonl"
    news.write_text("\n".join(json.dumps({"published_at": f"2025-01-0{day}T0{h}:30:00Z", "symbols": [sym],
                                          "headline": f"{sym} exchange hack <b>drains</b> wallets & \"more\"",
                                          "source": "wire"})
                              for day in (2, 3, 4, 5) for h in (1, 5, 9) for sym in ("BTC", "ETH", "SOL")) + "\n",
                    encoding="utf-8")
    url = f"sqlite:///{d / 'report.db'}"
    loaded = load_config(overrides={
        "run": {"db_url": url, "name": "hostile"}, "market": {"synthetic": {"bars": 1800}},
        "news": {"source": "file", "file": {"path": str(news)}}, "reviewer": REVIEWER,
        "scoring": {"retire": {"below": 1.0, "min_vetoes": 3, "window_days": 30}},
    }, env={})
    run_id = run_replay(loaded).run_id
    out = d / "report.html"
    assert main(["report", "--run", str(run_id), "--db", url, "--out", str(out)]) == 0
    return url, run_id, out


def _section(page: str, key: str) -> str:
    m = re.search(rf'<section[^>]*id="chart-{re.escape(key)}"[^>]*>(.*?)</section>', page, re.S)
    assert m is not None, f"chart {key} missing"
    return m.group(1)


def test_the_report_reads_the_run_once_and_shows_the_scorecard_of_score(run: tuple[str, int, Path],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.recorded.report import report_data
    from engine.recorded.scorecard import run_scorecard
    from storage import open_storage

    url, run_id, _ = run
    loads: list[dict[str, Any]] = []
    with open_storage(url) as store:
        real = store.reviewed

        def counted(*a: Any, **k: Any) -> Any:
            loads.append(k)
            return real(*a, **k)

        monkeypatch.setattr(store, "reviewed", counted)
        data = report_data(store, run_id)
        assert len(loads) == 1  # the packs are read and hash-checked once
        assert data["card"] == run_scorecard(store, run_id).to_dict()  # as `tradevet score` computes it
    assert len(loads) == 2 and loads[1].get("lean")


def test_every_chart_is_there_with_svg_content(run: tuple[str, int, Path]) -> None:
    page = run[2].read_text(encoding="utf-8")
    for key in CHARTS:
        body = _section(page, key)
        assert f'data-chart="{key}"' in page
        assert re.search(r"<svg[^>]*>.*<(path|rect|circle|polygon|line)\b", body, re.S), key
    assert 'id="retired"' in page and "shadow mode" in page
    timeline = _section(page, "timeline")
    assert "mark-retire" in timeline and "mark-breaker" in timeline
    assert "breaker llm" in timeline  # the lane of the tier whose breaker moved


def test_the_page_is_self_contained(run: tuple[str, int, Path]) -> None:
    page = run[2].read_text(encoding="utf-8")
    # nothing to fetch: no external script, stylesheet, image, font or frame; the only URL is the SVG namespace
    assert not re.search(r"<(link|iframe|object|embed|img)\b", page)
    assert re.findall(r"<script\b[^>]*>", page) == ["<script>"]
    urls = set(re.findall(r"https?://[^\s\"'<>]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp and "default-src &#x27;none&#x27;" in csp.group(1)


def test_recorded_text_is_escaped(run: tuple[str, int, Path]) -> None:
    page = run[2].read_text(encoding="utf-8")
    for raw in ("<script>document", "<img src=x", "<svg onload", "</td></tr></table><script"):
        assert raw not in page, raw
    assert "&lt;script&gt;document.body.setAttribute(&#x27;data-pwned&#x27;,&#x27;1&#x27;)&lt;/script&gt;" in page
    assert "&lt;svg onload=" in page  # the tier's error, in the event list
    best = _section(page, "vetoes-best") + _section(page, "vetoes-worst")
    assert "&lt;img src=x onerror=" in best  # the rationale of the vetoes, shown as text


def test_a_run_without_reviews_still_draws_every_chart(tmp_path: Path) -> None:
    from storage import open_storage

    store = open_storage(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        run_id = store.create_run("empty", "{}", "h", 1, "active", 1000.0)
        page = render_html(report_data(store, run_id))
    finally:
        store.close()
    for key in CHARTS:
        assert re.search(r"<svg[^>]*>.*<(path|rect|circle|line|text)\b", _section(page, key), re.S), key


def test_report_errors_are_one_line(run: tuple[str, int, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    url, _, _ = run
    assert main(["report", "--run", "nope", "--db", url, "--out", str(tmp_path / "r.html")]) == 4
    assert "no run 'nope'" in capsys.readouterr().err
    (tmp_path / "dir.html").mkdir()
    assert main(["report", "--run", "hostile", "--db", url, "--out", str(tmp_path / "dir.html")]) == 3
    assert "cannot write the report" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ a real browser


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """A minimal PNG decoder (8-bit RGB/RGBA, non-interlaced): width, height, unfiltered rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert header is not None
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 0xFF
            elif f == 2:
                line[x] = (line[x] + b) & 0xFF
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line if bpp == 3 else b"".join(line[i:i + 3] for i in range(0, stride, 4))))
        prev = line
    return width, height, rows


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args],
        capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium): "
                                                   "`apt-get install -y chromium` to run the browser check")
def test_the_report_renders_in_headless_chromium(run: tuple[str, int, Path], tmp_path: Path) -> None:
    page = run[2].resolve().as_uri()
    shot = tmp_path / "shot.png"
    done = _chromium([f"--screenshot={shot}", "--window-size=1400,2400", page], tmp_path / "profile-1")
    assert shot.exists(), done.stderr[-2000:]
    width, height, rows = _png_pixels(shot.read_bytes())
    assert (width, height) == (1400, 2400)
    # not blank: many colours, and brightness that varies across the page
    sample = [row[x:x + 3] for row in rows[::16] for x in range(0, len(row), 3 * 16)]
    assert len(set(sample)) > 40
    lum = [0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2] for p in sample]
    mean = sum(lum) / len(lum)
    assert sum((v - mean) ** 2 for v in lum) / len(lum) > 100

    dom = _chromium(["--dump-dom", page], tmp_path / "profile-2")
    html_out = dom.stdout
    log = done.stderr + dom.stderr
    assert "Uncaught" not in log, log[-3000:]
    assert "Content Security Policy" not in log, log[-3000:]  # nothing was blocked: nothing tried to run or load
    ready = re.search(r'<div id="report-ready"[^>]*>', html_out)
    assert ready, "the page's script did not run"
    assert f'data-charts="{len(CHARTS)}"' in ready.group(0) and 'data-missing=""' in ready.group(0)
    for key in CHARTS:
        body = _section(html_out, key)
        assert re.search(r"<svg[^>]*>.*<(path|rect|circle|polygon)\b", body, re.S), key
    assert not re.search(r"<body[^>]*data-pwned", html_out), "recorded text ran as script"
    assert not re.search(r"<img\b", html_out)
