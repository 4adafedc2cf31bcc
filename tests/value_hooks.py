"""Test doubles for `tradevet value`: a reviewer omniscient by construction (the random one is the product's own
``chance`` tier), and a worker plugin that kills the worker running a chosen replay (once)."""

from __future__ import annotations

import os
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from engine.types import ContextPack, Verdict, VerdictKind


class _Tier:
    provider = "test"
    endpoint = ""

    def __init__(self, cfg: Any = None, api_key: str | None = None) -> None:
        self.name = cfg.name if cfg is not None else type(self).__name__.lower()
        self.params = dict(cfg.params) if cfg is not None else {}
        self.model = type(self).__name__
        self.prompt_version = "test-1"
        self.timeout_s = 8.0
        self.max_concurrency = 8

    async def review(self, pack: ContextPack) -> Verdict:
        return self.review_sync(pack)

    async def aclose(self) -> None:
        return None

    def review_sync(self, pack: ContextPack) -> Verdict:  # pragma: no cover - overridden
        raise NotImplementedError


class OracleTier(_Tier):
    """Vetoes exactly the signals whose shadow trade lost (ids given in ``losers``, from an earlier run)."""

    def review_sync(self, pack: ContextPack) -> Verdict:
        kind = VerdictKind.VETO if pack.signal.id in set(self.params.get("losers", ())) else VerdictKind.ACCEPT
        return Verdict(kind, 0.9, "oracle", source=self.name, tier=self.name, model=self.model,
                       prompt_version=self.prompt_version)


class KillWorkerOnce(WorkerPlugin):
    """A Dask worker plugin: the worker that starts the task whose key contains ``needle`` (first attempt) dies."""

    name = "tradevet-kill-once"

    def __init__(self, needle: str) -> None:
        self.needle = needle

    def setup(self, worker: Any) -> None:
        self.worker = worker

    def teardown(self, worker: Any) -> None:
        return None

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if finish == "executing" and self.needle in str(key) and str(key).endswith("-a1"):
            os._exit(17)
