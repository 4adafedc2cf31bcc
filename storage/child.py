"""Child processes for database work that can run beside the parent's: a fresh interpreter running one function
of this package, talking to its parent over two pipes.

Not ``multiprocessing``: its spawn start re-imports the caller's main script in the child (a script without an
``if __name__ == "__main__"`` guard would run again there), and its fork start would inherit threads,
connections and locks. Here the child runs ``python -c`` with this package on its path, and its first message
names the function to run and its arguments (a database URL may hold a password: it goes through the pipe,
never onto the command line). On Linux the child dies with its parent (``PR_SET_PDEATHSIG``): work the
parent started never goes on after the parent is gone.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage.database import Database

__all__ = ["CLOSE", "Child", "available", "shareable"]

CLOSE = b"close"  # sent before the parent closes its end: the end of the pipe after it is not a death

_ROOT = str(Path(__file__).resolve().parents[1])


def available() -> bool:
    """Whether child processes can be started here (POSIX: the pipes are passed as file descriptors)."""
    return os.name == "posix"


def shareable(storage: Database) -> bool:
    """Whether a child process can work in ``storage``'s database: not an in-memory SQLite one, and ``available``."""
    from storage.db import is_memory

    u = storage.engine.url
    return available() and not (u.get_backend_name() == "sqlite" and is_memory(u))


class Child:
    """A child process running ``target(inbox, outbox, *args)`` (``target``: "module:function" in this package).

    ``inbox`` and ``outbox`` are ``multiprocessing.connection.Connection`` ends; the parent's are
    ``send_bytes`` (to the child) and ``recv``/``poll`` (from it). Raises: OSError when it cannot start.
    """

    def __init__(self, target: str, *args: Any) -> None:
        down_r, down_w = os.pipe()
        up_r, up_w = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (_ROOT, os.environ.get("PYTHONPATH"))))}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "import storage.child as c; c._main()", str(down_r), str(up_w)],
                pass_fds=(down_r, up_w), env=env, stdin=subprocess.DEVNULL)
        except OSError:
            os.close(down_w)
            os.close(up_r)
            raise
        finally:
            os.close(down_r)  # the child's ends: a dead child is then an end of pipe here
            os.close(up_w)
        self._to = Connection(down_w, readable=False)
        self._from = Connection(up_r, writable=False)
        self._to.send((target, args, os.getpid()))

    @property
    def pid(self) -> int:
        return self.process.pid

    def send_bytes(self, data: bytes) -> None:
        self._to.send_bytes(data)

    def poll(self) -> bool:
        return self._from.poll()

    def recv(self) -> Any:
        """The child's next message. Raises: EOFError when the child has ended without one."""
        return self._from.recv()

    def exit_code(self, wait_s: float = 5.0) -> int | None:
        """The child's exit code, waiting up to ``wait_s`` for it to end; None when it is still running."""
        try:
            return self.process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return None

    def end(self, last: bytes | None = None, *, wait_s: float | None = None) -> None:
        """Send ``last`` (if any), close the pipe to the child and wait for it (killed after ``wait_s``)."""
        if last is not None:
            with contextlib.suppress(OSError):  # the child is gone already
                self._to.send_bytes(last)
        self._to.close()
        try:
            self.process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._from.close()


def _die_with_parent(parent_pid: int) -> None:
    """Linux: be killed (SIGKILL) when the parent dies, as if it were one process with it."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)


def _main() -> None:
    """The child: ``python -c "import storage.child as c; c._main()" IN_FD OUT_FD``."""
    inbox = Connection(int(sys.argv[1]), writable=False)
    outbox = Connection(int(sys.argv[2]), readable=False)
    target, args, parent_pid = inbox.recv()
    _die_with_parent(parent_pid)
    module, _, name = target.partition(":")
    if not module.startswith("storage."):
        raise SystemExit(f"storage.child: refusing to run {target!r} (only functions of the storage package)")
    try:
        getattr(importlib.import_module(module), name)(inbox, outbox, *args)
    finally:
        outbox.close()
