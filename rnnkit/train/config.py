"""Typed dataclass configs: to and from JSON, dotted overrides, durations.

Each component owns a dataclass of its defaults (``LanguageModelConfig``, ``TrainerConfig``,
...); an experiment composes them as fields of its own dataclass. Overrides name a field by its
dotted path (``model.embedding_size=512``); unknown keys and values of the wrong type are errors
that name the key, the expected type and, for typos, the closest keys.

Field types supported: ``int``, ``float``, ``str``, ``bool``, ``X | None`` of those, nested
dataclasses, and mappings ``dict[str, Any]`` (a cell's own options): ``--model.recurrent.options
.num_heads=4`` sets one entry to the text ``"4"``, which the owning dataclass's ``__post_init__``
checks and parses (only it knows the types, for example from the chosen cell's signature).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Config = TypeVar("Config", bound="DataclassInstance")

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
NONE_WORDS = ("none", "null")
DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(ValueError):
    """An unknown config key or a value of the wrong type."""


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as nested plain dicts (JSON-ready)."""
    return dataclasses.asdict(config)


def to_json(config: Any) -> str:
    return json.dumps(to_dict(config), indent=2, ensure_ascii=False)


def from_dict(config_type: type[Config], data: dict[str, Any], prefix: str = "") -> Config:
    """Build ``config_type`` from nested dicts; missing keys take their defaults. A config
    type with a static ``prepare_data(data) -> data`` rewrites its raw mapping first (a
    shorthand key that fills a nested group, before that group checks itself)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    prepare = getattr(config_type, "prepare_data", None)
    if prepare is not None:
        data = prepare(dict(data))
    hints = typing.get_type_hints(config_type)
    known = {field.name for field in dataclasses.fields(config_type)}
    values = {}
    for key, value in data.items():
        path = prefix + key
        if key not in known:
            raise ConfigError(_unknown_key_message(path, prefix, known))
        values[key] = _check_value(path, value, hints[key])
    try:
        return config_type(**values)
    except ValueError as error:
        # A range check in a nested __post_init__ only knows its own field names; the dotted
        # path tells the user which group of the experiment it belongs to. Model configs raise
        # ValueError (models may not import train), so every ValueError becomes a ConfigError.
        raise ConfigError(f"{prefix.rstrip('.')}: {error}" if prefix else str(error)) from None


def load_file(config_type: type[Config], path: str | Path) -> Config:
    """Build ``config_type`` from a YAML (``.yaml``/``.yml``) or JSON (``.json``) file; errors
    name the file, and the key (and line, where PyYAML gives it)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file ({error.strerror})") from None
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{error.lineno}: not valid JSON: {error.msg}") from None
    elif suffix in (".yaml", ".yml"):
        import yaml  # imported here so JSON configs work without PyYAML loaded

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}{line}: not valid YAML: {error}") from None
    else:
        raise ConfigError(f"{path}: config files end in .yaml, .yml or .json, got {suffix!r}")
    try:
        return from_dict(config_type, {} if data is None else data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def apply_overrides(config: Config, overrides: list[tuple[str, str]]) -> Config:
    """A copy of ``config`` with each ``(dotted.key, text)`` parsed to the field's type."""
    data = to_dict(config)
    for key, text in overrides:
        owner_type, owner_data, name = _locate(type(config), data, key)
        if _is_mapping(owner_type):
            owner_data[name] = text  # an entry of a mapping: its owner's __post_init__ parses it
            continue
        hint = typing.get_type_hints(owner_type)[name]
        owner_data[name] = parse_value(key, text, hint)
    return from_dict(type(config), data)


def parse_value(key: str, text: str, hint: Any) -> Any:
    """Parse the command-line ``text`` for the field ``key`` of type ``hint``."""
    allowed, optional = _unwrap_optional(hint)
    if optional and text.strip().lower() in NONE_WORDS:
        return None
    if allowed is bool:
        lowered = text.strip().lower()
        if lowered in TRUE_WORDS or lowered in FALSE_WORDS:
            return lowered in TRUE_WORDS
        raise ConfigError(f"--{key} expects true or false, got {text!r}")
    if allowed is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"--{key} expects an integer, got {text!r}") from None
    if allowed is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--{key} expects a number, got {text!r}") from None
    if allowed is str:
        return text
    if _is_mapping(allowed):
        raise ConfigError(f"--{key} is a mapping, not a value; set one entry, --{key}.NAME=VALUE")
    raise ConfigError(f"--{key} is a group of settings, not a value; set one of its fields")


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"5m"``, ``"1.5h"``, ``"1h30m"`` -> seconds."""
    cleaned = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        return float(cleaned)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smh])", cleaned)
    if not parts or "".join(number + unit for number, unit in parts) != cleaned:
        raise ConfigError(f"cannot read the duration {text!r}; use e.g. 90s, 5m, 1h30m")
    seconds = sum(float(number) * DURATION_UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise ConfigError(f"a duration must be positive, got {text!r}")
    return seconds


def config_keys(config_type: type, prefix: str = "") -> list[str]:
    """Every dotted key of ``config_type``, for help texts and suggestions."""
    keys = []
    hints = typing.get_type_hints(config_type)
    for field in dataclasses.fields(config_type):
        if dataclasses.is_dataclass(hints[field.name]):
            keys += config_keys(hints[field.name], f"{prefix}{field.name}.")
        else:
            keys.append(prefix + field.name)
    return keys


def _locate(
    config_type: type[DataclassInstance], data: dict, key: str
) -> tuple[type, dict, str]:
    """The dataclass type and dict that own the last part of the dotted ``key``."""
    parts = key.split(".")
    owner_type, owner_data = config_type, data
    for depth, part in enumerate(parts):
        known = {field.name for field in dataclasses.fields(owner_type)}
        prefix = ".".join(parts[:depth])
        if part not in known:
            dotted_prefix = prefix + "." if prefix else ""
            raise ConfigError(_unknown_key_message(key, dotted_prefix, known, dotted_prefix + part))
        hint = typing.get_type_hints(owner_type)[part]
        if depth == len(parts) - 1:
            return owner_type, owner_data, part
        if _is_mapping(hint) and depth == len(parts) - 2:
            # The mapping's own owner checks the entry name (it knows which names are taken).
            return hint, owner_data[part], parts[-1]
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint)):
            raise ConfigError(
                f"unknown config key {key!r}: {'.'.join(parts[: depth + 1])!r} "
                "is a value, not a group"
            )
        owner_type, owner_data = hint, owner_data[part]
    raise ConfigError(f"empty config key {key!r}")


def _check_value(path: str, value: Any, hint: Any) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_dict(hint, value, path + ".")
    if _is_mapping(hint):
        if not isinstance(value, dict) or not all(isinstance(name, str) for name in value):
            raise ConfigError(f"{path} must be a mapping of names to values, got {value!r}")
        return dict(value)
    allowed, optional = _unwrap_optional(hint)
    if value is None and optional:
        return None
    if allowed is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if allowed is int and isinstance(value, bool):
        raise ConfigError(f"{path} must be an integer, got {value!r}")
    if allowed in (int, float, str, bool) and isinstance(value, allowed):
        return value
    expected = getattr(allowed, "__name__", str(allowed)) + (" or null" if optional else "")
    raise ConfigError(f"{path} must be {expected}, got {value!r}")


def _is_mapping(hint: Any) -> bool:
    return hint is dict or typing.get_origin(hint) is dict


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; ``X`` -> ``(X, False)``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        members = [member for member in typing.get_args(hint) if member is not type(None)]
        if len(members) == 1:
            return members[0], True
    return hint, False


def _unknown_key_message(key: str, prefix: str, known: set[str], part: str | None = None) -> str:
    candidates = [prefix + name for name in sorted(known)]
    close = difflib.get_close_matches(part or key, candidates, n=3)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"unknown config key {key!r}{hint} (keys here: {', '.join(candidates)})"
