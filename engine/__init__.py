"""tradevet's engine: the pipeline from a closed bar to a scored outcome, and everything around it.

The layout is the architecture (DESIGN §2; the import contracts in pyproject.toml hold it):

    engine.types, engine.ports       the value types and the protocols the other packages implement
    engine.errors, engine.clock      the error tree; the only source of "now"
    engine.stats, engine.packjson    statistics of verdict quality; a context pack's canonical JSON
    engine.config                    the YAML schema, loading, error wording, plug-in resolution
    engine.core                      the single code path of Pipeline.step: market, gates, context, clamp,
                                     executor, portfolio, what is scored and the retire window
    engine.inputs                    what comes from outside: feeds, news, data download
    engine.drivers                   what drives the pipeline: replay, the live loop, resume, metrics
    engine.recorded                  the read side over recorded runs: scorecard, backtest, transfer, report
    engine.app, engine.cli           the composition root, the only modules that import strategies,
                                     reviewer and storage

Importing ``engine`` imports nothing else; each sub-package lists its public names in ``__all__`` and loads
the module that defines one when it is first used (``lazy``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "app", "cli", "clock", "config", "core", "drivers", "errors", "inputs", "packjson", "ports", "recorded",
    "stats", "types",
]


def lazy(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` for ``package``: each public name in ``exports`` (name →
    the module, relative to ``package``, that defines it) is imported when it is first asked for, so that
    importing a package stays as cheap as the module a caller really needs."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        globals_of_package = importlib.import_module(package).__dict__
        globals_of_package[name] = value  # found directly from now on
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__


def __getattr__(name: str) -> Any:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
