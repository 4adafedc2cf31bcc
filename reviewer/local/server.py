"""Start, wait for and stop llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``) on 127.0.0.1,
with settings that keep its memory bounded: a fixed context; no RAM prompt cache (``--cache false``: it grew
to 23.7 GB in eight reviews and was OOM-killed); and no logits kept for every prompt position
(``--logits_all false``; the server's default keeps n_ctx × 152k floats, 5 GB at 8k tokens, and computes the
vocabulary projection for every prompt token: only logprobs need it). The tier reaches it at ``base_url``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, TradevetError
from reviewer.local.models import DEFAULT_MODEL, MODELS, cache_dir

__all__ = [
    "DEFAULT_PORT",
    "MODEL_ALIAS",
    "LocalServer",
    "ServerError",
    "ServerSettings",
    "default_model_path",
    "default_threads",
    "rss_mb",
    "stop_detached",
]

DEFAULT_PORT = 8080
MODEL_ALIAS = "local"  # the model id the server answers to (config/local.yaml's `model:`)


class ServerError(TradevetError):
    """The local model server could not be started, did not become ready, or died."""

    exit_code = 1


def default_model_path() -> Path:
    """The default catalogued model's file (it may not be installed yet)."""
    return MODELS[DEFAULT_MODEL].path()


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How the server is started. Memory is bounded by ``n_ctx`` (the KV cache) and the model's size."""

    model_path: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    n_ctx: int = 8192  # the full prompt + a pack is ~4,000 tokens; compact ~1,000
    n_threads: int = 0  # generation; 0: all cores but one (see default_threads)
    n_threads_batch: int = 0  # prompt processing; 0: every core (big batched work tolerates a busy core)
    chat_format: str | None = None  # None: the chat template in the GGUF header
    alias: str = MODEL_ALIAS

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        threads = str(self.n_threads or default_threads())
        batch_threads = str(self.n_threads_batch or os.cpu_count() or 2)
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path), "--host", self.host,
               "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--n_threads", threads,
               "--n_threads_batch", batch_threads, "--cache", "false", "--logits_all", "false",
               "--model_alias", self.alias]
        if self.chat_format:
            cmd += ["--chat_format", self.chat_format]
        return cmd


def default_threads() -> int:
    """Generation threads: all cores but one. llama.cpp's threads meet at a barrier several times per token: when
    another process takes one of them off its core, the others spin until it is back. On a 2-core machine shared
    with other work, generation ran at 0.7 tokens/s with 2 threads and 11 tokens/s with 1, while prompt processing
    ran at 45 tokens/s either way (so it keeps every core: on an idle machine that is twice as fast).
    """
    return max(1, (os.cpu_count() or 2) - 1)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def rss_mb(pid: int) -> tuple[float, float] | None:
    """(current, peak) resident memory of a process in MB from /proc (None where there is no /proc)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    vals = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            vals[key] = int(rest.split()[0]) / 1024
    return (vals.get("VmRSS", 0.0), vals.get("VmHWM", 0.0)) if vals else None


class LocalServer:
    """One llama.cpp server process. ``with LocalServer(settings) as srv: ...`` starts it, waits until it
    answers and stops it on exit. Raises: ServerError, ConfigError (port taken, model or server missing)."""

    def __init__(self, settings: ServerSettings, *, log_path: Path | None = None) -> None:
        self.settings = settings
        self.log_path = log_path or cache_dir() / "logs" / f"llama-server-{settings.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self, *, ready_timeout_s: float = 120.0, detach: bool = False) -> LocalServer:
        """Launch the server and wait until ``/v1/models`` answers. ``detach``: in its own session, so that it
        outlives this process (``stop_detached`` ends it)."""
        s = self.settings
        from reviewer.local.install import server_importable

        if not server_importable():
            raise ConfigError("llama-cpp-python[server] is not installed in this environment: run `make local-llm` "
                              "(or `tradevet llm install`)")
        if not s.model_path.is_file():
            raise ConfigError(f"model file {s.model_path} not found: run `make local-llm` (or pass --model FILE.gguf)")
        if _port_open(s.host, s.port):
            raise ConfigError(f"{s.host}:{s.port} is already in use: stop what listens there or pass --port")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(s.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=detach)
        try:
            self.wait_ready(ready_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout_s: float) -> None:
        """Poll until the server lists its model. Raises: ServerError when it exits or stays silent."""
        deadline = time.monotonic() + timeout_s
        url = f"{self.base_url}/models"
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise ServerError(f"the llama.cpp server exited with code {self.proc.returncode} while starting: "
                                  f"{self.log_tail()} (log: {self.log_path})")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise ServerError(f"the llama.cpp server did not answer {url} within {timeout_s:g} s "
                                  f"(log: {self.log_path})")
            time.sleep(0.25)

    def log_tail(self, n: int = 1) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "no log"
        return " | ".join(lines[-n:]) if lines else "no output"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def memory_mb(self) -> tuple[float, float] | None:
        """(current, peak) resident memory of the server in MB."""
        return None if self.proc is None else rss_mb(self.proc.pid)

    def kill(self) -> None:
        """SIGKILL, as the kernel's OOM killer would (tests of a server dying mid-run)."""
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``. Safe to call twice."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout_s)

    def __enter__(self) -> LocalServer:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ detached servers
    def write_pidfile(self) -> Path:
        """Record a detached server so that ``tradevet llm stop`` can end it."""
        path = _pidfile(self.settings.port)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"pid": self.pid, "port": self.settings.port, "model": str(self.settings.model_path),
                                    "log": str(self.log_path), "base_url": self.base_url}))
        return path


def _pidfile(port: int) -> Path:
    return cache_dir() / "run" / f"llama-server-{port}.json"


def _is_our_server(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"llama_cpp.server" in cmdline


def stop_detached(port: int = DEFAULT_PORT, *, timeout_s: float = 10.0) -> dict[str, Any] | None:
    """Stop the detached server recorded for ``port``; its record, or None when there was none running."""
    path = _pidfile(port)
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    pid = int(info.get("pid") or 0)
    path.unlink(missing_ok=True)
    if pid <= 0 or not _is_our_server(pid):  # gone already, or the pid was reused by something else
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _is_our_server(pid):
        time.sleep(0.1)
    if _is_our_server(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return info
