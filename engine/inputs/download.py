"""Data download: a ccxt exchange's closed OHLCV candles → one file per symbol that ``market.source: files`` reads.

Files are named ``{EXCHANGE}_{BASE}-{QUOTE}_{timeframe}.csv`` (e.g. ``BINANCE_BTC-USDT_5m.csv``) and hold
``timestamp,open,high,low,close,volume`` rows: ISO-8601 UTC bar-*open* times (``2018-01-10T04:55:00Z``)
and floats written with ``repr`` (round-trip exact). Downloads are incremental: when the file exists, only
candles after its last row are fetched and appended — earlier rows are never rewritten. Only closed
candles are written, so a file never holds a candle that may still change.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from engine.config import CcxtConfig, parse_timeframe
from engine.errors import ConfigError, DataError
from engine.inputs.feeds.ccxt_feed import CcxtClient, bar_grid_offset_ms, last_closed_open_ms
from engine.ports import Clock
from engine.types import Bar, parse_iso_ms

__all__ = ["CSV_HEADER", "download", "file_name", "format_row", "iso_ms"]

log = logging.getLogger("tradevet.download")

CSV_HEADER = "timestamp,open,high,low,close,volume"
_TAIL_BYTES = 4096


def iso_ms(ms: int) -> str:
    """Milliseconds → ``2018-01-10T04:55:00Z`` (with ``.fff`` only when the time has milliseconds)."""
    dt = datetime.fromtimestamp(ms // 1000, tz=UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"


def format_row(bar: Bar) -> str:
    return f"{iso_ms(bar.open_ms)},{bar.open!r},{bar.high!r},{bar.low!r},{bar.close!r},{bar.volume!r}\n"


def file_name(exchange_id: str, base: str, quote: str, timeframe: str, fmt: str = "csv") -> str:
    return f"{exchange_id.upper()}_{base}-{quote}_{timeframe}.{fmt}"


def download(exchange_cfg: CcxtConfig, symbols: Sequence[str], timeframe: str, since_ms: int,
             out_dir: str | os.PathLike[str], *, until_ms: int | None = None,
             fmt: Literal["csv", "parquet"] = "csv", progress: Callable[[int, int], None] | None = None,
             clock: Clock | None = None, retries: int = 4, backoff_s: float = 0.5, seed: int = 0,
             rate_limit_ms: float | None = None) -> dict[str, Path]:
    """Fetch closed candles of ``symbols`` from ``since_ms`` (or after each file's last row) up to ``until_ms``.

    ``until_ms`` is exclusive (candles opening before it); ``progress(done, total)`` is called per page with
    the candles written so far and the number expected. Returns symbol → file.

    Raises: ConfigError (bad format/timeframe/exchange, or parquet without pyarrow), DataError (unknown
    symbol, a file that is not ours, an exchange still failing after the retries — the rows written before
    it stay, and the next call continues after them).
    """
    if fmt not in ("csv", "parquet"):
        raise ConfigError(f"format: must be 'csv' or 'parquet' (got {fmt!r})")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("format 'parquet' needs the pyarrow package (pip install pyarrow), "
                              "or use the default 'csv'") from None
    tf = parse_timeframe(timeframe)
    offset = bar_grid_offset_ms(timeframe)
    if clock is None:
        from engine.clock import WallClock

        clock = WallClock()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    client = CcxtClient(exchange_cfg, retries=retries, backoff_s=backoff_s, seed=seed, rate_limit_ms=rate_limit_ms)
    try:
        client.load_markets()
        client.check_timeframe(timeframe)
        markets = {s: client.market(s) for s in symbols}
        last_open = last_closed_open_ms(clock.now_ms(), tf, offset)
        if until_ms is not None:
            last_open = min(last_open, ((until_ms - 1 - offset) // tf) * tf + offset)
        first_grid = -((offset - since_ms) // tf) * tf + offset  # the first grid point at or after since_ms
        plan: list[tuple[str, Path, int]] = []
        for s in symbols:
            m = markets[s]
            path = out / file_name(client.id, str(m["base"]), str(m["quote"]), timeframe, fmt)
            last = _last_open_csv(path) if fmt == "csv" else _last_open_parquet(path)
            start = first_grid if last is None else last + tf
            if last is not None and since_ms < last:
                log.info("%s: %s already holds rows up to %s; continuing after them", s, path.name, iso_ms(last))
            plan.append((s, path, start))
        total = sum(max(0, (last_open - start) // tf + 1) for _, _, start in plan)
        done = 0
        result: dict[str, Path] = {}
        for s, path, start in plan:
            result[s] = path
            if start > last_open:
                continue
            if fmt == "csv":
                with path.open("a", encoding="utf-8", newline="") as fh:
                    if fh.tell() == 0:
                        fh.write(CSV_HEADER + "\n")

                    def write(bars: list[Bar], fh: Any = fh) -> None:
                        nonlocal done
                        fh.write("".join(format_row(b) for b in bars))
                        fh.flush()  # a page at a time: an interrupted download keeps whole pages
                        done += len(bars)
                        if progress is not None:
                            progress(done, total)

                    client.fetch_closed(s, timeframe, start, last_open, on_page=write)
            else:
                rows: list[Bar] = []

                def collect(bars: list[Bar], rows: list[Bar] = rows) -> None:
                    nonlocal done
                    rows.extend(bars)
                    done += len(bars)
                    if progress is not None:
                        progress(done, total)

                try:
                    client.fetch_closed(s, timeframe, start, last_open, on_page=collect)
                finally:
                    if rows:
                        _append_parquet(path, rows)
            log.info("%s: %s up to date", s, path.name)
        return result
    finally:
        client.close()


# ----------------------------------------------------------------------------------------------- csv


def _last_open_csv(path: Path) -> int | None:
    """Open time of the file's last row (None if it has none). A torn last line is cut off first.

    Raises: DataError when the file is not a CSV of this format.
    """
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open("rb") as fh:
        head = fh.readline().decode("utf-8", "replace").strip()
    if head != CSV_HEADER:
        raise DataError(f"{path}: expected the header {CSV_HEADER!r} (got {head[:80]!r}); not appending to it")
    size = path.stat().st_size
    with path.open("rb+") as fh:
        fh.seek(max(0, size - _TAIL_BYTES))
        tail = fh.read()
        if not tail.endswith(b"\n"):
            # an interrupted write left half a row: it was never a row, so dropping it rewrites nothing
            cut = tail.rfind(b"\n")
            keep = size - len(tail) + cut + 1
            log.warning("%s: dropping an incomplete last line (%d bytes)", path, size - keep)
            fh.truncate(keep)
            tail = tail[: cut + 1]
    lines = [ln for ln in tail.decode("utf-8", "replace").splitlines() if ln.strip()]
    last = lines[-1] if lines else CSV_HEADER
    if last == CSV_HEADER:
        return None
    try:
        return parse_iso_ms(last.split(",", 1)[0])
    except ValueError:
        raise DataError(f"{path}: last row has no ISO timestamp ({last[:80]!r}); not appending to it") from None


# ------------------------------------------------------------------------------------------- parquet


def _last_open_parquet(path: Path) -> int | None:
    if not path.exists():
        return None
    import pandas as pd

    df = pd.read_parquet(path, columns=["timestamp"])
    if df.empty:
        return None
    return round(pd.Timestamp(df["timestamp"].iloc[-1]).timestamp() * 1000)


def _append_parquet(path: Path, bars: list[Bar]) -> None:
    """Parquet files cannot be appended to: old rows + new rows go to a temp file that replaces the old one."""
    import pandas as pd

    new = pd.DataFrame({
        "timestamp": pd.to_datetime([b.open_ms for b in bars], unit="ms", utc=True),
        "open": [b.open for b in bars], "high": [b.high for b in bars], "low": [b.low for b in bars],
        "close": [b.close for b in bars], "volume": [b.volume for b in bars],
    })
    df = pd.concat([pd.read_parquet(path), new], ignore_index=True) if path.exists() else new
    tmp = path.with_suffix(path.suffix + ".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)
