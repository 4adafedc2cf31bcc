"""The error tree. Vendor errors (SDK, ccxt, SQLAlchemy) are mapped at the boundary where they occur.

    TradevetError                 anything we raise on purpose; the CLI maps it to an exit code
    ├── ConfigError               bad YAML, unknown key, wrong type, missing env var   → exit 2
    ├── DataError                 bad market/news data, missing files or directories   → exit 3
    ├── StorageError              database unreachable, unwritable, schema mismatch     → exit 4
    ├── ClockError                a clock asked to go backwards
    └── ReviewError               a tier failed (the cascade moves on; never reaches the user)
        ├── TierTimeout
        ├── TierUnavailable       connection refused/reset, 5xx, 429 (``kind`` says which)
        ├── BadReply              unparseable or schema-violating reply
        └── BreakerOpen           the tier's circuit breaker refused the call
"""

from __future__ import annotations

__all__ = [
    "BadReply",
    "BreakerOpen",
    "ClockError",
    "ConfigError",
    "DataError",
    "ReviewError",
    "StorageError",
    "TierTimeout",
    "TierUnavailable",
    "TradevetError",
    "exit_code_for",
]


class TradevetError(Exception):
    """Base of every error tradevet raises on purpose. The message is one line meant for a user."""

    exit_code = 1


class ConfigError(TradevetError):
    exit_code = 2


class DataError(TradevetError):
    exit_code = 3


class StorageError(TradevetError):
    exit_code = 4


class ClockError(TradevetError):
    pass


class ReviewError(TradevetError):
    """A tier could not produce a verdict. ``kind`` is the failure class used in metrics."""

    kind = "error"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class TierTimeout(ReviewError):
    kind = "timeout"


class TierUnavailable(ReviewError):
    kind = "connection"


class BadReply(ReviewError):
    kind = "bad_reply"

    def __init__(self, message: str, *, raw: str = "", kind: str | None = None) -> None:
        super().__init__(message, kind=kind)
        self.raw = raw


class BreakerOpen(ReviewError):
    kind = "breaker_open"


def exit_code_for(exc: BaseException) -> int:
    """Stable exit codes: 0 ok, 2 config, 3 data, 4 storage, 1 anything else."""
    return exc.exit_code if isinstance(exc, TradevetError) else 1
