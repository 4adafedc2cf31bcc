"""RulesTier: a deterministic reviewer over the context pack — the baseline every LLM tier must beat.

Calibrated on the feature analysis of the dev data (``tradevet analyze``, rules-v2): a rule *vetoes* only
where its field was informative there — a very low volatility percentile (the ATR stop then sits inside the
noise and the costs: the shadow trades of vetoed signals lost more often than all on 6 of 7 dev data sets) and
adverse news against a long (hard evidence; the dev data carry no news, so it rests on the demo's) — and the
rules whose fields did not predict outcomes (loss streak, strategy/regime mismatch, correlated exposure) cut
the size or stay silent. Every threshold, and which rules veto, stays a ``RulesParams`` setting.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.ports import TierSettings
from engine.types import ContextPack, CorrelatedPosition, NewsCategory, RegimeTag, Side, Verdict, VerdictKind

__all__ = ["RULES_VERSION", "Finding", "RulesParams", "RulesTier", "judge"]

RULES_VERSION = "rules-v2"  # v2: vetoes only on fields found informative (see the module docstring)

_ADVERSE = frozenset({NewsCategory.HACK, NewsCategory.DELISTING, NewsCategory.REGULATORY, NewsCategory.OUTAGE})
_POSITIVE = frozenset({NewsCategory.LISTING, NewsCategory.PARTNERSHIP})
_TREND_STYLES = frozenset({"trend", "breakout"})

# Confidence of each finding on its own. Vetoes on hard evidence (news) rank above vetoes on statistics;
# every value is above the clamp's default min_confidence (0.3) so that a firing rule is acted on.
_CONF_NEWS_VETO = 0.9
_CONF_CORR_VETO = 0.7
_CONF_STREAK_VETO = 0.65
_CONF_REGIME_VETO = 0.6
_CONF_LOW_VOL_VETO = 0.6
_CONF_CORR_MODIFY = 0.6
_CONF_NEWS_MODIFY = 0.6
_CONF_STREAK_MODIFY = 0.55
_CONF_VOL_MODIFY = 0.5
_CONF_CHOP_MODIFY = 0.5
_AGREEMENT_BONUS = 0.05  # per further finding pointing the same way (any modify or veto: "this trade is risky")
_CONF_MAX = 0.95


class RulesParams(BaseModel):
    """Thresholds of the rules reviewer (the tier's ``params``). Sizes are % of the signal's own size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modify_streak: int = Field(3, ge=1, description="Strategy loss streak at or above which the size is cut.")
    veto_streak: int = Field(5, ge=1, description="Strategy loss streak at or above which the signal is vetoed "
                                                  "(with streak_veto; else the size is cut).")
    streak_veto: bool = Field(
        False, description="Veto on a fresh veto-length streak (off: loss streaks did not predict losses on the "
                           "dev data, so a streak only cuts the size).")
    streak_fresh_h: float = Field(
        6, gt=0, description="A veto-length streak vetoes only if its last loss closed within this many hours "
                             "(afterwards it only cuts the size, so the strategy can trade its way out)."
    )
    streak_size_pct: float = Field(50, gt=0, le=100, description="Size after a loss-streak cut.")
    chop_size_pct: float = Field(60, gt=0, le=100, description="Size of a trend/breakout signal in a chop regime.")
    regime_veto: bool = Field(
        False, description="Veto trend/breakout in mean_reverting (and see below); off: the regime tag did not "
                           "predict losses on the dev data, so a mismatch cuts the size to chop_size_pct.")
    chop_modify: bool = Field(
        False, description="Cut trend/breakout signals in chop to chop_size_pct (off: chop is the usual state at "
                           "the trade's horizon and did not predict losses).")
    mean_reversion_in_trend: Literal["veto", "modify"] = Field(
        "modify", description="What a mean-reversion signal in a trending regime gets (modify: chop_size_pct)."
    )
    corr_threshold: float = Field(0.6, ge=0, le=1, description="|corr| at or above which an open position counts.")
    corr_budget_pct: float = Field(
        15, ge=0, description="Correlated exposure moving with the signal (% of equity) beyond which the size is cut."
    )
    corr_veto_pct: float | None = Field(
        None, ge=0, description="Correlated exposure moving with the signal (% of equity) beyond which it is "
                                "vetoed (null: never; the exposure did not predict losses on the dev data)."
    )
    corr_size_pct: float = Field(50, gt=0, le=100, description="Size after a correlated-concentration cut.")
    news_max_age_min: float = Field(240, gt=0, description="News older than this (minutes) is ignored.")
    news_size_pct: float = Field(50, gt=0, le=100, description="Size of a short against positive news.")
    high_vol_pct: float = Field(95, ge=0, le=100, description="Vol percentile at or above which the stop tightens.")
    low_vol_veto_pct: float | None = Field(
        7, ge=0, le=100, description="Vol percentile at or below which the signal is vetoed (null: never): in a "
                                      "market this quiet the stop sits inside the noise and the costs.")
    stop_tighten_frac: float = Field(
        0.3, gt=0, lt=1, description="Fraction of the entry–stop distance the stop moves toward the entry."
    )
    accept_confidence: float = Field(0.55, ge=0, le=1, description="Confidence of an accept (no rule fired).")

    @model_validator(mode="after")
    def _order(self) -> RulesParams:
        if self.veto_streak < self.modify_streak:
            raise ValueError(f"veto_streak must be >= modify_streak (got {self.veto_streak} < {self.modify_streak})")
        if self.corr_veto_pct is not None and self.corr_veto_pct < self.corr_budget_pct:
            raise ValueError(
                f"corr_veto_pct must be >= corr_budget_pct (got {self.corr_veto_pct} < {self.corr_budget_pct})"
            )
        return self


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule that fired: what it suggests and why, in a few words."""

    kind: VerdictKind  # modify | veto
    confidence: float
    note: str
    size_pct: float | None = None
    stop: float | None = None


def _style(tags: tuple[str, ...]) -> str | None:
    for t in tags:
        if t.startswith("style:"):
            return t[len("style:"):]
    return None


def _same_risk(pos: CorrelatedPosition, side: Side, threshold: float) -> bool:
    """The position moves with the signal: same side and corr ≥ threshold, or opposite side and corr ≤ −threshold.

    A same-side position that is strongly *anti*-correlated is a hedge, not a concentration.
    """
    if pos.corr is None or not math.isfinite(pos.corr) or abs(pos.corr) < threshold:
        return False
    return (pos.side is side) == (pos.corr > 0)


def _streak_is_fresh(pack: ContextPack, hours: float) -> bool:
    """Did the streak's last loss close within ``hours`` of the signal?

    Without this, a streak veto would lock a strategy out for good: vetoed signals make no trades, so
    nothing could ever end the streak. Unknown timing (no trades listed) counts as fresh.
    """
    if not pack.recent_trades:
        return True
    last_close = max(t.closed_ms for t in pack.recent_trades)
    return pack.signal.created_ms - last_close <= hours * 3_600_000


def _tighter_stop(pack: ContextPack, frac: float) -> float | None:
    """The stop moved ``frac`` of the way toward the entry; None when the stop is on the wrong side."""
    s = pack.signal
    dist = (s.entry - s.stop_loss) * s.side.sign
    if not dist > 0:
        return None
    return s.stop_loss + s.side.sign * dist * frac


def findings(pack: ContextPack, p: RulesParams) -> list[Finding]:
    """Every rule that fires on ``pack``, in rule order."""
    out: list[Finding] = []
    s = pack.signal

    streak = pack.trade_stats.loss_streak
    if p.streak_veto and streak >= p.veto_streak and _streak_is_fresh(pack, p.streak_fresh_h):
        out.append(Finding(VerdictKind.VETO, _CONF_STREAK_VETO,
                           f"fresh loss streak of {streak} (≥ {p.veto_streak})"))
    elif streak >= p.modify_streak:
        out.append(Finding(VerdictKind.MODIFY, _CONF_STREAK_MODIFY, f"loss streak of {streak} (≥ {p.modify_streak})",
                           size_pct=p.streak_size_pct))

    style, regime = _style(s.tags), pack.regime.tag
    if style in _TREND_STYLES:
        if regime is RegimeTag.MEAN_REVERTING:
            if p.regime_veto:
                out.append(Finding(VerdictKind.VETO, _CONF_REGIME_VETO, f"{style} signal in a mean_reverting regime"))
            else:
                out.append(Finding(VerdictKind.MODIFY, _CONF_CHOP_MODIFY, f"{style} signal in a mean_reverting regime",
                                   size_pct=p.chop_size_pct))
        elif regime is RegimeTag.CHOP and p.chop_modify:
            out.append(Finding(VerdictKind.MODIFY, _CONF_CHOP_MODIFY, f"{style} signal in a chop regime",
                               size_pct=p.chop_size_pct))
    elif style == "mean_reversion" and regime is RegimeTag.TRENDING:
        # Weaker evidence than the trend-in-mean-reversion case (a fading trend is what this style trades):
        # cut the size by default, veto only when asked to.
        if p.regime_veto and p.mean_reversion_in_trend == "veto":
            out.append(Finding(VerdictKind.VETO, _CONF_REGIME_VETO, "mean_reversion signal in a trending regime"))
        else:
            out.append(Finding(VerdictKind.MODIFY, _CONF_CHOP_MODIFY, "mean_reversion signal in a trending regime",
                               size_pct=p.chop_size_pct))

    exposure = sum(c.size_pct_equity for c in pack.correlated if _same_risk(c, s.side, p.corr_threshold))
    if p.corr_veto_pct is not None and exposure > p.corr_veto_pct:
        out.append(Finding(VerdictKind.VETO, _CONF_CORR_VETO,
                           f"correlated {s.side}-side exposure {exposure:.0f} % of equity (> {p.corr_veto_pct:g} %)"))
    elif exposure > p.corr_budget_pct:
        out.append(Finding(VerdictKind.MODIFY, _CONF_CORR_MODIFY,
                           f"correlated {s.side}-side exposure {exposure:.0f} % of equity (> {p.corr_budget_pct:g} %)",
                           size_pct=p.corr_size_pct))

    fresh = [n for n in pack.news if n.age_min <= p.news_max_age_min]
    adverse = sorted({str(n.category) for n in fresh if n.category in _ADVERSE})
    positive = sorted({str(n.category) for n in fresh if n.category in _POSITIVE})
    if adverse and s.side is Side.LONG:
        out.append(Finding(VerdictKind.VETO, _CONF_NEWS_VETO, f"adverse news ({', '.join(adverse)}) against a long"))
    if positive and s.side is Side.SHORT:
        out.append(Finding(VerdictKind.MODIFY, _CONF_NEWS_MODIFY,
                           f"positive news ({', '.join(positive)}) against a short", size_pct=p.news_size_pct))

    pct = pack.regime.vol_percentile
    if pct is not None and p.low_vol_veto_pct is not None and pct <= p.low_vol_veto_pct:
        out.append(Finding(VerdictKind.VETO, _CONF_LOW_VOL_VETO,
                           f"volatility percentile {pct:.0f} (≤ {p.low_vol_veto_pct:g}): the stop is inside the noise"))
    if pct is not None and pct >= p.high_vol_pct:
        stop = _tighter_stop(pack, p.stop_tighten_frac)
        if stop is not None:
            out.append(Finding(VerdictKind.MODIFY, _CONF_VOL_MODIFY,
                               f"volatility percentile {pct:.0f} (≥ {p.high_vol_pct:g})", stop=stop))
    return out


def judge(pack: ContextPack, p: RulesParams) -> tuple[VerdictKind, float, str, float | None, float | None]:
    """(verdict, confidence, rationale, modified_size_pct, modified_sl): the strongest finding wins."""
    found = findings(pack, p)
    if not found:
        st = pack.trade_stats
        return (VerdictKind.ACCEPT, p.accept_confidence,
                f"Accept: no rule fired (loss streak {st.loss_streak}, regime {pack.regime.tag}, "
                f"no correlated concentration, no adverse news).", None, None)
    vetoes = [f for f in found if f.kind is VerdictKind.VETO]
    winners = vetoes or found
    # agreement: every further finding (modify or veto) adds a little, the strongest sets the base
    conf = min(_CONF_MAX, max(f.confidence for f in winners) + _AGREEMENT_BONUS * (len(found) - 1))
    ordered = sorted(found, key=lambda f: (f.kind is not VerdictKind.VETO, -f.confidence))
    notes = "; ".join(f.note for f in ordered)
    if vetoes:
        return VerdictKind.VETO, round(conf, 4), f"Veto: {notes}.", None, None
    sizes = [f.size_pct for f in found if f.size_pct is not None]
    stops = [f.stop for f in found if f.stop is not None]
    # modifies do not conflict: take the smallest size and the tightest stop any rule asked for
    size = min(sizes) if sizes else None
    stop = (max(stops) if pack.signal.side is Side.LONG else min(stops)) if stops else None
    return VerdictKind.MODIFY, round(conf, 4), f"Modify: {notes}.", size, stop


class RulesTier:
    """Implements ``engine.ports.Tier``. Pure and deterministic: the same pack always gets the same verdict."""

    provider = "rules"
    endpoint = ""  # answers in-process

    Params = RulesParams

    def __init__(self, cfg: TierSettings | None = None, api_key: str | None = None) -> None:
        # without settings: a rules tier named "rules" with the default thresholds and TierConfig's defaults
        self.params = RulesParams(**cfg.params) if cfg is not None else RulesParams()
        self.name = cfg.name if cfg is not None else "rules"
        self.model = RULES_VERSION
        # Thresholds decide the verdict, so they are part of the cache key: default params keep the plain
        # version, changed ones add a short digest (a backtest of two rule configs must not share verdicts).
        changed = self.params.model_dump(exclude_defaults=True)
        digest = hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8]
        self.prompt_version = f"{RULES_VERSION}+{digest}" if changed else RULES_VERSION
        self.timeout_s = cfg.timeout_s if cfg is not None else 8.0
        self.max_concurrency = cfg.max_concurrency if cfg is not None else 8

    def review_sync(self, pack: ContextPack) -> Verdict:
        kind, conf, why, size, stop = judge(pack, self.params)
        return Verdict(kind, conf, why, modified_size_pct=size, modified_sl=stop, source=self.name, tier=self.name,
                       model=self.model, prompt_version=self.prompt_version)

    async def review(self, pack: ContextPack) -> Verdict:
        return self.review_sync(pack)

    async def aclose(self) -> None:
        return None
