"""The command line as a user meets it: one clear line and a stable exit code for every misuse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


def test_help_answers(capsys: pytest.CaptureFixture[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "engine.cli", "--help"], capture_output=True, text=True, check=False)
    assert out.returncode == 0
    for cmd in ("paper", "score", "runs", "config"):
        assert cmd in out.stdout


def test_help_does_not_import_heavy_modules() -> None:
    code = ("import sys; sys.argv=['tradevet','--help']\n"
            "from engine.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy=[m for m in ('pandas','anthropic','openai','ccxt','sqlalchemy','numpy','numba')"
            " if m in sys.modules]\n"
            "print('HEAVY=' + ','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "HEAVY="


def test_malformed_yaml_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(tmp_path, "bad.yaml", "run: {name: [unclosed\n")
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "bad.yaml" in err and "malformed YAML" in err
    assert len(err.splitlines()) == 1


def test_unknown_strategy_kind_names_the_closest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, "s.yaml", "strategies:\n  - {id: x, kind: sma_cros}\n")
    assert main(["config", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert "strategies[0].kind" in err and "did you mean 'sma_cross'" in err


def test_unknown_gate_kind_names_the_closest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, "g.yaml", "gates:\n  - {kind: cooldwn}\n")
    assert main(["config", "check", str(f)]) == 2
    assert "did you mean 'cooldown'" in capsys.readouterr().err


def test_unknown_key_names_file_and_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, "k.yaml", "policy: {min_confidense: 0.2}\n")
    assert main(["config", "check", str(f)]) == 2
    err = capsys.readouterr().err
    assert "k.yaml: policy.min_confidense: unknown key" in err and "min_confidence" in err


def test_missing_data_directory_is_a_data_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, "f.yaml", f"run: {{db_url: '{_db(tmp_path)}'}}\n"
               f"market: {{source: files, files: {{dir: {tmp_path / 'nope'}}}}}\nnews: {{source: none}}\n")
    assert main(["paper", "-c", str(f), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert "nope" in err and "does not exist" in err


def test_unwritable_database_is_a_storage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, "d.yaml", f"run: {{db_url: 'sqlite:///{tmp_path}/missing/dir/x.db'}}\n")
    assert main(["paper", "-c", str(f), "--no-progress"]) == 4
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1


def test_unknown_run_is_a_storage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from storage import open_storage

    open_storage(_db(tmp_path)).close()
    assert main(["score", "--run", "nosuch", "--db", _db(tmp_path)]) == 4
    assert "nosuch" in capsys.readouterr().err


def test_bad_argument_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["paper", "--bogus"]) == 2
    assert "--bogus" in capsys.readouterr().err


def test_paper_then_runs_and_score_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path, "p.yaml", f"run: {{name: clitest, db_url: '{_db(tmp_path)}'}}\n"
               "market: {synthetic: {bars: 700}}\n")
    assert main(["paper", "-c", str(f), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run"] == "clitest" and out["scorecard"]["reviewed"] > 0
    assert main(["runs", "--db", _db(tmp_path), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in runs] == ["clitest"] and runs[0]["status"] == "finished"
    assert main(["score", "--run", "clitest", "--db", _db(tmp_path), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["scorecard"] == out["scorecard"]


def test_config_show_masks_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TV_TEST_SECRET", "sentinel-secret-value-123")
    f = _write(tmp_path, "m.yaml", "run: {db_url: 'postgresql+psycopg://u:${TV_TEST_SECRET}@127.0.0.1/db'}\n")
    assert main(["config", "show", str(f)]) == 0
    out = capsys.readouterr().out
    assert "sentinel-secret-value-123" not in out and "***" in out


def test_config_schema_is_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "reviewer" in schema["properties"]
