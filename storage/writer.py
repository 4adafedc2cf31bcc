"""Write-behind for replays: a child process commits a run's slice batches while the pipeline steps on.

A replay spends about as long recording as stepping (inserting a million bar rows into SQLite is seconds of
work), and both are CPU work: a thread cannot overlap them under the GIL (its many short database calls each
wait for the stepping thread to hand the GIL back), a second process can. ``BackgroundWriter`` has the
recorder's interface (``engine.ports.Recorder``; ``Storage.recorder(run_id, expected_bars=n)`` hands one out
for a long replay): ``write_batch`` pickles the batch (its rows are already
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

import logging
import pickle
from typing import Any

from engine.errors import StorageError
from engine.types import (
    Bar,
    Decision,
    Event,
    Fill,
    GateResult,
    NewsItem,
    Outcome,
    ReviewRecord,
    Signal,
    SliceRecord,
    Trade,
)
from storage.child import CLOSE, Child, shareable
from storage.recorder import Batch, RunRecorder

__all__ = ["BackgroundWriter"]

log = logging.getLogger(__name__)



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
        if not shareable(store):
            raise ValueError(f"{store.url_masked}: an in-memory database cannot be written by another process")
        try:
            self._child = Child("storage.children:serve_writer", store.engine.url.render_as_string(hide_password=False),
                                store.busy_timeout_ms, recorder.run_id)
        except OSError as e:
            raise StorageError(f"{store.url_masked}: cannot start the background writer: {e}") from None
        self._closed = False

    def __repr__(self) -> str:
        return f"BackgroundWriter(run {self.recorder.run_id}, pid {self._child.pid})"

    # ---------------------------------------------------------------------------- the recorder interface
    # Reads go to the database through the run's own recorder: what they see is what was committed.

    def last_slice_ms(self) -> int | None:
        return self.recorder.last_slice_ms()

    def load_fills(self) -> list[Fill]:
        return self.recorder.load_fills()

    def load_trades(self) -> list[Trade]:
        return self.recorder.load_trades()

    def load_outcomes(self) -> list[Outcome]:
        return self.recorder.load_outcomes()

    def load_signals(self) -> list[Signal]:
        return self.recorder.load_signals()

    def load_gate_results(self) -> list[tuple[str, GateResult]]:
        return self.recorder.load_gate_results()

    def load_decisions(self) -> dict[str, Decision]:
        return self.recorder.load_decisions()

    def load_reviews(self) -> list[ReviewRecord]:
        return self.recorder.load_reviews()

    def load_events(self) -> list[Event]:
        return self.recorder.load_events()

    def load_bars(self, symbol: str | None = None, since_ms: int | None = None) -> list[Bar]:
        return self.recorder.load_bars(symbol, since_ms)

    def load_news(self) -> list[NewsItem]:
        return self.recorder.load_news()

    def record_slice(self, record: SliceRecord) -> None:
        """Send one slice as a batch of its own (``write_batch``)."""
        batch = self.new_batch()
        batch.add(record)
        self.write_batch(batch)

    def new_batch(self) -> Batch:
        return self.recorder.new_batch()

    def write_batch(self, batch: Batch) -> None:
        """Send ``batch`` to be committed. Raises: StorageError (an earlier batch failed, or the child died)."""
        if self._closed:
            raise StorageError(f"{self.recorder.storage.url_masked}: {self.recorder.doing(batch)}: the "
                               "background writer is closed")
        if not batch.slices:
            return
        self._collect(block=False)
        while len(self._sent) >= self.depth:
            self._collect(block=True)
        cached = self.recorder.storage.cache_buffer.snapshot()
        payload = pickle.dumps((batch, cached), protocol=pickle.HIGHEST_PROTOCOL)
        doing = self.recorder.doing(batch)
        try:
            self._child.send_bytes(payload)
        except OSError:  # the child is gone: say why (its last answer, or its exit code)
            self._collect(block=True)
            raise self._died(doing) from None
        self._sent.append((batch.rows, doing, cached))

    def close(self) -> None:
        """Wait until every batch sent is committed, and end the child. Raises: StorageError."""
        if self._closed:
            return
        try:
            self._drain()
        finally:
            self._end(wait_s=None)

    def abort(self) -> None:
        """End without raising: the child commits the batches it has received (whole slices), then exits."""
        if self._closed:
            return
        raised = self._error  # already raised to the caller: not logged again
        try:
            self._drain()
        except StorageError as e:
            if e is not raised:
                log.warning("%s", e)
        finally:
            self._end(wait_s=60.0)

    # ------------------------------------------------------------------------------------ internals

    def _drain(self) -> None:
        """Wait for the answer to every batch sent."""
        while self._sent:
            self._collect(block=True)

    def _collect(self, *, block: bool) -> None:
        """Take the child's answers (one per batch, in order); the first failure raises, now and later."""
        if self._error is not None:
            raise self._error
        while self._sent and (block or self._child.poll()):
            try:
                answer = self._child.recv()
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
        code = self._child.exit_code()
        how = "is still running" if code is None else f"ended with exit code {code}"
        return StorageError(f"{self.recorder.storage.url_masked}: {doing}: the background writer process {how} "
                            "before committing it")

    def _end(self, *, wait_s: float | None) -> None:
        self._closed = True
        self._child.end(CLOSE, wait_s=wait_s)
