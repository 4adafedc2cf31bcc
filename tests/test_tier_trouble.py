"""Tier trouble is visible while it happens: one console line when a tier's breaker opens, one when it closes."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from engine.app import build_reviewer
from engine.config import BreakerConfig, ReviewerConfig, TierConfig
from engine.types import Verdict
from tests.fake_llm import FakeLLM
from tests.test_llm_tiers import make_pack

ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tradevet.reviewer" and r.levelno >= logging.WARNING]


def test_breaker_open_and_close_each_print_one_line_naming_tier_kind_endpoint_and_count(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    with FakeLLM() as srv:
        # credentials in the URL must never reach the console
        url = srv.openai_url.replace("http://", "http://user:s3cret@")
        rc = ReviewerConfig(tiers=[
            TierConfig(name="local", provider="openai_compatible", model="m", base_url=url,
                       breaker=BreakerConfig(failure_threshold=3, recovery_timeout_s=30)),
            TierConfig(name="rules", provider="rules")])
        cascade = build_reviewer(rc, cache=None, env={}, clock_s=clock)
        srv.script(["server_error"] * 3)

        async def reviews(n: int) -> list[Verdict]:
            return [await cascade.review(make_pack()) for _ in range(n)]

        with caplog.at_level(logging.INFO, logger="tradevet.reviewer"):
            got = asyncio.run(reviews(5))  # 3 failures open it; 2 more are refused by the open breaker
            assert [v.source for v in got] == ["rules"] * 5
            opened = _lines(caplog)
            assert len(opened) == 1, [r.getMessage() for r in opened]
            line = opened[0].getMessage()
            for part in ("'local'", "open", "3 consecutive failures", "last: server", srv.openai_url,
                         "next probe in 30 s", "next tier"):
                assert part in line, line
            assert "s3cret" not in line and "user" not in line
            assert len(srv.requests) == 3  # the open breaker fails fast: no call reached the server

            clock.t += 31  # the recovery timeout passes; the probe succeeds (the server answers accept again)
            v = asyncio.run(cascade.review(make_pack()))
            assert v.source == "local"
            closed = _lines(caplog)[1:]
            assert len(closed) == 1 and "'local' back" in closed[0].getMessage()
            assert "probe succeeded" in closed[0].getMessage()

            # it fails again later: the second opening says it is the second
            srv.script(["unavailable"] * 3)
            asyncio.run(reviews(3))
            again = _lines(caplog)[2:]
            assert len(again) == 1 and "opened 2 times" in again[0].getMessage()
            # a failed half-open probe is not a new warning: the tier was already reported down
            clock.t += 31
            srv.script(["unavailable"])
            asyncio.run(reviews(1))
            assert len(_lines(caplog)) == 3
        asyncio.run(cascade.aclose())
    events = cascade.drain_events()
    assert [dict(e.data)["to"] for e in events] == ["open", "half_open", "closed", "open", "half_open", "open"]


def test_the_breaker_line_reaches_the_console_of_a_paper_run(tmp_path: Path) -> None:
    """The local server is down (a closed port): the run finishes on the rules tier and stderr says why."""

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    f = tmp_path / "down.yaml"
    f.write_text(f"""
run: {{name: down, db_url: "sqlite:///{tmp_path / 'down.db'}"}}
market: {{symbols: [BTC/USDT], synthetic: {{bars: 150}}}}
reviewer:
  tiers:
    - {{name: local, provider: openai_compatible, model: local, base_url: "http://127.0.0.1:{port}/v1",
       response_format: json_object, prompt: compact, timeout_s: 5,
       breaker: {{failure_threshold: 3, recovery_timeout_s: 600}}}}
    - {{name: rules, provider: rules}}
""")
    # a real process: the console is what the CLI's own logging set-up prints, not pytest's capture
    p = subprocess.run([sys.executable, "-m", "engine.cli", "paper", "-c", str(f), "--no-progress", "--json"],
                       capture_output=True, text=True, timeout=240, cwd=ROOT)
    code, out, err = p.returncode, p.stdout, p.stderr
    assert code == 0, err
    warnings = [ln for ln in err.splitlines() if "tradevet.reviewer" in ln]
    assert len(warnings) == 1, err
    assert "'local' failing" in warnings[0] and f"127.0.0.1:{port}/v1" in warnings[0]
    assert "last: connection" in warnings[0]
    card = json.loads(out)["scorecard"]
    assert card["reviewed"] > 0 and card["tiers"]["rules"]["answered"] == card["reviewed"]
    assert card["tiers"]["local"]["failures"].get("connection") == 3
