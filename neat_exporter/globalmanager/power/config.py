"""The power backend from the global manager's ``hosts:`` mapping: per host, the section of the
chosen backend. Secrets come from files or environment variables, never from the YAML itself,
and never appear in an error.

    hosts:
      compute-1:
        redfish: {url: https://bmc-1.example, system_id: "1", username: admin,
                  password_file: /etc/neat/bmc-1.password, shutdown: graceful, timeout: 300}
        ipmi:    {address: 10.0.0.11, port: 623, username_file: ..., password_env: BMC_1_PASSWORD}
        command: {sleep: [ssh, "{host}", systemctl, suspend],
                  wake: [wakeonlan, "aa:bb:cc:dd:ee:ff"], state: [ping, -c1, -W1, "{host}"]}

Each section may also set ``timeout`` (seconds until the state is reached),
``poll_interval`` and ``request_timeout`` (one BMC call or command).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from neat_exporter.config.declare import Port, PositiveNumber, Text
from neat_exporter.config.files import read_config_file
from neat_exporter.config.loading import check_value
from neat_exporter.errors import ConfigError
from neat_exporter.globalmanager.power.base import (
    PowerBackend,
    PowerError,
    PowerTiming,
    checked_host_name,
)
from neat_exporter.globalmanager.power.command import CommandPower, CommandTarget
from neat_exporter.globalmanager.power.ipmi import SHUTDOWN_COMMANDS, IpmiPower, IpmiTarget
from neat_exporter.globalmanager.power.redfish import RedfishPower, RedfishTarget

TIMING_KEYS = {"timeout", "poll_interval", "request_timeout"}
# "password" is known so that giving it inline gets its own error, not "unknown key".
KEYS = {
    "redfish": {"url", "system_id", "username", "username_file", "username_env",
                "password", "password_file", "password_env", "verify", "shutdown"},
    "ipmi": {"address", "port", "username", "username_file", "username_env",
             "password", "password_file", "password_env", "shutdown"},
    "command": {"sleep", "wake", "state"},
}  # fmt: skip


def build_power_backend(
    backend: str, hosts: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> PowerBackend:
    """The ``backend`` ("redfish", "ipmi" or "command") for every host of ``hosts``; a missing
    or wrong value raises ConfigError naming its dotted key (``hosts.NAME.redfish.url``)."""
    environ = os.environ if environ is None else environ
    if backend not in KEYS:
        raise ConfigError("power.backend", f"must be one of {', '.join(KEYS)}, got {backend!r}")
    parse = {"redfish": _redfish, "ipmi": _ipmi, "command": _command}[backend]
    targets = {}
    for host, entry in hosts.items():
        key = f"hosts.{host}"
        try:
            checked_host_name(str(host))
        except PowerError as error:
            raise ConfigError(key, str(error)) from None
        if not isinstance(entry, Mapping) or not isinstance(entry.get(backend), Mapping):
            raise ConfigError(f"{key}.{backend}", f"power.backend is {backend}: give this section")
        section = entry[backend]
        unknown = set(section) - KEYS[backend] - TIMING_KEYS
        if unknown:
            raise ConfigError(f"{key}.{backend}", f"unknown keys: {', '.join(sorted(unknown))}")
        targets[host] = parse(f"{key}.{backend}", section, environ)
    if backend == "redfish":
        return RedfishPower(targets)
    if backend == "ipmi":
        return IpmiPower(targets)
    return CommandPower(targets)


def _timing(key: str, section: Mapping[str, Any]) -> PowerTiming:
    defaults = PowerTiming()
    values = {
        name: check_value(
            PositiveNumber, f"{key}.{name}", section.get(name, getattr(defaults, name))
        )
        for name in TIMING_KEYS
    }
    return PowerTiming(**values)


def _redfish(key: str, section: Mapping[str, Any], environ: Mapping[str, str]) -> RedfishTarget:
    url = check_value(Text, f"{key}.url", section.get("url"))
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{key}.url", f"must be an http:// or https:// URL, got {url!r:.80}")
    if "@" in urlsplit(url).netloc:  # it would be printed in errors
        raise ConfigError(f"{key}.url", "credentials do not belong in the URL")
    system_id = str(_required(key, section, "system_id"))
    if not system_id or "/" in system_id or any(not c.isprintable() for c in system_id):
        raise ConfigError(f"{key}.system_id", f"not a Redfish system id: {system_id!r:.80}")
    verify = section.get("verify", True)
    if not isinstance(verify, bool):
        verify = check_value(Text, f"{key}.verify", verify)  # a CA bundle
    return RedfishTarget(
        url=url,
        system_id=system_id,
        username=_credential(key, section, "username", environ),
        password=_credential(key, section, "password", environ),
        verify=verify,
        shutdown=_shutdown(key, section),
        timing=_timing(key, section),
    )


def _ipmi(key: str, section: Mapping[str, Any], environ: Mapping[str, str]) -> IpmiTarget:
    address = check_value(Text, f"{key}.address", section.get("address"))
    if address.startswith("-") or any(c.isspace() or not c.isprintable() for c in address):
        raise ConfigError(f"{key}.address", f"not an address: {address!r:.80}")
    port = check_value(Port, f"{key}.port", section.get("port", 623))
    return IpmiTarget(
        address=address,
        port=port,
        username=_credential(key, section, "username", environ),
        password=_credential(key, section, "password", environ),
        shutdown=_shutdown(key, section),
        timing=_timing(key, section),
    )


def _command(key: str, section: Mapping[str, Any], environ: Mapping[str, str]) -> CommandTarget:
    state = section.get("state")
    return CommandTarget(
        sleep=_argv(f"{key}.sleep", section.get("sleep")),
        wake=_argv(f"{key}.wake", section.get("wake")),
        state=None if state is None else _argv(f"{key}.state", state),
        timing=_timing(key, section),
    )


def _argv(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ConfigError(key, "must be a list of arguments (it runs without a shell)")
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(key, f"must be a non-empty list of arguments, got {value!r:.80}")
    if not all(isinstance(argument, str) and "\0" not in argument for argument in value):
        raise ConfigError(key, "every argument must be a string")
    if "{host}" in value[0]:
        raise ConfigError(key, "the program itself cannot come from the host name")
    return tuple(value)


def _shutdown(key: str, section: Mapping[str, Any]) -> str:
    value = section.get("shutdown", "graceful")
    if value not in SHUTDOWN_COMMANDS:
        raise ConfigError(f"{key}.shutdown", f"must be graceful or force, got {value!r:.40}")
    return value


def _required(key: str, section: Mapping[str, Any], name: str) -> Any:
    if section.get(name) in (None, ""):
        raise ConfigError(f"{key}.{name}", "missing")
    return section[name]


def _credential(key: str, section: Mapping[str, Any], name: str, environ: Mapping[str, str]) -> str:
    """``name`` from ``<name>_env`` (an environment variable's name) or ``<name>_file``; a
    username may also be given inline, a password never (it would sit in the config)."""
    sources: dict[str, Callable[[], str]] = {
        f"{name}_env": lambda: _from_environment(key, section, name, environ),
        f"{name}_file": lambda: read_config_file(section[f"{name}_file"], f"{key}.{name}_file"),
    }
    if name == "username":
        sources[name] = lambda: check_value(Text, f"{key}.{name}", section[name])
    elif name in section:
        raise ConfigError(
            f"{key}.{name}", f"give the {name} through {name}_file or {name}_env, not inline"
        )
    given = [source for source in sources if section.get(source) is not None]
    if len(given) != 1:
        raise ConfigError(f"{key}.{name}", f"give exactly one of {', '.join(sources)}")
    value = sources[given[0]]().strip()
    if not value:
        raise ConfigError(f"{key}.{given[0]}", f"the {name} is empty")
    return value


def _from_environment(
    key: str, section: Mapping[str, Any], name: str, environ: Mapping[str, str]
) -> str:
    variable = check_value(Text, f"{key}.{name}_env", section[f"{name}_env"])
    if variable not in environ:
        raise ConfigError(f"{key}.{name}_env", f"the environment variable {variable} is not set")
    return environ[variable]
