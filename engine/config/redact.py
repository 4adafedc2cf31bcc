"""Secret redaction for logs: values registered here (API keys, ``${VAR}`` substitutions) never reach a log line.

The SDKs' HTTP clients log request URLs, which may carry credentials (``http://user:pw@proxy``); a filter on
the log handlers rewrites every record that contains a registered value.
"""

from __future__ import annotations

import logging

__all__ = ["MASK", "RedactingFilter", "install", "redact", "register"]

MASK = "***"
_SECRETS: set[str] = set()


def register(value: str | None) -> None:
    """Remember a secret value (shorter than 6 characters is not worth masking: it would mangle text)."""
    if value and len(value) >= 6:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for s in _SECRETS:
        if s in text:
            text = text.replace(s, MASK)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            msg = record.getMessage()
            clean = redact(msg)
            if clean != msg:
                record.msg, record.args = clean, None
            if record.exc_text:
                record.exc_text = redact(record.exc_text)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Put the filter on every handler of ``logger`` (default: the root logger), once."""
    target = logger or logging.getLogger()
    for h in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter())
