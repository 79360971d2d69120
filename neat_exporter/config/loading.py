"""From a file, flags and the environment to a checked configuration, and back to text: what
every daemon's configuration (the exporter's, the bridge's, the global manager's) goes through,
driven by its declaration (:mod:`neat_exporter.config.declare`).

Problems are reported as :class:`ConfigError`, one line per problem (dotted key and reason),
never pydantic's own report; a secret's value never appears in one.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from functools import cache
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError

from neat_exporter.config.declare import (
    Flag,
    SecretFrom,
    Section,
    choices,
    declared_keys,
    known_keys,
    mapped_section_type,
    secret_fields,
    section_type,
    strip,
    type_at,
)
from neat_exporter.config.files import parse_yaml, read_config_file
from neat_exporter.errors import ConfigError

REDACTED = "<redacted>"
UNSET = "<unset>"

SectionT = TypeVar("SectionT", bound=Section)


def parse_yaml_mapping(text: str, origin: str) -> dict[str, Any]:
    """A configuration file's YAML: a mapping of keys (empty = every default)."""
    raw = parse_yaml(text, origin, "config")
    if raw is None:
        return {}
    if not isinstance(raw, dict):  # its type only: the file may be a secret given by mistake
        raise ConfigError(
            "config", f"{origin}: must be a mapping of keys, got {type(raw).__name__}"
        )
    return raw


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` with the dotted keys of ``overrides`` set (None values are ignored: a flag not
    given), without changing ``raw``."""
    merged = _deep_copy(raw)
    for dotted, value in overrides.items():
        if value is None:
            continue
        section = merged
        *parents, last = dotted.split(".")
        for depth, name in enumerate(parents):
            child = section.get(name)
            if child is None:
                child = section[name] = {}
            if not isinstance(child, dict):
                raise ConfigError(".".join(parents[: depth + 1]), "must be a mapping")
            section = child
        section[last] = value
    return merged


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _deep_copy(item) for key, item in value.items()}
    return value


def validate(
    declaration: type[SectionT],
    raw: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    fallback_secrets: Mapping[str, str] | None = None,
) -> SectionT:
    """``raw`` checked against ``declaration``, with its secrets read (the environment variable,
    else the file its key names, else ``fallback_secrets`` by dotted name)."""
    _refuse_inline_secrets(declaration, raw, "")
    try:
        checked = declaration.model_validate(raw)
    except ValidationError as error:
        raise config_error(declaration, error) from None
    environ = os.environ if environ is None else environ
    return _with_secrets(checked, "", environ, fallback_secrets or {})


def check_value(kind: Any, key: str, value: Any) -> Any:
    """``value`` checked as a declared type (``PositiveNumber``...) for the key ``key``."""
    try:
        return _adapter(kind).validate_python(value)
    except ValidationError as error:
        problem = error.errors(include_url=False)[0]
        where = _dotted(problem["loc"])
        if where != "config":
            key += where if where.startswith("[") else f".{where}"
        raise ConfigError(key, _reason(problem, kind, problem["loc"])) from None


@cache
def _adapter(kind: Any) -> TypeAdapter:
    return TypeAdapter(kind)


def _read_secret(
    file_key: str, path: str | None, env: str | None, environ: Mapping[str, str]
) -> str | None:
    """The environment variable wins over the file; the value never appears in messages."""
    if env and environ.get(env):
        return environ[env].strip()
    if path is None:
        return None
    value = read_config_file(path, file_key).strip()
    if not value:
        raise ConfigError(file_key, f"{path} is empty")
    return value


def _from_named_source(
    section: Section, name: str, source: SecretFrom, prefix: str, environ: Mapping[str, str]
) -> str:
    """A secret from exactly one of its keys: inline (where allowed), the file named, or the
    environment variable named. The value never appears in messages."""
    keys = ((name,) if source.inline else ()) + source.keys
    given = [key for key in keys if getattr(section, key) is not None]
    if len(given) != 1:
        raise ConfigError(f"{prefix}{name}", f"give exactly one of {', '.join(keys)}")
    key = given[0]
    if key == name:
        value = getattr(section, name).get_secret_value()
    elif key == source.file_key:
        value = read_config_file(getattr(section, key), f"{prefix}{key}")
    else:
        variable = getattr(section, key)
        if variable not in environ:
            raise ConfigError(f"{prefix}{key}", f"the environment variable {variable} is not set")
        value = environ[variable]
    if not value.strip():
        raise ConfigError(f"{prefix}{key}", f"the {name} is empty")
    return value.strip()


def _refuse_inline_secrets(declaration: type[BaseModel], raw: Any, prefix: str) -> None:
    if not isinstance(raw, Mapping):
        return
    for name, source in secret_fields(declaration):
        if name in raw and not source.inline:
            where = [f"{prefix}{key}" for key in source.keys] + ([source.env] if source.env else [])
            raise ConfigError(
                f"{prefix}{name}",
                f"secrets are not inline in the file: give {' or '.join(where)}",
            )
    for name, field in declaration.model_fields.items():
        nested = section_type(field.annotation)
        if nested is not None:
            _refuse_inline_secrets(nested, raw.get(name), f"{prefix}{name}.")
        mapped = mapped_section_type(field.annotation)
        if mapped is not None and isinstance(raw.get(name), Mapping):
            for key, item in raw[name].items():
                _refuse_inline_secrets(mapped, item, f"{prefix}{name}.{key}.")


def _with_secrets(
    section: SectionT, prefix: str, environ: Mapping[str, str], fallback: Mapping[str, str]
) -> SectionT:
    updates: dict[str, Any] = {}
    for name, field in type(section).model_fields.items():
        value = getattr(section, name)
        if isinstance(value, Section):
            filled = _with_secrets(value, f"{prefix}{name}.", environ, fallback)
            if filled is not value:
                updates[name] = filled
        elif value and mapped_section_type(field.annotation) is not None:
            updates[name] = {
                key: _with_secrets(item, f"{prefix}{name}.{key}.", environ, fallback)
                for key, item in value.items()
            }
    for name, source in secret_fields(type(section)):
        if source.env_key is not None:
            found = _from_named_source(section, name, source, prefix, environ)
        else:
            path = getattr(section, source.file_key)
            found = _read_secret(f"{prefix}{source.file_key}", path, source.env, environ)
            found = found or fallback.get(f"{prefix}{name}")
        if found is not None:
            updates[name] = SecretStr(found)
    return section.model_copy(update=updates) if updates else section


# --- one line per problem ------------------------------------------------------------------------

# What YAML 1.1 (PyYAML) reads as a boolean when unquoted: `mode: on` arrives as True.
_YAML_BOOLEAN_WORDS = {True: ("on", "yes", "true", "y"), False: ("off", "no", "false", "n")}
_EXPECTED = {
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be finite",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a non-empty string",
    "string_too_short": "must be a non-empty string",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dataclass_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
}
_BOUNDS = {
    "greater_than": ("gt", "must be greater than"),
    "greater_than_equal": ("ge", "must be at least"),
    "less_than": ("lt", "must be less than"),
    "less_than_equal": ("le", "must be at most"),
}


def config_error(declaration: type, error: ValidationError) -> ConfigError:
    """pydantic's report as one ConfigError, one line (dotted key: reason) per problem."""
    problems = [
        ConfigError(_dotted(problem["loc"]), _reason(problem, declaration, problem["loc"]))
        for problem in error.errors(include_url=False)
    ]
    return ConfigError.of(problems)


def _dotted(loc: tuple[str | int, ...]) -> str:
    key = ""
    for part in loc:
        if part == "[key]":  # a mapping's key is wrong, not its value: name the key
            continue
        if isinstance(part, str) and not part.isprintable():  # a hostile key, shown escaped
            part = repr(part)
        key += f"[{part}]" if isinstance(part, int) else f".{part}" if key else str(part)
    return key or "config"


def _reason(problem: Mapping[str, Any], declaration: type | None, loc: tuple) -> str:
    kind, value = problem["type"], problem.get("input")
    got = f", got {value!r:.60}"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        known = known_keys(declaration, loc[:-1]) if declaration else ()
        return f"unknown key (known here: {', '.join(known)})" if known else "unknown key"
    if kind in ("missing", "missing_argument"):
        return "missing"
    if kind == "literal_error":
        allowed = choices(type_at(declaration, loc)) if declaration else None
        if allowed is None:
            return problem["msg"]
        if isinstance(value, bool):
            meant = next((c for c in allowed if c in _YAML_BOOLEAN_WORDS[value]), None)
            if meant is not None:
                return (
                    f"must be one of {', '.join(allowed)}, got the boolean {str(value).lower()}: "
                    "YAML reads unquoted on/off/yes/no as booleans, so quote it: "
                    f'{loc[-1]}: "{meant}"'
                )
        return f"must be one of {', '.join(allowed)}{got}"
    if kind in _BOUNDS:
        name, text = _BOUNDS[kind]
        bound = problem.get("ctx", {}).get(name)
        return f"{text} {bound:g}{got}" if isinstance(bound, int | float) else problem["msg"]
    if kind in _EXPECTED:
        return _EXPECTED[kind] + got
    return problem["msg"]


# --- back to text --------------------------------------------------------------------------------


def effective(section: Section) -> dict[str, Any]:
    """Every key with its value, as plain YAML-friendly values; secrets as ``<redacted>`` (or
    ``<unset>``), never their value."""
    secrets = {name for name, _ in secret_fields(type(section))}
    out: dict[str, Any] = {}
    for name in type(section).model_fields:
        value = getattr(section, name)
        if name in secrets:
            out[name] = UNSET if value is None else REDACTED
        else:
            out[name] = plain(value)
    return out


def plain(value: Any) -> Any:
    """A value as plain YAML-friendly values (tuples become lists, sections mappings)."""
    if isinstance(value, Section):
        return effective(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return {field.name: plain(getattr(value, field.name)) for field in fields}
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


# --- the flags -----------------------------------------------------------------------------------


def add_flags(parser: argparse.ArgumentParser, declaration: type[Section], command: str) -> None:
    """The flags ``command`` has for the keys of ``declaration``: each sets its key, with the
    key's type, choices and description."""
    for key in declared_keys(declaration):
        flag = key.metadata(Flag)
        if flag is None or command not in flag.commands:
            continue
        field = key.field
        help_text = f"{field.description or ''} (key {key.dotted}".lstrip()
        if field.default not in (None, False, (), {}):
            help_text += f", default {field.default}"
        options: dict[str, Any] = {"dest": key.dotted, "help": f"{help_text})"}
        kind = strip(field.annotation)
        allowed = choices(kind)
        if allowed is not None:
            options["choices"] = allowed
        elif kind is bool:
            options.update(action="store_const", const=True)
        elif kind in (int, float):
            options["type"] = kind
        if "action" not in options:
            options["metavar"] = flag.metavar
        parser.add_argument(*flag.names, **options)


def flag_overrides(
    args: argparse.Namespace, declaration: type[Section], command: str
) -> dict[str, Any]:
    """The keys the flags of ``command`` set (None: the flag was not given)."""
    return {
        key.dotted: getattr(args, key.dotted, None)
        for key in declared_keys(declaration)
        if (flag := key.metadata(Flag)) is not None and command in flag.commands
    }
