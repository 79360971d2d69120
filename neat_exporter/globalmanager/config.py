"""The global manager's configuration: YAML plus flags, checked once, secrets from files or the
environment (``NEAT_GLOBAL_MANAGER_USERNAME`` / ``NEAT_GLOBAL_MANAGER_PASSWORD``), never shown.

Every key has a default, so flags alone suffice. A mistake raises ConfigError naming the dotted
key. The keys are documented in docs/global-manager.md and global-manager.example.yml.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, PlainValidator, SecretStr, model_validator

from neat_exporter.algorithms import registry
from neat_exporter.config import (
    ENV_GLOBAL_MANAGER_PASSWORD,
    ENV_GLOBAL_MANAGER_USERNAME,
    NeatCredentials,
)
from neat_exporter.config.declare import (
    Boolean,
    Count,
    Flag,
    HttpUrl,
    Listen,
    LogLevel,
    NonNegativeNumber,
    Patterns,
    PositiveCount,
    PositiveNumber,
    Section,
    Text,
    fail,
)
from neat_exporter.config.files import read_config_file
from neat_exporter.config.loading import (
    apply_overrides,
    effective,
    parse_yaml_mapping,
    validate,
)
from neat_exporter.errors import ConfigError, ParameterError
from neat_exporter.globalmanager.power.config import (
    Backend,
    HostPower,
    PowerHostName,
    chosen_sections,
)

GLOBAL_MANAGER = frozenset({"global-manager"})
"""The flags of the ``global-manager`` command."""
Executor = Literal["dry_run", "libvirt", "nova"]
PowerBackend = Literal["none", Backend]


def _host_template(value: str) -> str:
    if "{host}" not in value:
        fail(f"must contain {{host}}, got {value!r:.80}")
    try:
        value.format(host="x")
    except (KeyError, IndexError, ValueError, AttributeError) as error:
        fail(f"not a valid template: {error}")
    return value


UriTemplate = Annotated[Text, AfterValidator(_host_template)]


def _auto_or_boolean(value: Any) -> str | bool:
    if value == "auto" or isinstance(value, bool):
        return value
    fail(f"must be auto, true or false, got {value!r:.40}")


class PrometheusSettings(Section):
    url: Annotated[
        HttpUrl,
        Flag("--prometheus-url", commands=GLOBAL_MANAGER, metavar="URL"),
        Field(description="Prometheus API base URL"),
    ] = "http://localhost:9090"
    timeout: PositiveNumber = 10
    stale_after: PositiveNumber = 900
    cpu_window: PositiveNumber = 1800
    host_lookback: PositiveNumber = 3600


class LibvirtExecutorSettings(Section):
    uri_template: Annotated[
        UriTemplate,
        Flag("--libvirt-uri-template", commands=GLOBAL_MANAGER, metavar="TEMPLATE"),
        Field(description="each host's libvirt URI, {host} = the exporters' host label"),
    ] = "qemu+ssh://{host}/system"
    migration_uri_template: Annotated[
        UriTemplate | None,
        Flag("--migration-uri-template", commands=GLOBAL_MANAGER, metavar="TEMPLATE"),
        Field(description="where the migration stream goes, e.g. 'tcp://{host}'"),
    ] = None
    unsafe: Annotated[
        Boolean,
        Flag("--migrate-unsafe", commands=GLOBAL_MANAGER),
        Field(description="set VIR_MIGRATE_UNSAFE, for shared storage libvirt cannot recognise"),
    ] = False
    max_per_host: PositiveCount = 1
    max_total: PositiveCount = 2


class NovaExecutorSettings(Section):
    cloud: Text | None = None
    clouds_yaml: Text | None = None
    region_name: Text | None = None
    block_migration: Annotated[str | bool, PlainValidator(_auto_or_boolean)] = "auto"
    poll_interval: PositiveNumber = 2
    retries: Count = 1
    abort_grace: PositiveNumber = 60


class ExecutorSettings(Section):
    type: Annotated[
        Executor,
        Flag("--executor", commands=GLOBAL_MANAGER),
        Field(description="dry_run (plan, log and publish only), libvirt or nova"),
    ] = "dry_run"
    libvirt: LibvirtExecutorSettings = Field(default_factory=LibvirtExecutorSettings)
    nova: NovaExecutorSettings = Field(default_factory=NovaExecutorSettings)


class PlacementSettings(Section):
    name: Text = "best_fit_decreasing"
    params: dict[str, Any] = Field(default_factory=dict)


class Policy(Section):
    """The guards the service applies around Neat's planning (the ``policy`` section)."""

    migration_timeout: PositiveNumber = 600
    cooldown: NonNegativeNumber = 3600
    max_migrations_per_request: PositiveCount = 10
    max_migrations_per_hour: PositiveCount = 60
    vm_opt_out: Patterns = ()
    """fnmatch patterns matched against a VM's uuid and its libvirt domain name."""
    never_switch_off: Patterns = ()
    """fnmatch patterns of host names that are never powered off."""
    wait_for_migrations: Boolean = False
    """Answer PUT / after the migrations and power actions (Neat's way) instead of after the
    plan."""
    parallel_migrations: PositiveCount = 2
    """Migrations of one plan started at once (the executor bounds them per host and in all)."""
    wake_timeout: PositiveNumber = 600
    """Seconds from a BMC reporting a host on until its hypervisor must answer (it boots)."""


class PowerSettings(Section):
    backend: PowerBackend = "none"


class GlobalManagerFile(NeatCredentials):
    """The global manager's configuration file."""

    listen: Annotated[
        Listen,
        Flag("--listen", "--web.listen-address", commands=GLOBAL_MANAGER, metavar="ADDR"),
        Field(description="address to serve on (Neat's port)"),
    ] = ":60080"
    web_config_file: Annotated[
        Text | None,
        Flag("--web.config.file", commands=GLOBAL_MANAGER, metavar="FILE"),
        Field(description="exporter-toolkit web config: TLS and basic auth"),
    ] = None
    log_level: LogLevel = "info"
    state_file: Annotated[
        Text | None,
        Flag("--state-file", commands=GLOBAL_MANAGER, metavar="FILE"),
        Field(description="where sleeping hosts and recent migrations persist"),
    ] = None
    audit_log: Annotated[
        Text | None,
        Flag("--audit-log", commands=GLOBAL_MANAGER, metavar="FILE"),
        Field(description="JSON-lines audit log"),
    ] = None
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    executor: ExecutorSettings = Field(default_factory=ExecutorSettings)
    placement: PlacementSettings = Field(default_factory=PlacementSettings)
    policy: Policy = Field(default_factory=Policy)
    power: PowerSettings = Field(default_factory=PowerSettings)
    hosts: dict[PowerHostName, HostPower] = Field(default_factory=dict)
    """Per host, its power backends' sections (neat_exporter.globalmanager.power.config)."""

    @model_validator(mode="before")
    @classmethod
    def _only_the_chosen_power_sections(cls, raw: Any) -> Any:
        """A host's sections of the backends not chosen are not read (nor their secrets): they
        may stay in the file, ready for a switch of ``power.backend``."""
        if not isinstance(raw, dict) or not isinstance(raw.get("hosts"), dict):
            return raw
        power = raw.get("power")
        backend = power.get("backend") if isinstance(power, dict) else None
        unused = [name for name in HostPower.model_fields if name != backend]
        kept = {
            host: {key: value for key, value in entry.items() if key not in unused}
            if isinstance(entry, dict)
            else entry
            for host, entry in raw["hosts"].items()
        }
        return {**raw, "hosts": kept}


@dataclass(frozen=True)
class GlobalManagerSettings:
    """The checked configuration and where it came from."""

    file: GlobalManagerFile
    origin: str

    @property
    def username(self) -> SecretStr:
        assert self.file.username is not None  # load_settings requires it
        return self.file.username

    @property
    def password(self) -> SecretStr:
        assert self.file.password is not None
        return self.file.password

    def __getitem__(self, key: str) -> Any:
        """A value by dotted key: ``settings["policy.cooldown"]``; a section as a dict."""
        value: Any = self.file
        for name in key.split("."):
            value = getattr(value, name)
        return dict(value) if isinstance(value, Section) else value

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
    raw = {} if path is None else parse_yaml_mapping(read_config_file(path, "config"), str(path))
    origin = "<flags>" if path is None else str(path)
    file = validate(GlobalManagerFile, apply_overrides(raw, overrides or {}), environ)
    build_placement(file.placement.name, file.placement.params)
    if file.username is None:
        raise ConfigError(
            "username_file",
            f"no admin user: set this file or {ENV_GLOBAL_MANAGER_USERNAME} (the local managers "
            "send SHA-1 of Neat's os_admin_user)",
        )
    if file.password is None:
        raise ConfigError(
            "password_file", f"no admin password: set this file or {ENV_GLOBAL_MANAGER_PASSWORD}"
        )
    if file.power.backend != "none":
        if not file.hosts:
            raise ConfigError(
                "hosts", f"power.backend is {file.power.backend}: give each host's BMC here"
            )
        chosen_sections(file.power.backend, file.hosts)
    return GlobalManagerSettings(file, origin)


def effective_settings(settings: GlobalManagerSettings) -> dict[str, Any]:
    """Every key's value for printing, secrets redacted (the hosts' BMC sections too)."""
    return effective(settings.file)
