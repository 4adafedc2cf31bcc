"""Error wording: a pydantic error and where it happened → the one line a user reads, and the file to blame.

``explain_error`` words one ``ValidationError`` item ("must be > 0 (got -1)", "unknown key (known keys: ...);
did you mean 'x'?") for the config's own models and for plug-in ``Params`` models alike; ``blame`` finds the
file (of those merged) that set a dotted key.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

__all__ = ["blame", "dotted", "explain_error"]


def dotted(loc: Sequence[Any]) -> str:
    """A pydantic error location → the dotted key users write: ``("gates", 0, "params")`` → ``gates[0].params``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _known_keys(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Field names valid at ``loc``'s parent, for 'did you mean' hints."""
    cur: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            return []
        cur = _model_in(fields[part].annotation)
        if cur is None:
            return []
    return list(getattr(cur, "model_fields", {}).keys())


def _model_in(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        m = _model_in(arg)
        if m is not None:
            return m
    return None


_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def explain_error(err: Mapping[str, Any], model: type[BaseModel]) -> str:
    """One pydantic error (``ValidationError.errors()`` item) of ``model`` → the user's wording: "must be > 0 (got -1)",
    "unknown key (known keys: ...); did you mean 'x'?". Also for plug-in ``Params`` models."""
    typ, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    loc = err["loc"]
    if typ == "extra_forbidden":
        known = _known_keys(model, loc)
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"unknown key (known keys: {', '.join(known)}){extra}"
    if typ == "missing":
        return "required key is missing"
    if typ in _BOUNDS:
        bound = next(iter(ctx.values())) if ctx else "?"
        bound = f"{bound:.12g}" if isinstance(bound, (int, float)) else bound  # pydantic gives 0.0 for gt=0
        return f"must be {_BOUNDS[typ]} {bound} (got {got!r})"
    if typ == "literal_error":
        return f"must be one of {ctx.get('expected', '?')} (got {got!r})"
    if typ in ("int_parsing", "int_type", "int_from_float"):
        return f"expected an integer (got {got!r})"
    if typ in ("float_parsing", "float_type"):
        return f"expected a number (got {got!r})"
    if typ in ("bool_parsing", "bool_type"):
        return f"expected true or false (got {got!r})"
    if typ in ("string_type",):
        return f"expected a string (got {got!r})"
    if typ in ("list_type",):
        return f"expected a list (got {got!r})"
    if typ in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping (got {got!r})"
    if typ == "too_short":
        return f"must not be empty (got {got!r})"
    if typ in ("value_error", "assertion_error"):
        return str(err["msg"]).removeprefix("Value error, ")
    return f"{err['msg'][0].lower()}{err['msg'][1:]} (got {got!r})"


_LAST_PART = re.compile(r"(\.[^.\[]+|\[\d+\])$")


def blame(path: str, origin: Mapping[str, str], order: Sequence[str], default: str) -> str:
    """The file to blame for ``path``: the latest file (in load order) that set it or anything under it,
    else the file that set its nearest parent, else ``default``."""
    if path:
        rank = {f: i for i, f in enumerate(order)}
        under = [src for p, src in origin.items() if p == path or p.startswith((path + ".", path + "["))]
        if under:
            return max(under, key=lambda f: rank.get(f, -1))
    probe = path
    while probe:
        if probe in origin:
            return origin[probe]
        probe = _LAST_PART.sub("", probe) if _LAST_PART.search(probe) else ""
    return default
