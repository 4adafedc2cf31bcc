"""`tradevet llm check` against the fake LLM server: a working tier, a closed port, a 404 on the model, a model
that ignores the JSON format — one clear line each in the check, and a counted failure in a run."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.app import build_tier
from engine.cli import main
from engine.config import ReviewerConfig, TierConfig
from reviewer.health import canned_pack, check_tiers
from tests.fake_llm import FakeLLM

ROOT = Path(__file__).resolve().parents[1]
LOCAL_YAML = ROOT / "config" / "local.yaml"
PROSE = {"kind": "content", "text": "Sure! This looks like a solid trade, I would accept it."}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_config(tmp_path: Path, base_url: str, **tier: Any) -> Path:
    """config/local.yaml as shipped, with the local tier pointed at ``base_url``."""
    data = yaml.safe_load(LOCAL_YAML.read_text())
    local = data["reviewer"]["tiers"][0]
    local.update({"base_url": base_url, "timeout_s": 5, **tier})
    data["run"] = {"name": "check", "db_url": f"sqlite:///{tmp_path / 'check.db'}"}
    data["market"] = {"symbols": ["BTC/USDT"], "synthetic": {"bars": 150}, "type": "futures"}  # shorts reviewed too
    f = tmp_path / "local-test.yaml"
    f.write_text(yaml.safe_dump(data))
    return f


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], base_url: str, **tier: Any) -> tuple[int, dict, str]:
    code = main(["llm", "check", "-c", str(local_config(tmp_path, base_url, **tier)), "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_a_working_tier_passes_with_latency_tokens_and_breaker(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    with FakeLLM() as srv:
        srv.set_default("modify")
        code, out, _ = check(tmp_path, capsys, srv.openai_url)
        req = srv.requests[0]
    assert code == 0 and out["ok"] is True and out["first_tier"] == "local"
    local, rules = out["tiers"]
    assert local["status"] == "ok" and local["reachable"] is True and local["verdict"] == "modify"
    assert local["input_tokens"] > 0 and local["output_tokens"] > 0 and local["latency_ms"] > 0
    assert local["breaker"] == "closed" and local["prompt"] == "compact" and local["cost_usd"] == 0.0
    assert rules["status"] == "ok" and rules["tier"] == "rules"
    # the canned pack went out fenced, in the compact template, with the json_object format
    assert req.context_pack is not None and req.context_pack["signal"]["symbol"] == "BTC/USDT"
    assert req.body["response_format"]["type"] == "json_object"


def test_the_table_shows_every_tier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeLLM() as srv:
        code = main(["llm", "check", "-c", str(local_config(tmp_path, srv.openai_url))])
    out = capsys.readouterr().out
    assert code == 0
    for text in ("local", "rules", "ok", "compact", srv.openai_url):
        assert text in out, out


@pytest.mark.parametrize(("case", "kind", "field", "words"), [
    ("closed_port", "connection", "", ["cannot reach http://127.0.0.1:", "is the server running?"]),
    ("not_found", "http_404", "", ["answered 404 for model 'local'", "base_url ends in /v1"]),
    ("prose", "bad_reply", "json", ["not the verdict object (no JSON object)", "ignored the JSON format",
                                    "response_format is 'json_object'"]),
    ("schema_violation", "bad_reply", "verdict", ["not the verdict object (field 'verdict')", "'maybe'"]),
])
def test_bad_local_tiers_fail_the_check_with_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            case: str, kind: str, field: str,
                                                            words: list[str]) -> None:
    with FakeLLM() as srv:
        srv.set_default(PROSE if case == "prose" else ("accept" if case == "closed_port" else case))
        url = f"http://127.0.0.1:{closed_port()}/v1" if case == "closed_port" else srv.openai_url
        code, out, err = check(tmp_path, capsys, url)
    assert code == 1 and out["ok"] is False
    local = out["tiers"][0]
    assert local["status"] == "failed" and local["kind"] == kind and local["field"] == field
    assert local["reachable"] is (case != "closed_port")
    assert "\n" not in local["error"]
    for w in words:
        assert w in local["error"], local["error"]
    assert out["tiers"][1]["status"] == "ok"  # the rules tier still answers
    assert f"the first tier, 'local', did not answer validly ({kind})" in err


def test_the_human_output_names_the_failure_on_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    code = main(["llm", "check", "-c", str(local_config(tmp_path, f"http://127.0.0.1:{port}/v1"))])
    err = capsys.readouterr().err
    assert code == 1
    line = next(ln for ln in err.splitlines() if ln.startswith("local: connection:"))
    assert f"cannot reach http://127.0.0.1:{port}/v1" in line


def test_disabled_tiers_are_shown_and_the_first_enabled_tier_decides(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeLLM() as srv:
        data = yaml.safe_load((ROOT / "config" / "llm.yaml").read_text())
        data["reviewer"]["tiers"][2]["base_url"] = srv.openai_url
        f = tmp_path / "llm.yaml"
        f.write_text(yaml.safe_dump(data))
        code = main(["llm", "check", "-c", str(f), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["first_tier"] == "phi4-local"
    assert [t["status"] for t in out["tiers"]] == ["disabled", "disabled", "ok", "ok"]
    assert "ANTHROPIC_API_KEY" in out["tiers"][0]["error"]
    assert out["tiers"][0]["endpoint"] == "https://api.anthropic.com"


def test_a_slow_tier_times_out_at_the_check_timeout() -> None:
    with FakeLLM() as srv:
        srv.set_default({"kind": "slow", "delay": 5, "then": "accept"})
        rc = ReviewerConfig(tiers=[TierConfig(name="slow", provider="openai_compatible", model="m",
                                              base_url=srv.openai_url)])
        rows = asyncio.run(check_tiers(rc, build_tier, timeout_s=0.5, pack=canned_pack()))
    assert rows[0].status == "failed" and rows[0].kind == "timeout" and rows[0].reachable is None
    assert rows[0].latency_ms is not None and rows[0].latency_ms < 3000


def test_canned_pack_is_stable() -> None:
    assert canned_pack().hash == canned_pack().hash and canned_pack().signal.symbol == "BTC/USDT"


@pytest.mark.parametrize(("case", "kind"), [("not_found", "http_404"), ("prose", "bad_reply")])
def test_a_run_counts_the_bad_local_tier_and_falls_through_to_rules(tmp_path: Path, case: str, kind: str) -> None:
    from engine.app import run_replay
    from engine.config import load_config
    from engine.recorded.scorecard import run_scorecard
    from storage import open_storage

    with FakeLLM() as srv:
        srv.set_default(PROSE if case == "prose" else case)
        loaded = load_config([local_config(tmp_path, srv.openai_url)])
        res = run_replay(loaded)
    store = open_storage(loaded.config.run.db_url)
    try:
        card = run_scorecard(store, res.run_id)
        reviews = store.recorder(res.run_id).load_reviews()
    finally:
        store.close()
    assert card.reviewed > 3
    threshold = loaded.config.reviewer.tiers[0].breaker.failure_threshold
    assert card.tiers["local"]["failures"][kind] == threshold  # then the breaker refuses the rest
    assert card.tiers["local"]["failures"]["breaker_open"] == card.reviewed - threshold
    assert all(r.verdict.source == "rules" and r.verdict.attempts[0].tier == "local"
               and not r.verdict.attempts[0].ok for r in reviews)
