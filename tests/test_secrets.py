"""Secrets stay secret: sentinel API keys and ``${VAR}`` passwords appear in no database, log, output or export.

A paper replay runs with ``config/llm.yaml``'s tiers pointed at the fake LLM server (sometimes failing, so the
error paths run too), with sentinel values in ANTHROPIC_API_KEY and OPENAI_API_KEY, a ``${VAR}`` token in a
tier's params, ``${VAR}`` passwords in URL-like strings (and in ``run.db_url`` on PostgreSQL, whose server
accepts any password here), and logging at DEBUG into a file. Then ``config show``, ``config check``,
``runs --json``, ``score --json``, ``backtest``, ``report`` and ``signals export`` (those present) run, and
every byte they left — database file (or every row on PostgreSQL), log files, stdout and stderr, written
files — is searched for the sentinels. The fake server's own request log legitimately sees the keys and is
not searched.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fake_llm import FakeLLM
from tests.test_crash import PG_URL, pg_database

ROOT = Path(__file__).resolve().parents[1]
LLM_YAML = ROOT / "config" / "llm.yaml"
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
# `tradevet` with the root logger at DEBUG into a file (argv[1]); the rest of argv is the command line.
CHILD = ("import logging, sys\n"
         "logging.basicConfig(level=logging.DEBUG, filename=sys.argv[1],\n"
         "                    format='%(levelname)s %(name)s: %(message)s')\n"
         "from engine.cli import main\n"
         "sys.exit(main(sys.argv[2:]))\n")


def _sentinels() -> dict[str, str]:
    tag = uuid.uuid4().hex[:12]
    return {"ANTHROPIC_API_KEY": f"sk-ant-tvsentinel-{tag}-anthropic", "OPENAI_API_KEY": f"sk-tvsentinel-{tag}-openai",
            "TV_SENTINEL_PW": f"pw-tvsentinel-{tag}", "TV_SENTINEL_TOKEN": f"tok-tvsentinel-{tag}"}


def _llm_config(tmp_path: Path, srv: FakeLLM, db_url: str, *, openai_base_url: str | None = None) -> Path:
    data = yaml.safe_load(LLM_YAML.read_text(encoding="utf-8"))
    for tier in data["reviewer"]["tiers"]:
        if tier["provider"] == "anthropic":
            tier["base_url"] = srv.url
        elif tier["provider"] == "openai":
            tier["base_url"] = openai_base_url or srv.openai_url
        elif tier["provider"] == "openai_compatible":
            tier["base_url"] = srv.openai_url
            tier["params"] = {"extra_body": {"api_token": "${TV_SENTINEL_TOKEN}"}}  # sent to the server only
        if tier["provider"] != "rules":
            tier["rpm"] = None
            tier["timeout_s"] = 3
    data["run"] = {"name": "secrets", "db_url": db_url}
    data["market"] = {"synthetic": {"bars": 500},
                      # URL-like strings with a password: not used by a synthetic replay, but stored and shown
                      "ccxt": {"urls": {"api": {"public": "http://trader:${TV_SENTINEL_PW}@127.0.0.1:9/api/v3"}}}}
    data["news"] = {"source": "synthetic", "rss": {"feeds": ["https://reader:${TV_SENTINEL_PW}@127.0.0.1:9/feed"]}}
    f = tmp_path / "secrets.yaml"
    f.write_text(yaml.safe_dump(data), encoding="utf-8")
    return f


def _tradevet(tmp_path: Path, env: dict[str, str], label: str, *args: Any) -> subprocess.CompletedProcess[str]:
    log = tmp_path / f"{label}.log"
    done = subprocess.run([sys.executable, "-c", CHILD, str(log), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    (tmp_path / f"{label}.out").write_text(done.stdout + "\n" + done.stderr, encoding="utf-8")
    return done


def _db_text(url: str) -> bytes:
    """Every value stored in the database (PostgreSQL: every row of every table, as text)."""
    from sqlalchemy import create_engine, inspect, text

    eng = create_engine(url)
    try:
        with eng.connect() as c:
            out = []
            for table in inspect(c).get_table_names():
                out.extend(str(tuple(r)) for r in c.execute(text(f'SELECT * FROM "{table}"')))
            return "\n".join(out).encode()
    finally:
        eng.dispose()


def _leaks(tmp_path: Path, secrets: dict[str, str], extra: bytes = b"") -> list[str]:
    """Which sentinel turns up in which file under ``tmp_path`` (or in ``extra``)."""
    found = []
    blobs: list[tuple[str, bytes]] = [(p.name, p.read_bytes()) for p in sorted(tmp_path.rglob("*")) if p.is_file()
                                      and p.name != "secrets.yaml"]  # the config holds ${VAR} references only
    blobs.append(("database rows", extra))
    for name, data in blobs:
        for var, value in secrets.items():
            if value.encode() in data:
                found.append(f"{var} in {name}")
    return found


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_secret_is_stored_logged_printed_or_exported(backend: str, tmp_path: Path) -> None:
    secrets = _sentinels()
    env = {**os.environ, **secrets, "PYTHONPATH": str(ROOT)}
    work = tmp_path / "work"
    work.mkdir()
    with FakeLLM() as srv:
        # every tier answers most of the time and fails in several ways otherwise: error paths log too
        srv.chaos({"accept": 0.35, "modify": 0.2, "veto": 0.2, "server_error": 0.1, "malformed": 0.05,
                   "auth": 0.05, "rate_limit": 0.05}, seed=5)
        if backend == "sqlite":
            db_url = f"sqlite:///{work / 'tv.db'}"
            ctx: Any = None
        else:
            if not PG_URL:
                pytest.skip("TRADEVET_PG_URL is not set")
            ctx = pg_database("secrets")
            plain = ctx.__enter__()
            db_url = plain.replace("postgres@", "postgres:${TV_SENTINEL_PW}@", 1)  # trust auth: any password works
            assert "${TV_SENTINEL_PW}" in db_url
        try:
            cfg = _llm_config(work, srv, db_url)
            reviewer = work / "reviewer.yaml"
            reviewer.write_text(yaml.safe_dump({"reviewer": yaml.safe_load(cfg.read_text())["reviewer"]}))
            paper = _tradevet(work, env, "paper", "paper", "-c", cfg, "--no-progress")
            assert paper.returncode == 0, paper.stderr[-2000:]
            assert srv.requests, "the LLM tiers were not called"
            commands: list[tuple[str, list[Any]]] = [
                ("show", ["config", "show", cfg]), ("show-json", ["config", "show", cfg, "--json"]),
                ("check", ["config", "check", cfg]), ("runs", ["runs", "-c", cfg, "--json"]),
                ("score", ["score", "--run", "secrets", "-c", cfg, "--json"]),
                ("score-text", ["score", "--run", "secrets", "-c", cfg]),
            ]
            if importlib.util.find_spec("engine.recorded.backtest") is not None:
                commands.append(("backtest", ["backtest", "--run", "secrets", "-c", cfg, "--reviewer", reviewer,
                                              "--no-progress", "--json"]))
            if importlib.util.find_spec("engine.recorded.report") is not None:
                commands.append(("report", ["report", "--run", "secrets", "-c", cfg, "--out", work / "report.html"]))
            if importlib.util.find_spec("engine.recorded.transfer") is not None:
                commands.append(("export", ["signals", "export", "--run", "secrets", "-c", cfg,
                                            "--out", work / "signals.jsonl"]))
            for label, args in commands:
                done = _tradevet(work, env, label, *args)
                assert done.returncode == 0, f"{label}: {done.stderr[-2000:]}"
            shown = (work / "show.out").read_text()
            assert "***" in shown and "TV_SENTINEL" not in shown
            assert (work / "paper.log").stat().st_size > 10_000, "DEBUG logging did not reach the log file"
            rows = _db_text(plain if backend == "postgresql" else db_url)
            assert b"secrets" in rows and b"***" in rows  # the stored effective config, masked
            assert _leaks(work, secrets, rows) == []
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)


def test_password_in_a_tier_base_url_is_not_logged(tmp_path: Path) -> None:
    """A password in a tier's base_url (``http://user:${VAR}@host/v1``, a proxy with basic auth) is masked in
    the config, and must not reach the log through the SDKs' HTTP client either (it did: httpx2 logs
    "HTTP Request: POST http://user:<password>@..." at INFO)."""
    secrets = _sentinels()
    env = {**os.environ, **secrets, "PYTHONPATH": str(ROOT)}
    with FakeLLM() as srv:
        srv.set_default("accept")
        cfg = _llm_config(tmp_path, srv, f"sqlite:///{tmp_path / 'tv.db'}",
                          openai_base_url=srv.openai_url.replace("http://", "http://proxyuser:${TV_SENTINEL_PW}@"))
        data = yaml.safe_load(cfg.read_text())
        data["reviewer"]["tiers"] = [t for t in data["reviewer"]["tiers"] if t["provider"] in ("openai", "rules")]
        cfg.write_text(yaml.safe_dump(data))
        done = _tradevet(tmp_path, env, "paper", "paper", "-c", cfg, "--no-progress")
        assert done.returncode == 0, done.stderr[-2000:]
        assert srv.requests
    assert _leaks(tmp_path, secrets) == []
