"""Plug-in resolution: a registered kind, or ``"module:Class"`` user code → the class to build."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from typing import Any

from engine.errors import ConfigError

__all__ = ["resolve"]


def resolve(kind: str, registry: Mapping[str, Any], *, what: str, path: str) -> Any:
    """Return the class for ``kind``. Registry values may be classes or lazy ``"module:Class"`` strings.

    Raises: ConfigError naming ``path``, the known kinds and the closest match.
    """
    target = registry.get(kind)
    if target is None and ":" not in kind:
        known = sorted(registry)
        close = difflib.get_close_matches(kind, known, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{path}: unknown {what} {kind!r} (known: {', '.join(known)}){hint}")
    if target is None:
        target = kind
    if isinstance(target, str):
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ConfigError(f"{path}: cannot import module {module_name!r} for {what} {kind!r} ({e})") from e
        try:
            target = getattr(module, attr)
        except AttributeError:
            raise ConfigError(f"{path}: module {module_name!r} has no {attr!r} (for {what} {kind!r})") from None
    return target
