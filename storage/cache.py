"""The verdict cache: verdicts keyed by (tier, model, prompt version, context hash), shared by every run of a database.

``SqlVerdictCache`` is the ``VerdictCache`` the cascade reads and writes through; the entries it puts wait in the
database's ``CacheBuffer`` (``storage.database``) and are written with the next recorded slice, in its
transaction, or at ``Database.flush``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from engine.types import Verdict
from storage import rows
from storage.sql import CACHE

if TYPE_CHECKING:
    from storage.database import Database

__all__ = ["SqlVerdictCache"]

log = logging.getLogger("tradevet.storage")

class SqlVerdictCache:
    """Verdicts keyed by (tier, model, prompt version, context hash) (implements ``engine.ports.VerdictCache``).

    Shared by all runs of a database. The first verdict stored for a key stays: a cached answer must not
    change under a replay that relies on it. ``put`` buffers: entries are written with the next recorded
    slice (in its transaction), when ``FLUSH_AT`` are waiting, or at ``Storage.flush``/``close``; ``get``
    sees buffered entries at once. A crash can lose buffered entries, which only costs fresh reviews.
    """

    FLUSH_AT = 256
    _PREFIX = 16  # hex digits of the context hash kept in the in-memory key index

    def __init__(self, storage: Database) -> None:
        self.storage = storage
        # Keys present in the table, read once at the first lookup: a miss — every signal of a new replay —
        # then costs a set lookup instead of a query. Entries another process writes after that are not
        # seen here (a cache miss: one fresh review), never a wrong verdict.
        self._index: set[tuple[str, str, str, str]] | None = None

    def _key(self, tier: str, model: str, prompt_version: str, context_hash: str) -> tuple[str, str, str, str]:
        return (tier, model, prompt_version, context_hash[: self._PREFIX])

    def _load_index(self) -> set[tuple[str, str, str, str]]:
        c = CACHE.c
        q = select(c.tier, c.model, c.prompt_version, func.substr(c.context_hash, 1, self._PREFIX))
        with self.storage.guard("cannot read the verdict cache"), self.storage.engine.connect() as conn:
            return {tuple(r) for r in conn.execute(q)}  # type: ignore[misc]

    def get(self, tier: str, model: str, prompt_version: str, context_hash: str) -> Verdict | None:
        st = self.storage.statements
        key = (tier, model, prompt_version, context_hash)
        row = self.storage.cache_buffer.get(key)
        if row is not None:
            text = row["verdict"]
        else:
            if self._index is None:
                self._index = self._load_index()
            if self._key(tier, model, prompt_version, context_hash) not in self._index:
                return None
            params = st.cache_get_order({"tier": tier, "model": model, "pv": prompt_version, "h": context_hash})
            with self.storage.guard("cannot read the verdict cache"), self.storage.engine.connect() as conn:
                text = conn.exec_driver_sql(st.cache_get, params).scalar()
        if text is None:
            return None
        try:
            return rows.verdict_from_json(text)
        except (ValueError, KeyError, TypeError) as e:
            # An unreadable entry costs one fresh review, not the run.
            log.warning("verdict cache: unreadable entry for %s/%s/%s/%s treated as a miss (%s)", tier, model,
                        prompt_version, context_hash[:12], e)
            return None

    def put(self, tier: str, model: str, prompt_version: str, context_hash: str, verdict: Verdict) -> None:
        row = {"tier": tier, "model": model, "prompt_version": prompt_version, "context_hash": context_hash,
               "verdict": rows.verdict_to_json(verdict), "created_at": datetime.now(UTC)}
        if self._index is not None:
            self._index.add(self._key(tier, model, prompt_version, context_hash))
        waiting = self.storage.cache_buffer.put((tier, model, prompt_version, context_hash), row)
        if waiting >= self.FLUSH_AT:
            self.storage.flush()

    def flush(self) -> None:
        """Write buffered entries now."""
        self.storage.flush()
