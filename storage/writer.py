"""Write-behind for replays: a child process commits a run's slice batches while the pipeline steps on.

A replay spends about as long recording as stepping (inserting a million bar rows into SQLite is seconds of
work), and both are CPU work: a thread cannot overlap them under the GIL (its many short database calls each
wait for the stepping thread to hand the GIL back), a second process can. ``BackgroundWriter`` has the
recorder's ``new_batch``/``write_batch`` interface: ``write_batch`` pickles the batch (its rows are already
plain values, so this is cheap) and sends it to a child process, which commits it with the very code of the
synchronous path (``RunRecorder.commit``), in order, one transaction per batch, as before.

What stays the same: every batch is whole slices in one transaction, so the database only ever holds whole
slices and a resume regenerates what is missing. What changes is how much may be in flight when the process
dies: up to ``depth`` batches sent but not yet committed, besides the one being filled. The child dies with
its parent (Linux: ``PR_SET_PDEATHSIG``; elsewhere it stops at the end of its pipe and drops what it had not
begun), so a killed run never has a writer committing after it, under a resumed run's feet.

Errors: a batch the child fails to commit comes back as the same one-line ``StorageError`` the synchronous
path raises (nothing after it is committed); a child that dies is a ``StorageError`` naming its exit code.
Either surfaces at the next ``write_batch`` or at ``close``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from engine.errors import StorageError
from storage.db import connect
from storage.repository import RunRecorder, Storage, _Batch

__all__ = ["BackgroundWriter", "supported"]

log = logging.getLogger(__name__)

_CLOSE = b"close"  # sent before the parent closes its end: the end of the pipe after it is not a death


def supported(storage: Storage) -> bool:
    """Whether a child process can write into ``storage``'s database: not an in-memory SQLite one, and on a
    POSIX system (the pipes are passed as file descriptors)."""
    if os.name != "posix":
        return False
    u = storage.engine.url
    if u.get_backend_name() != "sqlite":
        return True
    return u.database not in (None, "", ":memory:") and u.query.get("mode") != "memory"


class BackgroundWriter:
    """A run's batches committed by a child process, in order (see the module docstring).

    ``write_batch`` returns once the batch is sent, unless ``depth`` batches are already waiting to be
    committed: then it waits for the oldest. ``close`` waits for every batch; ``abort`` lets the child finish
    what it has and returns (for the error path, where an error of the writer must not mask the first one).
    """

    DEPTH = 2

    def __init__(self, recorder: RunRecorder, *, depth: int = DEPTH) -> None:
        self.recorder = recorder
        self.depth = max(1, depth)
        # in flight, oldest first: (rows, what writing it is, the verdict-cache rows sent with it)
        self._sent: list[tuple[int, str, list[dict[str, Any]]]] = []
        self._error: StorageError | None = None
        store = recorder.storage
        if not supported(store):
            raise ValueError(f"{store.url_masked}: an in-memory database cannot be written by another process")
        # A fresh interpreter running this module (not multiprocessing's spawn, which would re-import the
        # caller's main script): no inherited threads, connections or locks. The URL (it may hold a password)
        # goes through the pipe, never onto the command line.
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", "import storage.writer as w; w._child_main()", str(down_r), str(up_w)],
                pass_fds=(down_r, up_w), env=env, stdin=subprocess.DEVNULL)
        except OSError as e:
            os.close(down_w)
            os.close(up_r)
            raise StorageError(f"{store.url_masked}: cannot start the background writer: {e}") from None
        finally:
            os.close(down_r)  # the child's ends: a dead child is then an end of pipe here
            os.close(up_w)
        self._to_child = Connection(down_w, readable=False)
        self._from_child = Connection(up_r, writable=False)
        self._to_child.send((store.engine.url.render_as_string(hide_password=False), store.busy_timeout_ms,
                             recorder.run_id, os.getpid()))
        self._closed = False

    def __repr__(self) -> str:
        return f"BackgroundWriter(run {self.recorder.run_id}, pid {self._process.pid})"

    # ---------------------------------------------------------------------------- the recorder interface

    def new_batch(self) -> _Batch:
        return self.recorder.new_batch()

    def write_batch(self, batch: _Batch) -> None:
        """Send ``batch`` to be committed. Raises: StorageError (an earlier batch failed, or the child died)."""
        if self._closed:
            raise StorageError(f"{self.recorder.storage.url_masked}: {self.recorder.doing(batch)}: the "
                               "background writer is closed")
        if not batch.slices:
            return
        self._collect(block=False)
        while len(self._sent) >= self.depth:
            self._collect(block=True)
        cached = self.recorder.storage.cache_rows()
        payload = pickle.dumps((batch, cached), protocol=pickle.HIGHEST_PROTOCOL)
        doing = self.recorder.doing(batch)
        try:
            self._to_child.send_bytes(payload)
        except OSError:  # the child is gone: say why (its last answer, or its exit code)
            self._collect(block=True)
            raise self._died(doing) from None
        self._sent.append((batch.rows, doing, cached))

    def close(self) -> None:
        """Wait until every batch sent is committed, and end the child. Raises: StorageError."""
        if self._closed:
            return
        try:
            while self._sent:
                self._collect(block=True)
        finally:
            self._end(wait_s=None)

    def abort(self) -> None:
        """End without raising: the child commits the batches it has received (whole slices), then exits."""
        if self._closed:
            return
        raised = self._error  # already raised to the caller: not logged again
        try:
            while self._sent:
                self._collect(block=True)
        except StorageError as e:
            if e is not raised:
                log.warning("%s", e)
        finally:
            self._end(wait_s=60.0)

    # ------------------------------------------------------------------------------------ internals

    def _collect(self, *, block: bool) -> None:
        """Take the child's answers (one per batch, in order); the first failure raises, now and later."""
        if self._error is not None:
            raise self._error
        while self._sent and (block or self._from_child.poll()):
            try:
                answer = self._from_child.recv()
            except EOFError:
                self._error = self._died(self._sent[0][1])
                raise self._error from None
            rows, _, cached = self._sent.pop(0)
            if answer != "ok":
                self._error = StorageError(str(answer))
                raise self._error
            self.recorder.written(rows, cached)
            block = False  # one answer was waited for; take the others only when they are there

    def _died(self, doing: str) -> StorageError:
        try:
            code = self._process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            code = None
        how = "is still running" if code is None else f"ended with exit code {code}"
        return StorageError(f"{self.recorder.storage.url_masked}: {doing}: the background writer process {how} "
                            "before committing it")

    def _end(self, *, wait_s: float | None) -> None:
        self._closed = True
        with contextlib.suppress(OSError):  # the child is gone already
            self._to_child.send_bytes(_CLOSE)
        self._to_child.close()
        try:
            self._process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            log.warning("%r did not end in %s s: killed", self, wait_s)
            self._process.kill()
            self._process.wait()
        self._from_child.close()


# ----------------------------------------------------------------------------------------------- child


def _die_with_parent(parent_pid: int) -> None:
    """Linux: be killed (SIGKILL) when the parent dies, as if it were one process with it."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


def _child_main() -> None:
    """The child: ``python -c "import storage.writer as w; w._child_main()" IN_FD OUT_FD``."""
    pipe_in = Connection(int(sys.argv[1]), writable=False)
    pipe_out = Connection(int(sys.argv[2]), readable=False)
    url, busy_timeout_ms, run_id, parent_pid = pipe_in.recv()
    _die_with_parent(parent_pid)
    # The parent's batches are read as they come, so that sending one never waits for the commit before it.
    inbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    orphaned = threading.Event()

    def read() -> None:
        while True:
            try:
                data = pipe_in.recv_bytes()
            except (EOFError, OSError):
                orphaned.set()  # the end of the pipe without a close: the parent died
                data = _CLOSE
            inbox.put(data)
            if data == _CLOSE:
                return

    threading.Thread(target=read, name="writer-inbox", daemon=True).start()
    store: Storage | None = None
    try:
        engine, shown = connect(url, create=False, busy_timeout_ms=busy_timeout_ms)
        store = Storage(engine, shown, busy_timeout_ms=busy_timeout_ms)
        recorder = RunRecorder(store, run_id)
        while (data := inbox.get()) != _CLOSE and not orphaned.is_set():
            batch, cached = pickle.loads(data)  # type: ignore[arg-type]
            try:
                recorder.commit(batch, cached, recorder.doing(batch))
            except StorageError as e:
                pipe_out.send(str(e))
                return  # nothing after a failed batch is committed: the parent raises
            pipe_out.send("ok")
    except StorageError as e:  # cannot connect
        pipe_out.send(str(e))
    finally:
        if store is not None:
            store.engine.dispose()
        pipe_out.close()
