"""One trade list, the same for every engine in the comparison: (symbol, entry bar's open, side, exit bar's open)
per trade, sorted, and its SHA-256. Standard library only: each engine's runner imports it in its own venv."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

Row = tuple[str, int, str, int]


def digest(rows: Iterable[Row]) -> str:
    h = hashlib.sha256()
    for symbol, entry_ms, side, exit_ms in sorted(rows):
        h.update(f"{symbol},{entry_ms},{side},{exit_ms}\n".encode())
    return h.hexdigest()
