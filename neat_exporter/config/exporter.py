"""The configuration of the exporter (``run``) and of the bridge (``bridge``), which share one
file: YAML (or an existing Neat ``neat.conf``), flags and environment.

Every key is declared once below, with its default, its check and its flag. A mistake raises
:class:`ConfigError` naming the dotted key and the reason. Secrets (global manager credentials,
bridge token and password) are read from files or environment variables, never printed:
:func:`effective_config` redacts them.

    config = load_config("config.yml", overrides={"interval": 5})
    config.source.libvirt.uri, config.algorithms.overload.name, config.global_manager.password
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from neat_exporter.config.declare import (
    Boolean,
    Count,
    Flag,
    Fraction,
    HostName,
    HttpUrl,
    Listen,
    LogLevel,
    NonNegativeNumber,
    PositiveCount,
    PositiveNumber,
    SecretFrom,
    Section,
    Text,
    fail,
)
from neat_exporter.config.files import read_config_file
from neat_exporter.config.loading import apply_overrides, effective, parse_yaml_mapping, validate
from neat_exporter.errors import ConfigError, ParameterError
from neat_exporter.vocabulary import ALGORITHM_KINDS, AlgorithmSet

RUN = frozenset({"run"})
"""The flags of ``run`` (and of ``check-config``, which checks what ``run`` would use)."""
BRIDGE = frozenset({"bridge"})

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

SourceType = Literal["libvirt", "directory", "replay"]
GlobalManagerMode = Literal["off", "dry_run", "on"]


class LibvirtSourceConfig(Section):
    uri: Annotated[
        Text,
        Flag("--libvirt-uri", commands=RUN, metavar="URI"),
        Field(description="libvirt URI, opened read-only"),
    ] = "qemu:///system"
    timeout: PositiveNumber = 5


class DirectorySourceConfig(Section):
    path: Annotated[
        Text,
        Flag("--data-dir", commands=RUN, metavar="DIR"),
        Field(description="Neat's local_data_directory for --source directory"),
    ] = "/var/lib/neat"
    host_cpu_mhz: PositiveNumber | None = None
    """Capacity (cores × MHz); None = ask libvirt (``source.libvirt.uri``)."""
    vm_ram_mb: PositiveNumber = 1024
    """RAM assumed for every VM when libvirt is not asked."""


class ReplaySourceConfig(Section):
    traces: Annotated[
        Text | None,
        Flag("--traces", commands=RUN, metavar="PATH"),
        Field(description="PlanetLab traces for --source replay"),
    ] = None
    """PlanetLab folder or tar archive; None = the built-in synthetic workload."""
    vms: PositiveCount = 8
    seed: Count = 0
    host_cpu_mhz: PositiveNumber = 12000
    cpus: PositiveCount = 4
    vm_ram_mb: PositiveNumber = 1024


class SourceConfig(Section):
    type: Annotated[
        SourceType,
        Flag("--source", commands=RUN),
        Field(description="where samples come from"),
    ] = "libvirt"
    libvirt: LibvirtSourceConfig = Field(default_factory=LibvirtSourceConfig)
    directory: DirectorySourceConfig = Field(default_factory=DirectorySourceConfig)
    replay: ReplaySourceConfig = Field(default_factory=ReplaySourceConfig)


class NeatCredentials(Section):
    """Neat's os_admin_user and os_admin_password, which the local managers send (as SHA-1
    digests) and the global manager expects; read from files or the environment."""

    username_file: Text | None = None
    password_file: Text | None = None
    username: Annotated[
        SecretStr | None, SecretFrom("username_file", ENV_GLOBAL_MANAGER_USERNAME)
    ] = None
    password: Annotated[
        SecretStr | None, SecretFrom("password_file", ENV_GLOBAL_MANAGER_PASSWORD)
    ] = None


class GlobalManagerConfig(NeatCredentials):
    """Where and how migration requests go (the exporter's and the bridge's)."""

    mode: Annotated[
        GlobalManagerMode,
        Flag("--global-manager-mode", commands=RUN | BRIDGE),
        Field(description="send migration requests: off, dry_run (log, send nothing) or on"),
    ] = "off"
    url: Annotated[
        HttpUrl,
        Flag("--global-manager-url", commands=RUN | BRIDGE, metavar="URL"),
        Field(description="Neat's global manager"),
    ] = "http://controller:60080/"
    timeout: PositiveNumber = 10
    retries: Count = 3
    cooldown: NonNegativeNumber = 600


class BridgeConfig(Section):
    listen: Annotated[
        Listen,
        Flag("--listen", "--web.listen-address", commands=BRIDGE, metavar="ADDR"),
        Field(description="address to serve on"),
    ] = ":9841"
    bearer_token_file: Text | None = None
    basic_auth_username: Text | None = None
    basic_auth_password_file: Text | None = None
    queue_size: PositiveCount = 100
    dedup_ttl: NonNegativeNumber = 3600
    max_payload_bytes: PositiveCount = 1048576
    bearer_token: Annotated[SecretStr | None, SecretFrom("bearer_token_file", ENV_BRIDGE_TOKEN)] = (
        None
    )
    basic_auth_password: Annotated[
        SecretStr | None, SecretFrom("basic_auth_password_file", ENV_BRIDGE_PASSWORD)
    ] = None


class WatcherAudit(Section):
    """Which Watcher EVENT audit (UUID or name) an alert name or ``neat_reason`` starts."""

    match: Text
    audit: Text

    @model_validator(mode="before")
    @classmethod
    def _both_keys(cls, value: Any) -> Any:
        if not isinstance(value, Mapping) or set(value) != {"match", "audit"}:
            fail(f"must have exactly the keys match and audit, got {value!r:.60}")
        return value


def _list_of_audits(value: Any) -> Any:
    if not isinstance(value, list | tuple):
        fail(f"must be a list of {{match, audit}} entries, got {value!r:.60}")
    return tuple(value)


def _each_match_once(audits: tuple[WatcherAudit, ...]) -> tuple[WatcherAudit, ...]:
    seen = set()
    for entry in audits:
        if entry.match in seen:
            fail(f"{entry.match!r} is mapped twice")
        seen.add(entry.match)
    return audits


class WatcherConfig(Section):
    """The bridge's OpenStack Watcher trigger; credentials come from clouds.yaml or ``OS_*``."""

    mode: Literal["off", "on"] = "off"
    cloud: Text | None = None
    clouds_yaml: Text | None = None
    region_name: Text | None = None
    interface: Literal["public", "internal", "admin"] = "public"
    url: HttpUrl | None = None
    timeout: PositiveNumber = 10
    retries: Count = 3
    backoff: NonNegativeNumber = 0.5
    audits: Annotated[
        tuple[WatcherAudit, ...],
        BeforeValidator(_list_of_audits),
        AfterValidator(_each_match_once),
    ] = ()

    @property
    def audit_by_match(self) -> dict[str, str]:
        """Alert name or ``neat_reason`` value -> the audit it starts."""
        return {entry.match: entry.audit for entry in self.audits}


def _default_algorithms(value: Any) -> Any:
    """Neat's algorithm for each kind not given; ``params: null`` is no parameters."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        return value
    chosen = dict(value)
    for kind in ALGORITHM_KINDS:
        entry = chosen.get(kind)
        if entry is None:
            chosen[kind] = DEFAULT_ALGORITHMS[kind]
        elif isinstance(entry, Mapping) and "params" in entry and entry["params"] is None:
            chosen[kind] = {**entry, "params": {}}
    return chosen


class Config(Section):
    """The exporter's and the bridge's configuration file."""

    host: Annotated[
        HostName | None,
        Flag("--host", commands=RUN),
        Field(description="host name the global manager knows"),
    ] = None
    """The name the global manager knows; None = ask the source (libvirt), else the hostname."""
    listen: Annotated[
        Listen,
        Flag("--listen", "--web.listen-address", commands=RUN, metavar="ADDR"),
        Field(description="HTTP address, HOST:PORT or :PORT"),
    ] = ":9840"
    web_config_file: Annotated[
        Text | None,
        Flag("--web.config.file", commands=RUN | BRIDGE, metavar="FILE"),
        Field(description="exporter-toolkit web config: TLS and basic auth"),
    ] = None
    log_level: LogLevel = "info"
    interval: Annotated[
        PositiveNumber,
        Flag("--interval", commands=RUN, metavar="SECONDS"),
        Field(description="seconds between decision cycles"),
    ] = 300
    time_step: Annotated[
        PositiveNumber | None,
        Flag("--time-step", commands=RUN, metavar="SECONDS"),
        Field(description="seconds between samples as the algorithms see them; default: interval"),
    ] = None
    """Seconds between samples as the algorithms see them; the interval when not given."""
    history_length: Annotated[
        PositiveCount,
        Flag("--history-length", commands=RUN, metavar="N"),
        Field(description="samples kept per VM"),
    ] = 100
    history_dir: Annotated[
        Text | None,
        Flag("--history-dir", commands=RUN, metavar="DIR"),
        Field(description="where the history is persisted, in Neat's format"),
    ] = None
    host_cpu_usable_by_vms: Fraction = 1.0
    network_migration_bandwidth: PositiveNumber = 10
    ceilometer_series: Boolean = False
    """Also publish ceilometer_cpu and ceilometer_memory_usage for OpenStack Watcher."""
    source: SourceConfig = Field(default_factory=SourceConfig)
    algorithms: Annotated[AlgorithmSet, BeforeValidator(_default_algorithms)] = Field(
        default_factory=dict
    )
    global_manager: GlobalManagerConfig = Field(default_factory=GlobalManagerConfig)
    bridge: BridgeConfig = Field(default_factory=BridgeConfig)
    watcher: WatcherConfig = Field(default_factory=WatcherConfig)

    _origin: str = PrivateAttr("<defaults>")

    @property
    def origin(self) -> str:
        """Where the configuration came from (a path, ``<flags>``, ...), for messages."""
        return self._origin

    @field_validator("time_step")
    @classmethod
    def _time_step_follows_the_interval(cls, value: float | None, info: ValidationInfo) -> Any:
        return info.data.get("interval") if value is None else value


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
            from neat_exporter.config.neat_conf import parse_neat_conf

            raw, plain_secrets = parse_neat_conf(text, origin)
            secrets = {f"global_manager.{name}": value for name, value in plain_secrets.items()}
        else:
            raw = parse_yaml_mapping(text, origin)
    return _build(apply_overrides(raw, overrides or {}), origin, environ, secrets)


def config_from_mapping(
    mapping: Mapping[str, Any],
    origin: str = "<mapping>",
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Validate a configuration given as a dict (the YAML's shape)."""
    if not isinstance(mapping, Mapping):
        raise ConfigError("config", f"must be a mapping of keys, got {type(mapping).__name__}")
    return _build(apply_overrides(mapping, overrides or {}), origin, environ, {})


def looks_like_neat_conf(text: str) -> bool:
    """An INI file (first meaningful line is a ``[section]``) rather than YAML."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", ";")):
            return stripped.startswith("[") and stripped.endswith("]") and "," not in stripped
    return False


def effective_config(config: Config) -> dict[str, Any]:
    """Every key with its effective value, secrets replaced by ``<redacted>`` or ``<unset>``."""
    return effective(config)


def _build(
    raw: Mapping[str, Any],
    origin: str,
    environ: Mapping[str, str] | None,
    secrets: Mapping[str, str],
) -> Config:
    config = validate(Config, raw, environ, secrets)
    _check_algorithms(config)
    _check_together(config)
    config._origin = origin
    return config


def _check_algorithms(config: Config) -> None:
    """Build each algorithm once: a bad name or parameter fails here, not mid-run."""
    for kind in ALGORITHM_KINDS:
        key = f"algorithms.{kind}"
        algorithm = getattr(config.algorithms, kind)
        try:
            algorithm.validate(kind, config.time_step)
        except ParameterError as error:
            if error.parameter:
                raise ConfigError(f"{key}.params.{error.parameter}", error.reason) from None
            raise ConfigError(f"{key}.name", f"{algorithm.name!r}: {error.reason}") from None


def _check_together(config: Config) -> None:
    """What one key allows depends on another, or on the files it names."""
    manager, bridge, source = config.global_manager, config.bridge, config.source
    if manager.mode == "on":
        if manager.username is None:
            raise ConfigError(
                "global_manager.username_file",
                f"mode is on but no username: set this file or {ENV_GLOBAL_MANAGER_USERNAME}",
            )
        if manager.password is None:
            raise ConfigError(
                "global_manager.password_file",
                f"mode is on but no password: set this file or {ENV_GLOBAL_MANAGER_PASSWORD}",
            )
    if (bridge.basic_auth_username is None) != (bridge.basic_auth_password is None):
        raise ConfigError(
            "bridge.basic_auth_username",
            "basic auth needs both a username and a password "
            f"(bridge.basic_auth_password_file or {ENV_BRIDGE_PASSWORD})",
        )
    if (
        source.type == "directory"
        and config.history_dir is not None
        and Path(config.history_dir).resolve() == Path(source.directory.path).resolve()
    ):
        raise ConfigError(
            "history_dir", "must not be source.directory.path: Neat's data collector owns it"
        )
    traces = source.replay.traces
    if source.type == "replay" and traces is not None and not Path(traces).exists():
        raise ConfigError("source.replay.traces", f"{traces}: no such file or folder")
    watcher = config.watcher
    if watcher.mode == "on" and not watcher.audits:
        raise ConfigError("watcher.audits", "mode is on but no alert or reason maps to an audit")
    if watcher.clouds_yaml is not None and not Path(watcher.clouds_yaml).is_file():
        raise ConfigError("watcher.clouds_yaml", f"{watcher.clouds_yaml}: no such file")
