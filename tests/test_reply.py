"""Reply contract: parse_reply tolerates harmless wrapping, refuses everything else with BadReply only."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import BadReply
from engine.types import Verdict, VerdictKind
from reviewer.reply import (
    MAX_RATIONALE_CHARS,
    MAX_RAW_CHARS,
    REPLY_SCHEMA,
    ReviewReply,
    parse_reply,
    to_verdict,
)

GOOD = {"verdict": "modify", "confidence": 0.7, "rationale": "corr 0.9 with an open long",
        "modified_size_pct": 50, "modified_sl": 63500.0}
GOOD_TEXT = json.dumps(GOOD)


# ------------------------------------------------------------------------------ tolerated wrapping


@pytest.mark.parametrize("text", [
    GOOD_TEXT,
    f"  \n{GOOD_TEXT}\n\t ",
    f"\ufeff{GOOD_TEXT}",
    f"```json\n{GOOD_TEXT}\n```",
    f"```JSON\n{GOOD_TEXT}```",
    f"```\n{GOOD_TEXT}\n```",
    f"Here is my review:\n```json\n{GOOD_TEXT}\n```\nLet me know if you need more.",
    f"Here is my review: {GOOD_TEXT} That is all.",
    f"I weighed {{risk}} and {{reward}}. {GOOD_TEXT}",
    json.dumps(GOOD, indent=2),
], ids=["plain", "whitespace", "bom", "fence-json", "fence-upper", "fence-bare", "fence-in-prose",
        "prose-around", "braces-in-prose", "indented"])
def test_harmless_wrapping_is_stripped(text: str) -> None:
    r = parse_reply(text)
    assert r == ReviewReply(**GOOD)


def test_verdict_letter_case_and_spaces_are_normalised() -> None:
    assert parse_reply('{"verdict": " VETO ", "confidence": 0.9}').verdict == "veto"


def test_optional_fields_default_and_nulls_are_accepted() -> None:
    r = parse_reply('{"verdict": "accept", "confidence": 1}')
    assert (r.rationale, r.modified_size_pct, r.modified_sl, r.confidence) == ("", None, None, 1.0)
    r = parse_reply('{"verdict": "accept", "confidence": 0.6, "rationale": "ok", '
                    '"modified_size_pct": null, "modified_sl": null}')
    assert r.modified_size_pct is None and r.modified_sl is None


def test_nested_objects_inside_prose_count_once() -> None:
    # the one top-level object holds no nested one here, but a string with braces must not split it
    text = 'Verdict: {"verdict": "veto", "confidence": 0.8, "rationale": "headline says {hack}"} done'
    assert parse_reply(text).rationale == "headline says {hack}"


# ------------------------------------------------------------------------------------- failures


BAD = {
    "empty": "",
    "blank": "   \n\t",
    "bom-only": "\ufeff",
    "prose": "I would accept this trade.",
    "truncated": '{"verdict": "accept", "confidence": 0.',
    "truncated-fenced": '```json\n{"verdict": "accept", "confidence": 0.8, "rationale": "cut\n```',
    "missing-verdict": '{"confidence": 0.5}',
    "unknown-verdict": '{"verdict": "maybe", "confidence": 0.5}',
    "null-verdict": '{"verdict": null, "confidence": 0.5}',
    "missing-confidence": '{"verdict": "accept"}',
    "confidence-word": '{"verdict": "accept", "confidence": "high"}',
    "confidence-numeric-string": '{"verdict": "accept", "confidence": "0.7"}',
    "confidence-bool": '{"verdict": "accept", "confidence": true}',
    "confidence-null": '{"verdict": "accept", "confidence": null}',
    "size-percent-string": '{"verdict": "modify", "confidence": 0.5, "modified_size_pct": "50%"}',
    "sl-string": '{"verdict": "modify", "confidence": 0.5, "modified_sl": "95,000"}',
    "rationale-number": '{"verdict": "accept", "confidence": 0.5, "rationale": 7}',
    "unknown-key": '{"verdict": "accept", "confidence": 0.5, "reasoning": "because"}',
    "list": '[{"verdict": "accept", "confidence": 0.5}]',
    "string": '"accept"',
    "number": "0.9",
    "two-objects": '{"verdict": "accept", "confidence": 0.5} {"verdict": "veto", "confidence": 0.9}',
    "two-fences": '```json\n{"verdict": "accept", "confidence": 0.5}\n```\n'
                  '```json\n{"verdict": "veto", "confidence": 0.9}\n```',
    "deep-nesting": "[" * 100_000,
    "deep-object": '{"a":' * 50_000,
    "too-long": '{"verdict": "accept", "confidence": 0.5, "rationale": "' + "x" * 200_000 + '"}',
}


@pytest.mark.parametrize("text", list(BAD.values()), ids=list(BAD))
def test_every_failure_is_a_one_line_bad_reply_with_the_raw_text(text: str) -> None:
    with pytest.raises(BadReply) as ei:
        parse_reply(text)
    e = ei.value
    assert e.kind == "bad_reply"
    assert e.raw == text[:MAX_RAW_CHARS]
    msg = str(e)
    assert msg and "\n" not in msg and len(msg) < 300


def test_failure_messages_name_the_problem() -> None:
    cases = {
        BAD["confidence-word"]: "'confidence' must be a JSON number",
        BAD["unknown-verdict"]: "must be accept, modify or veto",
        BAD["missing-verdict"]: "missing 'verdict'",
        BAD["unknown-key"]: "unknown key 'reasoning'",
        BAD["truncated"]: "malformed or truncated",
        BAD["two-objects"]: "2 JSON objects",
        BAD["empty"]: "empty reply",
        BAD["list"]: "not an object",
    }
    for text, needle in cases.items():
        with pytest.raises(BadReply, match=needle):
            parse_reply(text)


def test_non_text_input_is_a_bad_reply() -> None:
    with pytest.raises(BadReply):
        parse_reply(None)  # type: ignore[arg-type]
    with pytest.raises(BadReply):
        parse_reply(b'{"verdict": "accept", "confidence": 0.5}')  # type: ignore[arg-type]


# ----------------------------------------------------------------- out of range is not a failure


def test_out_of_range_numbers_parse_unchanged_for_the_clamp() -> None:
    r = parse_reply('{"verdict": "modify", "confidence": 1.7, "modified_size_pct": 1000, "modified_sl": -5}')
    assert (r.confidence, r.modified_size_pct, r.modified_sl) == (1.7, 1000.0, -5.0)
    assert parse_reply('{"verdict": "veto", "confidence": -0.2}').confidence == -0.2


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400])
def test_non_finite_numbers_are_normalised_safely(literal: str) -> None:
    r = parse_reply(f'{{"verdict": "modify", "confidence": {literal}, '
                    f'"modified_size_pct": {literal}, "modified_sl": {literal}}}')
    # confidence 0.0 is below any min_confidence: the gate decision stands; no modification is made
    assert r.confidence == 0.0
    assert r.modified_size_pct is None and r.modified_sl is None


def test_long_rationale_is_truncated_not_refused() -> None:
    r = parse_reply(json.dumps({"verdict": "accept", "confidence": 0.5, "rationale": "y" * 10_000}))
    assert len(r.rationale) == MAX_RATIONALE_CHARS and r.rationale.endswith("…")


def test_reply_model_is_frozen_and_strict() -> None:
    r = ReviewReply(verdict="accept", confidence=0.5)
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its ValidationError for frozen models
        r.confidence = 0.9  # type: ignore[misc]


# ------------------------------------------------------------------------------------- property


_json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
    max_leaves=20,
)
_reply_like = st.fixed_dictionaries(
    {"verdict": st.sampled_from(["accept", "modify", "veto", "maybe", "", "ACCEPT"]) | st.integers()},
    optional={
        "confidence": st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.text(max_size=5)
        | st.none(),
        "rationale": st.text(max_size=50) | st.integers(),
        "modified_size_pct": st.none() | st.floats() | st.integers() | st.text(max_size=4),
        "modified_sl": st.none() | st.floats() | st.integers(),
        "extra": st.integers(),
    },
)

_valid_reply = st.fixed_dictionaries(
    {"verdict": st.sampled_from(["accept", "modify", "veto"]),
     "confidence": st.floats(allow_nan=True, allow_infinity=True) | st.integers()},
    optional={"rationale": st.text(max_size=50), "modified_size_pct": st.none() | st.floats() | st.integers(),
              "modified_sl": st.none() | st.floats()},
)


@st.composite
def _texts(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["text", "json", "reply", "wrapped", "cut"]))
    if kind == "text":
        return draw(st.text())
    if kind == "json":
        return json.dumps(draw(_json_values))
    body = json.dumps(draw(_valid_reply | _reply_like))
    if kind == "reply":
        return body
    if kind == "wrapped":
        pre, post = draw(st.text(max_size=30)), draw(st.text(max_size=30))
        fence = draw(st.booleans())
        return f"{pre}```json\n{body}\n```{post}" if fence else f"{pre}{body}{post}"
    return body[: draw(st.integers(0, len(body)))]


@settings(max_examples=400, deadline=None)
@given(_texts())
def test_parse_reply_returns_a_reply_or_raises_bad_reply_only(text: str) -> None:
    try:
        r = parse_reply(text)
    except BadReply as e:
        assert e.kind == "bad_reply" and "\n" not in str(e)
        return
    assert isinstance(r, ReviewReply)
    assert r.verdict in ("accept", "modify", "veto")
    assert math.isfinite(r.confidence)
    assert r.modified_size_pct is None or math.isfinite(r.modified_size_pct)
    assert r.modified_sl is None or math.isfinite(r.modified_sl)


# ------------------------------------------------------------------------------- schema, verdict


def test_schema_and_model_describe_the_same_keys() -> None:
    # the schema sent to providers and the validator must never drift apart
    assert set(REPLY_SCHEMA["properties"]) == set(ReviewReply.model_fields)
    assert set(REPLY_SCHEMA["required"]) == set(ReviewReply.model_fields)  # OpenAI strict: all required
    assert REPLY_SCHEMA["additionalProperties"] is False
    assert REPLY_SCHEMA["properties"]["verdict"]["enum"] == [k.value for k in VerdictKind]
    # Anthropic's strict tools refuse numeric range keywords: the bounds are the clamp's job
    assert "minimum" not in json.dumps(REPLY_SCHEMA) and "maximum" not in json.dumps(REPLY_SCHEMA)


def test_to_verdict_carries_the_reply_and_its_provenance() -> None:
    r = parse_reply(GOOD_TEXT)
    v = to_verdict(r, tier="sonnet", model="claude-x", prompt_version="v9", raw=GOOD_TEXT, latency_ms=12.5,
                   input_tokens=100, output_tokens=20, cached_tokens=80, cost_usd=0.001)
    assert isinstance(v, Verdict)
    assert v.verdict is VerdictKind.MODIFY
    assert (v.confidence, v.modified_size_pct, v.modified_sl) == (0.7, 50.0, 63500.0)
    assert (v.source, v.tier, v.model, v.prompt_version) == ("sonnet", "sonnet", "claude-x", "v9")
    assert (v.latency_ms, v.input_tokens, v.output_tokens, v.cached_tokens, v.cost_usd) == (12.5, 100, 20, 80, 0.001)
    assert v.raw_reply == GOOD_TEXT and v.rationale == GOOD["rationale"] and v.error == ""
    big = to_verdict(r, tier="t", model="m", prompt_version="p", raw="z" * (MAX_RAW_CHARS + 10))
    assert len(big.raw_reply) == MAX_RAW_CHARS
