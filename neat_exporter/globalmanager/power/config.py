"""The declaration of the global manager's ``hosts:`` mapping: per host, the section of each
power backend, and the backend built from the chosen one. Secrets come from files or
environment variables, never from the YAML itself, and never appear in an error.

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

from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, PlainValidator, SecretStr

from neat_exporter.config.declare import (
    HostName,
    HttpUrl,
    Port,
    PositiveNumber,
    SecretFrom,
    Section,
    Text,
    fail,
)
from neat_exporter.errors import ConfigError
from neat_exporter.globalmanager.power.base import (
    PowerBackend,
    PowerError,
    PowerTiming,
    checked_host_name,
)
from neat_exporter.globalmanager.power.command import CommandPower, CommandTarget
from neat_exporter.globalmanager.power.ipmi import IpmiPower, IpmiTarget
from neat_exporter.globalmanager.power.redfish import RedfishPower, RedfishTarget

Backend = Literal["redfish", "ipmi", "command"]
Shutdown = Literal["graceful", "force"]


def _usable_host_name(value: str) -> str:
    try:
        return checked_host_name(value)
    except PowerError as error:
        fail(str(error))


def _without_credentials(url: str) -> str:
    if "@" in urlsplit(url).netloc:  # it would be printed in errors
        fail("credentials do not belong in the URL")
    return url


def _number_as_text(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _system_id(value: str) -> str:
    if "/" in value or any(not c.isprintable() for c in value):
        fail(f"not a Redfish system id: {value!r:.80}")
    return value


def _boolean_or_ca_bundle(value: Any) -> bool | str:
    if isinstance(value, bool) or (isinstance(value, str) and value):
        return value
    fail(f"must be true, false or a CA bundle file, got {value!r:.40}")


def _address(value: str) -> str:
    if value.startswith("-") or any(c.isspace() or not c.isprintable() for c in value):
        fail(f"not an address: {value!r:.80}")
    return value


def _argv(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        fail("must be a list of arguments (it runs without a shell)")
    if not isinstance(value, list | tuple) or not value:
        fail(f"must be a non-empty list of arguments, got {value!r:.80}")
    if not all(isinstance(argument, str) and "\0" not in argument for argument in value):
        fail("every argument must be a string")
    if "{host}" in value[0]:
        fail("the program itself cannot come from the host name")
    return tuple(value)


PowerHostName = Annotated[HostName, AfterValidator(_usable_host_name)]
"""A host name that can go into a BMC URL or a command's argument (no leading dash...)."""
Argv = Annotated[tuple[str, ...], BeforeValidator(_argv)]
"""A program and its arguments, run without a shell; ``{host}`` is replaced in arguments."""
_TIMING = PowerTiming()


class PowerSection(Section):
    """What every backend's section sets: how long an action may take, how it is polled."""

    timeout: PositiveNumber = _TIMING.timeout
    poll_interval: PositiveNumber = _TIMING.poll_interval
    request_timeout: PositiveNumber = _TIMING.request_timeout

    def timing(self) -> PowerTiming:
        return PowerTiming(self.timeout, self.poll_interval, self.request_timeout)


class BmcSection(PowerSection):
    """A BMC's login: the user inline or from a file or environment variable, the password
    from a file or an environment variable only (exactly one source each)."""

    username: Annotated[
        SecretStr | None, SecretFrom("username_file", env_key="username_env", inline=True)
    ] = None
    username_file: Text | None = None
    username_env: Text | None = None
    password: Annotated[SecretStr | None, SecretFrom("password_file", env_key="password_env")] = (
        None
    )
    password_file: Text | None = None
    password_env: Text | None = None
    shutdown: Shutdown = "graceful"

    def _bmc(self) -> dict[str, Any]:
        """What every BMC target takes from this section."""
        assert self.username is not None and self.password is not None  # read by the loader
        return {
            "username": self.username.get_secret_value(),
            "password": self.password.get_secret_value(),
            "shutdown": self.shutdown,
            "timing": self.timing(),
        }


class RedfishSection(BmcSection):
    url: Annotated[HttpUrl, AfterValidator(_without_credentials)]
    system_id: Annotated[Text, BeforeValidator(_number_as_text), AfterValidator(_system_id)]
    verify: Annotated[bool | str, PlainValidator(_boolean_or_ca_bundle)] = True
    """Check the BMC's TLS certificate (true), against a CA bundle file (a path), or not."""

    def target(self) -> RedfishTarget:
        return RedfishTarget(
            url=self.url, system_id=self.system_id, verify=self.verify, **self._bmc()
        )


class IpmiSection(BmcSection):
    address: Annotated[Text, AfterValidator(_address)]
    port: Port = 623

    def target(self) -> IpmiTarget:
        return IpmiTarget(address=self.address, port=self.port, **self._bmc())


class CommandSection(PowerSection):
    sleep: Argv
    wake: Argv
    state: Argv | None = None

    def target(self) -> CommandTarget:
        return CommandTarget(self.sleep, self.wake, self.state, self.timing())


class HostPower(Section):
    """One host's sections, one per backend; only the chosen backend's is read."""

    redfish: RedfishSection | None = None
    ipmi: IpmiSection | None = None
    command: CommandSection | None = None


def chosen_sections(backend: Backend, hosts: Mapping[str, HostPower]) -> dict[str, Any]:
    """Per host, its section of ``backend``; ConfigError naming the first host without one."""
    sections = {host: getattr(entry, backend) for host, entry in hosts.items()}
    for host, section in sections.items():
        if section is None:
            raise ConfigError(
                f"hosts.{host}.{backend}", f"power.backend is {backend}: give this section"
            )
    return sections


def build_power_backend(backend: Backend, hosts: Mapping[str, HostPower]) -> PowerBackend:
    """The ``backend`` for every host of ``hosts`` (checked settings, secrets read)."""
    sections = chosen_sections(backend, hosts)
    power = {"redfish": RedfishPower, "ipmi": IpmiPower, "command": CommandPower}[backend]
    return power({host: section.target() for host, section in sections.items()})
