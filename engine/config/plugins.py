"""Plug-in resolution, the one place for it: a registered kind or ``"module:Class"`` user code → the class to
build, and a plug-in's params → its validated ``Params`` model. Strategies, gates and reviewer tiers all go
through here, so a bad kind or a bad parameter reads the same wherever it is configured.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from typing import Any

from engine.config.wording import dotted, explain_error
from engine.errors import ConfigError

__all__ = ["build_params", "resolve"]


def resolve(kind: str, registry: Mapping[str, Any], *, what: str, path: str) -> type:
    """Return the class for ``kind``. Registry values may be classes or lazy ``"module:Class"`` strings.

    Raises: ConfigError at ``path``, naming the known kinds and the closest match.
    """
    target = registry.get(kind)
    if target is None and ":" not in kind:
        known = sorted(registry)
        close = difflib.get_close_matches(kind, known, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown {what} {kind!r} (known: {', '.join(known)}){hint}", path=path)
    if target is None:
        target = kind
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ConfigError(f"cannot import module {module_name!r} for {what} {kind!r} ({e})", path=path) from e
        try:
            target = getattr(module, attr)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no {attr!r} (for {what} {kind!r})", path=path) from None
    if not isinstance(target, type):
        raise ConfigError(f"{what} {kind!r} is not a class (got {type(target).__name__})", path=path)
    return target


def build_params(model: Any, params: Mapping[str, Any], *, path: str) -> Any:
    """``model(**params)`` for a plug-in's pydantic ``Params`` model (the params as given when it has none).

    Raises: ConfigError at ``path`` + the bad key, worded like the config's own errors ("must be >= 1 (got 0)",
    "unknown key (...); did you mean ...").
    """
    if model is None:
        return dict(params)
    from pydantic import ValidationError

    try:
        return model(**params)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        first = errors[0]
        where = dotted(first["loc"])
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{explain_error(first, model)}{more}",
                          path=f"{path}.{where}" if where else path) from None
