"""Bulk readers of one recorded run: every reviewed signal in a few queries, for backtests and exports.

``RunRecorder`` reads one kind of row at a time into value objects, which suits a report. A backtest
re-reviews up to 100,000 signals and needs them all at once, so the readers here:

- read each table once, in one pass over its primary key, as plain tuples (no ORM objects). The rows are
  matched by signal id in memory, in the signals' order (created_ms, id, ordered by the database): a SQL
  join costs two B-tree searches per joined row and is slower than the separate passes together;
- read a pack's JSON once and check it against its stored hash (SHA-256) as it streams past; it is never
  decoded, only searched for its equity (what scoring needs), and kept only when asked to. For a large run a
  child process does this while the backtest reads the other tables (``PackCheck``). What the check yields
  (hash, regime tag, equity per pack) is stored with the generation of the run's packs it saw (``pack_digests``,
  ``pack_checks``: migration 0005); while no pack row has changed since (triggers count every change), the next
  backtest reads that instead of ~450 MB of JSON per 100,000 packs;
- keep what a backtest's lean load read as a snapshot of columns (``storage.snapshot``, migration 0006), stamped
  with the rows it covers: a repeat backtest reads it instead of ~500,000 rows per 100,000 signals, while no row
  it covers was inserted, updated or deleted since;
- leave verdicts and decisions as columns (put in signal order by index, text columns parsed once per distinct
  value): scoring reads the few columns it needs straight from them;
- read the verdict-cache entries a backtest can use in one query per (tier, model, prompt version): the
  run's packs joined to the cache's primary key, so nothing else in the cache is read — by the child that
  checked the packs when it is done with them, else by this process while the child is still at them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
from collections.abc import Iterable, Sequence
from dataclasses import fields
from operator import attrgetter, itemgetter
from typing import Any

from sqlalchemy import LargeBinary, Table, and_, bindparam, cast, delete, func, select, update

from engine.errors import StorageError
from engine.types import (
    DECISION_FIELDS,
    OUTCOME_FIELDS,
    VERDICT_FIELDS,
    ContextPack,
    PackRef,
    Signal,
    StoredOutcomes,
    StoredReviews,
    Verdict,
    VerdictKind,
    content_hash,
)
from storage import rows
from storage.database import Database
from storage.models import (
    ContextPackRow,
    DecisionRow,
    OutcomeRow,
    PackCheckRow,
    PackDigestRow,
    SignalRow,
    VerdictCacheRow,
    VerdictRow,
)

__all__ = [
    "SCORED_DECISION_COLUMNS",
    "SCORED_VERDICT_COLUMNS",
    "PackCheck",
    "cached_verdicts",
    "load_outcomes",
    "load_reviewed",
    "rebuilt_packs",
]

_SIGNALS: Table = SignalRow.__table__  # type: ignore[assignment]
_PACKS: Table = ContextPackRow.__table__  # type: ignore[assignment]
_VERDICTS: Table = VerdictRow.__table__  # type: ignore[assignment]
_DECISIONS: Table = DecisionRow.__table__  # type: ignore[assignment]
_OUTCOMES: Table = OutcomeRow.__table__  # type: ignore[assignment]
_CACHE: Table = VerdictCacheRow.__table__  # type: ignore[assignment]
_CHECKS: Table = PackCheckRow.__table__  # type: ignore[assignment]
_DIGESTS: Table = PackDigestRow.__table__  # type: ignore[assignment]

# what scoring reads of a verdict and a decision (a backtest loads only these: ``load_reviewed(lean=True)``)
SCORED_VERDICT_COLUMNS = ("verdict", "source", "tier", "latency_ms", "input_tokens", "output_tokens", "cached_tokens",
                          "cost_usd", "attempts")
SCORED_DECISION_COLUMNS = ("action", "size_pct")
_SIGNAL_COLUMNS = ("id", "strategy_id", "symbol", "side", "created_ms", "entry", "stop_loss", "take_profit",
                   "size_hint", "timeframe", "tags")

log = logging.getLogger(__name__)

_CHUNK_IN = 500  # ids per IN (...) query: well under every backend's bound-parameter limit
_STREAM = 2000  # pack rows per fetch: 100,000 packs are ~500 MB of JSON, never all in memory at once
# The pack's top-level "equity" in canonical JSON. Keys are quoted, so "size_pct_equity" cannot match,
# and a quote inside a string value is escaped (\"), so no headline can fake the key either.
_EQUITY = re.compile(r'"equity":(-?[0-9][0-9.eE+-]*|null)')
_EQUITY_BYTES = re.compile(_EQUITY.pattern.encode())
_NULLS = ("null", b"null")
_VERDICT_KINDS = {str(x): x for x in VerdictKind}
_CACHED_FIELDS = frozenset(rows.CACHE_FIELDS)
# a cache entry's fields are Verdict's first ones, in order: an entry written in that order is built positionally
_LEADING = tuple(f.name for f in fields(Verdict))[:len(rows.CACHE_FIELDS)] == rows.CACHE_FIELDS
_SCAN = json.JSONDecoder().scan_once  # the C scanner json.loads uses
Packs = dict[str, tuple[str, str, float, str]]  # signal id → (hash, regime tag, equity, JSON or "")


# --------------------------------------------------------------------------------------- conversions


def _equity_of(text: str | bytes, where: str) -> float:
    m = (_EQUITY if isinstance(text, str) else _EQUITY_BYTES).search(text)
    if m is not None:
        return 0.0 if m.group(1) in _NULLS else float(m.group(1))
    try:  # not canonical JSON after all: read it properly
        return float(json.loads(text)["equity"] or 0.0)
    except (ValueError, KeyError, TypeError) as e:
        raise StorageError(f"{where} has no readable equity ({type(e).__name__}: {e})") from None


# ----------------------------------------------------------------------------------------- reviews


def checked_packs(storage: Database, conn: Any, run_id: int, keep_json: bool) -> Packs:
    """signal id → (hash, regime tag, equity, JSON or ""), every JSON checked against its stored hash.

    SQLite stores the text as UTF-8 (the default database encoding): it is read as those bytes, which are
    what the hash covers, so no text object is made of a pack nobody keeps.
    """
    p = _PACKS.c
    as_bytes = conn.dialect.name == "sqlite" and conn.exec_driver_sql("PRAGMA encoding").scalar() == "UTF-8"
    q = select(p.signal_id, p.hash, p.regime_tag, cast(p.json, LargeBinary) if as_bytes else p.json).where(
        p.run_id == run_id)
    equity = _EQUITY_BYTES if as_bytes else _EQUITY
    out: Packs = {}
    for part in conn.execution_options(yield_per=_STREAM).execute(q).partitions():
        sids, hashes, tags, datas = _transpose(part, 4)
        computed = [hashlib.sha256(d).hexdigest() for d in datas] if as_bytes else list(map(content_hash, datas))
        bad = None  # the first pack (in table order) that does not match its stored hash
        for i in (i for i, (c, h) in enumerate(zip(computed, hashes, strict=True)) if c != h):
            if as_bytes:  # content_hash decides (it is SHA-256 of the UTF-8 text)
                computed[i] = content_hash(datas[i].decode("utf-8", errors="replace"))
            if computed[i] != hashes[i]:
                bad = i
                break
        stop = len(datas) if bad is None else bad  # packs before the altered one are read as before it
        found = zip(map(equity.search, datas[:stop]), datas[:stop], sids[:stop], strict=True)
        equities = [(0.0 if m.group(1) in _NULLS else float(m.group(1))) if m is not None
                    else _equity_of(d, f"{storage.url_masked}: run {run_id}: context pack of signal {sid}")
                    for m, d, sid in found]
        if bad is not None:
            raise StorageError(f"{storage.url_masked}: run {run_id}: context pack of signal {sids[bad]} does not "
                               f"match its stored hash (stored {hashes[bad][:12]}…, computed {computed[bad][:12]}…): "
                               "the row was altered")
        texts = ([d.decode("utf-8") for d in datas] if as_bytes else datas) if keep_json else [""] * len(datas)
        out.update(zip(sids, zip(hashes, tags, equities, texts, strict=True), strict=True))
    return out


def pack_generation(storage: Database, run_id: int) -> tuple[int, int | None] | None:
    """(generation, verified) of the run's packs (``pack_checks``), its row made first when missing; None when the
    row cannot be written (a read-only database: a check's answer then is not kept). Read before a check starts,
    so that any change to the packs after this point moves the generation past the one returned."""
    k = _CHECKS.c
    mine = select(k.generation, k.verified).where(k.run_id == run_id)
    try:
        with storage.guard(f"cannot read the pack checks of run {run_id}"):
            with storage.engine.connect() as conn:
                found = conn.execute(mine).first()
            if found is None:
                from sqlalchemy.dialects import postgresql, sqlite

                with storage.writer.begin() as conn:
                    ins = (sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert)(_CHECKS)
                    conn.execute(ins.values(run_id=run_id, generation=0).on_conflict_do_nothing())
                    found = conn.execute(mine).first()
    except StorageError as e:
        log.warning("%s", e)
        return None
    return None if found is None else (int(found[0]), None if found[1] is None else int(found[1]))


def stored_digests(conn: Any, run_id: int) -> Packs | None:
    """``checked_packs``' answer as a check stored it (``keep_digests``), or None unless the stamp stands (no pack
    row changed since that check) and covers every pack of the run. One query reads the stamp and the digests."""
    d, k, p = _DIGESTS.c, _CHECKS.c, _PACKS.c
    q = (select(d.signal_id, d.hash, d.regime_tag, d.equity)
         .join(_CHECKS, and_(k.run_id == d.run_id, k.verified == k.generation))
         .where(d.run_id == run_id))
    found = conn.execute(q).all()
    if not found:
        return None
    n = conn.execute(select(func.count()).select_from(_PACKS).where(p.run_id == run_id)).scalar_one()
    if n != len(found):
        return None
    sids, hashes, tags, equities = _transpose(found, 4)
    return dict(zip(sids, zip(hashes, tags, equities, [""] * len(sids), strict=True), strict=True))


def keep_digests(storage: Database, run_id: int, generation: int, packs: Packs) -> bool:
    """Store ``packs`` (a check's answer, taken after ``pack_generation`` read ``generation``) as the run's digests,
    stamped with that generation — unless a pack row changed meanwhile (the generation moved on: nothing is
    stamped). A failure is logged: the digests only save the next backtest time. Returns whether they were kept."""
    import time

    k = _CHECKS.c
    flat: list[Any] = []
    for sid, (h, tag, equity, _) in packs.items():
        flat += (run_id, sid, h, tag, equity)
    try:
        with storage.guard(f"cannot keep the checked packs of run {run_id}"), storage.writer.connect() as conn, \
                conn.begin() as transaction:
            conn.execute(delete(_DIGESTS).where(_DIGESTS.c.run_id == run_id))
            storage.statements.insert["pack_digests"].run(conn, flat)
            stamped = conn.execute(update(_CHECKS).where(k.run_id == run_id, k.generation == generation)
                                   .values(verified=generation, checked_ms=int(time.time() * 1000))).rowcount
            if stamped != 1:
                transaction.rollback()  # the packs changed since the check read them: its answer stands for nothing
    except StorageError as e:
        log.warning("%s", e)
        return False
    return stamped == 1


class PackCheck:
    """``checked_packs`` of a run (without the JSON), done by a child process while this one works on — and, for
    the (tier, model, prompt version) keys asked for (``ask_cache``), ``cached_verdicts`` of the run.

    Reading and hashing a run's packs is the largest part of a backtest's load (100,000 packs are ~500 MB),
    and independent of everything else it reads: a backtest starts this first, reads the other tables
    meanwhile, and takes the result (``result``) last; the verdict-cache entries (``cached_verdicts``: one join
    of the run's packs to the cache per key, and the JSON of each distinct entry decoded) follow while it scores
    the recorded column. A child (``storage.child``) does it for a run of at least ``MIN_PACKS`` packs in a
    database another process can open (a child costs about half a second to start); otherwise, or when the child
    ends without an answer (logged), ``result`` and ``cached_verdicts`` do it here. Either way the answers are
    the same, and so is the StorageError for a pack that does not match its hash.

    The answer is kept (``keep``: ``pack_digests``, stamped with the packs' generation ``pack_generation`` read
    before the check began). When a later check starts and the stamp still stands — no pack row of the run was
    inserted, updated or deleted since, and its digests were not touched — it reads the digests (and the cache
    through them) instead, in this process: a repeat backtest trusts a check already made rather than hashing
    the JSON again.
    """

    MIN_PACKS = 20_000

    def __init__(self, storage: Database, run_id: int, child: Any = None, *,
                 generation: tuple[int, int | None] | None = None) -> None:
        self.storage = storage
        self.run_id = run_id
        self.child = child
        # the packs' generation read before the check began (None: its answer cannot be kept), and whether the
        # digests a check stored stand for the packs as they are (then they are read instead of the packs)
        self.generation = None if generation is None else generation[0]
        self.digests = generation is not None and generation[1] == generation[0]
        self.kept: bool | None = None  # whether this check's answer was stored (None: nothing to store)
        self.cache_keys: list[tuple[str, str, str]] = []
        self._cached: dict[tuple[str, str, str], dict[str, Verdict]] | None = None
        self._packs_taken = False
        self.skipped = False  # the packs were not needed (``skip``): the caller read a snapshot of them
        self._answer: Packs | None = None
        self._sent: list[tuple[str, str, str]] | None = None  # the keys a child reading only the cache was given

    @classmethod
    def start(cls, storage: Database, run_id: int) -> PackCheck:
        from sqlalchemy import func

        from storage.child import Child, shareable

        generation = pack_generation(storage, run_id)
        if not shareable(storage):
            return cls(storage, run_id, generation=generation)
        p = _PACKS.c
        with storage.guard(f"cannot count the context packs of run {run_id}"), storage.engine.connect() as conn:
            n = conn.execute(select(func.count()).select_from(_PACKS).where(p.run_id == run_id)).scalar_one()
        if n < cls.MIN_PACKS:
            return cls(storage, run_id, generation=generation)
        stamped = generation is not None and generation[0] == generation[1]  # the child would read the cache only
        if stamped and _snapshot_stands(storage, run_id):
            # The load is short (a snapshot): the cache is read here, after it, sooner than a child could start and
            # read it (measured: ~0.1 s sooner of ~2 s, and ~1 s of CPU less; a thread here only contends for the GIL)
            return cls(storage, run_id, generation=generation)
        url = storage.engine.url.render_as_string(hide_password=False)
        try:
            return cls(storage, run_id, Child("storage.children:check_packs", url, storage.busy_timeout_ms, run_id,
                                              stamped), generation=generation)
        except OSError as e:
            log.warning("%s: cannot start a process to check the context packs (%s): checking them here",
                        storage.url_masked, e)
            return cls(storage, run_id, generation=generation)

    def ask_cache(self, keys: Sequence[tuple[str, str, str]]) -> None:
        """Read the run's verdict-cache entries of (tier, model, prompt version) ``keys`` too (``cached_verdicts``;
        before ``result``). Entries still buffered in this process are written now, so that either process sees
        them."""
        if self._packs_taken:
            raise RuntimeError("PackCheck.ask_cache: ask before the packs are taken (result)")
        self.cache_keys = list(dict.fromkeys([*self.cache_keys, *keys]))
        if self.cache_keys:
            self.storage.flush()
        if self.digests and self.child is not None:  # a child that checks nothing: it reads the cache at once
            if self._sent is None:
                self._sent = list(self.cache_keys)
                self.child.send_bytes(pickle.dumps(self._sent))
            elif self._sent != self.cache_keys:  # asked again, for more: all of it is read here instead
                self.close()

    def _from_child(self, instead: str) -> Any:
        """The child's next answer, or None when it ended without one (logged; the caller does it here)."""
        try:
            kind, value = self.child.recv()
        except EOFError:
            log.warning("%s: the process checking the context packs ended with exit code %s: %s",
                        self.storage.url_masked, self.child.exit_code(), instead)
            self._end_child()
            return None
        if kind != "ok":
            self._end_child()
            raise StorageError(value)
        return value

    def _end_child(self) -> None:
        child, self.child = self.child, None
        if child is not None:
            child.end()

    def result(self, conn: Any) -> dict[str, tuple[str, str, float, str]]:
        """signal id → (hash, regime tag, equity, ""), as ``checked_packs``; ``conn`` reads them when the child
        could not. Raises: StorageError.

        With ``cache_keys``, whoever is free reads the verdict cache: this process, now, when the child is still
        at the packs (it would only wait for them); else the child, while this process goes on with the packs.
        """
        self._packs_taken = True
        if self.digests:
            if self.child is not None and self._sent is None:
                self._end_child()  # it was given nothing to do
            found = stored_digests(conn, self.run_id)
            if found is not None:
                return found
            # The stamp was withdrawn since ``start`` (a pack changed): check the packs here, but keep nothing, as
            # the connection's view may predate the generation read. A child reading the cache goes on: the
            # entries are looked up by the hashes loaded here.
            self.digests, self.generation = False, None
            self._answer = checked_packs(self.storage, conn, self.run_id, keep_json=False)
            return self._answer
        if self.child is not None:
            try:
                if self.cache_keys and not self.child.poll():
                    self._cached = cached_verdicts(self.storage, self.run_id, self.cache_keys)
                packs = self._from_child("checking them here")
                if packs is not None and self.cache_keys and self._cached is None:
                    self.child.send_bytes(pickle.dumps(self.cache_keys))  # the child reads the cache next
                else:
                    self._end_child()
            except BaseException:
                self.close()
                raise
            if packs is not None:
                self._answer = packs
                return packs  # type: ignore[no-any-return]
        self._answer = checked_packs(self.storage, conn, self.run_id, keep_json=False)
        return self._answer

    def skip(self) -> None:
        """Take no packs: the caller has what the check would answer (a snapshot of the run, stamped at the
        digests' generation). A child reading the cache for the keys asked goes on; one given nothing ends."""
        if not self.digests:
            raise RuntimeError("PackCheck.skip: only a check whose stored digests stand can be skipped")
        self._packs_taken = self.skipped = True
        if self.child is not None and self._sent is None:
            self._end_child()

    def keep(self) -> bool | None:
        """Store the answer of the check just taken (``result``) for the next backtest (``keep_digests``), on a
        connection of its own: call it once the reading connection is closed. None: nothing to store (the
        digests were read, or the generation is unknown); else whether they were kept."""
        answer, self._answer = self._answer, None
        if answer is not None and self.generation is not None:
            self.kept = keep_digests(self.storage, self.run_id, self.generation, answer)
        return self.kept

    def cached_verdicts(self) -> dict[tuple[str, str, str], dict[str, Verdict]]:
        """``cached_verdicts`` of the run for the keys asked for (``ask_cache``), once the packs were taken
        (``result``). Raises: StorageError."""
        if self.child is not None and not self._packs_taken:
            raise RuntimeError("PackCheck.cached_verdicts: take the packs (result) first")
        if self._cached is None:
            found = None
            if self.child is not None:
                try:
                    found = self._from_child("reading the verdict cache here")
                finally:
                    self._end_child()
            self._cached = (_unpacked(found) if found is not None
                            else cached_verdicts(self.storage, self.run_id, self.cache_keys, digests=self.digests))
        return self._cached

    def close(self) -> None:
        """End the child if its answers were not taken (an error on the way). Idempotent."""
        child, self.child = self.child, None
        if child is not None:
            child.process.kill()
            child.end()


def _snapshot_stands(storage: Database, run_id: int) -> bool:
    """Does the run's lean-load snapshot stand (``storage.snapshot``)? Then its load is short."""
    from storage import snapshot

    with storage.guard(f"cannot read the snapshots of run {run_id}"), storage.engine.connect() as conn:
        return snapshot.current(conn, run_id, _REVIEWED, snapshot.stamp(conn, run_id, _REVIEWED_TABLES))


def load_reviewed(storage: Database, run_id: int, *, keep_json: bool = False, lean: bool = False,
                  check: PackCheck | None = None) -> StoredReviews:
    """Every reviewed signal of run ``run_id`` (one with a pack, a verdict and a decision), in signal order.

    Four queries, one per table. ``keep_json``: keep every pack's JSON (100,000 packs are ~500 MB of text).
    ``lean``: read only the verdict and decision columns scoring reads (``SCORED_*_COLUMNS``). ``check``: the
    packs come from this ``PackCheck`` (started earlier, so that it ran while the caller did other work), taken
    after the other tables are read.

    A lean load with a check reads the run's snapshot instead of the rows when its stamp stands and the check's
    stored digests do too (``storage.snapshot``; the check then reads no pack), and keeps what it read as the
    next one's snapshot otherwise (when the check's answer was stored, at the generation the stamp holds).
    Raises: StorageError (a database error; a pack whose JSON does not match its stored hash).
    """
    from storage import snapshot

    vcols = SCORED_VERDICT_COLUMNS if lean else (*VERDICT_FIELDS, "mode")
    dcols = SCORED_DECISION_COLUMNS if lean else DECISION_FIELDS
    if check is not None and keep_json:
        raise ValueError("load_reviewed: a PackCheck does not keep the JSON")
    snapped = lean and check is not None and check.generation is not None
    stamp = cols = None
    with storage.guard(f"cannot load the reviews of run {run_id}"), storage.engine.connect() as conn:
        if snapped:
            stamp = snapshot.stamp(conn, run_id, _REVIEWED_TABLES)
            if check.digests:  # type: ignore[union-attr]
                cols = snapshot.read(conn, run_id, _REVIEWED, stamp)
                if cols is not None:
                    check.skip()  # type: ignore[union-attr]
        if cols is None:
            cols = _reviewed_columns(storage, conn, run_id, vcols, dcols, keep_json=keep_json, check=check)
    if check is not None and not check.skipped:
        check.keep()
        # the packs' digests stand at the stamp's generation (read before the check began): stored before, or now
        if snapped and stamp is not None and (check.digests or check.kept) \
                and snapshot.generation_of(stamp) == check.generation:
            snapshot.keep(storage, run_id, _REVIEWED, stamp, cols)
    n = len(cols["id"])
    signals = list(map(Signal, *(rows.column("signals", name, cols[name]) for name in _SIGNAL_COLUMNS)))
    refs = list(map(PackRef, signals, cols["pack.hash"], cols["pack.regime_tag"], cols["pack.equity"],
                    cols["pack.json"] if keep_json else [""] * n))
    vals = {name: rows.column("verdicts", name, cols[f"verdict.{name}"]) for name in vcols}
    modes = vals.pop("mode", [])
    decided = {name: rows.column("decisions", name, cols[f"decision.{name}"]) for name in dcols}
    return StoredReviews(refs, vals, decided, modes)


_REVIEWED = "reviewed-lean"  # the snapshot of a lean load (storage.snapshot)
_REVIEWED_TABLES = (_SIGNALS, _PACKS, _VERDICTS, _DECISIONS)


def _reviewed_columns(storage: Database, conn: Any, run_id: int, vcols: Sequence[str], dcols: Sequence[str], *,
                      keep_json: bool, check: PackCheck | None) -> dict[str, Any]:
    """``load_reviewed``'s values as the database holds them, one column each in signal order, reviewed only:
    the signals' ``_SIGNAL_COLUMNS``, ``pack.*`` (hash, regime tag, equity; JSON only with ``keep_json``),
    ``verdict.*`` and ``decision.*``."""
    s, v, d = _SIGNALS.c, _VERDICTS.c, _DECISIONS.c
    signals_q = select(*(s[c] for c in _SIGNAL_COLUMNS)).where(s.run_id == run_id).order_by(s.created_ms, s.id)
    verdicts_q = select(v.signal_id, *(v[c] for c in vcols)).where(v.run_id == run_id)
    decisions_q = select(d.signal_id, *(d[c] for c in dcols)).where(d.run_id == run_id)
    packs: Packs | None = None
    if check is None:
        packs = (None if keep_json else stored_digests(conn, run_id)) or checked_packs(storage, conn, run_id,
                                                                                      keep_json)
    verdicts = _transpose(conn.execute(verdicts_q).all(), 1 + len(vcols))
    decisions = _transpose(conn.execute(decisions_q).all(), 1 + len(dcols))
    signal_rows = conn.execute(signals_q).all()
    if packs is None:
        packs = check.result(conn)  # type: ignore[union-attr]
    # reviewed: with a pack, a verdict and a decision (not blocked by a gate, nor half recorded)
    at_verdict = dict(zip(verdicts[0], range(len(verdicts[0])), strict=True))
    at_decision = dict(zip(decisions[0], range(len(decisions[0])), strict=True))
    complete = packs.keys() & at_verdict.keys() & at_decision.keys() & set(map(itemgetter(0), signal_rows))
    reviewed = signal_rows if len(complete) == len(signal_rows) else [r for r in signal_rows if r[0] in complete]
    out = dict(zip(_SIGNAL_COLUMNS, _transpose(reviewed, len(_SIGNAL_COLUMNS)), strict=True))
    ids = out["id"]
    hashes, tags, equities, jsons = _transpose(map(packs.__getitem__, ids), 4)
    out |= {"pack.hash": hashes, "pack.regime_tag": tags, "pack.equity": equities}
    if keep_json:
        out["pack.json"] = jsons
    # each verdict and decision column in signal order: one list lookup per value, no row tuple per signal
    v_order, d_order = list(map(at_verdict.__getitem__, ids)), list(map(at_decision.__getitem__, ids))
    out |= {f"verdict.{name}": _take(values, v_order) for name, values in zip(vcols, verdicts[1:], strict=True)}
    out |= {f"decision.{name}": _take(values, d_order) for name, values in zip(dcols, decisions[1:],
                                                                                   strict=True)}
    return out


def _take(values: Sequence[Any], order: Sequence[int]) -> Sequence[Any]:
    """``[values[i] for i in order]`` (``values`` itself when ``order`` is every index in order)."""
    if len(order) == len(values) and all(map(int.__eq__, order, range(len(order)))):
        return values
    return list(map(values.__getitem__, order))


def _transpose(rows: Iterable[tuple[Any, ...]], width: int) -> list[list[Any]]:
    cols = [list(c) for c in zip(*rows, strict=True)]
    return cols if cols else [[] for _ in range(width)]


def load_outcomes(storage: Database, run_id: int, *, realized: bool = True, snapshot: bool = False
                  ) -> StoredOutcomes:
    """The run's shadow outcomes, and its realized ones unless ``realized`` is False, as columns (table order).

    ``snapshot``: read the run's snapshot of them instead when its stamp stands, and keep what was read as one
    otherwise (``storage.snapshot``; a backtest's load, which repeats)."""
    from storage import snapshot as snapshots

    o = _OUTCOMES.c
    q = select(*(o[c] for c in OUTCOME_FIELDS)).where(o.run_id == run_id)
    if not realized:
        q = q.where(o.kind == "shadow")
    kind = "outcomes" if realized else "outcomes-shadow"
    stamp = cols = None
    with storage.guard(f"cannot load the outcomes of run {run_id}"), storage.engine.connect() as conn:
        if snapshot:
            stamp = snapshots.stamp(conn, run_id, (_OUTCOMES,))
            cols = snapshots.read(conn, run_id, kind, stamp)
        if cols is None:
            cols = dict(zip(OUTCOME_FIELDS, _transpose(conn.execute(q).all(), len(OUTCOME_FIELDS)), strict=True))
            if stamp is not None:
                snapshots.keep(storage, run_id, kind, stamp, cols)
    return StoredOutcomes({name: rows.column("outcomes", name, cols[name]) for name in OUTCOME_FIELDS})


def rebuilt_packs(storage: Database, run_id: int, ids: Sequence[str]) -> dict[str, ContextPack]:
    """Packs of the signals ``ids`` rebuilt in full from their stored JSON (hash re-verified)."""
    from storage.recorder import rebuild_pack

    p = _PACKS.c
    q = select(p.signal_id, p.json, p.hash).where(p.run_id == run_id, p.signal_id.in_(bindparam("ids", expanding=True)))
    out: dict[str, ContextPack] = {}
    with storage.guard(f"cannot load context packs of run {run_id}"), storage.engine.connect() as conn:
        for i in range(0, len(ids), _CHUNK_IN):
            for sid, text, h in conn.execute(q, {"ids": list(ids[i:i + _CHUNK_IN])}):
                out[sid] = rebuild_pack(storage.url_masked, run_id, sid, text, h)
    return out


# ------------------------------------------------------------------------------------- verdict cache


def _cached_verdict(text: str) -> Verdict:
    # rows.verdict_from_json minus its per-field conversions: a cache row is JSON that verdict_to_json
    # wrote, so its values already have their types. The C scanner is called directly (json.loads adds
    # three Python calls and two regex matches per row); anything but one JSON value spanning the whole
    # text is left to json.loads.
    try:
        d, end = _SCAN(text, 0)
    except StopIteration:
        d, end = json.loads(text), len(text)
    if end != len(text):
        d = json.loads(text)
    d["verdict"] = _VERDICT_KINDS[d["verdict"]]
    if _LEADING and tuple(d) == rows.CACHE_FIELDS:  # as verdict_to_json wrote it: Verdict's leading fields
        return Verdict(*d.values())
    if d.keys() == _CACHED_FIELDS:
        return Verdict(**d)
    return Verdict(**{k: d[k] for k in rows.CACHE_FIELDS})


def _read_cached(text: str) -> Verdict | None:
    try:
        return _cached_verdict(text)
    except (ValueError, KeyError, TypeError):
        # the careful reader decides: an entry it cannot read either is a miss, as in SqlVerdictCache
        try:
            return rows.verdict_from_json(text)
        except (ValueError, KeyError, TypeError):
            return None


def cached_verdict_rows(conn: Any, run_id: int, keys: Sequence[tuple[str, str, str]], *, digests: bool = False
                        ) -> dict[tuple[str, str, str], dict[str, Verdict]]:
    """``cached_verdicts`` on an open connection (buffered entries already written)."""
    c = _CACHE.c
    packs = _DIGESTS if digests else _PACKS
    q = (select(c.context_hash, c.verdict)
         .select_from(packs)
         .join(_CACHE, and_(c.tier == bindparam("t"), c.model == bindparam("m"), c.prompt_version == bindparam("pv"),
                            c.context_hash == packs.c.hash))
         .where(packs.c.run_id == run_id))
    out: dict[tuple[str, str, str], dict[str, Verdict]] = {}
    for t, m, pv in dict.fromkeys(keys):
        found = conn.execute(q, {"t": t, "m": m, "pv": pv}).all()
        # A verdict is immutable: equal texts (a deterministic tier answers many packs alike) share one.
        read = {text: _read_cached(text) for text in dict.fromkeys(text for _, text in found)}
        entries = out[(t, m, pv)] = {}
        for h, text in found:
            v = read[text]
            if v is not None:
                entries[h] = v
    return out


def cached_verdicts(storage: Database, run_id: int, keys: Sequence[tuple[str, str, str]], *,
                    digests: bool = False) -> dict[tuple[str, str, str], dict[str, Verdict]]:
    """The verdict-cache entries of (tier, model, prompt version) ``keys`` for the packs of run ``run_id``:
    per key (every one of ``keys``), context hash → verdict.

    One query per key: it walks the run's packs (``digests``: their stored digests, a narrow table, where the
    packs' hashes sit among ~450 MB of JSON per 100,000) and probes the cache by its primary key, so it reads
    what a backtest of this run can use and nothing else. The caller looks the entries up by the hashes it
    loaded: a hash walked here that it did not load is never asked for, and one it loaded but not walked here
    is a miss (reviewed afresh). Entries still buffered in this process are written first. An entry that cannot
    be read is left out (a miss), as ``SqlVerdictCache.get`` treats it.
    """
    storage.flush()
    with storage.guard("cannot read the verdict cache"), storage.engine.connect() as conn:
        return cached_verdict_rows(conn, run_id, keys, digests=digests)


_VERDICT_VALUES = attrgetter(*(f.name for f in fields(Verdict)))
Packed = dict[tuple[str, str, str], tuple[list[str], list[int], list[tuple[Any, ...]]]]


def packed(found: dict[tuple[str, str, str], dict[str, Verdict]]) -> Packed:
    """``cached_verdicts``' answer as plain values for a pipe: per key, the hashes, each one's number among the
    distinct verdicts, and those verdicts' field values (a pickled dataclass is rebuilt attribute by attribute)."""
    out: Packed = {}
    for key, entries in found.items():
        number: dict[int, int] = {}
        values: list[tuple[Any, ...]] = []
        codes: list[int] = []
        for v in entries.values():
            i = number.get(id(v))
            if i is None:
                i = number[id(v)] = len(values)
                values.append(_VERDICT_VALUES(v))
            codes.append(i)
        out[key] = (list(entries), codes, values)
    return out


def _unpacked(data: Packed) -> dict[tuple[str, str, str], dict[str, Verdict]]:
    out: dict[tuple[str, str, str], dict[str, Verdict]] = {}
    for key, (hashes, codes, values) in data.items():
        verdicts = [Verdict(*v) for v in values]
        out[key] = dict(zip(hashes, map(verdicts.__getitem__, codes), strict=True))
    return out
