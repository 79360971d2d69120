"""How the global manager moves VMs and tells the cloud about hosts it switches off."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Migration:
    vm_uuid: str
    source: str  # host names as the exporters publish them (label `host`)
    destination: str


class MigrationOutcome(enum.StrEnum):
    MIGRATED = "migrated"  # verified: runs on destination, not on source
    FAILED = "failed"  # the migration API refused or failed; VM still on source
    TIMEOUT = "timeout"  # did not finish within the timeout (aborted if possible)
    UNVERIFIED = "unverified"  # API said done, but the check found it elsewhere / on both
    DRY_RUN = "dry_run"


@dataclass(frozen=True)
class MigrationResult:
    migration: Migration
    outcome: MigrationOutcome
    seconds: float
    error: str = ""  # a clear, one-line reason (never credentials)
    location: str | None = None  # where the VM was found running afterwards, if known


class TimedResults:
    """For executors: a :class:`MigrationResult` timed on the executor's own ``_clock``."""

    _clock: Callable[[], float]

    def _result(
        self,
        migration: Migration,
        outcome: MigrationOutcome,
        started: float,
        error: str,
        location: str | None = None,
    ) -> MigrationResult:
        return MigrationResult(migration, outcome, self._clock() - started, error, location)


class ExecutorError(Exception):
    """The executor cannot work at all (bad credentials, endpoint unreachable)."""


class Executor(Protocol):
    name: str  # "dry_run" | "libvirt" | "nova"

    def vms_on(self, host: str) -> dict[str, int] | None:
        """VMs running on ``host`` as {uuid: RAM MB}, from the executor's own authority
        (Nova: servers on the host and their flavors' RAM); None when the executor has no view of
        its own and the Prometheus fleet view is used (libvirt, dry_run)."""

    def migrate(self, migration: Migration, timeout: float) -> MigrationResult:
        """Live-migrate one VM, block until done or timeout, verify where it runs. Never raises
        for a per-VM failure: the result says what happened."""

    def clean_up_after(self, migration: Migration) -> None:
        """After a migration that failed, timed out or could not be verified (also those a
        restarted global manager finds in its state): remove what it may have left on the
        destination, without blocking (libvirt: a paused copy of the VM)."""

    def host_switching_off(self, host: str, reason: str) -> None:
        """Called before a host is powered off (Nova: disable its nova-compute service with
        reason)."""

    def host_woken(self, host: str, timeout: float) -> None:
        """Called after a host's BMC reports it on, which is long before its system has booted:
        wait until the hypervisor answers (ExecutorError after ``timeout`` seconds), then make
        the host available (Nova: enable its compute service)."""

    def close(self) -> None: ...
