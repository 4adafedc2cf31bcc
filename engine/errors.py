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
        ├── BreakerOpen           the tier's circuit breaker refused the call
        └── BudgetExhausted       the tier's spend budget (per day or per run) is used up
"""

from __future__ import annotations

__all__ = [
    "BadReply",
    "BreakerOpen",
    "BudgetExhausted",
    "ClockError",
    "ConfigError",
    "DataError",
    "ReviewError",
    "StorageError",
    "TierTimeout",
    "TierUnavailable",
    "TradevetError",
    "describe",
    "exit_code_for",
    "one_line",
]


class TradevetError(Exception):
    """Base of every error tradevet raises on purpose. The message is one line meant for a user."""

    exit_code = 1


class ConfigError(TradevetError):
    """A configuration that cannot be used. ``path`` is the dotted key the error is about
    (``gates[0].params.bars``) and ``source`` the file that set it, when known: kept apart from the wording
    so that a caller knowing more (which list entry a plug-in came from, which file set a key) adds it
    without taking the message apart. ``str()`` is the one line a user reads: ``source: path: message``.
    """

    exit_code = 2

    def __init__(self, message: str, *, path: str = "", source: str = "") -> None:
        super().__init__(": ".join(x for x in (source, path, message) if x))
        self.message = message
        self.path = path
        self.source = source

    def under(self, prefix: str) -> ConfigError:
        """The same error with its path placed under ``prefix`` (``reviewer.tiers[0]`` + ``model``)."""
        path = prefix if not self.path else f"{prefix}{self.path}" if self.path.startswith("[") \
            else f"{prefix}.{self.path}"
        return ConfigError(self.message, path=path, source=self.source)


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


class BudgetExhausted(ReviewError):
    kind = "budget"


def exit_code_for(exc: BaseException) -> int:
    """Stable exit codes: 0 ok, 2 config, 3 data, 4 storage, 1 anything else."""
    return exc.exit_code if isinstance(exc, TradevetError) else 1


def one_line(text: object, limit: int = 200) -> str:
    """``text`` as one line of at most ``limit`` characters: white space folded, the rest cut with "…"."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def describe(exc: BaseException, limit: int = 200, *, with_type: bool = True) -> str:
    """An exception as one line for a log or an attempt timeline: ``Type: message`` (or the message alone,
    or the type's name when there is no message), never a whole SDK dump."""
    text = " ".join(str(exc).split())
    if with_type:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return one_line(text or type(exc).__name__, limit)
