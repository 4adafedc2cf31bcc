"""min_volume in units that fit the market, and the warning line for a gate that blocks nearly everything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.core.gates import MinVolume, quote_of
from engine.recorded.gatewarn import gate_summary, gate_warnings
from engine.types import GateResult
from tests.conftest import flat_bar, make_signal
from tests.test_gates import World


def _feed(w: World, symbol: str, volume: float, close: float, bars: int = 288) -> None:
    for i in range(bars):
        w.market.append(flat_bar(i, close, symbol=symbol, volume=volume))


def _sig(symbol: str):  # type: ignore[no-untyped-def]
    return make_signal(symbol=symbol, sid=f"new:{symbol}")


def test_quote_of_reads_the_quote_currency() -> None:
    assert [quote_of(s) for s in ("ETH/BTC", "BTC/USDT:USDT", "ETH-BTC", "SP500")] == ["BTC", "USDT", "BTC", ""]


def test_the_threshold_is_per_quote_currency() -> None:
    w = World()
    _feed(w, "ETH/BTC", volume=0.5, close=0.1)  # 288 bars × 0.05 BTC = 14.4 BTC per day: just under 15
    r = MinVolume().evaluate(_sig("ETH/BTC"), w.view)
    assert r == GateResult("min_volume", False, "24h quote volume 14.4 BTC < 15 BTC")
    _feed(w, "LTC/USDT", volume=40.0, close=100.0)  # 1.15M USDT per day
    assert MinVolume().evaluate(_sig("LTC/USDT"), w.view).reason == "24h quote volume 1.2M USDT ≥ 1.0M USDT"
    # one explicit number for every symbol, as before
    assert MinVolume({"min_quote_volume_24h": 10}).evaluate(_sig("ETH/BTC"), w.view).passed


def test_a_thin_market_as_a_whole_trades_its_liquid_part() -> None:
    w = World()
    for sym, vol in (("AAA/BTC", 2.0), ("BBB/BTC", 1.0), ("CCC/BTC", 0.5), ("DDD/BTC", 0.01)):
        _feed(w, sym, volume=vol, close=0.01)  # 5.8, 2.9, 1.4 and 0.03 BTC per day: all below 15 BTC
    gate = MinVolume()
    assert gate.evaluate(_sig("CCC/BTC"), w.view) == GateResult(
        "min_volume", True, "24h quote volume 1.44 BTC ≥ 0.216 BTC (0.1× the median of 4 BTC symbols)")
    thin = gate.evaluate(_sig("DDD/BTC"), w.view)
    assert not thin.passed and "0.1× the median of 4 BTC symbols" in thin.reason
    assert MinVolume({"relative": 0}).evaluate(_sig("AAA/BTC"), w.view).passed is False


def test_an_unknown_quote_uses_the_relative_level_or_passes() -> None:
    w = World()
    _feed(w, "AAA/XYZ", volume=1.0, close=1.0)
    r = MinVolume().evaluate(_sig("AAA/XYZ"), w.view)
    assert r.passed and "no threshold for quote XYZ" in r.reason


def test_no_volume_data_passes_and_says_so() -> None:
    w = World()
    _feed(w, "EUR/USD", volume=0.0, close=1.1)
    r = MinVolume().evaluate(_sig("EUR/USD"), w.view)
    assert r == GateResult("min_volume", True, "no volume data: min_volume not applied")


def test_the_warning_line_names_threshold_and_median() -> None:
    results = [(f"s{i}", GateResult("min_volume", False, f"24h quote volume {v} BTC < 1.0M BTC"))
               for i, v in enumerate(["41", "40", "44", "12", "90"])]
    results += [("x", GateResult("cooldown", True, "no cooldown")), ("y", GateResult("cooldown", False, "cooldown: 2"))]
    summary = gate_summary(results)
    assert summary["min_volume"]["reached"] == 5 and summary["cooldown"]["blocked"] == 1
    assert gate_warnings(summary) == [
        "min_volume blocked 5 of 5 signals (threshold 1,000,000 BTC per 24 h; median 24h quote volume here 41 BTC)"]
    assert gate_warnings(gate_summary([("a", GateResult("cooldown", False, "cooldown: 3 more bar(s)"))])) == [
        "cooldown blocked 1 of 1 signals (most often: cooldown: 3 more bar(s))"]
    # 94 % blocked: no warning
    mostly = [("a", GateResult("cooldown", i >= 94, "r")) for i in range(100)]
    assert gate_warnings(gate_summary(mostly)) == []


def _btc_files(tmp: Path) -> Path:
    rng = np.random.default_rng(3)
    d = tmp / "data"
    d.mkdir()
    t0 = np.datetime64("2018-01-10T00:00:00")
    for sym, scale in (("ETH-BTC", 1.0), ("LTC-BTC", 0.5), ("XMR-BTC", 0.3), ("ZEC-BTC", 0.2)):
        close = 0.05 * np.exp(np.cumsum(rng.normal(0, 0.004, 2000)))
        open_ = np.concatenate(([close[0]], close[:-1]))
        high, low = np.maximum(open_, close) * 1.002, np.minimum(open_, close) * 0.998
        vol = rng.uniform(5, 15, 2000) * scale  # ≈ 0.03 BTC a bar: a few BTC a day, far below 1,000,000
        lines = ["timestamp,open,high,low,close,volume"]
        for i in range(2000):
            ts = str(t0 + np.timedelta64(5 * i, "m")) + "Z"
            lines.append(f"{ts},{open_[i]:.8f},{high[i]:.8f},{low[i]:.8f},{close[i]:.8f},{vol[i]:.4f}")
        (d / f"TEST_{sym}_5m.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


@pytest.mark.parametrize("explicit", [False, True])
def test_a_btc_quoted_replay_trades_with_the_defaults_or_warns_in_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], explicit: bool) -> None:
    d = _btc_files(tmp_path)
    gates = "gates: [{kind: min_volume, params: {min_quote_volume_24h: 1000000}}]\n" if explicit else ""
    cfg = tmp_path / "btc.yaml"
    cfg.write_text(f"run: {{name: btc, db_url: 'sqlite:///{tmp_path / 'b.db'}'}}\n"
                   f"market: {{source: files, symbols: [ETH/BTC, LTC/BTC, XMR/BTC, ZEC/BTC], timeframe: 5m, "
                   f"files: {{dir: '{d}'}}}}\nnews: {{source: none}}\n{gates}", encoding="utf-8")
    assert main(["paper", "-c", str(cfg), "--json", "--no-progress"]) == 0
    card = json.loads(capsys.readouterr().out)["scorecard"]
    if explicit:
        assert card["reviewed"] == 0
        (line,) = [w for w in card["warnings"] if w.startswith("min_volume")]
        reached = card["gates"]["min_volume"]["reached"]  # what the account's rules let through (no spot shorts)
        assert line.startswith(f"min_volume blocked {reached:,} of {reached:,} signals "
                               "(threshold 1,000,000 BTC per 24 h; median 24h quote volume here ")
        assert line.endswith(" BTC)")
        assert main(["score", "--run", "btc", "--db", f"sqlite:///{tmp_path / 'b.db'}"]) == 0
        assert "warning: min_volume blocked" in capsys.readouterr().out
    else:
        assert card["reviewed"] > 0 and card["pnl"]["trades"] > 0
        assert not any(w.startswith("min_volume") for w in card["warnings"])
