"""The reviewer's reply contract: strict parsing of a model's text into ``ReviewReply`` and then a ``Verdict``.

Tolerated (harmless wrapping): a leading BOM, surrounding whitespace, a ```json … ``` code fence, prose
before/after exactly one JSON object, a verdict in another letter case.

Refused with ``BadReply`` (a failure: the cascade moves on): empty text, no JSON object, truncated
JSON, more than one JSON object, a JSON value that is not an object, a missing or unknown verdict, a
missing confidence, unknown keys, and wrong types. Numbers must be JSON numbers: ``"0.7"`` is refused
like ``"high"``. Every tier asks for a JSON schema that makes a string number impossible, so one seen
here means the model is not honouring the contract; guessing at ``"70%"`` or ``"95,000"`` is how a
stop ends up in the wrong place.

Not failures: out-of-range numbers (confidence 1.7, size 1000 %, a stop on the wrong side). Bounding
them is the clamp policy's job. Non-finite numbers (NaN, ±inf, which Python's JSON reader accepts) are
normalised here because no comparison downstream is safe with them: confidence → 0.0 (below any
``min_confidence``, so the gate decision stands), ``modified_*`` → null (no change).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from engine.errors import BadReply
from engine.types import Verdict, VerdictKind

__all__ = [
    "MAX_RATIONALE_CHARS",
    "MAX_RAW_CHARS",
    "MAX_REPLY_CHARS",
    "REPLY_SCHEMA",
    "ReviewReply",
    "failed_field",
    "parse_reply",
    "to_verdict",
]

MAX_REPLY_CHARS = 100_000  # a reply budget of a few hundred tokens is ~2 kB: anything this long is garbage
MAX_RATIONALE_CHARS = 2_000  # stored and shown, never acted on
MAX_RAW_CHARS = 20_000  # raw replies are stored with every verdict
_MAX_SCAN_STARTS = 64  # '{' positions tried when digging one object out of prose (bounds the work)

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript|js)?[ \t]*\r?\n?(.*?)```", re.DOTALL)

# The JSON schema sent to providers with structured output. It satisfies the strict modes of both
# OpenAI (every key required, nullable via anyOf, no extra keys) and Anthropic (no numeric range
# keywords: bounds live in the descriptions and are enforced by the clamp, not the API).
REPLY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["accept", "modify", "veto"],
                    "description": "accept: execute as proposed; modify: smaller and/or tighter stop; veto: skip."},
        "confidence": {"type": "number", "description": "0.0 to 1.0."},
        "rationale": {"type": "string", "description": "One to three short sentences citing the pack."},
        "modified_size_pct": {"anyOf": [{"type": "number"}, {"type": "null"}],
                              "description": "modify only: new size, 10 to 100 % of the proposed size; else null."},
        "modified_sl": {"anyOf": [{"type": "number"}, {"type": "null"}],
                        "description": "modify only: a tighter stop, between the proposed stop and the entry; "
                                       "else null."},
    },
    "required": ["verdict", "confidence", "rationale", "modified_size_pct", "modified_sl"],
    "additionalProperties": False,
}


class ReviewReply(BaseModel):
    """One validated reply. Only verdict, confidence and the two ``modified_*`` fields are ever acted on."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    verdict: Literal["accept", "modify", "veto"]
    confidence: float
    rationale: str = ""  # never acted on: a reply without one is still a verdict
    modified_size_pct: float | None = None
    modified_sl: float | None = None

    @field_validator("verdict", mode="before")
    @classmethod
    def _verdict_case(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("confidence", "modified_size_pct", "modified_sl", mode="before")
    @classmethod
    def _huge_int(cls, v: Any) -> Any:
        # an integer beyond float range is an out-of-range number like 1e400 (→ inf), not a type error
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) > 1e308:
            return math.inf if v > 0 else -math.inf
        return v

    @field_validator("confidence")
    @classmethod
    def _finite_confidence(cls, v: float) -> float:
        return v if math.isfinite(v) else 0.0

    @field_validator("modified_size_pct", "modified_sl")
    @classmethod
    def _finite_or_none(cls, v: float | None) -> float | None:
        return v if v is None or math.isfinite(v) else None

    @field_validator("rationale")
    @classmethod
    def _truncate(cls, v: str) -> str:
        return v if len(v) <= MAX_RATIONALE_CHARS else v[: MAX_RATIONALE_CHARS - 1] + "…"


def _short(value: Any, n: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 1] + "…"


def _fail(message: str, raw: str) -> BadReply:
    return BadReply(" ".join(message.split()), raw=raw[:MAX_RAW_CHARS])


def _loads(text: str) -> tuple[Any, str | None]:
    """(value, None) or (None, why): ``json.loads`` that never raises."""
    try:
        return json.loads(text), None
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError as e:  # JSONDecodeError, and the int-digits limit of Python ≥ 3.11
        return None, str(e).split("\n")[0]


def _scan_objects(text: str) -> list[dict[str, Any]]:
    """Top-level JSON objects embedded in prose, left to right."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    i, tries = text.find("{"), 0
    while i != -1 and tries < _MAX_SCAN_STARTS:
        tries += 1
        try:
            obj, end = decoder.raw_decode(text, i)
        except (ValueError, RecursionError):
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found.append(obj)
        i = text.find("{", end)
    return found


def _extract(text: str) -> dict[str, Any]:
    s = text.lstrip("\ufeff").strip()
    if not s:
        raise _fail("empty reply", text)
    if len(s) > MAX_REPLY_CHARS:
        raise _fail(f"reply too long ({len(s)} chars)", text)

    whole, why = _loads(s)
    if why is None:
        if isinstance(whole, dict):
            return whole
        raise _fail(f"reply is a JSON {type(whole).__name__}, not an object", text)

    fenced = _FENCE.findall(s)
    if len(fenced) == 1:
        inner, inner_why = _loads(fenced[0].strip())
        if inner_why is None:
            if isinstance(inner, dict):
                return inner
            raise _fail(f"fenced reply is a JSON {type(inner).__name__}, not an object", text)

    objects = _scan_objects(s)
    if len(objects) == 1:
        return objects[0]
    if len(objects) > 1:
        raise _fail(f"reply holds {len(objects)} JSON objects, expected exactly one", text)
    if "{" in s:
        raise _fail(f"reply JSON is malformed or truncated ({why})", text)
    raise _fail("reply holds no JSON object", text)


def _explain(err: Any) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ())) or "reply"
    typ, got = err.get("type", ""), err.get("input")
    if typ == "missing":
        return f"reply is missing {loc!r}"
    if typ == "extra_forbidden":
        return f"reply has unknown key {loc!r}"
    if typ == "literal_error":
        return f"reply {loc!r} must be accept, modify or veto (got {_short(got)})"
    if typ in ("float_type", "float_parsing"):
        return f"reply {loc!r} must be a JSON number{' or null' if loc != 'confidence' else ''} (got {_short(got)})"
    if typ == "string_type":
        return f"reply {loc!r} must be a string (got {_short(got)})"
    return f"reply {loc!r}: {err.get('msg', 'invalid')} (got {_short(got)})"


def parse_reply(text: str) -> ReviewReply:
    """Text from a model → ``ReviewReply``. Raises: BadReply (kind "bad_reply", ``raw`` = the text), only."""
    if not isinstance(text, str):
        raise BadReply(f"reply is {type(text).__name__}, not text", raw=repr(text)[:MAX_RAW_CHARS])
    obj = _extract(text)
    try:
        return ReviewReply.model_validate(obj)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise _fail(_explain(errors[0]) + more, text) from None


def failed_field(text: str) -> str | None:
    """Which part of a reply broke the contract: ``json`` (no single JSON object in it), the first bad key
    (``confidence``, ``verdict``, an unknown key, ...), or None when the reply is valid."""
    if not isinstance(text, str):
        return "json"
    try:
        obj = _extract(text)
    except BadReply:
        return "json"
    try:
        ReviewReply.model_validate(obj)
    except ValidationError as e:
        loc = e.errors(include_url=False)[0].get("loc", ())
        return ".".join(str(p) for p in loc) or "json"
    return None


def to_verdict(
    reply: ReviewReply,
    *,
    tier: str,
    model: str,
    prompt_version: str,
    raw: str,
    latency_ms: float = 0.0,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cached_tokens: int = 0,
    cost_usd: float = 0.0,
) -> Verdict:
    """A parsed reply plus its provenance → the pipeline's ``Verdict`` (``source`` = the tier's name)."""
    return Verdict(
        verdict=VerdictKind(reply.verdict),
        confidence=reply.confidence,
        rationale=reply.rationale,
        modified_size_pct=reply.modified_size_pct,
        modified_sl=reply.modified_sl,
        source=tier,
        tier=tier,
        model=model,
        prompt_version=prompt_version,
        latency_ms=latency_ms,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_tokens=cached_tokens,
        cost_usd=cost_usd,
        raw_reply=raw[:MAX_RAW_CHARS],
    )
