"""The functions child processes run (``storage.child.Child``): each opens the database itself, by the URL its parent
sent through the pipe, does one job beside its parent and answers through the other pipe.

- ``serve_writer``: commit the batches of a replay's slices in order (``storage.writer.BackgroundWriter``);
- ``check_packs``: read and hash-check a run's stored context packs (``storage.bulk.PackCheck``).
"""

from __future__ import annotations

import pickle
import queue
import threading
from typing import Any

from engine.errors import StorageError
from storage import open_storage
from storage.bulk import cached_verdict_rows, checked_packs, packed
from storage.child import CLOSE
from storage.recorder import RunRecorder

__all__ = ["check_packs", "serve_writer"]


def serve_writer(pipe_in: Any, pipe_out: Any, url: str, busy_timeout_ms: int, run_id: int) -> None:
    """The child (``storage.child``): commit the batches that come through ``pipe_in``, answer each."""
    # The parent's batches are read as they come, so that sending one never waits for the commit before it.
    inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    orphaned = threading.Event()

    def read() -> None:
        while True:
            try:
                data = pipe_in.recv_bytes()
            except (EOFError, OSError):
                orphaned.set()  # the end of the pipe without a close: the parent died
                data = CLOSE
            inbox.put(data)
            if data == CLOSE:
                return

    threading.Thread(target=read, name="writer-inbox", daemon=True).start()
    store: Any = None
    try:
        store = open_storage(url, create=False, busy_timeout_ms=busy_timeout_ms)
        recorder = RunRecorder(store, run_id)
        while (data := inbox.get()) != CLOSE and not orphaned.is_set():
            batch, cached = pickle.loads(data)  # type: ignore[arg-type]
            try:
                recorder.commit(batch, cached, recorder.doing(batch))
            except StorageError as e:
                pipe_out.send(str(e))
                return  # nothing after a failed batch is committed: the parent raises
            pipe_out.send("ok")
    except StorageError as e:  # cannot open the database
        pipe_out.send(str(e))
    finally:
        if store is not None:
            store.close()


def check_packs(inbox: Any, outbox: Any, url: str, busy_timeout_ms: int, run_id: int, digests: bool = False) -> None:
    """The child of ``PackCheck``: ``checked_packs`` of run ``run_id``, sent to the parent (or its error); then,
    when the parent asks with (tier, model, prompt version) keys, the run's verdict-cache entries of those
    (``cached_verdict_rows``, packed for the pipe). ``digests``: the parent reads the packs' stored digests
    itself; this only reads the cache, through them."""
    from storage import open_storage

    try:
        with open_storage(url, create=False, busy_timeout_ms=busy_timeout_ms) as storage, \
                storage.guard(f"cannot load the reviews of run {run_id}"), storage.engine.connect() as conn:
            if not digests:
                packs = checked_packs(storage, conn, run_id, keep_json=False)
                outbox.send(("ok", packs))
                del packs
            try:
                asked = inbox.recv_bytes()
            except (EOFError, OSError):  # the parent read the cache itself, or needs nothing more
                return
            if asked == CLOSE:
                return
            with storage.guard("cannot read the verdict cache"):
                found = packed(cached_verdict_rows(conn, run_id, pickle.loads(asked), digests=digests))
            outbox.send(("ok", found))
    except StorageError as e:
        outbox.send(("error", str(e)))
