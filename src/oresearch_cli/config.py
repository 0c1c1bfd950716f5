"""The one config loader: recipe files, their sections, and typed settings layered
flags > recipe file > environment > defaults.

A recipe is a YAML mapping of sections, one per part of ores:

    llm:    {defaults: {model: m}, judge: {temperature: 0}}     # oresearch_cli.llm.config
    synth:  {max_steps: 4, concurrency: 2}
    filter: {min_sources: 1, judge: {min_overall: 7}}
    sft:    {learning_rate: 1.0e-5, ores: {max_length: 65536}}  # TRL's own keys plus an ores block

A file without any section name is an LLM configuration on its own (the older `--config` form).
A section a command does not use is still checked: an unknown top-level key is refused with the
nearest valid name, as is an unknown key inside a section.

A stage's settings are a dataclass; `resolve(Settings, recipe, "synth", flags)` builds it from
the dataclass defaults, then `ORES_SYNTH_<KEY>` variables, then the recipe's section, then the
flags that are set (None means unset). Values are checked against the field types (an int field
refuses `true`, a bool field refuses `'yes'`), nested dataclasses and mappings merge key by key.
Every error is one line naming the file (or flag, or variable), the key and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from oresearch_cli.errors import ConfigError

SECTIONS = ("llm", "seed", "synth", "filter", "spotcheck", "sft", "rl", "eval", "serve")

T = TypeVar("T")


def nearest(word: str, choices: typing.Iterable[str]) -> str:
    """'; did you mean X' for the closest valid name, or the list of valid names."""
    choices = sorted(choices)
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"valid: {', '.join(choices)}" if choices else "this section takes no settings"


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe: its sections by name. `path` is None for no file (every section empty)."""

    path: Path | None = None
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    bare: bool = False  # the whole file was an LLM configuration without `llm:`

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else "defaults"

    def section(self, name: str) -> dict[str, Any]:
        if name not in SECTIONS:
            raise ValueError(f"unknown recipe section {name!r}")
        return dict(self.sections.get(name) or {})

    def has(self, name: str) -> bool:
        return name in self.sections


def load_recipe(path: str | Path | None) -> Recipe:
    """Read and check a recipe's top level; None gives the empty recipe."""
    if path is None:
        return Recipe()
    path = Path(path)
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found; check the --config path") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory; pass a YAML file to --config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.strerror}); check permissions") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{path}: invalid YAML{at} ({problem}); fix the file") from None
    if data is None:
        return Recipe(path)
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path}: expected a mapping at the top, got {type(data).__name__}; "
            f"write sections such as `llm:` and `synth:`"
        )
    if not any(key in SECTIONS for key in data):
        # The older form: the whole file is the LLM configuration. A key that is a misspelt
        # section (`synht:`) would otherwise make it one and silently drop the stage's settings.
        for key in data:
            close = difflib.get_close_matches(str(key), SECTIONS, n=1, cutoff=0.75)
            if close:
                raise ConfigError(f"{path}: unknown section {key!r}; did you mean {close[0]!r}?")
        return Recipe(path, {"llm": dict(data)}, bare=True)
    sections: dict[str, Mapping[str, Any]] = {}
    for key, value in data.items():
        if key not in SECTIONS:
            raise ConfigError(f"{path}: unknown section {key!r}; {nearest(str(key), SECTIONS)}")
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: `{key}:` must be a mapping of settings such as `max_steps: 10`")
        sections[key] = value
    return Recipe(path, sections)


# -- typed settings --------------------------------------------------------------------------------


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(hint, "__name__", str(hint))


class _Mismatch(Exception):
    pass


def _coerce(value: Any, hint: Any, from_text: bool) -> Any:
    """`value` as `hint`, or `_Mismatch`. Text from the environment is parsed; YAML and flags
    already carry types and are only checked (YAML's `1` for a float field is fine)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        return _coerce(value, args[0], from_text)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        if from_text and type(None) in args and str(value).strip().lower() in ("", "none", "null"):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, from_text)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is typing.Literal:
        if value in args:
            return value
        raise _Mismatch
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if from_text and str(value).strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return str(value).strip().lower() in ("1", "true", "yes", "on")
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text:
            try:
                return int(str(value).strip())
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if from_text:
            try:
                return float(str(value).strip())
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        if from_text:
            return str(value)
        raise _Mismatch
    if origin in (tuple, list):
        if from_text and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise _Mismatch
        item = args[0] if args else Any
        items = [_coerce(v, item, from_text) for v in value]
        return tuple(items) if origin is tuple else items
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch
        value_hint = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, value_hint, from_text) for k, v in value.items()}
    raise _Mismatch


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _check_value(cls: type, key: str, value: Any, where: str, shown: str, from_text: bool = False) -> Any:
    hint = _hints(cls)[key]
    try:
        return _coerce(value, hint, from_text)
    except _Mismatch:
        raise ConfigError(
            f"{where}: {shown} must be {_type_name(hint)}, got {value!r}; fix the value"
        ) from None


def bounded(default: Any, *, low: float | None = None, high: float | None = None) -> Any:
    """A settings field whose value (when set) must lie in [low, high]: `n: int = bounded(50, low=1)`."""
    return dataclasses.field(default=default, metadata={"low": low, "high": high})


def _check_bounds(f: dataclasses.Field[Any], value: Any, where: str, shown: str) -> None:
    low, high = f.metadata.get("low"), f.metadata.get("high")
    if value is None or (low is None and high is None):
        return
    if (low is not None and value < low) or (high is not None and value > high):
        wanted = (
            f"between {low} and {high}" if low is not None and high is not None
            else f"at least {low}" if low is not None else f"at most {high}"
        )  # fmt: skip
        raise ConfigError(f"{where}: {shown} must be {wanted}, got {value!r}; fix the value")


def apply(base: T, data: Mapping[str, Any], where: str, prefix: str = "", from_text: bool = False) -> T:
    """`base` (a dataclass instance) with `data`'s settings applied and checked; a nested dataclass
    or mapping field merges key by key. `prefix` names the section in messages (`synth.`)."""
    if not dataclasses.is_dataclass(base) or isinstance(base, type):
        raise TypeError("apply() needs a dataclass instance")
    cls = type(base)
    fields = {f.name: f for f in dataclasses.fields(base) if f.init}
    names = set(fields)
    updates: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        if key not in names:
            raise ConfigError(
                f"{where}: {prefix}{key} is not a {prefix.rstrip('.') or cls.__name__} setting; "
                f"{nearest(key, names)}"
            )
        if value is None and not from_text:
            continue  # an unset flag, or `key:` with nothing after it
        current = getattr(base, key)
        if dataclasses.is_dataclass(current) and not isinstance(current, type):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {prefix}{key} must be a mapping of settings; fix the value")
            updates[key] = apply(current, value, where, f"{prefix}{key}.", from_text)
            continue
        checked = _check_value(cls, key, value, where, f"{prefix}{key}", from_text)
        _check_bounds(fields[key], checked, where, f"{prefix}{key}")
        if isinstance(current, Mapping) and isinstance(checked, Mapping):
            checked = {**current, **checked}
        updates[key] = checked
    try:
        return dataclasses.replace(base, **updates)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}; check the setting names") from None


def env_settings(section: str, cls: type, environ: Mapping[str, str]) -> dict[str, str]:
    """`ORES_<SECTION>_<KEY>` variables that name a top-level setting of `cls`."""
    prefix = f"ORES_{section.upper()}_"
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    found: dict[str, str] = {}
    for name, value in environ.items():
        if name.startswith(prefix) and value.strip():
            key = name[len(prefix) :].lower()
            if key in names:
                found[key] = value
    return found


def resolve(
    cls: type[T],
    recipe: Recipe,
    section: str,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """Settings of type `cls` for `section`: defaults < environment < recipe < flags."""
    environ = os.environ if environ is None else environ
    settings = cls()
    for key, value in env_settings(section, cls, environ).items():
        settings = apply(settings, {key: value}, f"env ORES_{section.upper()}_{key.upper()}", from_text=True)
    settings = apply(settings, recipe.section(section), recipe.where, f"{section}.")
    if flags:
        settings = apply(settings, {k: v for k, v in flags.items() if v is not None}, "flags", f"{section}.")
    return settings
