"""How the global manager switches hosts off and on (Redfish, IPMI, command templates).

Every backend works the same way: read the host's state; if it already is what is asked, do
nothing; otherwise ask once and poll until the state is reached or the timeout passes. The
clock and the pause between polls are injected.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class PowerState(enum.StrEnum):
    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


class PowerError(Exception):
    """A power action failed: one clear line naming the host and the BMC's answer (never
    credentials)."""


class PowerBackend(Protocol):
    name: str  # "redfish" | "ipmi" | "command" | "none"

    def power_off(self, host: str) -> None: ...  # blocks until the BMC reports Off or raises

    def power_on(self, host: str) -> None: ...  # blocks until On (and, if configured, reachable)

    def power_state(self, host: str) -> PowerState: ...


@dataclass(frozen=True)
class PowerTiming:
    """How long a power action may take and how its state is polled."""

    timeout: float = 300.0
    """Seconds from asking until the state must be reached (a graceful shutdown takes minutes)."""
    poll_interval: float = 2.0
    request_timeout: float = 10.0
    """Seconds for one call to the BMC or one command."""


@dataclass(frozen=True)
class Clock:
    """Time as the backends see it (tests inject their own)."""

    now: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


DEFAULT_TIMING = PowerTiming()
SYSTEM_CLOCK = Clock()


def switch(
    host: str,
    wanted: PowerState,
    read_state: Callable[[], PowerState],
    act: Callable[[], None],
    timing: PowerTiming,
    clock: Clock,
) -> None:
    """Bring ``host`` to ``wanted``: ``act`` once unless it is there already, then poll
    ``read_state`` until it is, or raise PowerError after ``timing.timeout``."""
    if read_state() == wanted:
        return
    deadline = clock.now() + timing.timeout
    act()
    while True:
        state = read_state()
        if state == wanted:
            return
        remaining = deadline - clock.now()
        if remaining <= 0:
            raise PowerError(
                f"{host}: still {state} {timing.timeout:g} s after asking for {wanted}"
            )
        clock.sleep(min(timing.poll_interval, remaining))


def checked_host_name(host: str) -> str:
    """``host`` when it can safely name a host in a BMC URL or a command's argument: no
    leading dash (it would read as an option), no whitespace or control characters."""
    if (
        not host
        or len(host) > 253
        or host.startswith("-")
        or any(c.isspace() or not c.isprintable() for c in host)
    ):
        raise PowerError(f"not a usable host name: {host!r:.80}")
    return host
