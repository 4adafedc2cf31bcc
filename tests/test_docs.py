"""Docs that cannot drift: the README's YAML validates, its commands exist, every __all__ name resolves."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
import yaml

from engine.cli import main
from engine.config import load_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_starts_with_the_two_commands() -> None:
    quick = README.split("## Life of a signal")[0]
    assert "make demo" in quick and "make test" in quick
    assert README.index("make demo") < README.index("## Life of a signal")


@pytest.mark.parametrize("text", _blocks("yaml"))
def test_readme_yaml_snippets_validate(text: str, tmp_path: Path) -> None:
    data = yaml.safe_load(text)
    f = tmp_path / "snippet.yaml"
    f.write_text(yaml.safe_dump(data))
    loaded = load_config([f]) if not text.startswith("# space.yaml") else load_config()
    assert loaded.config.run.name
    if text.startswith("# space.yaml"):  # a sweep's search space: valid, and every key reaches the default config
        from engine.sweep import apply_key, load_space

        space = load_space(f)
        plain = loaded.config.model_dump(mode="json")
        for key in space.params:
            apply_key(plain, key, None)


def test_every_readme_command_exists(capsys: pytest.CaptureFixture[str]) -> None:
    commands = set()
    for block in _blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            m = re.search(r"tradevet ((?:[a-z]+ ?){1,2})", line)
            if m:
                words = [w for w in m.group(1).split() if not w.startswith("-")]
                commands.add(tuple(words[:2]))
    assert {("paper",), ("runs",), ("score",)} <= {c[:1] for c in commands}
    for words in sorted(commands):
        argv = list(words)
        code = main([*argv, "--help"])
        if code != 0:  # a one-word command followed by an argument ("config check my.yaml")
            code = main([argv[0], "--help"])
        assert code == 0, f"README shows `tradevet {' '.join(words)}` but it does not exist"
    capsys.readouterr()


def test_config_files_in_the_repo_validate() -> None:
    for f in sorted((ROOT / "config").glob("*.yaml")):
        assert load_config([f], env={}).config


@pytest.mark.parametrize("package", ["engine", "strategies", "reviewer", "storage"])
def test_every_name_in___all___exists(package: str) -> None:
    pkg = importlib.import_module(package)
    modules = [pkg] + [importlib.import_module(m.name) for m in pkgutil.walk_packages(pkg.__path__, package + ".")
                       if "migrations" not in m.name]
    checked = 0
    for mod in modules:
        for name in getattr(mod, "__all__", ()):
            assert hasattr(mod, name), f"{mod.__name__}.__all__ names {name!r}, which does not exist"
            checked += 1
    assert checked > 0
