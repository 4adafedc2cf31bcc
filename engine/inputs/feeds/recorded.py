"""The recorded feed: a run's stored bars (and news) → a finite ``Feed`` that replays them slice by slice.

What a counterfactual replay of a live run reads (``tradevet value``): the bars the live run recorded, grouped by
close time into the slices it stepped through, each slice in the configured symbol order. The run's news items
are served as the feed's own (``news.source: synthetic`` reads them), visible from their publication time. Exchange
minimums are not recorded with a run, so a recorded feed knows none (``limits`` is empty). No preload: a live run
evaluated every bar, and so does its replay.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import groupby

import numpy as np

from engine.types import Bar, MarketLimits, NewsItem

__all__ = ["RecordedFeed"]


class RecordedFeed:
    def __init__(self, bars: Sequence[Bar], symbols: Sequence[str], timeframe: str,
                 news: Sequence[NewsItem] = ()) -> None:
        from engine.config import parse_timeframe

        self.symbols: tuple[str, ...] = tuple(symbols)
        self.timeframe = timeframe
        self.timeframe_ms = parse_timeframe(timeframe)
        order = {s: i for i, s in enumerate(self.symbols)}
        unknown = sorted({b.symbol for b in bars} - set(order))
        if unknown:
            raise ValueError(f"recorded bars of symbols not in market.symbols: {unknown}")
        ordered = sorted(bars, key=lambda b: (b.close_ms, order[b.symbol]))
        self._slices = [tuple(g) for _, g in groupby(ordered, key=lambda b: b.close_ms)]
        self._n_bars = len(ordered)
        self._news = tuple(sorted(news, key=lambda n: (n.published_ms, n.id)))

    def slices(self) -> Iterator[tuple[Bar, ...]]:
        return iter(self._slices)

    @property
    def n_slices(self) -> int:
        return len(self._slices)

    @property
    def n_bars(self) -> int:
        return self._n_bars

    def limits(self) -> dict[str, MarketLimits]:
        return {}

    def news(self) -> tuple[NewsItem, ...]:
        return self._news

    def arrays(self) -> dict[str, dict[str, np.ndarray]] | None:
        return None

    def close(self) -> None:
        """Nothing to release."""
