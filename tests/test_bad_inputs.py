"""Bad inputs as a user meets them: one clear line and a stable exit code each, or a counted repair.

Every case goes through ``engine.cli.main`` (or, where a command would wait seconds, the function the
command calls) and asserts the exact line printed and the exit code: 2 config (and bad arguments), 3 data,
4 storage. Cases that touch a database also check that nothing already recorded is lost: a finished run
("first") is in the database before, and its rows, every table's row count and the list of runs are the
same after the failed command.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.cli import main
from engine.errors import StorageError, exit_code_for
from storage.db import SCHEMA_REVISION

ROOT = Path(__file__).resolve().parents[1]
CSV_HEADER = "timestamp,open,high,low,close,volume"
CSV_NAME = "BITTREX_ETH-BTC_5m.csv"
KNOWN_TOP = "run, market, strategies, gates, context, news, reviewer, policy, execution, scoring"
KNOWN_TIER = ("name, provider, model, api_key_env, required, base_url, timeout_s, max_concurrency, rpm, "
              "response_format, prompt, max_tokens, temperature, prices, breaker, budget, params")
KNOWN_STRATEGIES = "donchian_breakout, rsi_reversion, sma_cross"
KNOWN_GATES = "cooldown, correlation_cap, loss_streak, max_drawdown, max_open_positions, min_volume"
JSONL_EXAMPLE = ('{"published_at": "2025-01-01T10:00:00Z", "symbols": ["BTC"], "headline": "...", '
                 '"source": "..."}')


# ------------------------------------------------------------------------------------------ helpers


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _run(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    """(exit code, everything printed on stderr, everything printed on stdout)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.err, out.out


def _error(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str]:
    """(exit code, the one line printed): a failing command prints exactly one line, nothing else."""
    code, err, _ = _run(capsys, *args)
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}: {err!r}"
    assert code != 0
    return code, lines[0]


def _db_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _snapshot(url: str) -> dict[str, Any]:
    """What must survive a failed command: every run row, whole-database row counts, the first run's ledger."""
    from engine.drivers.replay import fills_fingerprint
    from storage import open_storage

    with open_storage(url, create=False) as store:
        runs = [(r.id, r.name, r.status, r.config_hash, r.last_slice_ms) for r in store.list_runs()]
        rec = store.recorder(runs[0][0])
        return {"runs": runs, "counts": store.table_counts(), "first": store.table_counts(runs[0][0]),
                "fills": fills_fingerprint(rec.load_fills()), "trades": rec.load_trades()}


@pytest.fixture(scope="module")
def _template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database holding one finished run named "first" (built once, copied per test)."""
    from engine.app import run_replay
    from engine.config import load_config

    path = tmp_path_factory.mktemp("template") / "tv.db"
    res = run_replay(load_config(overrides={"run": {"name": "first", "db_url": _db_url(path)},
                                            "market": {"synthetic": {"bars": 300}}}, env={}))
    assert res.stats.signals > 0
    return path


@pytest.fixture
def db(tmp_path: Path, _template_db: Path) -> Iterator[tuple[str, Path]]:
    """(url, path) of a copy of the template database; asserts its first run and runs survived the test."""
    path = tmp_path / "tv.db"
    shutil.copyfile(_template_db, path)
    url = _db_url(path)
    before = _snapshot(url)
    assert [r[1:3] for r in before["runs"]] == [("first", "finished")]
    yield url, path
    after = _snapshot(url)
    assert after["first"] == before["first"] and after["fills"] == before["fills"]
    assert after["trades"] == before["trades"]
    assert after["runs"][0] == before["runs"][0]


def _assert_nothing_added(url: str, before: dict[str, Any]) -> None:
    after = _snapshot(url)
    assert after["runs"] == before["runs"], "a failed command must not leave a run behind"
    assert after["counts"] == before["counts"]


# ================================================================================== configuration


CONFIG_CASES: list[tuple[str, str, str]] = [
    # (id, YAML, the message after "error: <file>: ")
    ("malformed-yaml", "run: {name: [unclosed\n",
     "malformed YAML: line 2, column 1: expected ',' or ']', but got '<stream end>'"),
    ("tab-indent", "run:\n\tname: x\n",
     "malformed YAML: line 2, column 1: found character '\\t' that cannot start any token"),
    ("duplicate-section", "reviewer: {mode: shadow}\nrun: {name: a}\nreviewer: {deadline_s: 5}\n",
     "malformed YAML: line 3, column 1: duplicate key 'reviewer' (first given on line 1)"),
    ("duplicate-key", "run: {name: a, name: b}\n",
     "malformed YAML: line 1, column 16: duplicate key 'name' (first given on line 1)"),
    ("top-level-list", "- run\n- market\n", "expected a mapping at the top level (got list)"),
    ("wrong-type-number", "execution: {starting_equity: lots}\n",
     "execution.starting_equity: expected a number (got 'lots')"),
    ("wrong-type-int", "market: {synthetic: {bars: 1.5}}\n", "market.synthetic.bars: expected an integer (got 1.5)"),
    ("wrong-type-bool", "scoring: {retire: {enabled: maybe}}\n",
     "scoring.retire.enabled: expected true or false (got 'maybe')"),
    ("account-unknown", "execution: {account: netted}\n",
     "execution.account: must be one of 'netting' or 'hedging' (got 'netted')"),
    ("market-type-unknown", "market: {type: perpetual}\n",
     "market.type: must be one of 'auto', 'spot', 'margin' or 'futures' (got 'perpetual')"),
    ("allow-short-retired", "execution: {allow_short: true}\n",
     "execution.allow_short: replaced by market.type: spot refuses short signals, margin and futures allow them "
     "(got allow_short: True)"),
    ("wrong-type-list", "market: {symbols: BTC/USDT}\n", "market.symbols: expected a list (got 'BTC/USDT')"),
    ("wrong-type-mapping", "strategies: {id: x}\n", "strategies: expected a list (got {'id': 'x'})"),
    ("out-of-range", "reviewer: {tiers: [{name: x, provider: anthropic, model: m, timeout_s: -1}]}\n",
     "reviewer.tiers[0].timeout_s: must be > 0 (got -1)"),
    ("unknown-key", "executon: {fee_bps: 1}\n",
     f"executon: unknown key (known keys: {KNOWN_TOP}); did you mean 'execution'?"),
    ("unknown-nested-key", "reviewer: {tiers: [{name: r, provider: rules, timeout: 3}]}\n",
     f"reviewer.tiers[0].timeout: unknown key (known keys: {KNOWN_TIER}); did you mean 'timeout_s'?"),
    ("min-size-above-max", "policy: {min_size_pct: 60, max_size_pct: 50}\n",
     "policy: min_size_pct must be <= max_size_pct (got 60.0 > 50.0)"),
    ("duplicate-tier-names", "reviewer: {tiers: [{name: r, provider: rules}, {name: r, provider: rules}]}\n",
     "reviewer.tiers: tier names must be unique (got 'r' twice)"),
    ("duplicate-strategy-ids", "strategies: [{id: x, kind: sma_cross}, {id: x, kind: rsi_reversion}]\n",
     "strategies: strategy ids must be unique (got x more than once)"),
    ("strategy-symbol-not-traded", "strategies: [{id: x, kind: sma_cross, symbols: [XRP/USDT]}]\n",
     "strategies[0].symbols: ['XRP/USDT'] not in market.symbols ['BTC/USDT', 'ETH/USDT', 'SOL/USDT']"),
    ("missing-env-var", "run: {db_url: 'postgresql+psycopg://u:${TV_BAD_INPUT_PW}@127.0.0.1/db'}\n",
     "run.db_url: environment variable TV_BAD_INPUT_PW is not set (expected it to hold the value of run.db_url)"),
    ("required-tier-without-key",
     "reviewer: {tiers: [{name: s, provider: anthropic, model: m, api_key_env: TV_BAD_INPUT_KEY, required: true},"
     " {name: rules, provider: rules}]}\n",
     "reviewer.tiers[0].api_key_env: environment variable TV_BAD_INPUT_KEY is not set (tier 's' is required)"),
    ("bad-timeframe", "market: {timeframe: 5x}\n",
     "market.timeframe: expected a number and a unit s/m/h/d/w such as '5m' (got '5x')"),
    ("zero-timeframe", "market: {timeframe: 0m}\n",
     "market.timeframe: expected a number and a unit s/m/h/d/w such as '5m' (got '0m')"),
    ("bad-start-time", "market: {synthetic: {start: yesterday}}\n",
     "market.synthetic.start: expected an ISO 8601 time such as 2025-01-01T00:00:00Z (got 'yesterday')"),
]


@pytest.mark.parametrize(("yaml_text", "message"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_config_error_is_one_line_naming_file_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch, yaml_text: str,
                                                      message: str) -> None:
    monkeypatch.delenv("TV_BAD_INPUT_PW", raising=False)
    monkeypatch.delenv("TV_BAD_INPUT_KEY", raising=False)
    f = _write(tmp_path / "bad.yaml", yaml_text)
    assert _error(capsys, "config", "check", f) == (2, f"error: {f}: {message}")


PLUGIN_CASES: list[tuple[str, str, str]] = [
    # (id, YAML, the message after the file's name): plug-in errors name the file and the list entry
    ("unknown-strategy-kind", "strategies: [{id: x, kind: sma_cros}]\n",
     f"strategies[0].kind: unknown strategy kind 'sma_cros' (known: {KNOWN_STRATEGIES}); did you mean 'sma_cross'?"),
    ("unknown-gate-kind", "gates: [{kind: cooldwn}]\n",
     f"gates[0].kind: unknown gate kind 'cooldwn' (known: {KNOWN_GATES}); did you mean 'cooldown'?"),
    ("strategy-params-inconsistent", "strategies: [{id: x, kind: sma_cross, params: {fast: 50, slow: 10}}]\n",
     "strategies[0].params: fast must be < slow (got fast=50, slow=10)"),
    ("strategy-param-out-of-range", "strategies: [{id: x, kind: sma_cross, params: {fast: -1}}]\n",
     "strategies[0].params.fast: must be >= 1 (got -1)"),
    ("strategy-param-unknown", "strategies: [{id: x, kind: sma_cross, params: {fastt: 3}}]\n",
     "strategies[0].params.fastt: unknown key (known keys: atr_period, atr_stop, rr, size_hint, fast, slow); "
     "did you mean 'fast'?"),
    ("strategy-module-missing", "strategies: [{id: x, kind: 'no_such_module_tv:Strategy'}]\n",
     "strategies[0].kind: cannot import module 'no_such_module_tv' for strategy kind "
     "'no_such_module_tv:Strategy' (No module named 'no_such_module_tv')"),
    ("gate-param-out-of-range", "gates: [{kind: cooldown, params: {bars: -2}}]\n",
     "gates[0].params.bars: must be >= 1 (got -2)"),
]


@pytest.mark.parametrize(("yaml_text", "message"), [c[1:] for c in PLUGIN_CASES], ids=[c[0] for c in PLUGIN_CASES])
def test_plugin_error_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str,
                                  message: str) -> None:
    f = _write(tmp_path / "plug.yaml", yaml_text)
    assert _error(capsys, "config", "check", f) == (2, f"error: {f}: {message}")


def test_a_plugin_error_names_the_file_that_set_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gates = _write(tmp_path / "gates.yaml", "gates: [{kind: cooldown, params: {bars: 0}}]\n")
    strategies = _write(tmp_path / "strategies.yaml", "strategies: [{id: x, kind: sma_cross, params: {fast: 0}}]\n")
    assert _error(capsys, "config", "check", gates, strategies) == (
        2, f"error: {strategies}: strategies[0].params.fast: must be >= 1 (got 0)")
    ok = _write(tmp_path / "ok.yaml", "strategies: [{id: x, kind: sma_cross}]\n")
    assert _error(capsys, "config", "check", gates, ok) == (2, f"error: {gates}: gates[0].params.bars: must be >= 1 "
                                                               "(got 0)")


@pytest.mark.parametrize(("yaml_text", "message"), [c[1:] for c in PLUGIN_CASES[:3]],
                         ids=[c[0] for c in PLUGIN_CASES[:3]])
def test_paper_with_a_bad_plugin_records_nothing(db: tuple[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str], yaml_text: str,
                                                 message: str) -> None:
    """A config error found while wiring plug-ins leaves no (failed) run behind and the first run intact."""
    url, _ = db
    before = _snapshot(url)
    f = _write(tmp_path / "plug.yaml", f"run: {{name: second, db_url: '{url}'}}\n" + yaml_text)
    assert _error(capsys, "paper", "-c", f, "--no-progress") == (2, f"error: {f}: {message}")
    _assert_nothing_added(url, before)


def test_unknown_tier_provider_fails_paper_and_records_nothing(db: tuple[str, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = db
    before = _snapshot(url)
    f = _write(tmp_path / "tier.yaml", f"run: {{name: second, db_url: '{url}'}}\n"
               "reviewer: {tiers: [{name: x, provider: anthropik}]}\n")
    assert _error(capsys, "paper", "-c", f, "--no-progress") == (
        2, f"error: {f}: reviewer.tiers[0].provider: unknown tier provider 'anthropik' (known: anthropic, chance, "
           "openai, openai_compatible, rules, scripted); did you mean 'anthropic'?")
    _assert_nothing_added(url, before)


def test_config_check_catches_an_unknown_tier_provider(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """(It said "ok" to a config `paper` then refused: config check built strategies and gates only.)"""
    f = _write(tmp_path / "tier.yaml", "reviewer: {tiers: [{name: x, provider: anthropik}]}\n")
    assert _error(capsys, "config", "check", f) == (
        2, f"error: {f}: reviewer.tiers[0].provider: unknown tier provider 'anthropik' (known: anthropic, chance, "
           "openai, openai_compatible, rules, scripted); did you mean 'anthropic'?")


def test_missing_non_required_key_disables_the_tier_with_one_warning(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TV_BAD_INPUT_KEY", raising=False)
    f = _write(tmp_path / "opt.yaml", "reviewer: {tiers: [{name: s, provider: anthropic, model: m, "
                                      "api_key_env: TV_BAD_INPUT_KEY}, {name: rules, provider: rules}]}\n")
    code, err, _ = _run(capsys, "config", "check", f)
    assert code == 0
    assert err == "warning: tier 's' disabled: environment variable TV_BAD_INPUT_KEY is not set\n"


def test_config_file_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    assert _error(capsys, "config", "check", missing) == (2, f"error: {missing}: config file not found")
    assert _error(capsys, "config", "check", tmp_path) == (2, f"error: {tmp_path}: expected a YAML file "
                                                              "(got a directory)")
    latin = tmp_path / "latin1.yaml"
    latin.write_bytes(b"run: {name: caf\xe9}\n")
    assert _error(capsys, "config", "check", latin) == (2, f"error: {latin}: expected UTF-8 text "
                                                           "(invalid continuation byte at byte 15)")


def test_later_file_is_blamed_for_the_key_it_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _write(tmp_path / "a.yaml", "execution: {fee_bps: 5}\n")
    b = _write(tmp_path / "b.yaml", "execution: {fee_bps: -5}\n")
    assert _error(capsys, "config", "check", a, b) == (2, f"error: {b}: execution.fee_bps: must be >= 0 (got -5)")


# ==================================================================================== market files


def _iso(i: int) -> str:
    from datetime import UTC, datetime, timedelta

    t = datetime(2018, 1, 10, 4, 55, tzinfo=UTC) + timedelta(minutes=5 * i)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _rows(n: int, *, skip: tuple[int, ...] = ()) -> list[str]:
    out = []
    for i in range(n):
        if i in skip:
            continue
        o = 0.05 + 0.0001 * (i % 7)
        out.append(f"{_iso(i)},{o:.4f},{o * 1.01:.6f},{o * 0.99:.6f},{o * 1.002:.6f},{10 + i}")
    return out


def _files_config(tmp_path: Path, url: str, data_dir: Path, *, name: str = "files") -> Path:
    return _write(tmp_path / "files.yaml", f"run: {{name: {name}, db_url: '{url}'}}\n"
                  f"market: {{source: files, symbols: [ETH/BTC], timeframe: 5m, files: {{dir: '{data_dir}'}}}}\n"
                  "news: {source: none}\n"
                  "gates: [{kind: min_volume, params: {min_quote_volume_24h: 1}}]\n")


def _csv(data_dir: Path, rows: list[str], *, header: str = CSV_HEADER, name: str = CSV_NAME) -> Path:
    return _write(data_dir / name, "\n".join([header, *rows]) + "\n")


def _replace(rows: list[str], line: int, row: str) -> list[str]:
    """``rows`` with file line ``line`` (the header is line 1) replaced by ``row``."""
    out = list(rows)
    out[line - 2] = row
    return out


ROWS = _rows(40)
FILE_CASES: list[tuple[str, str | None, str]] = [
    # (id, file content (None: no file), message after "error: ")
    ("empty-file", "", f"{CSV_NAME}: empty file (expected the header '{CSV_HEADER}' and at least one bar)"),
    ("header-only", CSV_HEADER + "\n", f"{CSV_NAME}: empty file (the header '{CSV_HEADER}' and no bars)"),
    ("wrong-columns", "time,o,h,l,c,v\n" + "\n".join(ROWS) + "\n",
     f"{CSV_NAME}:1: expected the header '{CSV_HEADER}', found 'time,o,h,l,c,v' (missing timestamp, open, high, "
     "low, close, volume)"),
    ("missing-column", "timestamp,open,high,low,close\n" + "\n".join(r.rsplit(",", 1)[0] for r in ROWS) + "\n",
     f"{CSV_NAME}:1: expected the header '{CSV_HEADER}', found 'timestamp,open,high,low,close' (missing volume)"),
    ("nan", "\n".join([CSV_HEADER, *_replace(ROWS, 7, f"{_iso(5)},0.05,0.051,0.049,NaN,3")]) + "\n",
     f"{CSV_NAME}:7: expected a number in column 'close', found an empty or NaN value"),
    ("empty-value", "\n".join([CSV_HEADER, *_replace(ROWS, 5, f"{_iso(3)},0.05,,0.049,0.05,3")]) + "\n",
     f"{CSV_NAME}:5: expected a number in column 'high', found an empty or NaN value"),
    ("zero-price", "\n".join([CSV_HEADER, *_replace(ROWS, 4, f"{_iso(2)},0.05,0.051,0,0.05,3")]) + "\n",
     f"{CSV_NAME}:4: expected prices > 0, found low=0.0"),
    ("negative-price", "\n".join([CSV_HEADER, *_replace(ROWS, 9, f"{_iso(7)},-0.05,0.051,0.049,0.05,3")]) + "\n",
     f"{CSV_NAME}:9: expected prices > 0, found open=-0.05"),
    ("high-below-low", "\n".join([CSV_HEADER, *_replace(ROWS, 3, f"{_iso(1)},0.05,0.049,0.051,0.05,3")]) + "\n",
     f"{CSV_NAME}:3: expected high >= low, found high=0.049 < low=0.051"),
    ("negative-volume", "\n".join([CSV_HEADER, *_replace(ROWS, 6, f"{_iso(4)},0.05,0.051,0.049,0.05,-1")]) + "\n",
     f"{CSV_NAME}:6: expected volume >= 0, found volume=-1.0"),
    ("duplicate-timestamp", "\n".join([CSV_HEADER, *ROWS[:5], ROWS[4].rsplit(",", 1)[0] + ",999", *ROWS[5:]]) + "\n",
     f"{CSV_NAME}:7: duplicate timestamp {_iso(4)} with values different from line 6"),
    ("unordered-timestamps", "\n".join([CSV_HEADER, *ROWS[:3], ROWS[4], ROWS[3], *ROWS[5:]]) + "\n",
     f"{CSV_NAME}:6: expected timestamps in increasing order, found {_iso(3)} after {_iso(4)} (line 5)"),
    ("huge-gap", "\n".join([CSV_HEADER, *ROWS[:10], *_rows(400)[310:]]) + "\n",
     f"{CSV_NAME}:12: expected at most 288 missing bars in a row (market.files.max_gap_bars), found a gap of "
     f"300 bars (1d1h) after {_iso(9)}"),
    ("mixed-timeframes", "\n".join([CSV_HEADER, *ROWS[:10], "2018-01-10T05:46:00Z" + ROWS[10][20:],
                                    *ROWS[11:]]) + "\n",
     f"{CSV_NAME}:12: expected a bar every 5m (on the grid of the first bar, {_iso(0)}), found 2018-01-10T05:46:00Z, "
     "6m after the previous bar (mixed timeframes?)"),
    ("epoch-seconds", "\n".join([CSV_HEADER, *[f"{1515560100 + 300 * i}," + r.split(",", 1)[1]
                                              for i, r in enumerate(ROWS)]]) + "\n",
     f"{CSV_NAME}:2: expected epoch milliseconds in column 'timestamp', found 1515560100 (before 1973: seconds "
     "instead of milliseconds?)"),
    ("bad-timestamp", "\n".join([CSV_HEADER, *_replace(ROWS, 8, "yesterday" + ROWS[6][20:])]) + "\n",
     f"{CSV_NAME}:8: expected an ISO 8601 UTC time like 2018-01-10T04:55:00Z or epoch milliseconds in column "
     "'timestamp', found 'yesterday'"),
    ("too-many-fields", "\n".join([CSV_HEADER, *_replace(ROWS, 4, ROWS[2] + ",7")]) + "\n",
     f"{CSV_NAME}:4: expected 6 comma-separated fields ({CSV_HEADER}), found 7"),
]


@pytest.mark.parametrize(("content", "message"), [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_bad_market_file_is_a_data_error(db: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         content: str, message: str) -> None:
    url, _ = db
    before = _snapshot(url)
    data = tmp_path / "data"
    _write(data / CSV_NAME, content)
    config = _files_config(tmp_path, url, data)
    assert _error(capsys, "paper", "-c", config, "--no-progress") == (3, f"error: {message}")
    _assert_nothing_added(url, before)


def test_non_utf8_market_file_names_the_line(db: tuple[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = db
    data = tmp_path / "data"
    path = _csv(data, ROWS)
    path.write_bytes(path.read_bytes().replace(b"\n" + ROWS[3].encode(), b"\n" + ROWS[3].encode() + b"\xff", 1))
    assert _error(capsys, "paper", "-c", _files_config(tmp_path, url, data), "--no-progress") == (
        3, f"error: {CSV_NAME}:5: expected UTF-8 text, found the byte 0xff")


def test_missing_data_directory(db: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = db
    missing = tmp_path / "no-such-dir"
    assert _error(capsys, "paper", "-c", _files_config(tmp_path, url, missing), "--no-progress") == (
        3, f"error: market.files.dir: directory '{missing}' does not exist")


def test_no_file_for_a_symbol_lists_what_is_there(db: tuple[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = db
    data = tmp_path / "data"
    _csv(data, ROWS, name="BITTREX_LTC-BTC_5m.csv")
    _csv(data, ROWS, name="BITTREX_ETH-BTC_1m.csv")
    assert _error(capsys, "paper", "-c", _files_config(tmp_path, url, data), "--no-progress") == (
        3, f"error: market.files.dir: no file for ETH/BTC at 5m in '{data}' (expected a name like "
           "VENUE_ETH-BTC_5m.csv); files for ETH-BTC: BITTREX_ETH-BTC_1m.csv")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _error(capsys, "paper", "-c", _files_config(tmp_path, url, empty), "--no-progress") == (
        3, f"error: market.files.dir: no file for ETH/BTC at 5m in '{empty}' (expected a name like "
           "VENUE_ETH-BTC_5m.csv); found: no .csv files")


def test_duplicate_rows_and_small_gaps_are_counted_repairs(db: tuple[str, Path], tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str],
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Exact duplicate rows are dropped and short holes filled: the run goes on, each repair counted and logged."""
    url, _ = db
    data = tmp_path / "data"
    rows = _rows(300, skip=(50, 51, 120))
    rows.insert(10, rows[10])
    _csv(data, rows)
    with caplog.at_level("WARNING", logger="tradevet.data"):
        code, err, out = _run(capsys, "paper", "-c", _files_config(tmp_path, url, data), "--no-progress", "--json")
    assert code == 0, err
    assert [r.getMessage() for r in caplog.records if r.name == "tradevet.data"] == [
        f"{CSV_NAME}: dropped 1 exact duplicate row; filled 3 missing bars in 2 gaps (flat, zero volume, at the "
        "previous close)"]
    out = json.loads(out)
    from storage import open_storage

    with open_storage(url) as store:
        assert store.table_counts(out["run_id"])["bars"] == 300  # 298 real + 3 filled - 1 duplicate


# ============================================================================================ news


def _news_config(tmp_path: Path, url: str, news: Path, *, bars: int = 300, name: str = "news") -> Path:
    return _write(tmp_path / "news.yaml", f"run: {{name: {name}, db_url: '{url}'}}\n"
                  f"market: {{synthetic: {{bars: {bars}}}}}\n"
                  f"news: {{source: file, file: {{path: '{news}'}}}}\n")


def _news_line(minutes: int, headline: str, symbols: tuple[str, ...] = ("BTC", "ETH", "SOL")) -> str:
    from datetime import UTC, datetime, timedelta

    t = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    return json.dumps({"published_at": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "symbols": list(symbols),
                       "headline": headline, "source": "wire"})


def test_malformed_news_line_is_a_data_error(db: tuple[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = db
    before = _snapshot(url)
    bad = '{"published_at": "2025-01-01T02:00:00Z", "symbols": ["BTC"] "headline": "x"}'
    news = _write(tmp_path / "news.jsonl", "\n".join([_news_line(30, "BTC rallies"), bad]) + "\n")
    assert _error(capsys, "paper", "-c", _news_config(tmp_path, url, news), "--no-progress") == (
        3, f"error: news.jsonl:2: expected a JSON object like {JSONL_EXAMPLE}, found invalid JSON (Expecting ',' "
           f"delimiter at column 61): {bad[:60]!r}")
    _assert_nothing_added(url, before)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('["BTC", "up"]', f"expected a JSON object like {JSONL_EXAMPLE}, found [\"BTC\", \"up\"]"),
        ('{"published_at": "2025-01-01T02:00:00Z", "symbols": ["BTC"]}',
         "expected the key 'headline' (keys: published_at, symbols, headline, source), found only "
         "'published_at', 'symbols'"),
        ('{"published_at": "2025-01-01T02:00:00", "symbols": ["BTC"], "headline": "x"}',
         "published_at: expected a time with a zone like 2025-01-01T10:00:00Z, found \"2025-01-01T02:00:00\" "
         "(no zone)"),
        ('{"published_at": 1735689600, "symbols": ["BTC"], "headline": "x"}',
         "published_at: expected epoch milliseconds or an ISO 8601 UTC time, found 1735689600 (seconds instead "
         "of milliseconds?)"),
        ('{"published_at": "2025-01-01T02:00:00Z", "symbols": "BTC", "headline": "x"}',
         "symbols: expected a list of symbols like [\"BTC\", \"ETH/USDT\"], found \"BTC\""),
        ('{"published_at": "2025-01-01T02:00:00Z", "symbols": ["BTC"], "headline": ""}',
         "headline: expected a non-empty string, found \"\""),
    ],
    ids=["not-an-object", "missing-key", "no-zone", "epoch-seconds", "symbols-not-a-list", "empty-headline"],
)
def test_bad_news_line_names_file_and_line(db: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           line: str, message: str) -> None:
    url, _ = db
    news = _write(tmp_path / "news.jsonl", "\n".join([_news_line(30, "BTC rallies"), "", line]) + "\n")
    assert _error(capsys, "paper", "-c", _news_config(tmp_path, url, news), "--no-progress") == (
        3, f"error: news.jsonl:3: {message}")


def test_missing_news_file(db: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = db
    before = _snapshot(url)
    missing = tmp_path / "none.jsonl"
    assert _error(capsys, "paper", "-c", _news_config(tmp_path, url, missing), "--no-progress") == (
        3, f"error: news.file.path: file '{missing}' does not exist")
    _assert_nothing_added(url, before)


def test_news_file_source_without_a_path(db: tuple[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = db
    before = _snapshot(url)
    f = _write(tmp_path / "n.yaml", f"run: {{name: news, db_url: '{url}'}}\nnews: {{source: file}}\n")
    assert _error(capsys, "paper", "-c", f, "--no-progress") == (
        2, f"error: {f}: news.file.path: required when news.source is 'file' (a JSONL file with published_at, symbols, "
           "headline, source)")
    _assert_nothing_added(url, before)


def test_giant_headlines_are_truncated_in_context_packs(db: tuple[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = db
    giant = "Exchange hack drains hot wallet " + "and more details follow " * 4_000  # ~100k characters
    news = _write(tmp_path / "news.jsonl", "\n".join(_news_line(45 * i, f"{i} {giant}") for i in range(60)) + "\n")
    code, err, out = _run(capsys, "paper", "-c", _news_config(tmp_path, url, news, bars=700), "--no-progress",
                          "--json")
    assert code == 0, err
    run_id = json.loads(out)["run_id"]
    from storage import open_storage

    with open_storage(url) as store:
        packs = [r.pack for r in store.recorder(run_id).load_reviews()]
    flags = [f for p in packs for f in p.news]
    assert len(flags) > 10, "the giant headlines should have reached some packs"
    assert all(len(f.headline) <= 160 and f.headline.endswith("…") for f in flags)
    assert all(len(p.json) < 20_000 for p in packs)


def test_non_utf8_news_lines_are_a_counted_repair(db: tuple[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    url, _ = db
    news = tmp_path / "news.jsonl"
    lines = [_news_line(30 * i, f"Token {i} listing news") for i in range(10)]
    lines[3] = lines[3].replace("listing", "listing caf\udce9", 1)  # a lone Latin-1 byte after encoding below
    news.write_bytes("\n".join(lines).encode("utf-8", errors="surrogateescape") + b"\n")
    with caplog.at_level("WARNING", logger="tradevet.data"):
        code, err, _ = _run(capsys, "paper", "-c", _news_config(tmp_path, url, news), "--no-progress", "--json")
    assert code == 0, err
    assert [r.getMessage() for r in caplog.records if r.name == "tradevet.data"] == [
        "news.jsonl: 10 news items loaded; repaired non utf8 lines: 1"]
    from engine.inputs.news import FileNewsSource

    src = FileNewsSource(news)
    assert src.repairs == {"non_utf8_lines": 1}
    assert [n.headline for n in src.all() if "\ufffd" in n.headline] == ["Token 3 listing caf\ufffd news"]


# ======================================================================================== database


def test_locked_database_is_a_storage_error_and_loses_nothing(db: tuple[str, Path]) -> None:
    """Another process holds the write lock: one line naming the URL, exit code 4, no half-made run."""
    from engine.app import run_replay
    from engine.config import load_config
    from storage import open_storage

    url, path = db
    before = _snapshot(url)
    loaded = load_config(overrides={"run": {"name": "second", "db_url": url},
                                    "market": {"synthetic": {"bars": 300}}}, env={})
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        store = open_storage(url, busy_timeout_ms=100)
        try:
            with pytest.raises(StorageError) as e:
                run_replay(loaded, storage=store)
        finally:
            store.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert str(e.value) == f"{url}: cannot create run 'second': database is locked by another process (gave up " \
                           "after waiting 100 ms)"
    assert exit_code_for(e.value) == 4
    _assert_nothing_added(url, before)
    assert run_replay(loaded).run_id == 2  # and once the lock is gone, the same command works


def test_locked_database_at_restart_keeps_the_run_resumable(db: tuple[str, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupted run whose restart fails while setting up (the database is locked) stays resumable."""
    from engine.app import run_replay
    from engine.config import load_config
    from storage import open_storage

    url, path = db
    f = _write(tmp_path / "l.yaml", f"run: {{name: second, db_url: '{url}'}}\nmarket: {{synthetic: {{bars: 400}}}}\n")
    _interrupt(f, 200, monkeypatch)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with open_storage(url, busy_timeout_ms=100) as store, pytest.raises(StorageError) as e:
            run_replay(load_config([f]), storage=store)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert str(e.value) == (f"{url}: cannot set the status of run 2: database is locked by another process (gave up "
                            "after waiting 100 ms)")
    with open_storage(url) as store:
        assert store.get_run(2).status == "stopped"
    assert run_replay(load_config([f])).run_id == 2  # resumed, not started over


def _interrupt(config: Path, at_slice: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``config`` in-process and stop it with a Ctrl-C after ``at_slice`` slices (status "stopped")."""
    import engine.app as app
    from engine.config import load_config

    real = app.build_feed

    class Cut:
        def __init__(self, feed: Any) -> None:
            self.feed = feed

        def __getattr__(self, name: str) -> Any:
            return getattr(self.feed, name)

        def slices(self) -> Iterator[Any]:
            for i, s in enumerate(self.feed.slices()):
                if i == at_slice:
                    raise KeyboardInterrupt
                yield s

    with monkeypatch.context() as m:
        m.setattr(app, "build_feed", lambda lc: Cut(real(lc)))
        with pytest.raises(KeyboardInterrupt):
            app.run_replay(load_config([config]))


def test_busy_metrics_port_keeps_an_interrupted_run_resumable(db: tuple[str, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = db
    from storage import open_storage

    f = _write(tmp_path / "m.yaml", f"run: {{name: second, db_url: '{url}'}}\nmarket: {{synthetic: {{bars: 400}}}}\n")
    _interrupt(f, 150, monkeypatch)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert _error(capsys, "paper", "-c", f, "--no-progress", "--metrics-port", port) == (
            2, f"error: metrics port {port} on 127.0.0.1: cannot listen (Address already in use)")
    with open_storage(url) as store:
        assert [(r.id, r.status) for r in store.list_runs()] == [(1, "finished"), (2, "stopped")]
    code, err, out = _run(capsys, "paper", "-c", f, "--no-progress", "--json")
    assert code == 0, err
    assert json.loads(out)["run_id"] == 2  # resumed, not started over
    with open_storage(url) as store:
        assert [(r.id, r.status) for r in store.list_runs()] == [(1, "finished"), (2, "finished")]


def _chattr(path: Path, flag: str) -> bool:
    tool = shutil.which("chattr")
    if tool is None:
        return False
    return subprocess.run([tool, flag, str(path)], capture_output=True, check=False).returncode == 0


def test_read_only_database_file_is_a_storage_error(db: tuple[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    url, path = db
    if os.geteuid() == 0:
        if not _chattr(path, "+i"):  # root writes through permissions: make the file immutable instead
            pytest.skip("running as root and chattr +i is not possible here (no CAP_LINUX_IMMUTABLE or fs)")
    else:
        path.chmod(0o444)
    try:
        f = _write(tmp_path / "ro.yaml", f"run: {{name: second, db_url: '{url}'}}\n")
        msg = f"error: {url}: cannot open database: {path} or its directory is not writable (WAL mode needs both)"
        assert _error(capsys, "paper", "-c", f, "--no-progress") == (4, msg)
        assert _error(capsys, "runs", "--db", url) == (4, msg)
    finally:
        if os.geteuid() == 0:
            _chattr(path, "-i")
        else:
            path.chmod(0o644)


def test_not_a_database_and_foreign_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not an sqlite file, just some bytes " * 100)
    assert _error(capsys, "runs", "--db", _db_url(junk)) == (
        4, f"error: {_db_url(junk)}: cannot open database: the file is not an SQLite database")
    assert junk.read_bytes() == b"this is not an sqlite file, just some bytes " * 100
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as raw:
        raw.execute("CREATE TABLE customers (id INTEGER)")
        raw.execute("INSERT INTO customers VALUES (1)")
    raw.close()
    f = _write(tmp_path / "o.yaml", f"run: {{db_url: '{_db_url(other)}'}}\n")
    assert _error(capsys, "paper", "-c", f, "--no-progress") == (
        4, f"error: {_db_url(other)}: not a tradevet database (it has tables customers but no schema revision)")
    with sqlite3.connect(other) as raw:
        assert raw.execute("SELECT id FROM customers").fetchall() == [(1,)]
    raw.close()


def test_missing_database_is_not_created_by_a_read_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none.db"
    assert _error(capsys, "runs", "--db", _db_url(missing)) == (
        4, f"error: {_db_url(missing)}: no database at {missing} (the file does not exist)")
    assert _error(capsys, "score", "--run", "x", "--db", _db_url(missing)) == (
        4, f"error: {_db_url(missing)}: no database at {missing} (the file does not exist)")
    assert not missing.exists()
    assert _error(capsys, "runs", "--db", "mysql://u:secret@127.0.0.1/x") == (
        4, "error: mysql://u:***@127.0.0.1/x: unsupported database backend 'mysql' (use sqlite or postgresql)")


def test_schema_newer_than_the_code_is_refused_and_left_alone(db: tuple[str, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    url, path = db
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE alembic_version SET version_num = '0042_future'")
    raw.close()
    f = _write(tmp_path / "n.yaml", f"run: {{name: second, db_url: '{url}'}}\n")
    msg = (f"error: {url}: database schema is at revision 0042_future, newer than this tradevet (knows up to "
           f"{SCHEMA_REVISION}): upgrade tradevet")
    assert _error(capsys, "paper", "-c", f, "--no-progress") == (4, msg)
    assert _error(capsys, "runs", "--db", url) == (4, msg)
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [("0042_future",)]
        assert raw.execute("SELECT name, status FROM runs").fetchall() == [("first", "finished")]
        raw.execute("UPDATE alembic_version SET version_num = ?", (SCHEMA_REVISION,))  # the fixture checks the rest
    raw.close()


NEXT_REVISION = '''"""Test-only revision: a table added after {head}.

Revision ID: probe
Revises: {head}
"""

import sqlalchemy as sa
from alembic import op

revision = "probe"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("probe", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    op.drop_table("probe")
'''


def test_schema_older_than_the_code_is_migrated_up_keeping_every_row(db: tuple[str, Path], tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A database at the newest revision opened by code that knows a newer one: migrated in place, nothing lost,
    no prompt."""
    import storage.db

    url, path = db
    before = _snapshot(url)
    migrations = tmp_path / "migrations"
    shutil.copytree(storage.db.MIGRATIONS_DIR, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    _write(migrations / "versions" / "9999_probe.py", NEXT_REVISION.format(head=SCHEMA_REVISION))
    monkeypatch.setattr(storage.db, "MIGRATIONS_DIR", migrations)
    monkeypatch.setattr(storage.db, "SCHEMA_REVISION", "probe")
    code, err, out = _run(capsys, "runs", "--db", url, "--json")
    assert (code, err) == (0, "")
    assert [(r["id"], r["name"], r["status"]) for r in json.loads(out)] == [(1, "first", "finished")]
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT version_num FROM alembic_version").fetchall() == [("probe",)]
        assert raw.execute("SELECT count(*) FROM probe").fetchall() == [(0,)]
    raw.close()
    assert _snapshot(url)["counts"] == before["counts"]
    with sqlite3.connect(path) as raw:  # back to the real head, so that the fixture (real code) can check the rest
        raw.execute("DROP TABLE probe")
        raw.execute("UPDATE alembic_version SET version_num = ?", (SCHEMA_REVISION,))
    raw.close()


# ===================================================================================== arguments


def test_unknown_option_and_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert _error(capsys, "paper", "--bogus") == (2, "error: No such option: --bogus")
    assert _error(capsys, "nosuchcmd") == (2, "error: No such command 'nosuchcmd'.")
    assert _error(capsys, "config", "frobnicate") == (2, "error: No such command 'frobnicate'.")


def test_missing_required_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert _error(capsys, "score") == (2, "error: Missing option '--run'.")
    assert _error(capsys, "report", "--run", "x") == (2, "error: Missing option '--out'.")
    assert _error(capsys, "signals", "export", "--out", "x.jsonl") == (2, "error: Missing option '--run'.")


def test_unknown_run(db: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    url, _ = db
    assert _error(capsys, "score", "--run", "nosuch", "--db", url) == (
        4, f"error: no run 'nosuch' in {url} (known: first)")
    assert _error(capsys, "score", "--run", "99", "--db", url) == (4, f"error: no run '99' in {url} (known: first)")


@pytest.mark.parametrize(
    ("port", "message"),
    [("70000", "Input should be less than or equal to 65535"), ("-1", "Input should be greater than or equal to 0"),
     ("http", "Input should be a valid integer, unable to parse string as an integer")],
)
def test_bad_metrics_port(db: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], port: str,
                          message: str) -> None:
    url, _ = db
    before = _snapshot(url)
    f = _write(tmp_path / "p.yaml", f"run: {{name: second, db_url: '{url}'}}\n")
    assert _error(capsys, "paper", "-c", f, "--metrics-port", port) == (
        2, f"error: Invalid value for '--metrics-port': {message}")
    _assert_nothing_added(url, before)


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--since", "yesterday"], "--since: expected a UTC date or time such as 2025-01-01 (got 'yesterday')"),
     (["--since", "2025-01-01", "--until", "2025-13-01"],
      "--until: expected a UTC date or time such as 2025-01-01 (got '2025-13-01')"),
     (["--since", "2025-01-01", "--format", "xml"], "--format: must be csv or parquet (got 'xml')"),
     (["--since", "2025-01-01", "--timeframe", "5x"],
      "timeframe: expected a number and a unit s/m/h/d/w such as '5m' (got '5x')")],
    ids=["bad-since", "bad-until", "bad-format", "bad-timeframe"],
)
def test_bad_download_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                message: str) -> None:
    # the exchange URL is a closed port on 127.0.0.1: nothing here may reach a network
    cfg = _write(tmp_path / "ex.yaml", "market: {ccxt: {urls: {api: {public: 'http://127.0.0.1:9/api/v3'}}}}\n")
    base = ["data", "download", "-c", cfg, "--symbols", "BTC/USDT", "--out", tmp_path / "out"]
    if "--timeframe" not in args:
        base += ["--timeframe", "5m"]
    assert _error(capsys, *base, *args) == (2, f"error: {message}")
    assert not (tmp_path / "out").exists()


def test_download_until_before_since_is_refused_before_any_request(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from tests.fake_exchange import FakeExchange, make_bars

    start = 1_735_689_600_000
    with FakeExchange(make_bars(["BTC/USDT"], "5m", start, 50), timeframe="5m", now_ms=start + 50 * 300_000) as ex:
        cfg = _write(tmp_path / "ex.yaml", json.dumps({"market": {"ccxt": {
            "urls": ex.ccxt_urls(), "options": {"fetchMarkets": {"types": ["spot"]}}}}}))
        code, err = _error(capsys, "data", "download", "-c", cfg, "--symbols", "BTC/USDT", "--timeframe", "5m",
                           "--since", "2025-02-01", "--until", "2025-01-01", "--out", tmp_path / "out")
        requests = len(ex.log) if hasattr(ex, "log") else 0
    assert code == 2 and "--until" in err, err
    assert requests == 0
