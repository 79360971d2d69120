"""The global manager's configuration: YAML plus flags, checked once, secrets from files or the
environment (``NEAT_GLOBAL_MANAGER_USERNAME`` / ``NEAT_GLOBAL_MANAGER_PASSWORD``), never shown.

Every key has a default, so flags alone suffice. A mistake raises ConfigError naming the dotted
key. The keys are documented in docs/global-manager.md and global-manager.example.yml.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from neat_exporter.algorithms import registry
from neat_exporter.config import (
    ENV_GLOBAL_MANAGER_PASSWORD,
    ENV_GLOBAL_MANAGER_USERNAME,
    LOG_LEVELS,
    REDACTED,
    UNSET,
    _apply_overrides,
    _boolean,
    _check_section,
    _choice,
    _integer,
    _Key,
    _listen,
    _number,
    _optional,
    _parse_yaml,
    _plain,
    _secret,
    _string,
    _url,
)
from neat_exporter.config_files import read_config_file
from neat_exporter.errors import ConfigError, ParameterError

EXECUTORS = ("dry_run", "libvirt", "nova")
POWER_BACKENDS = ("none", "redfish", "ipmi", "command")


def _patterns(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(key, f"must be a list of non-empty patterns, got {value!r:.60}")
    return tuple(value)


def _block_migration(key: str, value: Any) -> str | bool:
    if value == "auto" or isinstance(value, bool):
        return value
    raise ConfigError(key, f"must be auto, true or false, got {value!r}")


def _uri_template(key: str, value: Any) -> str:
    if "{host}" not in _string(key, value):
        raise ConfigError(key, f"must contain {{host}}, got {value!r}")
    try:
        value.format(host="x")
    except (KeyError, IndexError, ValueError) as error:
        raise ConfigError(key, f"not a valid template: {error}") from None
    return value


def _mapping(key: str, value: Any) -> dict:
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"must be a mapping, got {value!r:.60}")
    return dict(value)


SCHEMA: dict[str, Any] = {
    "listen": _Key(":60080", _listen),
    "web_config_file": _Key(None, _optional(_string)),
    "log_level": _Key("info", _choice(*LOG_LEVELS)),
    "username_file": _Key(None, _optional(_string)),
    "password_file": _Key(None, _optional(_string)),
    "state_file": _Key(None, _optional(_string)),
    "audit_log": _Key(None, _optional(_string)),
    "prometheus": {
        "url": _Key("http://localhost:9090", _url),
        "timeout": _Key(10, _number(positive=True)),
        "stale_after": _Key(900, _number(positive=True)),
        "cpu_window": _Key(1800, _number(positive=True)),
        "host_lookback": _Key(3600, _number(positive=True)),
    },
    "executor": {
        "type": _Key("dry_run", _choice(*EXECUTORS)),
        "libvirt": {
            "uri_template": _Key("qemu+ssh://{host}/system", _uri_template),
            "migration_uri_template": _Key(None, _optional(_uri_template)),
            "unsafe": _Key(False, _boolean),
            "max_per_host": _Key(1, _integer(1)),
            "max_total": _Key(2, _integer(1)),
        },
        "nova": {
            "cloud": _Key(None, _optional(_string)),
            "clouds_yaml": _Key(None, _optional(_string)),
            "region_name": _Key(None, _optional(_string)),
            "block_migration": _Key("auto", _block_migration),
            "poll_interval": _Key(2, _number(positive=True)),
            "retries": _Key(1, _integer(0)),
            "abort_grace": _Key(60, _number(positive=True)),
        },
    },
    "placement": {
        "name": _Key("best_fit_decreasing", _string),
        "params": _Key({}, _mapping),
    },
    "policy": {
        "migration_timeout": _Key(600, _number(positive=True)),
        "cooldown": _Key(3600, _number(low=0)),
        "max_migrations_per_request": _Key(10, _integer(1)),
        "max_migrations_per_hour": _Key(60, _integer(1)),
        "vm_opt_out": _Key((), _patterns),
        "never_switch_off": _Key((), _patterns),
        "wait_for_migrations": _Key(False, _boolean),
        "parallel_migrations": _Key(2, _integer(1)),
    },
    "power": {
        "backend": _Key("none", _choice(*POWER_BACKENDS)),
    },
    "hosts": _Key({}, _mapping),
}


@dataclass(frozen=True)
class GlobalManagerSettings:
    """The checked configuration, as nested plain dicts per section plus the secrets."""

    values: Mapping[str, Any]
    origin: str
    username: str = field(repr=False, default="")
    password: str = field(repr=False, default="")

    def __getitem__(self, key: str) -> Any:
        """A value by dotted key: ``settings["policy.cooldown"]``."""
        value: Any = self.values
        for name in key.split("."):
            value = value[name]
        return value

    def placement(self) -> Any:
        """The placement algorithm (Neat's best_fit_decreasing by default, or a plug-in)."""
        return build_placement(self["placement.name"], self["placement.params"])


def build_placement(name: str, params: Mapping[str, Any]) -> Any:
    try:
        return registry.build("vm_placement", name, params)
    except ParameterError as error:
        if error.parameter:
            raise ConfigError(f"placement.params.{error.parameter}", error.reason) from None
        raise ConfigError("placement.name", f"{name!r}: {error.reason}") from None


def load_settings(
    path: str | os.PathLike | None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> GlobalManagerSettings:
    """Read ``path`` (YAML; None = defaults), apply ``overrides`` (dotted keys, None ignored)."""
    environ = os.environ if environ is None else environ
    raw = {} if path is None else _parse_yaml(read_config_file(path, "config"), str(path))
    origin = "<flags>" if path is None else str(path)
    values = _check_section(_apply_overrides(raw, overrides or {}), SCHEMA, "")
    build_placement(values["placement"]["name"], values["placement"]["params"])
    username = _secret(
        "username_file", values["username_file"], ENV_GLOBAL_MANAGER_USERNAME, environ
    )
    password = _secret(
        "password_file", values["password_file"], ENV_GLOBAL_MANAGER_PASSWORD, environ
    )
    if username is None:
        raise ConfigError(
            "username_file",
            f"no admin user: set this file or {ENV_GLOBAL_MANAGER_USERNAME} (the local managers "
            "send SHA-1 of Neat's os_admin_user)",
        )
    if password is None:
        raise ConfigError(
            "password_file", f"no admin password: set this file or {ENV_GLOBAL_MANAGER_PASSWORD}"
        )
    if values["power"]["backend"] != "none" and not values["hosts"]:
        raise ConfigError(
            "hosts", f"power.backend is {values['power']['backend']}: give each host's BMC here"
        )
    return GlobalManagerSettings(values, origin, username, password)


def effective_settings(settings: GlobalManagerSettings) -> dict[str, Any]:
    """Every key's value for printing, secrets redacted (the hosts' BMC sections too)."""

    out = _plain(settings.values)
    out["username"] = REDACTED if settings.username else UNSET
    out["password"] = REDACTED if settings.password else UNSET
    out["hosts"] = {name: _redact_secrets(entry) for name, entry in out["hosts"].items()}
    return out


def _redact_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: REDACTED
            if any(word in key for word in ("password", "secret", "token")) and "file" not in key
            else _redact_secrets(item)
            for key, item in value.items()
        }
    return value
