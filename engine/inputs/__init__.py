"""What comes from outside: market feeds (synthetic, files, ccxt), news sources (file, RSS, synthetic) and their
categories, and the data download that writes files a replay reads."""

from __future__ import annotations

from engine import lazy

_EXPORTS = {
    "build_feed": "feeds", "bars_from_columns": "feeds",
    "build_news_source": "news", "FileNewsSource": "news", "ListNewsSource": "news", "NoNews": "news",
    "RssNewsSource": "rss",
    "categorize": "categories",
    "download": "download",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy(__name__, _EXPORTS)
