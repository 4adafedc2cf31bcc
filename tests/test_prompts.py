"""Prompt templates per tier (`prompt: full | compact`): contract and fence kept, versions in the cache key."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from engine.config import ReviewerConfig, TierConfig, load_config
from engine.errors import ConfigError
from engine.types import ContextPack, NewsCategory, NewsFlag, Side, TradeSummary, Verdict
from reviewer.prompt import (
    COMPACT_PROMPT_VERSION,
    COMPACT_SYSTEM_PROMPT,
    FENCE_CLOSE,
    FENCE_OPEN,
    PROMPT_VERSION,
    PROMPTS,
    SYSTEM_PROMPT,
    compact_pack,
    get_prompt,
    render_compact_user_message,
)
from reviewer.reply import REPLY_SCHEMA
from tests.fake_llm import FakeLLM
from tests.test_cascade import DictCache
from tests.test_llm_tiers import INJECTION, T0, make_pack

ROOT = Path(__file__).resolve().parents[1]


def _long_pack(headline: str = "Exchange lists new BTC perpetuals") -> ContextPack:
    base = make_pack(headline=headline)
    trades = tuple(TradeSummary("ETH/USDT", Side.LONG, T0 - (i + 2) * 3_600_000, T0 - (i + 1) * 3_600_000,
                                -0.8123456789, -1.0, "stop") for i in range(20))
    return ContextPack.build(signal=base.signal, recent_trades=trades, trade_stats=base.trade_stats,
                             regime=base.regime, correlated=base.correlated, news=base.news,
                             gate_note=base.gate_note, equity=base.equity)


def test_two_templates_with_distinct_versions() -> None:
    assert set(PROMPTS) == {"full", "compact"}
    assert get_prompt("full").version == PROMPT_VERSION and get_prompt("full").system == SYSTEM_PROMPT
    assert get_prompt("compact").version == COMPACT_PROMPT_VERSION != PROMPT_VERSION
    with pytest.raises(KeyError, match="unknown prompt template 'tiny' \\(known: full, compact\\)"):
        get_prompt("tiny")


def test_compact_system_prompt_keeps_the_contract_and_the_fence_in_a_fifth_of_the_text() -> None:
    assert len(COMPACT_SYSTEM_PROMPT) * 4 < len(SYSTEM_PROMPT)
    for key in REPLY_SCHEMA["required"]:
        assert f'"{key}"' in COMPACT_SYSTEM_PROMPT
    assert FENCE_OPEN in COMPACT_SYSTEM_PROMPT and FENCE_CLOSE in COMPACT_SYSTEM_PROMPT
    assert "DATA, never" in COMPACT_SYSTEM_PROMPT and "instructions" in COMPACT_SYSTEM_PROMPT
    for bound in ("10 to 100", "stop_loss <= modified_sl < entry", "entry < modified_sl <= stop_loss"):
        assert bound in COMPACT_SYSTEM_PROMPT
    # its worked example honours the reply contract
    example = COMPACT_SYSTEM_PROMPT.split("Example: ", 1)[1].replace("\\\n", "")
    reply = json.loads(example)
    assert set(reply) == set(REPLY_SCHEMA["required"])


def test_compact_user_message_is_fenced_neutralised_and_slim() -> None:
    pack = _long_pack(headline=INJECTION)
    text = render_compact_user_message(pack)
    assert text.count(FENCE_OPEN) == 1 and text.count(FENCE_CLOSE) == 1  # the injected markers are escaped
    inner = text.split(FENCE_OPEN, 1)[1].split(FENCE_CLOSE, 1)[0]
    data = json.loads(inner)
    assert data["news"][0]["headline"] == INJECTION  # the data itself is unchanged, only escaped
    assert len(data["recent_trades"]) == 5 and data["trade_stats"] == pack.trade_stats.to_dict()
    assert "id" not in data["signal"] and "created_ms" not in data["signal"]
    assert data["signal"]["entry"] == pack.signal.entry and data["signal"]["stop_loss"] == pack.signal.stop_loss
    assert data["recent_trades"][0]["pnl_pct"] == -0.812346  # six significant digits
    assert len(text) * 3 < len(pack.json)
    assert compact_pack(pack) == data


def test_tier_prompt_setting_selects_the_template_and_its_version(tmp_path: Path) -> None:
    from reviewer.tiers.openai import OpenAICompatibleTier

    with FakeLLM() as srv:
        for name, template in PROMPTS.items():
            tier = OpenAICompatibleTier(TierConfig(name="local", provider="openai_compatible", model="m",
                                                   base_url=srv.openai_url, prompt=name), None)

            async def once(t: OpenAICompatibleTier = tier) -> Verdict:
                try:
                    return await t.review(make_pack())
                finally:
                    await t.aclose()

            v = asyncio.run(once())
            req = srv.requests[-1]
            assert req.system_text == template.system
            assert req.user_text == template.render(make_pack())
            assert v.prompt_version == template.version == tier.prompt_version


def test_the_prompt_version_is_part_of_the_verdict_cache_key() -> None:
    from engine.app import build_reviewer

    cache = DictCache()
    with FakeLLM() as srv:
        srv.set_default("veto")

        def run(prompt: str) -> Verdict:
            rc = ReviewerConfig(tiers=[TierConfig(name="local", provider="openai_compatible", model="m",
                                                  base_url=srv.openai_url, prompt=prompt)])
            cascade = build_reviewer(rc, cache=cache, env={})

            async def go() -> Verdict:
                try:
                    return await cascade.review(make_pack())
                finally:
                    await cascade.aclose()

            return asyncio.run(go())

        first = run("full")
        again = run("full")
        other = run("compact")
    assert first.source == "local" and again.source == "cache"  # same template: the cached verdict
    assert other.source == "local" and other.prompt_version == COMPACT_PROMPT_VERSION  # new template: a real call
    assert len(srv.requests) == 2


def test_an_unknown_prompt_name_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("reviewer:\n  tiers:\n    - {name: local, provider: openai_compatible, model: m, "
                 "base_url: 'http://127.0.0.1:1/v1', prompt: tiny}\n")
    with pytest.raises(ConfigError) as ei:
        load_config([f])
    msg = str(ei.value)
    assert "reviewer.tiers[0].prompt" in msg and "tiny" in msg and "full" in msg and "compact" in msg, msg


def test_news_category_survives_the_compact_view() -> None:
    pack = make_pack()
    flags = compact_pack(pack)["news"]
    assert flags == [{"category": str(NewsCategory.LISTING), "age_min": 42.0,
                      "headline": pack.news[0].headline}]
    assert isinstance(pack.news[0], NewsFlag)
