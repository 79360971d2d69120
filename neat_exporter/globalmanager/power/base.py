"""How the global manager switches hosts off and on (Redfish, IPMI, command templates).

Every backend works the same way: read the host's state; if it already is what is asked, do
nothing; otherwise ask once and poll until the state is reached or the timeout passes. The
clock and the pause between polls are injected.
"""

from __future__ import annotations

import enum
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


class PowerState(enum.StrEnum):
    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


class PowerError(Exception):
    """A power action failed: one clear line naming the host and the BMC's answer (never
    credentials)."""


class ProgramTimeout(PowerError):
    """A program a backend ran did not end in time (it was killed)."""


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


def run_program(
    host: str, what: str, argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``argv`` (no shell) for ``host``, its output captured as text, within ``timeout``."""
    try:
        return subprocess.run(
            list(argv), env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise ProgramTimeout(f"{host}: {what} did not end within {timeout:g} s") from None
    except OSError as error:
        raise PowerError(f"{host}: cannot run {what} ({argv[0]}): {error.strerror}") from None


def failure(done: subprocess.CompletedProcess) -> str:
    """Why a program failed: its exit status and the last line it wrote to stderr."""
    lines = [line.strip() for line in (done.stderr or "").splitlines() if line.strip()]
    return f"exit status {done.returncode}" + (f": {lines[-1][:300]}" if lines else "")
