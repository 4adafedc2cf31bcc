"""Configuration: the default loads, files merge in order, and every misuse gets a one-line error naming
the file and the dotted path (DESIGN §5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from engine.config import DEFAULT_CONFIG, Config, load_config, parse_timeframe
from engine.errors import ConfigError


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in a temp dir so files are shown by their short relative names in messages."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(dir: Path, name: str, text: str) -> str:
    (dir / name).write_text(text, encoding="utf-8")
    return name


def error_of(paths: list[str], env: dict[str, str] | None = None, **kw: Any) -> str:
    with pytest.raises(ConfigError) as ei:
        load_config(paths, env={} if env is None else env, **kw)
    msg = str(ei.value)
    assert "\n" not in msg, "config errors are one line"
    return msg


def assert_subset(expected: Any, actual: Any, path: str = "") -> None:
    """Every value written in ``expected`` (YAML data) is present, equal, in ``actual`` (a model dump)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        for k, v in expected.items():
            assert k in actual, f"{path}.{k} missing from the loaded config"
            assert_subset(v, actual[k], f"{path}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            assert_subset(e, a, f"{path}[{i}]")
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


# ------------------------------------------------------------------------------------------ default


def test_default_loads_and_carries_every_value_of_the_default_file() -> None:
    loaded = load_config(env={})
    assert loaded.files == ("config/default.yaml",)
    assert loaded.warnings == () and loaded.disabled_tiers == ()
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    assert_subset(raw, loaded.config.model_dump(mode="json"))
    assert [s.id for s in loaded.config.strategies] == [s["id"] for s in raw["strategies"]]
    assert [g.kind for g in loaded.config.gates] == [g["kind"] for g in raw["gates"]]


def test_default_is_frozen_and_hash_is_stable() -> None:
    a, b = load_config(env={}), load_config(env={})
    assert a.hash == b.hash
    assert load_config(overrides={"run": {"seed": 8}}, env={}).hash != a.hash
    with pytest.raises(ValidationError):
        a.config.run.seed = 3  # type: ignore[misc]


def test_without_default_the_model_defaults_apply(cwd: Path) -> None:
    f = write(cwd, "only.yaml", "run: {name: bare}\n")
    cfg = load_config([f], include_default=False, env={}).config
    assert cfg.run.name == "bare"
    assert cfg.strategies == [] and cfg.gates == []
    assert cfg.policy.min_confidence == Config().policy.min_confidence


# -------------------------------------------------------------------------------------------- merge


def test_files_merge_in_order_mappings_merge_lists_replace(cwd: Path) -> None:
    a = write(cwd, "a.yaml", """
run: {name: from_a, seed: 1}
market: {symbols: [BTC/USDT, ETH/USDT, SOL/USDT]}
policy: {min_confidence: 0.4}
reviewer:
  tiers:
    - {name: one, provider: rules}
    - {name: two, provider: rules}
""")
    b = write(cwd, "b.yaml", """
run: {seed: 11}
market: {symbols: [ETH/USDT]}
strategies:
  - {id: only, kind: sma_cross, symbols: all, params: {fast: 3, slow: 9}}
reviewer:
  tiers:
    - {name: three, provider: rules, timeout_s: 2}
""")
    loaded = load_config([a, b], env={})
    cfg = loaded.config
    assert loaded.files == ("config/default.yaml", "a.yaml", "b.yaml")
    assert cfg.run.name == "from_a"  # a's value survives b's merge of the same mapping
    assert cfg.run.seed == 11  # b wins over a
    assert cfg.run.db_url == "sqlite:///tradevet.db"  # default survives both
    assert cfg.policy.min_confidence == 0.4 and cfg.policy.max_size_pct == 100
    assert cfg.market.symbols == ["ETH/USDT"]  # a list replaces, it does not merge
    assert [s.id for s in cfg.strategies] == ["only"]  # default's three strategies replaced
    assert [t.name for t in cfg.reviewer.tiers] == ["three"]  # list of mappings replaced, not element-merged
    assert cfg.reviewer.tiers[0].timeout_s == 2
    assert cfg.reviewer.tiers[0].max_concurrency == 8  # model default inside the replaced element

    swapped = load_config([b, a], env={}).config
    assert swapped.run.seed == 1
    assert swapped.market.symbols == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    assert [t.name for t in swapped.reviewer.tiers] == ["one", "two"]


def test_overrides_apply_after_files(cwd: Path) -> None:
    a = write(cwd, "a.yaml", "run: {name: file}\n")
    cfg = load_config([a], env={}, overrides={"run": {"name": "override"}}).config
    assert cfg.run.name == "override"


def test_empty_file_changes_nothing(cwd: Path) -> None:
    e = write(cwd, "empty.yaml", "# nothing here\n")
    assert load_config([e], env={}).config == load_config(env={}).config


# --------------------------------------------------------------------------------------- bad input


def test_unknown_key_names_file_path_and_closest_key(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", """
reviewer:
  tiers:
    - {name: rules, provider: rules}
    - {name: x, provider: rules, timout_s: 3}
""")
    msg = error_of([f])
    assert msg.startswith("paper.yaml: reviewer.tiers[1].timout_s: unknown key (known keys: ")
    assert "timeout_s" in msg.split("known keys:")[1]
    assert msg.endswith("did you mean 'timeout_s'?")


def test_unknown_top_level_key(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", "polcy: {min_confidence: 0.5}\n")
    msg = error_of([f])
    assert msg.startswith("paper.yaml: polcy: unknown key")
    assert msg.endswith("did you mean 'policy'?")


def test_unknown_key_without_close_match_has_no_hint(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", "policy: {zzzzzz: 1}\n")
    msg = error_of([f])
    assert msg.startswith(
        "paper.yaml: policy.zzzzzz: unknown key (known keys: min_confidence, min_size_pct, max_size_pct)"
    )
    assert "did you mean" not in msg


def test_negative_timeout_message_is_the_documented_one(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", """
reviewer:
  tiers:
    - {name: rules, provider: rules}
    - {name: x, provider: rules, timeout_s: -1}
""")
    # DESIGN §5 quotes this exact line.
    assert error_of([f]) == "paper.yaml: reviewer.tiers[1].timeout_s: must be > 0 (got -1)"


def test_first_tier_timeout(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", "reviewer: {tiers: [{name: a, provider: rules, timeout_s: -1}]}\n")
    assert error_of([f]) == "paper.yaml: reviewer.tiers[0].timeout_s: must be > 0 (got -1)"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run: {seed: abc}\n", "paper.yaml: run.seed: expected an integer (got 'abc')"),
        ("scoring: {retire: {enabled: maybe}}\n",
         "paper.yaml: scoring.retire.enabled: expected true or false (got 'maybe')"),
        ("execution: {fee_bps: lots}\n", "paper.yaml: execution.fee_bps: expected a number (got 'lots')"),
        ("market: {symbols: []}\n", "paper.yaml: market.symbols: must not be empty (got [])"),
        ("market: {symbols: [BTCUSDT]}\n",
         "paper.yaml: market.symbols: expected symbols like BTC/USDT (got 'BTCUSDT')"),
        ("market: {symbols: [BTC/USDT, BTC/USDT]}\n",
         "paper.yaml: market.symbols: symbols must be unique (got ['BTC/USDT', 'BTC/USDT'])"),
        ("policy: {min_confidence: 1.5}\n", "paper.yaml: policy.min_confidence: must be <= 1 (got 1.5)"),
    ],
)
def test_wrong_types_and_ranges(cwd: Path, text: str, expected: str) -> None:
    f = write(cwd, "paper.yaml", text)
    assert error_of([f]) == expected


def test_literal_choice_lists_the_choices(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", "reviewer: {mode: loud}\n")
    msg = error_of([f])
    assert msg.startswith("paper.yaml: reviewer.mode: must be one of ")
    for choice in ("active", "shadow", "off"):
        assert choice in msg
    assert msg.endswith("(got 'loud')")


def test_policy_min_above_max_names_the_file_that_set_it(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", "policy: {min_size_pct: 50, max_size_pct: 40}\n")
    msg = error_of([f])
    assert "min_size_pct must be <= max_size_pct (got 50.0 > 40.0)" in msg
    # The default file only created the ``policy`` mapping; the offending values came from paper.yaml.
    assert msg.startswith("paper.yaml: policy"), msg


def test_policy_min_above_max_through_overrides() -> None:
    with pytest.raises(ConfigError, match=r"min_size_pct must be <= max_size_pct \(got 50.0 > 40.0\)"):
        load_config(overrides={"policy": {"min_size_pct": 50, "max_size_pct": 40}}, env={})


def test_policy_min_equal_max_is_fine() -> None:
    cfg = load_config(overrides={"policy": {"min_size_pct": 40, "max_size_pct": 40}}, env={}).config
    assert cfg.policy.min_size_pct == cfg.policy.max_size_pct == 40


def test_duplicate_tier_names(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", "reviewer: {tiers: [{name: a, provider: rules}, {name: a, provider: rules}]}\n")
    assert error_of([f]) == "paper.yaml: reviewer.tiers: tier names must be unique (got 'a' twice)"


def test_duplicate_strategy_ids(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", """
strategies:
  - {id: s, kind: sma_cross}
  - {id: s, kind: rsi_reversion}
""")
    msg = error_of([f])
    assert msg == "paper.yaml: strategies: strategy ids must be unique (got s more than once)"


@pytest.mark.parametrize(
    ("text", "line", "column", "problem"),
    [
        ("run:\n  name: a: b\n", 2, 10, "mapping values are not allowed here"),
        ("run:\n\tname: x\n", 2, 1, "found character '\\t' that cannot start any token"),
    ],
)
def test_malformed_yaml_gives_line_and_column(cwd: Path, text: str, line: int, column: int, problem: str) -> None:
    f = write(cwd, "paper.yaml", text)
    assert error_of([f]) == f"paper.yaml: malformed YAML: line {line}, column {column}: {problem}"


def test_top_level_must_be_a_mapping(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", "- a\n- b\n")
    assert error_of([f]) == "paper.yaml: expected a mapping at the top level (got list)"


def test_missing_file_and_directory(cwd: Path) -> None:
    assert error_of(["nope.yaml"]) == "nope.yaml: config file not found"
    (cwd / "adir").mkdir()
    assert error_of(["adir"]) == "adir: expected a YAML file (got a directory)"


def test_config_error_is_exit_code_2() -> None:
    assert ConfigError("x").exit_code == 2


# ------------------------------------------------------------------------------------------ secrets


def test_env_interpolation_resolves_and_is_masked(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", """
run: {db_url: "postgresql+psycopg://u:${PG_PW}@db/x"}
news: {rss: {feeds: ["https://feeds.example/${FEED_TOKEN}/rss", "https://plain.example/rss"]}}
""")
    loaded = load_config([f], env={"PG_PW": "hunter2", "FEED_TOKEN": "tok123"})
    assert loaded.config.run.db_url == "postgresql+psycopg://u:hunter2@db/x"
    assert loaded.config.news.rss.feeds[0] == "https://feeds.example/tok123/rss"
    eff = loaded.effective()
    assert eff["run"]["db_url"] == "***"
    assert eff["news"]["rss"]["feeds"] == ["***", "https://plain.example/rss"]
    dumped = json.dumps(eff)
    assert "hunter2" not in dumped and "tok123" not in dumped
    # the stored hash covers the masked config: rotating a secret does not make it another config
    other = load_config([f], env={"PG_PW": "other", "FEED_TOKEN": "x"})
    assert other.hash == loaded.hash
    assert loaded.masked_paths == frozenset({"run.db_url", "news.rss.feeds[0]"})


def test_env_interpolation_missing_variable(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", 'run: {db_url: "postgresql://u:${PG_PW}@db/x"}\n')
    msg = error_of([f], env={"OTHER": "1"})
    assert msg.startswith("paper.yaml: run.db_url: environment variable PG_PW is not set")


def test_tier_without_key_is_disabled_with_one_warning(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", """
reviewer:
  tiers:
    - {name: sonnet, provider: anthropic, model: claude-sonnet-4-6, api_key_env: TV_TEST_ANTHROPIC_KEY}
    - {name: rules, provider: rules}
""")
    loaded = load_config([f], env={})
    assert [name for name, _ in loaded.disabled_tiers] == ["sonnet"]
    assert len(loaded.warnings) == 1
    w = loaded.warnings[0]
    assert "sonnet" in w and "TV_TEST_ANTHROPIC_KEY" in w and "\n" not in w

    with_key = load_config([f], env={"TV_TEST_ANTHROPIC_KEY": "sk-secret"})
    assert with_key.disabled_tiers == () and with_key.warnings == ()
    assert "sk-secret" not in json.dumps(with_key.effective())


def test_required_tier_without_key_is_an_error(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", """
reviewer:
  tiers:
    - {name: sonnet, provider: anthropic, api_key_env: TV_TEST_ANTHROPIC_KEY, required: true}
""")
    assert error_of([f]) == ("paper.yaml: reviewer.tiers[0].api_key_env: environment variable "
                             "TV_TEST_ANTHROPIC_KEY is not set (tier 'sonnet' is required)")
    assert load_config([f], env={"TV_TEST_ANTHROPIC_KEY": "k"}).disabled_tiers == ()


# --------------------------------------------------------------------------------- cross-field rules


def test_files_source_needs_a_dir(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", "market: {source: files}\n")
    assert error_of([f]) == "paper.yaml: market.files.dir: required when market.source is 'files' (got null)"
    g = write(cwd, "ok.yaml", "market: {source: files, files: {dir: data}}\n")
    assert load_config([g], env={}).config.market.files.dir == "data"


def test_strategy_symbols_must_be_market_symbols(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", """
strategies:
  - {id: s, kind: sma_cross, symbols: [BTC/USDT, XRP/USDT]}
""")
    msg = error_of([f])
    assert msg.startswith("paper.yaml: strategies[0].symbols: ")
    assert "'XRP/USDT'" in msg and "BTC/USDT'] not" not in msg  # only the unknown one is named as unknown


def test_regime_bounds_must_be_ordered() -> None:
    with pytest.raises(ConfigError, match=r"context\.regime: revert_below must be < trend_above"):
        load_config(overrides={"context": {"regime": {"trend_above": 0.7, "revert_below": 0.8}}}, env={})


@pytest.mark.parametrize(("tf", "ms"), [("1s", 1_000), ("5m", 300_000), ("1h", 3_600_000), ("1d", 86_400_000),
                                        ("1w", 604_800_000), ("15m", 900_000)])
def test_parse_timeframe(tf: str, ms: int) -> None:
    assert parse_timeframe(tf) == ms


@pytest.mark.parametrize("tf", ["0m", "5", "m", "5M", "1y", "", "5 m"])
def test_parse_timeframe_rejects(tf: str) -> None:
    with pytest.raises(ConfigError, match="timeframe"):
        parse_timeframe(tf)


def test_bad_timeframe_in_config(cwd: Path) -> None:
    f = write(cwd, "paper.yaml", "market: {timeframe: 5x}\n")
    msg = error_of([f])
    assert msg.startswith("paper.yaml: market.timeframe: ") and "'5x'" in msg
