"""Power through commands, Neat's way: a sleep command (e.g. over SSH) and a wake command
(e.g. Wake-on-LAN), plus optionally a state command whose success means "on" (e.g. ping).

Commands are argument lists run without a shell; ``{host}`` in an argument becomes the host's
name, which is checked first (no leading dash, no whitespace), so a host name can neither add
arguments nor become an option.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from neat_exporter.globalmanager.power.base import (
    DEFAULT_TIMING,
    SYSTEM_CLOCK,
    Clock,
    PowerError,
    PowerState,
    PowerTiming,
    ProgramTimeout,
    checked_host_name,
    failure,
    run_program,
    switch,
)


@dataclass(frozen=True)
class CommandTarget:
    sleep: tuple[str, ...]
    wake: tuple[str, ...]
    state: tuple[str, ...] | None = None
    """Exit status 0 = on, anything else = off; without it, actions end when their command
    does and the state is unknown."""
    timing: PowerTiming = DEFAULT_TIMING


class CommandPower:
    name = "command"

    def __init__(self, targets: Mapping[str, CommandTarget], clock: Clock = SYSTEM_CLOCK):
        self.targets = dict(targets)
        self.clock = clock

    def power_off(self, host: str) -> None:
        self._switch(host, PowerState.OFF, "sleep")

    def power_on(self, host: str) -> None:
        self._switch(host, PowerState.ON, "wake")

    def power_state(self, host: str) -> PowerState:
        target = self._target(host)
        if target.state is None:
            return PowerState.UNKNOWN
        return self._state(host, target)

    def _target(self, host: str) -> CommandTarget:
        target = self.targets.get(checked_host_name(host))
        if target is None:
            raise PowerError(f"{host}: no power commands configured for this host")
        return target

    def _switch(self, host: str, wanted: PowerState, action: str) -> None:
        target = self._target(host)

        def act() -> None:
            done = self._run(host, target, action, getattr(target, action))
            if done.returncode != 0:
                raise PowerError(f"{host}: {action} command failed: {failure(done)}")

        if target.state is None:
            act()
            return
        switch(host, wanted, lambda: self._state(host, target), act, target.timing, self.clock)

    def _state(self, host: str, target: CommandTarget) -> PowerState:
        try:
            done = self._run(host, target, "state", target.state)
        except ProgramTimeout:
            return PowerState.OFF  # no answer in time: not reachable
        return PowerState.ON if done.returncode == 0 else PowerState.OFF

    def _run(
        self, host: str, target: CommandTarget, action: str, template: Sequence[str]
    ) -> subprocess.CompletedProcess:
        argv = [argument.replace("{host}", host) for argument in template]
        return run_program(host, f"the {action} command", argv, target.timing.request_timeout)
