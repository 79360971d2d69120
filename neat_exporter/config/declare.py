"""How a configuration key is declared, once: a field of a :class:`Section` (a pydantic model)
with its type, bounds and default, and, where a command-line flag sets it, a :class:`Flag`.

Validation, defaults, the flags' overrides, redaction and the list of keys the example files
must document are all derived from these declarations (see :mod:`neat_exporter.config.loading`).
Scalars are strict: YAML's ``"300"`` is not a number and ``1`` not a boolean, as a typo must not
pass silently. Errors raised here carry the message the user sees, after the dotted key.

    class Source(Section):
        type: Annotated[Literal["libvirt", "replay"], Flag("--source", commands=RUN)] = "libvirt"
        timeout: PositiveNumber = 5
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any, Literal, NoReturn, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic_core import PydanticCustomError

from neat_exporter.errors import ConfigError, InputError
from neat_exporter.identifiers import check_host_name
from neat_exporter.parsing import parse_listen_address


class Section(BaseModel):
    """A mapping of keys: unknown keys refused, every value checked (defaults too), immutable.
    An empty section in YAML (``source:``) is the same as no section."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        return {} if value is None else value


def fail(message: str) -> NoReturn:
    """Refuse a value from a validator; ``message`` follows the dotted key."""
    raise PydanticCustomError("neat_config", "{reason}", {"reason": message})


@dataclasses.dataclass(frozen=True, init=False)
class Flag:
    """The command-line flag of a key, for the commands named (their argparse ``dest`` is the
    dotted key); its help is the field's description, its type and choices the field's."""

    names: tuple[str, ...]
    commands: frozenset[str]
    metavar: str | None = None

    def __init__(self, *names: str, commands: frozenset[str], metavar: str | None = None):
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "commands", commands)
        object.__setattr__(self, "metavar", metavar)


@dataclasses.dataclass(frozen=True)
class SecretFrom:
    """Marks a secret field (``Annotated[SecretStr | None, SecretFrom(...)]``; SecretStr is never
    shown by repr or str). It is read from the file its sibling key ``file_key`` names, or from
    an environment variable: either the fixed ``env``, which wins over the file, or the one its
    sibling key ``env_key`` names; then exactly one of the keys must be given (the field's own
    key too, written in the file, where ``inline`` allows it: a login name, not a password)."""

    file_key: str
    env: str | None = None
    env_key: str | None = None
    inline: bool = False

    @property
    def keys(self) -> tuple[str, ...]:
        """The sibling keys that may name where the secret is."""
        return tuple(key for key in (self.file_key, self.env_key) if key)


# --- value types ---------------------------------------------------------------------------------


def _integral_float(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _port_number_as_listen(value: Any) -> Any:
    return f":{value}" if isinstance(value, int) and not isinstance(value, bool) else value


def _listen_address(value: str) -> str:
    try:
        parse_listen_address(value)
    except ConfigError as error:
        fail(error.reason)
    return value


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        fail(f"must be an http:// or https:// URL, got {value!r:.80}")
    return value


def _host_name(value: str) -> str:
    try:
        return check_host_name(value)
    except InputError as error:
        fail(str(error))


def _list_of_patterns(value: Any) -> Any:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        fail(f"must be a list of non-empty patterns, got {value!r:.60}")
    return tuple(value)


Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
PositiveNumber = Annotated[Number, Field(gt=0)]
NonNegativeNumber = Annotated[Number, Field(ge=0)]
Fraction = Annotated[Number, Field(gt=0, le=1)]
Count = Annotated[int, BeforeValidator(_integral_float), Field(strict=True, ge=0)]
PositiveCount = Annotated[int, BeforeValidator(_integral_float), Field(strict=True, ge=1)]
Port = Annotated[PositiveCount, Field(le=65535)]
Boolean = Annotated[bool, Field(strict=True)]
Text = Annotated[str, Field(strict=True, min_length=1)]
"""A non-empty string."""
Listen = Annotated[Text, BeforeValidator(_port_number_as_listen), AfterValidator(_listen_address)]
"""``HOST:PORT``, ``:PORT`` or ``[v6]:PORT``; a bare port number is ``:PORT``."""
HttpUrl = Annotated[Text, AfterValidator(_http_url)]
HostName = Annotated[Text, AfterValidator(_host_name)]
Patterns = Annotated[tuple[str, ...], BeforeValidator(_list_of_patterns)]
"""Shell-style patterns (``db-*``)."""
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)


# --- reading the declarations --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Key:
    """One declared key: its dotted name, the section declaring it, its field name there."""

    dotted: str
    section: type[BaseModel]
    name: str

    @property
    def field(self) -> Any:
        return self.section.model_fields[self.name]

    def metadata(self, kind: type) -> Any:
        return next((item for item in self.field.metadata if isinstance(item, kind)), None)


def declared_keys(section: type[BaseModel], prefix: str = "") -> Iterator[Key]:
    """Every key a file may set, depth first in declaration order (secrets are not keys)."""
    for name, field in section.model_fields.items():
        key = Key(f"{prefix}{name}", section, name)
        if not _is_key(field):
            continue
        nested = section_type(field.annotation)
        if nested is None:
            yield key
        else:
            yield from declared_keys(nested, f"{key.dotted}.")


def secret_fields(section: type[BaseModel]) -> Iterator[tuple[str, SecretFrom]]:
    """The secret fields of ``section`` itself, with where they come from."""
    for name in section.model_fields:
        source = Key("", section, name).metadata(SecretFrom)
        if source:
            yield name, source


def section_type(annotation: Any) -> type[Section] | None:
    """The :class:`Section` a field holds (``X`` or ``X | None``), or None for a value."""
    kind = strip(annotation)
    return kind if isinstance(kind, type) and issubclass(kind, Section) else None


def mapped_section_type(annotation: Any) -> type[Section] | None:
    """The :class:`Section` of the values of a mapping field (``dict[HostName, X]``), or None."""
    kind = strip(annotation)
    if get_origin(kind) is not dict:
        return None
    return section_type(get_args(kind)[1])


def choices(annotation: Any) -> tuple[Any, ...] | None:
    """The values of a ``Literal`` type (possibly ``| None``), else None."""
    kind = strip(annotation)
    return get_args(kind) if get_origin(kind) is Literal else None


def type_at(root: type, path: tuple[str | int, ...]) -> Any:
    """The declared type of the value at ``path`` (keys and list indexes) under ``root``, or
    None where nothing is declared."""
    kind: Any = root
    for part in path:
        kind = _inner(kind, part)
        if kind is None:
            return None
    return kind


def known_keys(root: type, path: tuple[str | int, ...]) -> tuple[str, ...]:
    """The keys the mapping at ``path`` under ``root`` may hold (a section, a dataclass)."""
    kind = strip(type_at(root, path))
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return tuple(name for name, _ in _public_fields(kind))
    if dataclasses.is_dataclass(kind):
        return tuple(field.name for field in dataclasses.fields(kind))
    return ()


def _public_fields(section: type[BaseModel]) -> Iterator[tuple[str, Any]]:
    for name, field in section.model_fields.items():
        if _is_key(field):
            yield name, field


def _is_key(field: Any) -> bool:
    """Whether a field may be written in the file (a secret only where it may be inline)."""
    source = next((item for item in field.metadata if isinstance(item, SecretFrom)), None)
    return source is None or source.inline


def _inner(kind: Any, part: str | int) -> Any:
    kind = strip(kind)
    if get_origin(kind) is dict:  # any key: the values' type
        return get_args(kind)[1]
    if isinstance(part, int):
        args = [arg for arg in get_args(kind) if arg is not Ellipsis]
        return args[0] if args else None
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        field = kind.model_fields.get(part)
        return None if field is None else field.annotation
    if dataclasses.is_dataclass(kind):
        return typing.get_type_hints(kind).get(part)
    return None


def strip(kind: Any) -> Any:
    """``X`` of ``Annotated[X, ...]`` and ``X | None``."""
    while True:
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        elif get_origin(kind) in (typing.Union, types.UnionType):
            members = [arg for arg in get_args(kind) if arg is not type(None)]
            if len(members) != 1:
                return kind
            kind = members[0]
        else:
            return kind
