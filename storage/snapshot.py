"""Snapshots: what a backtest reads of a run, kept as columns for the next backtest of the same rows.

A backtest of a run reads its reviewed signals, their packs' digests, verdicts and decisions, and its shadow
outcomes: ~500,000 rows per 100,000 signals, turned into Python values row by row. A repeat backtest reads the
same values again. So the first one keeps what it read (``keep``) as one blob of columns (``encode``) in
``run_snapshots`` (migration 0006), with the *stamp* of the rows it covers (``stamp``); the next one reads the
blob instead of the rows (``read``) when the run's stamp is still that one.

The stamp is the packs' generation (raised by a trigger on every insert, update or delete of a context pack,
migration 0005), the run's changed-row count (raised by a trigger on every update or delete of one of its
signals, verdicts, decisions or outcomes, 0006) and the row count of every table the snapshot covers (an insert
raises one). It is read before the rows it covers, on the same connection: a row changed after it was read
makes the run's stamp differ from the one kept, so what a snapshot holds is never older than its stamp says.

A snapshot is a copy, never the record: the values come back bit for bit (floats and integers as 8-byte
arrays, texts joined, anything else as JSON verified to read back equal — a column that would not is not
kept), and a snapshot that cannot be read or kept is logged and the rows are read instead.
"""

from __future__ import annotations

import json
import logging
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Table, func, select

from storage.database import Database
from storage.models import PackCheckRow, RunSnapshotRow

__all__ = ["current", "decode", "encode", "generation_of", "keep", "read", "stamp"]

log = logging.getLogger(__name__)

FORMAT = 1
_SNAPSHOTS: Table = RunSnapshotRow.__table__  # type: ignore[assignment]
_CHECKS: Table = PackCheckRow.__table__  # type: ignore[assignment]
_HEAD = struct.Struct("<Q")
_SEP = "\x00"
_INT64 = (-(2 ** 63), 2 ** 63 - 1)


# ------------------------------------------------------------------------------------------ the blob


def _kind(values: Sequence[Any]) -> str:
    """How a column is stored: "f8" (every value a float), "i8" (an int in int64's range, no bool), "s" (a text
    without NUL), else "json"."""
    types = set(map(type, values))
    if types == {float}:
        return "f8"
    if types == {int} and _INT64[0] <= min(values) and max(values) <= _INT64[1]:
        return "i8"
    if types == {str} and not any(_SEP in v for v in values):
        return "s"
    return "json"


def _same(a: Sequence[Any], b: Sequence[Any]) -> bool:
    """Equal value for value, and of the same types (``1 == 1.0 == True`` would not do)."""
    return len(a) == len(b) and list(map(type, a)) == list(map(type, b)) and all(
        x is y or x == y for x, y in zip(a, b, strict=True))


def encode(columns: Mapping[str, Sequence[Any]]) -> bytes | None:
    """``columns`` (each a sequence of None, bool, int, float or str, all of one length) as one blob, or None when
    a column would not read back equal (``decode``), e.g. a NaN among other kinds of values."""
    heads: list[list[Any]] = []
    parts: list[bytes] = []
    offset = 0
    n = None
    for name, values in columns.items():
        if n is None:
            n = len(values)
        elif len(values) != n:
            raise ValueError(f"snapshot column {name}: {len(values)} values, expected {n}")
        kind = _kind(values)
        if kind == "f8":
            data = np.array(values, dtype="<f8").tobytes()
        elif kind == "i8":
            data = np.array(values, dtype="<i8").tobytes()
        elif kind == "s":
            data = _SEP.join(values).encode("utf-8")
        else:
            text = json.dumps(list(values), separators=(",", ":"))
            if not _same(json.loads(text), values):
                return None
            data = text.encode("utf-8")
        heads.append([name, kind, offset, len(data)])
        parts.append(data)
        offset += len(data)
    head = json.dumps({"format": FORMAT, "n": n or 0, "columns": heads}).encode("utf-8")
    return b"".join([_HEAD.pack(len(head)), head, *parts])


def decode(blob: bytes) -> dict[str, list[Any]]:
    """The columns ``encode`` stored. Raises: ValueError (not a snapshot of this format, or cut short)."""
    view = memoryview(blob)
    if len(view) < _HEAD.size:
        raise ValueError("snapshot: too short for its header")
    (size,) = _HEAD.unpack_from(view)
    head = json.loads(bytes(view[_HEAD.size:_HEAD.size + size]))
    if head.get("format") != FORMAT:
        raise ValueError(f"snapshot: format {head.get('format')!r}, expected {FORMAT}")
    n, base = int(head["n"]), _HEAD.size + size
    out: dict[str, list[Any]] = {}
    for name, kind, offset, length in head["columns"]:
        data = view[base + offset:base + offset + length]
        if len(data) != length:
            raise ValueError(f"snapshot column {name}: cut short")
        if kind in ("f8", "i8"):
            values = np.frombuffer(data, dtype=f"<{kind}").tolist()
        elif kind == "s":
            values = str(data, "utf-8").split(_SEP) if n else []
        elif kind == "json":
            values = json.loads(bytes(data))
        else:
            raise ValueError(f"snapshot column {name}: unknown kind {kind!r}")
        if len(values) != n:
            raise ValueError(f"snapshot column {name}: {len(values)} values, expected {n}")
        out[name] = values
    return out


# ----------------------------------------------------------------------------------------- the stamp


def stamp(conn: Any, run_id: int, tables: Sequence[Table]) -> str | None:
    """The run's stamp over ``tables`` as it is now (see the module's docstring), or None when the run has no
    ``pack_checks`` row (its triggers would count nothing). Read it before the rows it covers, on their
    connection."""
    k = _CHECKS.c
    counts = [select(func.count()).select_from(t).where(t.c.run_id == run_id).scalar_subquery() for t in tables]
    # one statement: the counters and every count
    found = conn.execute(select(k.generation, k.changes, *counts).where(k.run_id == run_id)).first()
    if found is None:
        return None
    parts = [f"f{FORMAT}", f"g{found[0]}", f"c{found[1]}",
             *(f"{table.name}={n}" for table, n in zip(tables, found[2:], strict=True))]
    return ";".join(parts)


def generation_of(stamp_: str) -> int:
    """The packs' generation a stamp holds."""
    return int(stamp_.split(";")[1][1:])


# -------------------------------------------------------------------------------------- read and keep


def read(conn: Any, run_id: int, kind: str, stamp_: str | None) -> dict[str, list[Any]] | None:
    """The run's snapshot ``kind`` when its stamp is ``stamp_`` (the run's, read just before), else None. A
    snapshot that cannot be decoded is logged and ignored."""
    if stamp_ is None:
        return None
    s = _SNAPSHOTS.c
    found = conn.execute(select(s.stamp, s.data).where(s.run_id == run_id, s.kind == kind)).first()
    if found is None or found[0] != stamp_:
        return None
    try:
        return decode(found[1])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        log.warning("run %s: the %s snapshot cannot be read (%s): reading the rows instead", run_id, kind, e)
        return None


def current(conn: Any, run_id: int, kind: str, stamp_: str | None) -> bool:
    """Does the run have a snapshot ``kind`` stamped ``stamp_`` (without reading it)?"""
    if stamp_ is None:
        return False
    s = _SNAPSHOTS.c
    return bool(conn.execute(select(s.stamp).where(s.run_id == run_id, s.kind == kind)).scalar() == stamp_)


def keep(storage: Database, run_id: int, kind: str, stamp_: str | None, columns: Mapping[str, Sequence[Any]]) -> bool:
    """Store ``columns`` (read after ``stamp_`` was) as the run's snapshot ``kind``, replacing the one before. A
    failure is logged: a snapshot only saves the next backtest time. Returns whether it was kept."""
    from sqlalchemy.dialects import postgresql, sqlite

    from engine.errors import StorageError

    if stamp_ is None:
        return False
    blob = encode(columns)
    if blob is None:
        log.info("run %s: the %s snapshot is not kept: a column would not read back equal", run_id, kind)
        return False
    try:
        with storage.guard(f"cannot keep the {kind} snapshot of run {run_id}"), storage.writer.begin() as conn:
            ins = (sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert)(_SNAPSHOTS)
            values = {"stamp": stamp_, "data": blob, "made_ms": int(time.time() * 1000)}
            conn.execute(ins.values(run_id=run_id, kind=kind, **values)
                         .on_conflict_do_update(index_elements=["run_id", "kind"], set_=values))
    except StorageError as e:
        log.warning("%s", e)
        return False
    return True
