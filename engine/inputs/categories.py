"""News categories: a headline → ``NewsCategory`` by keyword rules (hack, delisting, regulatory, outage, listing,
partnership, other). The one categoriser of every news source (file, RSS, the synthetic feed's items).
"""

from __future__ import annotations

import re
import unicodedata

from engine.core.headlines import strip_invisible
from engine.types import NewsCategory

__all__ = ["categorize"]

_C = NewsCategory
# First rule that matches wins: a "hack halts withdrawals" is a hack; "delisting" is not a "listing".
_RULES: tuple[tuple[NewsCategory, re.Pattern[str]], ...] = (
    (_C.HACK, re.compile(r"\b(?:hack\w*|exploit\w*|breach\w*|drain\w*|stolen|steal\w*|heist\w*|attacker\w*)")),
    (_C.DELISTING, re.compile(r"\bdelist\w*")),
    (_C.REGULATORY, re.compile(
        r"\b(?:sec|regulat\w*|ban|bans|banned|banning|lawsuits?|sues?|sued|probes?|probing|investigat\w*"
        r"|subpoena\w*|fined|sanction\w*|cftc|enforcement)\b"
    )),
    (_C.OUTAGE, re.compile(r"\b(?:outages?|halt\w*|downtime|suspen\w*|offline|disrupt\w*)\b")),
    (_C.LISTING, re.compile(r"\b(?:lists|listing\w*|listed|to list|will list)\b")),
    (_C.PARTNERSHIP, re.compile(r"\b(?:partner\w*|integrat\w*|collaborat\w*|alliance|teams up)\b")),
)


def categorize(headline: str) -> NewsCategory:
    """Keyword rules → category: hack, delisting, regulatory, outage, listing, partnership, else other."""
    text = strip_invisible(unicodedata.normalize("NFKC", headline)).lower()
    for category, pattern in _RULES:
        if pattern.search(text):
            return category
    return _C.OTHER
