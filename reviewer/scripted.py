"""ScriptedTier: a test double that answers from a script (verdicts, errors, delays, hangs) and counts its calls.

From tests::

    ScriptedTier(script=[Verdict(...), RuntimeError("boom"), 0.2, "hang"], name="fast", timeout_s=0.5)
    ScriptedTier(script=lambda pack: Verdict(...))

From config (plain data)::

    {name: fake, provider: scripted, params: {script: [
        {verdict: veto, confidence: 0.8},
        {raise: timeout},                      # timeout | connection | rate_limit | server | bad_reply | error
        {delay: 0.2, then: {verdict: accept, confidence: 0.6}},
        hang,
        accept]}}

A step is: a ``Verdict``; an exception instance or class (raised); a number (sleep that many seconds, then
answer with the default verdict); ``"hang"`` (never answers: only a timeout or cancellation ends it);
``"accept" | "modify" | "veto"``; a mapping as above; or a callable ``pack -> Verdict`` (may be async).
The script cycles (``cycle=True``, the default) or, with ``cycle=False``, repeats its last step.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.errors import BadReply, ConfigError, TierTimeout, TierUnavailable
from engine.ports import TierSettings
from engine.types import ContextPack, Verdict, VerdictKind

__all__ = ["ScriptedParams", "ScriptedTier"]

_ERRORS: dict[str, Callable[[str], BaseException]] = {
    "timeout": lambda m: TierTimeout(m),
    "connection": lambda m: TierUnavailable(m),
    "rate_limit": lambda m: TierUnavailable(m, kind="rate_limit"),
    "server": lambda m: TierUnavailable(m, kind="server"),
    "bad_reply": lambda m: BadReply(m, raw="not json"),
    "error": lambda m: RuntimeError(m),  # an unexpected, non-ReviewError exception
}


class ScriptedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    script: list[Any] = Field(default_factory=list, description="Steps answered in turn (see module docstring).")
    cycle: bool = Field(True, description="Start over after the last step (false: repeat the last step).")


@dataclass(frozen=True, slots=True)
class _Step:
    delay_s: float = 0.0
    outcome: Any = None  # Verdict | BaseException | type[BaseException] | "hang" | callable | None (default)


def _verdict_from(data: Mapping[str, Any]) -> Verdict:
    fields = {k: v for k, v in data.items() if k in Verdict.__slots__}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown verdict fields {unknown}")
    fields["verdict"] = VerdictKind(str(fields.get("verdict", "accept")))
    fields.setdefault("confidence", 0.5)
    return Verdict(**fields)


def _step(item: Any) -> _Step:
    """Normalise one script item. Raises: ValueError on a shape it does not understand."""
    if isinstance(item, _Step):
        return item
    if isinstance(item, Verdict) or callable(item) or isinstance(item, BaseException):
        # exception classes are callable too, and land here as they should
        return _Step(0.0, item)
    if isinstance(item, bool):
        raise ValueError(f"script step {item!r}: expected a verdict, an error, a delay or 'hang'")
    if isinstance(item, (int, float)):
        if item < 0:
            raise ValueError(f"script step {item!r}: a delay must be >= 0")
        return _Step(float(item), None)
    if isinstance(item, str):
        if item == "hang":
            return _Step(0.0, "hang")
        if item in VerdictKind.__members__.values():
            return _Step(0.0, Verdict(VerdictKind(item), 0.5, f"scripted {item}"))
        raise ValueError(f"script step {item!r}: expected 'hang', 'accept', 'modify' or 'veto'")
    if isinstance(item, Mapping):
        data = dict(item)
        if "delay" in data:
            delay = float(data.pop("delay"))
            then = _step(data.pop("then")) if "then" in data else _Step()
            if data:
                raise ValueError(f"script step {item!r}: unknown keys {sorted(data)}")
            return _Step(delay + then.delay_s, then.outcome)
        if "raise" in data:
            kind = str(data.pop("raise"))
            message = str(data.pop("message", f"scripted {kind}"))
            if kind not in _ERRORS or data:
                raise ValueError(f"script step {item!r}: expected raise: one of {sorted(_ERRORS)}")
            return _Step(0.0, _ERRORS[kind](message))
        return _Step(0.0, _verdict_from(data))
    raise ValueError(f"script step {item!r}: expected a verdict, an error, a delay or 'hang'")


def _fresh(exc: BaseException) -> BaseException:
    """A copy of a scripted exception: re-raising one instance would keep growing its traceback."""
    try:
        return copy.copy(exc)
    except Exception:
        return exc


class ScriptedTier:
    """Implements ``engine.ports.Tier`` from a script. ``calls``, ``in_flight`` and ``max_in_flight`` are for tests."""

    provider = "scripted"
    endpoint = ""  # answers in-process

    Params = ScriptedParams

    def __init__(self, cfg: TierSettings | None = None, api_key: str | None = None, *,
                 script: Sequence[Any] | Callable[[ContextPack], Any] | None = None,
                 cycle: bool | None = None, name: str | None = None, model: str | None = None,
                 timeout_s: float | None = None, max_concurrency: int | None = None,
                 prompt_version: str = "scripted-v1") -> None:
        if script is None:
            params = ScriptedParams(**(cfg.params if cfg is not None else {}))
            script, cycle = params.script, params.cycle if cycle is None else cycle
        # keyword arguments win over the settings; without either, TierConfig's defaults
        self.name = name or (cfg.name if cfg is not None else "scripted")
        self.model = model or (cfg.model if cfg is not None else "") or "scripted"
        self.prompt_version = prompt_version
        self.timeout_s = timeout_s if timeout_s is not None else cfg.timeout_s if cfg is not None else 8.0
        self.max_concurrency = (max_concurrency if max_concurrency is not None
                                else cfg.max_concurrency if cfg is not None else 8)
        self.cycle = True if cycle is None else cycle
        try:
            self._steps: list[_Step] = [_Step(0.0, script)] if callable(script) else [_step(s) for s in script]
        except ValueError as e:
            raise ConfigError(str(e), path="params.script") from e
        self.calls = 0
        self.completed = 0
        self.cancelled = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.hashes: list[str] = []  # pack hashes in call order
        self.closed = False

    def _next(self) -> _Step:
        if not self._steps:
            return _Step()
        i = self.calls - 1
        return self._steps[i % len(self._steps)] if self.cycle else self._steps[min(i, len(self._steps) - 1)]

    async def review(self, pack: ContextPack) -> Verdict:
        self.calls += 1
        self.hashes.append(pack.hash)
        step = self._next()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if step.delay_s > 0:
                await asyncio.sleep(step.delay_s)
            out = step.outcome
            if isinstance(out, str):  # "hang": only a timeout or a cancellation ends it
                await asyncio.Event().wait()
            if isinstance(out, BaseException):
                raise _fresh(out)
            if isinstance(out, type) and issubclass(out, BaseException):
                raise out(f"scripted {out.__name__}")
            if out is None:
                out = Verdict(VerdictKind.ACCEPT, 0.5, "scripted default")
            elif callable(out):
                out = out(pack)
                if inspect.isawaitable(out):
                    out = await out
            if not isinstance(out, Verdict):
                raise BadReply(f"script answered {type(out).__name__}, not a Verdict")
            self.completed += 1
            return replace(out, source=out.source or self.name, tier=out.tier or self.name,
                           model=out.model or self.model, prompt_version=out.prompt_version or self.prompt_version)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        self.closed = True

