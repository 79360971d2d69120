"""The exporter's configuration: YAML (or an existing Neat ``neat.conf``), flags and environment.

Every key has a default, so ``load_config(None, overrides=...)`` runs from flags alone. Values
are checked here, once, and a mistake raises :class:`ConfigError` naming the dotted key and the
reason. Secrets (global manager credentials, bridge token and password) are read from files or
environment variables, never printed: :func:`effective_config` redacts them.

    config = load_config("config.yml", overrides={"interval": 5})
    config.source.libvirt.uri, config.algorithms.overload.name, config.global_manager.password
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neat_exporter.config_files import parse_yaml, read_config_file
from neat_exporter.errors import ConfigError, InputError, ParameterError
from neat_exporter.identifiers import check_host_name
from neat_exporter.parsing import parse_listen_address
from neat_exporter.vocabulary import ALGORITHM_KINDS, AlgorithmConfig, AlgorithmSet

SOURCE_TYPES = ("libvirt", "directory", "replay")
GLOBAL_MANAGER_MODES = ("off", "dry_run", "on")
WATCHER_MODES = ("off", "on")
LOG_LEVELS = ("debug", "info", "warning", "error")

REDACTED = "<redacted>"
UNSET = "<unset>"

# Environment variables that win over the secret files.
ENV_GLOBAL_MANAGER_USERNAME = "NEAT_GLOBAL_MANAGER_USERNAME"
ENV_GLOBAL_MANAGER_PASSWORD = "NEAT_GLOBAL_MANAGER_PASSWORD"
ENV_BRIDGE_TOKEN = "NEAT_BRIDGE_TOKEN"
ENV_BRIDGE_PASSWORD = "NEAT_BRIDGE_PASSWORD"

# Neat's defaults (neat.conf as shipped).
DEFAULT_ALGORITHMS = {
    "underload": {"name": "last_n_average_threshold", "params": {"threshold": 0.5, "n": 2}},
    "overload": {
        "name": "mhod",
        "params": {
            "state_config": [0.8],
            "otf": 0.1,
            "window_sizes": [30, 40, 50, 60, 70, 80, 90, 100],
            "bruteforce_step": 0.5,
            "learning_steps": 10,
        },
    },
    "vm_selection": {"name": "minimum_migration_time_max_cpu", "params": {"last_n": 2}},
}


# --- value checks: (dotted key, value) -> cleaned value, ConfigError otherwise ---------------

Check = Callable[[str, Any], Any]


def _number(low: float | None = None, *, positive: bool = False, high: float | None = None):
    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(key, f"must be finite, got {value!r}")
        if positive and value <= 0:
            raise ConfigError(key, f"must be greater than 0, got {value!r}")
        if low is not None and value < low:
            raise ConfigError(key, f"must be at least {low}, got {value!r}")
        if high is not None and value > high:
            raise ConfigError(key, f"must be at most {high}, got {value!r}")
        return value

    return check


def _integer(low: int = 0):
    def check(key: str, value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer, got {value!r}")
        if value < low:
            raise ConfigError(key, f"must be at least {low}, got {value!r}")
        return value

    return check


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"must be a non-empty string, got {value!r}")
    return value


# What YAML 1.1 (PyYAML) reads as a boolean when unquoted: `mode: on` arrives as True.
_YAML_BOOLEAN_WORDS = {True: ("on", "yes", "true", "y"), False: ("off", "no", "false", "n")}


def _host_name(key: str, value: Any) -> str:
    try:
        return check_host_name(_string(key, value))
    except InputError as error:
        raise ConfigError(key, str(error)) from None


def _choice(*choices: str):
    def check(key: str, value: Any) -> str:
        if isinstance(value, bool):
            meant = next((c for c in choices if c in _YAML_BOOLEAN_WORDS[value]), None)
            if meant is not None:
                name = key.rpartition(".")[2]
                raise ConfigError(
                    key,
                    f"must be one of {', '.join(choices)}, got the boolean {str(value).lower()}: "
                    "YAML reads unquoted on/off/yes/no as booleans, so quote it: "
                    f'{name}: "{meant}"',
                )
        if value not in choices:
            raise ConfigError(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    return check


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")
    return value


def _listen(key: str, value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = f":{value}"
    parse_listen_address(_string(key, value), key)
    return value


def _url(key: str, value: Any) -> str:
    if not _string(key, value).startswith(("http://", "https://")):
        raise ConfigError(key, f"must be an http:// or https:// URL, got {value!r}")
    return value


def _optional(check: Check) -> Check:
    def optional(key: str, value: Any) -> Any:
        return None if value is None else check(key, value)

    return optional


@dataclass(frozen=True)
class _Key:
    default: Any
    check: Check


# Every configuration key, with its default and its check. Sections are nested dicts; the
# ``algorithms`` section is checked by building the algorithms.
SCHEMA: dict[str, Any] = {
    "host": _Key(None, _optional(_host_name)),
    "listen": _Key(":9840", _listen),
    "web_config_file": _Key(None, _optional(_string)),
    "log_level": _Key("info", _choice(*LOG_LEVELS)),
    "interval": _Key(300, _number(positive=True)),
    "time_step": _Key(None, _optional(_number(positive=True))),
    "history_length": _Key(100, _integer(1)),
    "history_dir": _Key(None, _optional(_string)),
    "host_cpu_usable_by_vms": _Key(1.0, _number(positive=True, high=1.0)),
    "network_migration_bandwidth": _Key(10, _number(positive=True)),
    "ceilometer_series": _Key(False, _boolean),
    "source": {
        "type": _Key("libvirt", _choice(*SOURCE_TYPES)),
        "libvirt": {
            "uri": _Key("qemu:///system", _string),
            "timeout": _Key(5, _number(positive=True)),
        },
        "directory": {
            "path": _Key("/var/lib/neat", _string),
            "host_cpu_mhz": _Key(None, _optional(_number(positive=True))),
            "vm_ram_mb": _Key(1024, _number(positive=True)),
        },
        "replay": {
            "traces": _Key(None, _optional(_string)),
            "vms": _Key(8, _integer(1)),
            "seed": _Key(0, _integer(0)),
            "host_cpu_mhz": _Key(12000, _number(positive=True)),
            "cpus": _Key(4, _integer(1)),
            "vm_ram_mb": _Key(1024, _number(positive=True)),
        },
    },
    "algorithms": None,  # checked by _algorithms
    "global_manager": {
        "mode": _Key("off", _choice(*GLOBAL_MANAGER_MODES)),
        "url": _Key("http://controller:60080/", _url),
        "username_file": _Key(None, _optional(_string)),
        "password_file": _Key(None, _optional(_string)),
        "timeout": _Key(10, _number(positive=True)),
        "retries": _Key(3, _integer(0)),
        "cooldown": _Key(600, _number(low=0)),
    },
    "bridge": {
        "listen": _Key(":9841", _listen),
        "bearer_token_file": _Key(None, _optional(_string)),
        "basic_auth_username": _Key(None, _optional(_string)),
        "basic_auth_password_file": _Key(None, _optional(_string)),
        "queue_size": _Key(100, _integer(1)),
        "dedup_ttl": _Key(3600, _number(low=0)),
        "max_payload_bytes": _Key(1048576, _integer(1)),
    },
    "watcher": {
        "mode": _Key("off", _choice(*WATCHER_MODES)),
        "cloud": _Key(None, _optional(_string)),
        "clouds_yaml": _Key(None, _optional(_string)),
        "region_name": _Key(None, _optional(_string)),
        "interface": _Key("public", _choice("public", "internal", "admin")),
        "url": _Key(None, _optional(_url)),
        "timeout": _Key(10, _number(positive=True)),
        "retries": _Key(3, _integer(0)),
        "backoff": _Key(0.5, _number(low=0)),
        "audits": _Key([], lambda key, value: _audits(key, value)),
    },
}


# --- the parsed configuration ----------------------------------------------------------------


@dataclass(frozen=True)
class LibvirtSourceConfig:
    uri: str
    timeout: float


@dataclass(frozen=True)
class DirectorySourceConfig:
    path: str
    host_cpu_mhz: float | None
    """Capacity (cores × MHz); None = ask libvirt (``source.libvirt.uri``)."""
    vm_ram_mb: float
    """RAM assumed for every VM when libvirt is not asked."""


@dataclass(frozen=True)
class ReplaySourceConfig:
    traces: str | None
    """PlanetLab folder or tar archive; None = the built-in synthetic workload."""
    vms: int
    seed: int
    host_cpu_mhz: float
    cpus: int
    vm_ram_mb: float


@dataclass(frozen=True)
class SourceConfig:
    type: str
    libvirt: LibvirtSourceConfig
    directory: DirectorySourceConfig
    replay: ReplaySourceConfig


@dataclass(frozen=True)
class GlobalManagerConfig:
    mode: str
    url: str
    username_file: str | None
    password_file: str | None
    timeout: float
    retries: int
    cooldown: float
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class BridgeConfig:
    listen: str
    bearer_token_file: str | None
    basic_auth_username: str | None
    basic_auth_password_file: str | None
    queue_size: int
    dedup_ttl: float
    max_payload_bytes: int
    bearer_token: str | None = field(default=None, repr=False)
    basic_auth_password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class WatcherConfig:
    """The bridge's OpenStack Watcher trigger; credentials come from clouds.yaml or ``OS_*``."""

    mode: str
    cloud: str | None
    clouds_yaml: str | None
    region_name: str | None
    interface: str
    url: str | None
    timeout: float
    retries: int
    backoff: float
    audits: Mapping[str, str]
    """Alert name or ``neat_reason`` value -> the UUID or name of a Watcher EVENT audit."""


def _audits(key: str, value: Any) -> dict[str, str]:
    """``[{match: alert name or neat_reason, audit: UUID or name}, ...]`` as a mapping."""
    if not isinstance(value, list):
        raise ConfigError(key, f"must be a list of {{match, audit}} entries, got {value!r:.60}")
    audits: dict[str, str] = {}
    for index, entry in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(entry, Mapping) or set(entry) != {"match", "audit"}:
            raise ConfigError(
                where, f"must have exactly the keys match and audit, got {entry!r:.60}"
            )
        match = _string(f"{where}.match", entry["match"])
        if match in audits:
            raise ConfigError(f"{where}.match", f"{match!r} is mapped twice")
        audits[match] = _string(f"{where}.audit", entry["audit"])
    return audits


@dataclass(frozen=True)
class Config:
    host: str | None
    """The name the global manager knows; None = ask the source (libvirt), else the hostname."""
    listen: str
    web_config_file: str | None
    log_level: str
    interval: float
    time_step: float
    history_length: int
    history_dir: str | None
    host_cpu_usable_by_vms: float
    network_migration_bandwidth: float
    source: SourceConfig
    algorithms: AlgorithmSet
    global_manager: GlobalManagerConfig
    bridge: BridgeConfig
    watcher: WatcherConfig
    origin: str = "<defaults>"
    """Where the configuration came from (a path, ``<flags>``, ...), for messages."""
    ceilometer_series: bool = False
    """Also publish ceilometer_cpu and ceilometer_memory_usage for OpenStack Watcher."""


# --- loading -----------------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike | None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read ``path`` (YAML, or Neat's INI ``neat.conf``), apply ``overrides`` (dotted keys, e.g.
    from flags; None values are ignored) and validate. ``path`` None = defaults and overrides."""
    secrets: dict[str, str] = {}
    if path is None:
        raw: dict[str, Any] = {}
        origin = "<flags>"
    else:
        origin = str(path)
        text = read_config_file(path, "config")
        if looks_like_neat_conf(text):
            from neat_exporter.config_neat import parse_neat_conf

            raw, secrets = parse_neat_conf(text, origin)
        else:
            raw = _parse_yaml(text, origin)
    return _build(_apply_overrides(raw, overrides or {}), origin, environ, secrets)


def config_from_mapping(
    mapping: Mapping[str, Any],
    origin: str = "<mapping>",
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate a configuration given as a dict (the YAML's shape)."""
    if not isinstance(mapping, Mapping):
        raise ConfigError("config", f"must be a mapping of keys, got {type(mapping).__name__}")
    return _build(_apply_overrides(mapping, overrides or {}), origin, environ, {})


def looks_like_neat_conf(text: str) -> bool:
    """An INI file (first meaningful line is a ``[section]``) rather than YAML."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", ";")):
            return stripped.startswith("[") and stripped.endswith("]") and "," not in stripped
    return False


def _parse_yaml(text: str, origin: str) -> dict[str, Any]:
    raw = parse_yaml(text, origin, "config")
    if raw is None:
        return {}
    if not isinstance(raw, dict):  # its type only: the file may be a secret given by mistake
        raise ConfigError(
            "config", f"{origin}: must be a mapping of keys, got {type(raw).__name__}"
        )
    return raw


def _apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = _deep_copy(raw)
    for dotted, value in overrides.items():
        if value is None:
            continue
        section = merged
        *parents, last = dotted.split(".")
        for depth, name in enumerate(parents):
            child = section.setdefault(name, {})
            if not isinstance(child, dict):
                raise ConfigError(".".join(parents[: depth + 1]), "must be a mapping")
            section = child
        section[last] = value
    return merged


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _deep_copy(item) for key, item in value.items()}
    return value


def _check_section(raw: Any, schema: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Apply defaults and checks; unknown keys are errors (a typo must not pass silently)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(prefix.rstrip(".") or "config", f"must be a mapping, got {raw!r:.60}")
    for name in raw:
        if name not in schema:
            known = ", ".join(schema)
            raise ConfigError(f"{prefix}{name}", f"unknown key (known here: {known})")
    values: dict[str, Any] = {}
    for name, spec in schema.items():
        key = f"{prefix}{name}"
        if isinstance(spec, _Key):
            values[name] = spec.check(key, raw[name]) if name in raw else spec.default
        elif isinstance(spec, dict):
            values[name] = _check_section(raw.get(name), spec, f"{key}.")
        else:
            values[name] = raw.get(name)
    return values


def _algorithms(raw: Any, time_step: float) -> AlgorithmSet:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError("algorithms", f"must be a mapping, got {raw!r:.60}")
    for kind in raw:
        if kind not in ALGORITHM_KINDS:
            raise ConfigError(
                f"algorithms.{kind}", f"unknown key (known here: {', '.join(ALGORITHM_KINDS)})"
            )
    chosen = {}
    for kind in ALGORITHM_KINDS:
        key = f"algorithms.{kind}"
        entry = raw.get(kind)
        if entry is None:
            entry = DEFAULT_ALGORITHMS[kind]
        if not isinstance(entry, Mapping):
            raise ConfigError(key, f"must be a mapping with name and params, got {entry!r:.60}")
        unknown = sorted(set(entry) - {"name", "params"})
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}", "unknown key (known here: name, params)")
        name = _string(f"{key}.name", entry.get("name"))
        params = entry.get("params") or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"{key}.params", f"must be a mapping, got {params!r:.60}")
        algorithm = AlgorithmConfig(name=name, params=dict(params))
        try:
            algorithm.validate(kind, time_step)
        except ParameterError as error:
            if error.parameter:
                raise ConfigError(f"{key}.params.{error.parameter}", error.reason) from None
            raise ConfigError(f"{key}.name", f"{name!r}: {error.reason}") from None
        chosen[kind] = algorithm
    return AlgorithmSet(**chosen)


def _secret(
    file_key: str, path: str | None, env_var: str, environ: Mapping[str, str]
) -> str | None:
    """The environment variable wins over the file; the value never appears in messages."""
    if environ.get(env_var):
        return environ[env_var].strip()
    if path is None:
        return None
    value = read_config_file(path, file_key).strip()
    if not value:
        raise ConfigError(file_key, f"{path} is empty")
    return value


def _build(
    raw: Mapping[str, Any],
    origin: str,
    environ: Mapping[str, str] | None,
    secrets: Mapping[str, str],
) -> Config:
    environ = os.environ if environ is None else environ
    values = _check_section(raw, SCHEMA, "")
    if values["time_step"] is None:
        values["time_step"] = values["interval"]
    source = values["source"]
    manager = values["global_manager"]
    username = _secret(
        "global_manager.username_file",
        manager["username_file"],
        ENV_GLOBAL_MANAGER_USERNAME,
        environ,
    ) or secrets.get("username")
    password = _secret(
        "global_manager.password_file",
        manager["password_file"],
        ENV_GLOBAL_MANAGER_PASSWORD,
        environ,
    ) or secrets.get("password")
    if manager["mode"] == "on":
        if username is None:
            raise ConfigError(
                "global_manager.username_file",
                f"mode is on but no username: set this file or {ENV_GLOBAL_MANAGER_USERNAME}",
            )
        if password is None:
            raise ConfigError(
                "global_manager.password_file",
                f"mode is on but no password: set this file or {ENV_GLOBAL_MANAGER_PASSWORD}",
            )
    bridge = values["bridge"]
    bearer_token = _secret(
        "bridge.bearer_token_file", bridge["bearer_token_file"], ENV_BRIDGE_TOKEN, environ
    )
    basic_auth_password = _secret(
        "bridge.basic_auth_password_file",
        bridge["basic_auth_password_file"],
        ENV_BRIDGE_PASSWORD,
        environ,
    )
    if (bridge["basic_auth_username"] is None) != (basic_auth_password is None):
        raise ConfigError(
            "bridge.basic_auth_username",
            "basic auth needs both a username and a password "
            f"(bridge.basic_auth_password_file or {ENV_BRIDGE_PASSWORD})",
        )
    history_dir = values["history_dir"]
    if (
        source["type"] == "directory"
        and history_dir is not None
        and Path(history_dir).resolve() == Path(source["directory"]["path"]).resolve()
    ):
        raise ConfigError(
            "history_dir", "must not be source.directory.path: Neat's data collector owns it"
        )
    if source["type"] == "replay" and source["replay"]["traces"] is not None:
        traces = source["replay"]["traces"]
        if not Path(traces).exists():
            raise ConfigError("source.replay.traces", f"{traces}: no such file or folder")
    return Config(
        host=values["host"],
        listen=values["listen"],
        web_config_file=values["web_config_file"],
        log_level=values["log_level"],
        interval=values["interval"],
        time_step=values["time_step"],
        history_length=values["history_length"],
        history_dir=history_dir,
        host_cpu_usable_by_vms=values["host_cpu_usable_by_vms"],
        network_migration_bandwidth=values["network_migration_bandwidth"],
        ceilometer_series=values["ceilometer_series"],
        source=SourceConfig(
            type=source["type"],
            libvirt=LibvirtSourceConfig(**source["libvirt"]),
            directory=DirectorySourceConfig(**source["directory"]),
            replay=ReplaySourceConfig(**source["replay"]),
        ),
        algorithms=_algorithms(values["algorithms"], values["time_step"]),
        global_manager=GlobalManagerConfig(**manager, username=username, password=password),
        bridge=BridgeConfig(
            **bridge, bearer_token=bearer_token, basic_auth_password=basic_auth_password
        ),
        watcher=_watcher(values["watcher"]),
        origin=origin,
    )


def _watcher(values: dict[str, Any]) -> WatcherConfig:
    if isinstance(values["audits"], list):  # the default, not checked
        values["audits"] = _audits("watcher.audits", values["audits"])
    if values["mode"] == "on" and not values["audits"]:
        raise ConfigError("watcher.audits", "mode is on but no alert or reason maps to an audit")
    if values["clouds_yaml"] is not None and not Path(values["clouds_yaml"]).is_file():
        raise ConfigError("watcher.clouds_yaml", f"{values['clouds_yaml']}: no such file")
    return WatcherConfig(**values)


# --- printing ----------------------------------------------------------------------------------


def _redact(value: str | None) -> str:
    return UNSET if value is None else REDACTED


def effective_config(config: Config) -> dict[str, Any]:
    """Every key with its effective value, secrets replaced by ``<redacted>`` or ``<unset>``."""

    def section(obj: Any, schema: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, spec in schema.items():
            value = getattr(obj, name)
            out[name] = section(value, spec) if isinstance(spec, dict) else value
        return out

    out = section(config, {name: spec for name, spec in SCHEMA.items() if spec is not None})
    out["algorithms"] = {
        kind: {
            "name": getattr(config.algorithms, kind).name,
            "params": _plain(getattr(config.algorithms, kind).params),
        }
        for kind in ALGORITHM_KINDS
    }
    manager, bridge = config.global_manager, config.bridge
    out["global_manager"]["username"] = _redact(manager.username)
    out["global_manager"]["password"] = _redact(manager.password)
    out["bridge"]["bearer_token"] = _redact(bridge.bearer_token)
    out["bridge"]["basic_auth_password"] = _redact(bridge.basic_auth_password)
    # Keep SCHEMA's order (algorithms after source) for readability.
    return {name: out[name] for name in SCHEMA}


def _plain(value: Any) -> Any:
    """Params as plain YAML-friendly values (tuples become lists)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
