"""Headline hygiene for the context step: outside text → what a reviewer may be shown, and which symbol it concerns.

A headline is DATA shown to an LLM, never instructions: ``sanitize_headline`` makes it one line of plain,
visible text that can neither close nor imitate the JSON block it is fenced in. ``symbol_matches`` decides
whether a news item concerns a trading symbol. ``strip_invisible`` is shared with the news categoriser.
"""

from __future__ import annotations

import html
import re
import unicodedata

from engine.types import NewsItem

__all__ = ["sanitize_headline", "strip_invisible", "symbol_matches"]

_TAG = re.compile(r"<[^<>]{0,500}>")  # HTML/XML tags, also chat-template tokens such as <|im_start|>
_BACKTICKS = re.compile(r"`+")  # code fences and inline code
_MARKDOWN = re.compile(r"[*_#~=]{2,}|^#+\s")  # emphasis runs (**, __), rules (===), headings
_SPACE = re.compile(r"\s+")
# Characters that could close or fake a JSON string/object or a fence around the data block.
_NEUTRAL = str.maketrans({"{": "(", "}": ")", '"': "'", "\\": "/", "<": "‹", ">": "›"})
_PRECUT = 8  # look at no more than 8 × max_chars (≥ 2,000) characters of a giant headline


def strip_invisible(text: str) -> str:
    """Drop control, format (zero-width, bidi, tag characters), private-use and unassigned code points;
    whitespace-like controls (tab, newline, ...) become spaces so that words stay apart."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] != "C":
            out.append(ch)
        elif ch.isspace():  # tab, newline, \x1c-\x1f, \x85 ...
            out.append(" ")
    return "".join(out)


def sanitize_headline(text: str, max_chars: int) -> str:
    """Make outside text safe to show an LLM as data: one line of plain, visible text, at most ``max_chars``.

    Entities are decoded and compatibility forms folded (NFKC: fullwidth ``｛`` is ``{``) before anything
    is matched; control, zero-width and bidi characters go; tags, code fences and backticks go; braces,
    double quotes, backslashes and angle brackets are replaced by harmless look-alikes so the text can
    neither close nor imitate the JSON block it is fenced in; whitespace collapses; an over-long text is
    cut (at a word when one is near) and ends with "…". Words are kept as they are: an injection attempt
    stays visible to the reviewer as what it is, a headline.
    """
    if max_chars <= 0:
        return ""
    text = str(text)[: max(_PRECUT * max_chars, 2_000)]
    text = html.unescape(text)
    text = unicodedata.normalize("NFKC", text)
    text = strip_invisible(text)
    text = _TAG.sub(" ", text)
    text = _BACKTICKS.sub("", text)
    text = _MARKDOWN.sub(" ", text)
    text = text.translate(_NEUTRAL)
    text = _SPACE.sub(" ", text).strip()
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1]
    space = cut.rfind(" ")
    if space >= int(0.8 * (max_chars - 1)):
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"


def _norm_symbol(s: str) -> str:
    return s.strip().upper().replace("-", "/")


def symbol_matches(item: NewsItem, symbol: str) -> bool:
    """Does ``item`` concern ``symbol``? 'ETH/USDT' matches items naming 'ETH' or 'ETH/USDT' (any case)."""
    full = _norm_symbol(symbol)
    pair = full.split(":", 1)[0]  # 'BTC/USDT:USDT' (a perpetual) also matches 'BTC/USDT'
    base = pair.split("/", 1)[0]
    wanted = {full, pair, base}
    return any(_norm_symbol(s) in wanted for s in item.symbols)
