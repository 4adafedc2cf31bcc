"""Configuration loading: YAML files merged in order over the embedded default → one validated, frozen ``Config``.

Errors name the file and the dotted path: ``config/paper.yaml: reviewer.tiers[1].timeout_s: must be > 0
(got -1)``. Secrets never live in files: tiers name an environment variable (``api_key_env``), and any
string may say ``${VAR}``, resolved from the environment and masked in ``config show`` and the stored
config.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.config.redact import MASK, register
from engine.config.schema import Config
from engine.config.wording import blame, dotted, explain_error
from engine.errors import ConfigError

__all__ = ["DEFAULT_CONFIG", "LoadedConfig", "load_config", "read_yaml", "stored_value", "validate"]

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "default.yaml"


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config plus where each value came from and what was masked."""

    config: Config
    files: tuple[str, ...]
    masked_paths: frozenset[str] = frozenset()
    disabled_tiers: tuple[tuple[str, str], ...] = ()  # (tier name, why)
    warnings: tuple[str, ...] = field(default=())
    origin: Mapping[str, str] = field(default_factory=dict, compare=False)  # dotted path → the file that set it

    @contextlib.contextmanager
    def blaming(self) -> Iterator[None]:
        """Config errors raised inside (by what the config names: strategy, gate and tier classes and their
        params) that carry the dotted key they are about (``ConfigError.path``) get the file that set that key,
        as the config's own errors have: ``gates[0].params.bars: must be >= 1 (got 0)`` →
        ``my.yaml: gates[0].params.bars: ...``."""
        try:
            yield
        except ConfigError as e:
            if not e.path or e.source or not self.files:
                raise
            src = blame(e.path, self.origin, [*self.files, "override"], self.files[-1])
            if src == _display(DEFAULT_CONFIG):  # a default that does not fit the user's choices: their file
                src = self.files[-1]
            raise ConfigError(e.message, path=e.path, source=src) from e

    def effective(self) -> dict[str, Any]:
        """The effective config as plain data with every secret masked (safe to print and store)."""
        data = self.config.model_dump(mode="json")
        for path in self.masked_paths:
            _set_path(data, path, MASK)
        return data

    @property
    def hash(self) -> str:
        text = json.dumps(self.effective(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    if path.is_dir():
        raise ConfigError(f"{path}: expected a YAML file (got a directory)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: expected UTF-8 text ({e.reason} at byte {e.start})") from e
    try:
        data = yaml.load(text, Loader=_unique_key_loader())  # a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML: {where}{problem}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level (got {type(data).__name__})")
    return data


@functools.cache
def _unique_key_loader() -> Any:
    """A ``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    PyYAML keeps the last of two equal keys silently, so a second ``reviewer:`` section would replace the
    first without a word (YAML itself says keys are unique). Keys merged in with ``<<: *anchor`` may
    still be overridden.
    """
    import yaml
    from yaml.constructor import ConstructorError

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, Any] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=False)
                    try:
                        first = seen.setdefault(key, key_node.start_mark)
                    except TypeError:  # an unhashable key: SafeLoader itself reports it
                        continue
                    if first is not key_node.start_mark:
                        raise ConstructorError(None, None, f"duplicate key {key!r} (first given on line "
                                               f"{first.line + 1})", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _merge(base: dict[str, Any], over: Mapping[str, Any], origin: dict[str, str], src: str,
           prefix: str = "") -> None:
    """Deep-merge ``over`` into ``base``; lists replace. Records which file set each path."""
    for k, v in over.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v, origin, src, path)
        else:
            base[k] = _deepcopy(v)
            _mark(v, path, origin, src)


def _deepcopy(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _deepcopy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_deepcopy(x) for x in v]
    return v


def _mark(v: Any, path: str, origin: dict[str, str], src: str) -> None:
    origin[path] = src
    if isinstance(v, Mapping):
        for k, x in v.items():
            _mark(x, f"{path}.{k}", origin, src)
    elif isinstance(v, list):
        for i, x in enumerate(v):
            _mark(x, f"{path}[{i}]", origin, src)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _interpolate(node: Any, path: str, env: Mapping[str, str], masked: set[str], origin: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k), env, masked, origin) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", env, masked, origin) for i, v in enumerate(node)]
    if isinstance(node, str) and "${" in node:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in env:
                raise ConfigError(
                    f"{origin.get(path, 'config')}: {path}: environment variable {name} is not set "
                    f"(expected it to hold the value of {path})"
                )
            return env[name]

        masked.add(path)
        out = _ENV_REF.sub(sub, node)
        for m in _ENV_REF.finditer(node):
            register(env.get(m.group(1)))  # the value, and the whole string it became part of
        register(out)
        return out
    return node


def validate(data: dict[str, Any], origin: Mapping[str, str] | None = None, *, default_src: str = "config",
             order: Sequence[str] | None = None) -> Config:
    """Validate merged data. Raises: ConfigError naming the file and dotted path of the first problem."""
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        first = errors[0]
        path = dotted(first["loc"])
        src = default_src
        if origin:
            src = blame(path, origin, order or [], default_src)
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        where = f"{path}: " if path else ""
        raise ConfigError(f"{src}: {where}{explain_error(first, Config)}{more}") from None


def load_config(
    paths: Sequence[str | os.PathLike[str]] = (),
    *,
    env: Mapping[str, str] | None = None,
    include_default: bool = True,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """Merge the embedded default and ``paths`` in order, resolve ``${VAR}``, validate.

    Raises: ConfigError (one line naming the file and the dotted path).
    """
    env = os.environ if env is None else env
    files: list[Path] = ([DEFAULT_CONFIG] if include_default else []) + [Path(p) for p in paths]
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for f in files:
        shown = _display(f)
        _merge(merged, read_yaml(f), origin, shown)
    if overrides:
        _merge(merged, overrides, origin, "override")
    masked: set[str] = set()
    last = _display(files[-1]) if files else "config"
    merged = _interpolate(merged, "", env, masked, origin)
    cfg = validate(merged, origin, default_src=last, order=[_display(f) for f in files] + ["override"])
    disabled: list[tuple[str, str]] = []
    warnings: list[str] = []
    for i, t in enumerate(cfg.reviewer.tiers):
        if t.api_key_env:
            register(env.get(t.api_key_env))
        if t.api_key_env and not env.get(t.api_key_env):
            if t.required:
                raise ConfigError(
                    f"{origin.get(f'reviewer.tiers[{i}].api_key_env', last)}: reviewer.tiers[{i}].api_key_env: "
                    f"environment variable {t.api_key_env} is not set (tier {t.name!r} is required)"
                )
            why = f"tier {t.name!r} disabled: environment variable {t.api_key_env} is not set"
            disabled.append((t.name, why))
            warnings.append(why)
    return LoadedConfig(cfg, tuple(_display(f) for f in files), frozenset(masked), tuple(disabled), tuple(warnings),
                        origin)


def _display(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        if p.resolve() == DEFAULT_CONFIG:
            return "config/default.yaml"
        return str(p)


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = re.findall(r"[^.\[\]]+|\[\d+\]", dotted)
    cur: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        key: Any = int(part[1:-1]) if part.startswith("[") else part
        try:
            if last:
                cur[key] = value
            else:
                cur = cur[key]
        except (KeyError, IndexError, TypeError):
            return


_MISSING = object()


def stored_value(config_json: str, dotted_key: str, default: Any) -> Any:
    """A value of a run's stored effective config (``runs.config_json``) by dotted key, or ``default`` when the
    stored config lacks it or cannot be read (a run recorded before the key existed, an imported run).

    The read side uses this rather than validating the stored config against today's schema, which a run
    recorded under an older schema need not pass.
    """
    try:
        node: Any = json.loads(config_json) if config_json else {}
    except ValueError:
        return default
    for part in dotted_key.split("."):
        node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if node is _MISSING:
            return default
    return default if node is None else node
