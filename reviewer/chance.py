"""ChanceTier: a reviewer that decides at random — the yardstick every real reviewer must beat.

Each signal's verdict is drawn from a hash of (``seed``, signal id): the same seed gives the same verdicts
wherever and in whatever order the signals arrive. With ``veto_rate`` 0.2 it vetoes one signal in five at random,
which scores, in expectation, the base loss rate as its veto precision. A sweep over its ``seed`` is a search
among noise: whatever "wins" it is luck, and the sweep's corrected figures must say so.

Config::

    {name: chance, provider: chance, params: {veto_rate: 0.2, modify_rate: 0.1, seed: 7}}
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.ports import TierSettings
from engine.types import ContextPack, Verdict, VerdictKind

__all__ = ["CHANCE_VERSION", "ChanceParams", "ChanceTier"]

CHANCE_VERSION = "chance-v1"


class ChanceParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    veto_rate: float = Field(0.2, ge=0, le=1, description="Share of signals vetoed, at random.")
    modify_rate: float = Field(0.0, ge=0, le=1, description="Share of signals modified, at random.")
    modify_size_pct: float = Field(50, gt=0, le=100, description="Size a random modify sets (% of the signal's).")
    confidence: float = Field(0.8, ge=0, le=1, description="Confidence of every verdict (above the clamp's floor).")
    seed: int = Field(0, description="The draw's seed.")

    @model_validator(mode="after")
    def _rates(self) -> ChanceParams:
        if self.veto_rate + self.modify_rate > 1:
            raise ValueError(f"veto_rate + modify_rate must be <= 1 (got {self.veto_rate} + {self.modify_rate})")
        return self


class ChanceTier:
    """Implements ``engine.ports.Tier`` (synchronously, like the rules tier)."""

    provider = "chance"
    endpoint = ""  # answers in-process
    Params = ChanceParams

    def __init__(self, cfg: TierSettings | None = None, api_key: str | None = None) -> None:
        self.params = ChanceParams(**cfg.params) if cfg is not None else ChanceParams()
        self.name = cfg.name if cfg is not None else "chance"
        p = self.params
        self.model = CHANCE_VERSION
        # the draw decides the verdict: every parameter is part of the cache key
        self.prompt_version = (f"{CHANCE_VERSION}+v{p.veto_rate:g}m{p.modify_rate:g}s{p.modify_size_pct:g}"
                               f"c{p.confidence:g}#{p.seed}")
        self.timeout_s = cfg.timeout_s if cfg is not None else 8.0
        self.max_concurrency = cfg.max_concurrency if cfg is not None else 8

    def draw(self, signal_id: str) -> float:
        """A uniform number in [0, 1) from (seed, signal id)."""
        h = hashlib.sha256(f"{self.params.seed}\x1f{signal_id}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64

    def review_sync(self, pack: ContextPack) -> Verdict:
        p, u = self.params, self.draw(pack.signal.id)
        if u < p.veto_rate:
            kind, size, why = VerdictKind.VETO, None, "vetoed at random"
        elif u < p.veto_rate + p.modify_rate:
            kind, size, why = VerdictKind.MODIFY, p.modify_size_pct, "size cut at random"
        else:
            kind, size, why = VerdictKind.ACCEPT, None, "accepted at random"
        return Verdict(kind, p.confidence, why, modified_size_pct=size, source=self.name, tier=self.name,
                       model=self.model, prompt_version=self.prompt_version)

    async def review(self, pack: ContextPack) -> Verdict:
        return self.review_sync(pack)

    async def aclose(self) -> None:
        return None
