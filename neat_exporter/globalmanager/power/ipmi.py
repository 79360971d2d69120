"""Power through IPMI with ipmitool (``-I lanplus``, IPMI 2.0). The password reaches ipmitool
through its environment (``-E``), never its command line, where any local user could read it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field

from neat_exporter.globalmanager.power.base import (
    DEFAULT_TIMING,
    SYSTEM_CLOCK,
    Clock,
    PowerError,
    PowerState,
    PowerTiming,
    checked_host_name,
    failure,
    run_program,
    switch,
)

SHUTDOWN_COMMANDS = {"graceful": "soft", "force": "off"}
IPMI_STATES = {"Chassis Power is on": PowerState.ON, "Chassis Power is off": PowerState.OFF}


@dataclass(frozen=True)
class IpmiTarget:
    """One host's BMC on the network: address, UDP port, credentials, how to switch it off."""

    address: str
    username: str
    password: str = field(repr=False)
    port: int = 623
    shutdown: str = "graceful"
    timing: PowerTiming = DEFAULT_TIMING


class IpmiPower:
    name = "ipmi"

    def __init__(
        self,
        targets: Mapping[str, IpmiTarget],
        clock: Clock = SYSTEM_CLOCK,
        ipmitool: str | None = None,
    ):
        self.targets = dict(targets)
        self.clock = clock
        self.ipmitool = ipmitool or shutil.which("ipmitool")

    def power_off(self, host: str) -> None:
        target = self._target(host)
        command = SHUTDOWN_COMMANDS[target.shutdown]
        self._switch(host, target, PowerState.OFF, command)

    def power_on(self, host: str) -> None:
        self._switch(host, self._target(host), PowerState.ON, "on")

    def power_state(self, host: str) -> PowerState:
        return self._state(host, self._target(host))

    def _target(self, host: str) -> IpmiTarget:
        target = self.targets.get(checked_host_name(host))
        if target is None:
            raise PowerError(f"{host}: no IPMI BMC configured for this host")
        return target

    def _switch(self, host: str, target: IpmiTarget, wanted: PowerState, command: str) -> None:
        switch(
            host,
            wanted,
            lambda: self._state(host, target),
            lambda: self._run(host, target, "power", command),
            target.timing,
            self.clock,
        )

    def _state(self, host: str, target: IpmiTarget) -> PowerState:
        answer = self._run(host, target, "power", "status").strip()
        return IPMI_STATES.get(answer, PowerState.UNKNOWN)

    def _run(self, host: str, target: IpmiTarget, *command: str) -> str:
        if self.ipmitool is None:
            raise PowerError(f"{host}: ipmitool is not installed")
        where = f"the IPMI BMC at {target.address}:{target.port}"
        argv = [
            self.ipmitool, "-I", "lanplus", "-H", target.address, "-p", str(target.port),
            "-U", target.username, "-E",
            # ipmitool's own retries must end within the call's timeout.
            "-N", "1", "-R", str(max(1, int(target.timing.request_timeout) // 2)),
            *command,
        ]  # fmt: skip
        done = run_program(
            host,
            f"ipmitool for {where}",
            argv,
            target.timing.request_timeout,
            env={**os.environ, "IPMI_PASSWORD": target.password},
        )
        if done.returncode != 0:
            raise PowerError(f"{host}: {where}: {failure(done)}")
        return done.stdout
