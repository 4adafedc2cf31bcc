"""News for the context step: a configured source (none, JSONL file, RSS, synthetic) → ``NewsItem``s by time window.

Items are categorised at ingestion (``engine.inputs.categories``); their headlines stay raw until the context
builder sanitises them (``engine.core.headlines``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from bisect import bisect_right
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import ConfigError, DataError
from engine.inputs.categories import categorize
from engine.types import NaiveTime, NewsItem, parse_iso_ms

if TYPE_CHECKING:
    from engine.config import NewsConfig
    from engine.ports import Feed, NewsSource

__all__ = [
    "NEWS_SOURCES",
    "FileNewsSource",
    "ListNewsSource",
    "NoNews",
    "build_news_source",
]

log = logging.getLogger("tradevet.data")

# ----------------------------------------------------------------------------------------- sources


class NoNews:
    """No news at all."""

    def items(self, start_ms: int, end_ms: int) -> tuple[NewsItem, ...]:
        return ()

    def poll(self) -> int:
        return 0


class ListNewsSource:
    """A fixed set of items; ``items(start, end)`` is a binary search (start exclusive, end inclusive)."""

    def __init__(self, items: Iterable[NewsItem]) -> None:
        self._items: tuple[NewsItem, ...] = tuple(sorted(items, key=lambda n: n.published_ms))
        self._times = [n.published_ms for n in self._items]

    def items(self, start_ms: int, end_ms: int) -> tuple[NewsItem, ...]:
        """Items with start_ms < published_ms <= end_ms, in publication order."""
        return self._items[bisect_right(self._times, start_ms): bisect_right(self._times, end_ms)]

    def all(self) -> tuple[NewsItem, ...]:
        return self._items

    def poll(self) -> int:
        """A fixed set: nothing to fetch."""
        return 0

    def __len__(self) -> int:
        return len(self._items)


_EXAMPLE = '{"published_at": "2025-01-01T10:00:00Z", "symbols": ["BTC"], "headline": "...", "source": "..."}'
_MIN_EPOCH_MS = 100_000_000_000  # 1973-03-03: smaller integers are seconds, not milliseconds


def _found(value: Any) -> str:
    shown = json.dumps(value, ensure_ascii=False)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _parse_line(obj: Any, where: str, default_source: str) -> tuple[int, tuple[str, ...], str, str]:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object like {_EXAMPLE}, found {_found(obj)}")
    for key in ("published_at", "symbols", "headline"):
        if key not in obj:
            raise DataError(f"{where}: expected the key '{key}' (keys: published_at, symbols, headline, source), "
                            f"found only {', '.join(map(repr, obj)) or 'no keys'}")
    when = obj["published_at"]
    if isinstance(when, int) and not isinstance(when, bool):
        if when < _MIN_EPOCH_MS:
            raise DataError(f"{where}: published_at: expected epoch milliseconds or an ISO 8601 UTC time, "
                            f"found {when} (seconds instead of milliseconds?)")
        published = when
    elif isinstance(when, str):
        try:
            published = parse_iso_ms(when, naive_is_utc=False)
        except NaiveTime:
            raise DataError(f"{where}: published_at: expected a time with a zone like 2025-01-01T10:00:00Z, "
                            f"found {_found(when)} (no zone)") from None
        except ValueError:
            raise DataError(f"{where}: published_at: expected an ISO 8601 UTC time like 2025-01-01T10:00:00Z, "
                            f"found {_found(when)}") from None
    else:
        raise DataError(f"{where}: published_at: expected an ISO 8601 UTC time like 2025-01-01T10:00:00Z, "
                        f"found {_found(when)}")
    symbols = obj["symbols"]
    if not isinstance(symbols, list) or not all(isinstance(s, str) and s.strip() for s in symbols):
        raise DataError(f"{where}: symbols: expected a list of symbols like [\"BTC\", \"ETH/USDT\"], "
                        f"found {_found(symbols)}")
    headline = obj["headline"]
    if not isinstance(headline, str) or not headline.strip():
        raise DataError(f"{where}: headline: expected a non-empty string, found {_found(headline)}")
    source = obj.get("source", default_source)
    if not isinstance(source, str):
        raise DataError(f"{where}: source: expected a string, found {_found(source)}")
    return published, tuple(s.strip().upper() for s in symbols), headline, source or default_source


class FileNewsSource(ListNewsSource):
    """Items from a JSONL file, one object per line::

        {"published_at": "2025-01-01T10:00:00Z", "symbols": ["BTC"], "headline": "...", "source": "..."}

    ``published_at`` may also be epoch milliseconds; ``source`` defaults to the file name. Categories come
    from ``categorize``; ids are a hash of the line, so they are stable across loads. Repairs (counted in
    ``repairs``, logged once): lines that are not valid UTF-8 are decoded with U+FFFD replacements; exact
    duplicate lines are dropped. Raises: DataError ("news.jsonl:12: expected ..., found ...").
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"news.file.path: file '{path}' does not exist")
        name = self.path.name
        raw = self.path.read_bytes()
        if raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        self.repairs: dict[str, int] = {}
        seen: set[str] = set()
        items: list[NewsItem] = []
        for ln, line in enumerate(raw.split(b"\n"), start=1):
            line = line.strip()
            if not line:
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                text = line.decode("utf-8", errors="replace")
                self.repairs["non_utf8_lines"] = self.repairs.get("non_utf8_lines", 0) + 1
            where = f"{name}:{ln}"
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: expected a JSON object like {_EXAMPLE}, found invalid JSON "
                                f"({e.msg} at column {e.colno}): {text[:60]!r}") from None
            published, symbols, headline, source = _parse_line(obj, where, name)
            item_id = "news-" + hashlib.sha256(line).hexdigest()[:16]
            if item_id in seen:
                self.repairs["duplicate_lines"] = self.repairs.get("duplicate_lines", 0) + 1
                continue
            seen.add(item_id)
            items.append(NewsItem(item_id, published, symbols, headline, source, categorize(headline)))
        super().__init__(items)
        if self.repairs:
            done = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in sorted(self.repairs.items()))
            log.warning("%s: %d news items loaded; repaired %s", name, len(items), done)


# ---------------------------------------------------------------------------------------- registry

NewsBuilder = Callable[["NewsConfig", "Feed"], "NewsSource"]


def _none(cfg: NewsConfig, feed: Feed) -> NewsSource:
    return NoNews()


def _file(cfg: NewsConfig, feed: Feed) -> NewsSource:
    if not cfg.file.path:
        raise ConfigError("required when news.source is 'file' (a JSONL file with "
                          "published_at, symbols, headline, source)", path="news.file.path")
    return FileNewsSource(cfg.file.path)


def _synthetic(cfg: NewsConfig, feed: Feed) -> NewsSource:
    items = feed.news()
    if not items:
        log.info("news.source is 'synthetic' but the feed carries no news items: no news flags in this run")
    return ListNewsSource(items)


def _rss(cfg: NewsConfig, feed: Feed) -> NewsSource:
    # Polled by the live loop on wall time; publication times never run ahead of the poll.
    from engine.clock import WallClock
    from engine.inputs.rss import RssNewsSource

    if not cfg.rss.feeds:
        raise ConfigError("at least one feed URL is needed when news.source is 'rss' (got [])", path="news.rss.feeds")
    return RssNewsSource(cfg.rss, clock=WallClock(), symbols=tuple(feed.symbols))  # type: ignore[return-value]


# Named from news.source; a new source adds one entry here.
NEWS_SOURCES: dict[str, NewsBuilder] = {
    "none": _none,
    "file": _file,
    "synthetic": _synthetic,
    "rss": _rss,
}


def build_news_source(cfg: NewsConfig, feed: Feed) -> NewsSource:
    """The news source ``cfg.source`` names. Raises: ConfigError, DataError (file)."""
    try:
        builder = NEWS_SOURCES[cfg.source]
    except KeyError:
        raise ConfigError(f"must be one of {sorted(NEWS_SOURCES)} (got {cfg.source!r})", path="news.source") from None
    return builder(cfg, feed)
