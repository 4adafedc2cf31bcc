"""Storage: one database of runs (implements ``engine.ports.RunStore``) — runs and their writer claims, per-run
recorders, the verdict cache, and the read side's bulk readers.

SQLAlchemy 2.x with typed models; run-level reads and updates use ORM sessions opened per call and passed
explicitly; nothing here is global. Every database error that reaches a caller is an ``engine.errors.StorageError``
with one line naming the URL (password masked) and the cause.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update

from engine.errors import StorageError
from engine.ports import PackCheck, Recorder
from engine.types import ContextPack, RunInfo, StoredOutcomes, StoredReviews, Verdict
from storage.cache import SqlVerdictCache
from storage.child import shareable
from storage.database import Database
from storage.db import is_memory
from storage.models import RUN_KINDS, RUN_MODES, RUN_SCOPED_TABLES, RUN_STATUSES, Base, RunRow
from storage.recorder import RunRecorder

__all__ = ["RESUMABLE", "Storage"]

log = logging.getLogger("tradevet.storage")

RESUMABLE = ("running", "stopped")
DAY_MS = 86_400_000
_CLAIM_CLASS = 0x74766E  # first key of the PostgreSQL advisory locks that claim a run name ("tvn")


def _info(r: RunRow) -> RunInfo:
    return RunInfo(r.id, r.name, r.status, r.config_json, r.config_hash, int(r.seed), r.reviewer_mode,
                   _aware(r.created_at), None if r.last_slice_ms is None else int(r.last_slice_ms),
                   float(r.starting_equity), r.kind or "run", None if r.parent_id is None else int(r.parent_id))


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(dt: datetime) -> datetime:
    # SQLite hands back naive datetimes for DateTime(timezone=True), PostgreSQL its session zone;
    # we only ever write UTC, so both become the same aware UTC value.
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _check(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)} (got {value!r})")




class Storage(Database):
    """One database of runs: runs and their writer claims, per-run recorders, the verdict cache, the read side's
    readers. Build it with ``open_storage``."""

    def __init__(self, engine: Engine, url_masked: str, *, busy_timeout_ms: int) -> None:
        super().__init__(engine, url_masked, busy_timeout_ms=busy_timeout_ms)
        self._claims: dict[str, Any] = {}  # run name → what holds its writer claim (see claim_run_name)

    def __repr__(self) -> str:
        return f"Storage({self.url_masked!r})"

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- runs

    def create_run(self, name: str, config_json: str, config_hash: str, seed: int, reviewer_mode: str,
                   starting_equity: float, *, kind: str = "run", parent_id: int | None = None) -> int:
        """Insert a run with status ``running``. Returns its id. ``kind``/``parent_id``: a counterfactual
        replay of another run (``tradevet value``), or a trial of a sweep (``tradevet sweep``, whose own run has
        kind ``sweep``)."""
        _check(reviewer_mode, RUN_MODES, "reviewer_mode")
        _check(kind, RUN_KINDS, "kind")
        if (kind in ("counterfactual", "trial")) != (parent_id is not None):
            raise ValueError(f"a counterfactual or trial run needs a parent run and only they have one (got kind "
                             f"{kind!r}, parent {parent_id})")
        now = _now()
        values: dict[str, Any] = {
            "name": name, "status": "running", "config_json": config_json, "config_hash": config_hash, "seed": seed,
            "reviewer_mode": reviewer_mode, "created_at": now, "updated_at": now, "last_slice_ms": None,
            "starting_equity": starting_equity}
        if kind != "run":  # left to the column's server default otherwise (as on a database before 0003)
            values.update(kind=kind, parent_id=parent_id)
        with self.write_session(f"cannot create run {name!r}") as s:
            return int(s.execute(insert(RunRow).values(**values).returning(RunRow.id)).scalar_one())

    def get_run(self, run_id: int) -> RunInfo:
        """Raises: StorageError when there is no such run."""
        with self.read_session(f"cannot read run {run_id}") as s:
            row = s.get(RunRow, run_id)
            if row is None:
                raise StorageError(f"no run {run_id} in {self.url_masked}")
            return _info(row)

    def find_resumable_run(self, name: str) -> RunInfo | None:
        """The latest run named ``name`` if it is still ``running`` (crashed) or ``stopped``; else None.

        Only the latest run of a name is considered: once a newer run of that name finished or failed,
        an older interrupted one is history, not something to continue.
        """
        with self.read_session(f"cannot look up run {name!r}") as s:
            row = s.scalars(select(RunRow).where(RunRow.name == name).order_by(RunRow.id.desc()).limit(1)).first()
            return _info(row) if row is not None and row.status in RESUMABLE else None

    def resolve_run(self, ref: str) -> RunInfo:
        """A run by id (``"12"``) or by name (the latest run of that name).

        Raises: StorageError ``no run 'x' in <url> (known: ...)``.
        """
        ref = str(ref).strip()
        with self.read_session(f"cannot look up run {ref!r}") as s:
            # only plain ASCII digits that fit a 64-bit id are ids; anything else is a name
            row = s.get(RunRow, int(ref)) if ref.isascii() and ref.isdigit() and len(ref) < 19 else None
            if row is None:
                row = s.scalars(select(RunRow).where(RunRow.name == ref).order_by(RunRow.id.desc()).limit(1)).first()
            if row is not None:
                return _info(row)
            names = list(s.scalars(select(RunRow.name).group_by(RunRow.name).order_by(func.max(RunRow.id).desc())))
        shown = ", ".join(names[:10]) + (f", … ({len(names) - 10} more)" if len(names) > 10 else "")
        raise StorageError(f"no run {ref!r} in {self.url_masked} (known: {shown or 'none'})")

    def child_runs(self, parent_id: int, kind: str = "counterfactual") -> list[RunInfo]:
        """The runs of ``kind`` linked to ``parent_id``, oldest first."""
        with self.read_session(f"cannot list the {kind} runs of run {parent_id}") as s:
            return [_info(r) for r in s.scalars(select(RunRow).where(RunRow.parent_id == parent_id,
                                                                     RunRow.kind == kind).order_by(RunRow.id))]

    def delete_run(self, run_id: int) -> None:
        """Delete a run, everything it recorded (the foreign keys cascade) and its counterfactual runs."""
        with self.write_session(f"cannot delete run {run_id}") as s:
            children = list(s.scalars(select(RunRow.id).where(RunRow.parent_id == run_id)))
            for rid in [*children, run_id]:
                s.execute(delete(RunRow).where(RunRow.id == rid))

    def list_runs(self) -> list[RunInfo]:
        """Every run, oldest first."""
        with self.read_session("cannot list runs") as s:
            return [_info(r) for r in s.scalars(select(RunRow).order_by(RunRow.id))]

    def set_run_status(self, run_id: int, status: str) -> None:
        _check(status, RUN_STATUSES, "status")
        self._update_run(run_id, f"cannot set the status of run {run_id}", status=status)

    def set_reviewer_mode(self, run_id: int, mode: str) -> None:
        _check(mode, RUN_MODES, "reviewer mode")
        self._update_run(run_id, f"cannot set the reviewer mode of run {run_id}", reviewer_mode=mode)

    def _update_run(self, run_id: int, doing: str, **values: Any) -> None:
        with self.write_session(doing) as s:
            done = s.execute(update(RunRow).where(RunRow.id == run_id).values(updated_at=_now(), **values))
            if done.rowcount == 0:  # type: ignore[attr-defined]
                raise StorageError(f"no run {run_id} in {self.url_masked}")

    # ------------------------------------------------------------------------------------ claims

    CLAIM_WAIT_S = 3.0

    def claim_run_name(self, name: str, *, wait_s: float | None = None) -> bool:
        """Become the one process writing runs named ``name`` in this database, until ``close``.

        Without it, a second ``tradevet paper`` of the same name would take the first one's run (status
        ``running``) for an interrupted one, resume it under its feet and mark it failed. The claim is an
        OS-level lock the operating system or the server drops with the process, so a run killed by SIGKILL
        is free again at once: PostgreSQL, a session advisory lock on its own connection; SQLite, a byte-range
        lock in ``<database file>-lock``; an in-memory database belongs to one process anyway. Waits up to
        ``wait_s`` (default ``CLAIM_WAIT_S``: the server may notice a killed client a moment late). Returns
        False when another process holds it. Raises: StorageError.
        """
        if name in self._claims:
            return True
        key = zlib.crc32(name.encode("utf-8"))
        deadline = time.monotonic() + (self.CLAIM_WAIT_S if wait_s is None else wait_s)
        while True:
            held = self._try_claim(key)
            if held is not None:
                self._claims[name] = held
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def _try_claim(self, key: int) -> Any:
        """What holds the claim for ``key`` (a connection, a file descriptor, True), or None when taken."""
        url = self.engine.url
        if url.get_backend_name() == "postgresql":
            with self.guard("cannot claim the run name"):
                conn = self.engine.connect()
                try:
                    got = conn.exec_driver_sql(
                        f"SELECT pg_try_advisory_lock({_CLAIM_CLASS}, {key - 2**32 if key >= 2**31 else key})"
                    ).scalar()
                    conn.commit()
                except BaseException:
                    conn.close()
                    raise
            if got:
                return conn
            conn.close()
            return None
        if is_memory(url):
            return True
        try:
            import fcntl
        except ImportError:  # no POSIX locks (Windows): claims are not enforced there
            return True
        path = str(url.database).removeprefix("file:").split("?", 1)[0] + "-lock"
        with self.guard("cannot claim the run name"):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, key)
            except OSError:
                os.close(fd)
                return None
        return fd

    def _release_claims(self) -> None:
        for name, held in list(self._claims.items()):
            try:
                if isinstance(held, bool):
                    pass
                elif isinstance(held, int):
                    os.close(held)  # drops the byte-range lock
                else:
                    held.invalidate()  # ends the session at once, and its advisory lock with it
                    held.close()
            except Exception as e:  # never mask why we are closing
                log.warning("run name %r: releasing the writer claim failed: %s", name, e)
        self._claims.clear()

    # --------------------------------------------------------------------------------- components

    WRITE_BEHIND_MIN_BARS = 50_000  # a replay of at least this many bars records from a child process

    def recorder(self, run_id: int, *, expected_bars: int | None = None) -> Recorder:
        """The recorder of an existing run. ``expected_bars``: how many bars the caller is about to record (a
        replay's feed knows); from ``WRITE_BEHIND_MIN_BARS`` on, into a database another process can open, the
        batches are committed by a child process while the caller works on (``storage.writer``) — a child costs
        about half a second to start, which a replay of a few thousand bars would not win back.

        Raises: StorageError when there is no such run.
        """
        self.get_run(run_id)
        recorder = RunRecorder(self, run_id)
        if expected_bars is None or expected_bars < self.WRITE_BEHIND_MIN_BARS or not shareable(self):
            return recorder
        from storage.writer import BackgroundWriter

        try:
            return BackgroundWriter(recorder)
        except StorageError as e:  # no child process here (limits, a frozen interpreter): record in-process
            log.warning("%s; recording in this process", e)
            return recorder

    def records(self, run_id: int) -> RunRecorder:
        """One run's rows, read back as value types. Raises: StorageError when there is no such run."""
        self.get_run(run_id)
        return RunRecorder(self, run_id)

    def verdict_cache(self) -> SqlVerdictCache:
        return SqlVerdictCache(self)

    def table_counts(self, run_id: int | None = None, *, tables: Sequence[str] | None = None) -> dict[str, int]:
        """Rows per table: for one run (its run-scoped tables), or for the whole database; ``tables``: only
        these (counting a million-bar run's bars takes a while)."""
        self.flush()
        names = RUN_SCOPED_TABLES if run_id is not None else ("runs", *RUN_SCOPED_TABLES, "verdict_cache")
        if tables is not None:
            names = tuple(tables)
        out: dict[str, int] = {}
        with self.guard("cannot count rows"), self.engine.connect() as conn:
            for name in names:
                table = Base.metadata.tables[name]
                q = select(func.count()).select_from(table)
                if run_id is not None:
                    q = q.where(table.c.run_id == run_id)
                out[name] = int(conn.execute(q).scalar_one())
        return out

    # ---------------------------------------------------------------------- the read side (RunReader)

    def count_signals(self, run_id: int) -> int:
        return self.table_counts(run_id, tables=["signals"])["signals"]

    def reviewed(self, run_id: int, *, keep_json: bool = False, lean: bool = False,
                 check: PackCheck | None = None) -> StoredReviews:
        from storage import bulk

        return bulk.load_reviewed(self, run_id, keep_json=keep_json, lean=lean, check=check)  # type: ignore[arg-type]

    def outcomes(self, run_id: int, *, realized: bool = True, snapshot: bool = False) -> StoredOutcomes:
        from storage import bulk

        return bulk.load_outcomes(self, run_id, realized=realized, snapshot=snapshot)

    def check_packs(self, run_id: int) -> PackCheck:
        from storage import bulk

        return bulk.PackCheck.start(self, run_id)

    def packs(self, run_id: int, signal_ids: Sequence[str]) -> dict[str, ContextPack]:
        from storage import bulk

        return bulk.rebuilt_packs(self, run_id, signal_ids)

    def cached_verdicts(self, run_id: int, keys: Sequence[tuple[str, str, str]]
                        ) -> dict[tuple[str, str, str], dict[str, Verdict]]:
        from storage import bulk

        return bulk.cached_verdicts(self, run_id, keys)

    def spend(self, *, run_id: int | None = None, since_ms: int = 0,
              exclude_run_id: int | None = None) -> list[tuple[str, int, int, float]]:
        from storage.models import VerdictRow

        v = VerdictRow.__table__.c  # verdicts only: no buffered verdict-cache entry matters here
        day = (v.reviewed_at_ms // DAY_MS) * DAY_MS  # `//`: integer division on both backends (`/` is true division)
        q = (select(v.tier, day.label("day"), func.count(), func.coalesce(func.sum(v.cost_usd), 0.0))
             .where(v.source == v.tier, v.tier != "", v.reviewed_at_ms >= since_ms)
             .group_by(v.tier, day).order_by(v.tier, day))
        if run_id is not None:
            q = q.where(v.run_id == run_id)
        if exclude_run_id is not None:
            q = q.where(v.run_id != exclude_run_id)
        with self.guard("cannot read recorded spend"), self.engine.connect() as conn:
            return [(str(t), int(d), int(n), float(usd)) for t, d, n, usd in conn.execute(q)]

    def close(self) -> None:
        """Write what is buffered, drop the run-name claims and release every connection. Idempotent."""
        if self.closed:
            return
        try:
            super().close()
        finally:
            self._release_claims()
