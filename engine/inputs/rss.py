"""News from RSS/Atom feeds: polled feed bytes → de-duplicated, categorised NewsItems mapped to symbols.

Implements ``engine.ports.NewsSource``. We fetch the bytes ourselves (urllib, a per-feed deadline and a size
cap) and hand them to ``feedparser.parse``, so feedparser never opens a connection. Whatever a feed sends —
malformed XML, an HTML error page, giant or non-UTF-8 entries, headlines that try to instruct the reviewer —
``poll()`` never raises: failures are counted per feed and logged. Headlines stay raw here (the context
builder sanitises them before a model sees them) but are capped at 2,000 characters.

Time: an item is stamped with its entry's date, never later than the poll that found it (a feed cannot
publish into the future); an undated item gets the poll time. ``items(start, end)`` returns
``start < published_ms <= end`` in publication order.
"""

from __future__ import annotations

import bisect
import calendar
import hashlib
import logging
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from engine.clock import monotonic_s
from engine.config import RssConfig
from engine.inputs.categories import categorize
from engine.ports import Clock
from engine.types import NewsCategory, NewsItem

__all__ = ["MAX_HEADLINE_CHARS", "FeedTooLarge", "RssNewsSource", "fetch_url"]

log = logging.getLogger("tradevet.rss")

MAX_HEADLINE_CHARS = 2000
_MAX_SEEN = 100_000  # de-duplication memory (keys), oldest forgotten first
_USER_AGENT = "tradevet/0.1 (paper trading; RSS reader)"


class FeedTooLarge(Exception):
    pass


def fetch_url(url: str, timeout_s: float, max_bytes: int) -> bytes:
    """GET ``url`` within ``timeout_s`` in total (not per read), at most ``max_bytes``.

    Raises: OSError/URLError (network), TimeoutError (deadline), FeedTooLarge.
    """
    import urllib.request

    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"only http(s) feeds are fetched (got {url[:80]!r})")
    deadline = monotonic_s() + timeout_s
    req = urllib.request.Request(url, headers={
        "User-Agent": _USER_AGENT,
        "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.1",
    })
    chunks: list[bytes] = []
    size = 0
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # the scheme was checked above
        while True:
            # the socket timeout bounds each read; the deadline bounds a server that drips its body slowly
            if monotonic_s() > deadline:
                raise TimeoutError(f"no complete reply within {timeout_s:g} s")
            chunk = resp.read(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > max_bytes:
                raise FeedTooLarge(f"reply larger than {max_bytes} bytes")
            chunks.append(chunk)
    return b"".join(chunks)


def _norm_title(title: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", title.lower()).split())


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:20]


class RssNewsSource:
    """Polls ``cfg.feeds`` (at most every ``cfg.poll_s`` by ``clock``) and keeps the items in memory, sorted.

    ``fetch(url, timeout_s, max_bytes) -> bytes`` replaces the HTTP client (tests); ``symbols`` adds the
    base assets of the market to the tickers matched (``cfg.aliases`` keys always are).
    """

    def __init__(self, cfg: RssConfig, *, clock: Clock, fetch: Callable[[str, float, int], bytes] | None = None,
                 symbols: Sequence[str] = (), timeout_s: float = 10.0, max_bytes: int = 2_000_000,
                 keep_h: float = 48.0, keep_unmatched: bool = False) -> None:
        self.cfg = cfg
        self.clock = clock
        self.fetch = fetch or fetch_url
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.keep_ms = int(keep_h * 3_600_000)
        self.keep_unmatched = keep_unmatched
        self._matchers = self._build_matchers(cfg.aliases, symbols)
        self._items: list[NewsItem] = []
        self._keys: list[tuple[int, str]] = []  # (published_ms, id), parallel to _items, for bisect
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._last_poll_ms: int | None = None
        self.errors: Counter[str] = Counter()  # feed url → failed polls
        self.error_kinds: Counter[str] = Counter()
        self.added = 0
        self.duplicates = 0
        self.unmatched = 0
        self.polls = 0

    # -------------------------------------------------------------------------------- matching
    @staticmethod
    def _build_matchers(aliases: dict[str, list[str]], symbols: Sequence[str]) -> list[tuple[str, re.Pattern[str],
                                                                                             re.Pattern[str]]]:
        bases = {b.upper(): list(words) for b, words in aliases.items()}
        for s in symbols:
            bases.setdefault(re.split(r"[/:-]", s)[0].upper(), [])
        out = []
        for base, words in sorted(bases.items()):
            names = "|".join(re.escape(w) for w in sorted({w.strip() for w in words if w.strip()}, key=len,
                                                            reverse=True))
            # Names match case-insensitively ("Bitcoin", "BITCOIN"); the ticker only as written in capitals
            # ("SOL", "$SOL"), because many tickers are ordinary words ("sol", "near", "one", "gas").
            word = re.compile(rf"(?<![0-9A-Za-z])(?:{names})(?![0-9A-Za-z])", re.IGNORECASE) if names else None
            ticker = re.compile(rf"(?<![0-9A-Za-z])\$?{re.escape(base)}(?![0-9A-Za-z])")
            out.append((base, ticker, word or ticker))
        return out

    def symbols_in(self, headline: str) -> tuple[str, ...]:
        """Base assets named in ``headline`` (by alias or ticker), sorted."""
        return tuple(base for base, ticker, word in self._matchers if ticker.search(headline) or word.search(headline))

    # ----------------------------------------------------------------------------------- polling
    def poll(self, *, force: bool = False) -> int:
        """Fetch every feed if ``cfg.poll_s`` has passed since the last poll (or ``force``). Never raises.

        Returns the number of new items.
        """
        now = self.clock.now_ms()
        if not force and self._last_poll_ms is not None and now - self._last_poll_ms < self.cfg.poll_s * 1000:
            return 0
        self._last_poll_ms = now
        self.polls += 1
        added = 0
        for url in self.cfg.feeds:
            try:
                added += self._poll_feed(url, now)
            except Exception as e:  # one bad feed must not stop the others, nor the loop
                self.errors[url] += 1
                kind = type(e).__name__
                self.error_kinds[kind] += 1
                log.warning("rss %s: %s: %s", _short(url), kind, " ".join(str(e).split())[:200])
        with self._lock:
            self._prune(now)
        return added

    def _poll_feed(self, url: str, now: int) -> int:
        import feedparser

        data = self.fetch(url, self.timeout_s, self.max_bytes)
        parsed = feedparser.parse(data)
        entries = list(parsed.get("entries") or ())
        if not entries:
            if parsed.get("bozo"):
                raise ValueError(f"not a feed: {parsed.get('bozo_exception')!s}"[:200])
            if not parsed.get("version"):  # well-formed, but no RSS/Atom (an HTML error page, say)
                raise ValueError("not an RSS or Atom document")
            return 0  # a valid, empty feed
        if parsed.get("bozo"):
            self.error_kinds["malformed_but_parsed"] += 1
        feed_info = parsed.get("feed") or {}
        source = str(feed_info.get("title") or urlsplit(url).netloc or url).strip()[:100]
        fresh: list[NewsItem] = []
        for entry in entries:
            item = self._item(entry, source, now)
            if item is not None:
                fresh.append(item)
        with self._lock:
            for item in fresh:
                i = bisect.bisect_right(self._keys, (item.published_ms, item.id))
                self._keys.insert(i, (item.published_ms, item.id))
                self._items.insert(i, item)
        self.added += len(fresh)
        return len(fresh)

    def _item(self, entry: Any, source: str, now: int) -> NewsItem | None:
        title = entry.get("title")
        if not isinstance(title, str) or not title.strip():
            return None
        headline = title.strip()[:MAX_HEADLINE_CHARS]
        guid = str(entry.get("id") or entry.get("guid") or "")[:1000]
        link = str(entry.get("link") or "")[:1000]
        keys = [f"t:{_digest(_norm_title(headline))}"]
        if guid:
            keys.append(f"g:{guid}")
        if link:
            keys.append(f"l:{link}")
        if any(k in self._seen for k in keys):
            self.duplicates += 1
            for k in keys:  # a repost under a new guid is remembered under it too
                self._remember(k)
            return None
        for k in keys:
            self._remember(k)
        published = now
        stamp = entry.get("published_parsed") or entry.get("updated_parsed")
        if stamp is not None:
            try:
                published = min(now, calendar.timegm(stamp) * 1000)
            except (TypeError, ValueError, OverflowError):
                published = now
        if published < now - self.keep_ms:
            return None  # older than anything a context window could ask for
        symbols = self.symbols_in(headline)
        if not symbols and not self.keep_unmatched:
            self.unmatched += 1
            return None
        try:
            category = categorize(headline)
        except Exception:  # a categoriser hiccup on a hostile headline is not worth losing the item
            category = NewsCategory.OTHER
        primary = guid or link or _norm_title(headline)
        return NewsItem(f"rss:{_digest(primary)}", published, symbols, headline, source, category)

    def _remember(self, key: str) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > _MAX_SEEN:
            self._seen.popitem(last=False)

    def _prune(self, now: int) -> None:
        cut = bisect.bisect_left(self._keys, (now - self.keep_ms, ""))
        if cut:
            del self._keys[:cut]
            del self._items[:cut]

    # ------------------------------------------------------------------------------------ access
    def items(self, start_ms: int, end_ms: int) -> list[NewsItem]:
        """Items with ``start_ms < published_ms <= end_ms``, in publication order."""
        with self._lock:
            lo = bisect.bisect_right(self._keys, (start_ms, "\uffff"))
            hi = bisect.bisect_right(self._keys, (end_ms, "\uffff"))
            return self._items[lo:hi]

    def __len__(self) -> int:
        return len(self._items)


def _short(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.netloc}{parts.path}"[:80] or url[:80]
