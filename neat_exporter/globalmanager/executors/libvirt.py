"""Live migration with libvirt's own API, host to host, peer-to-peer.

Each host's libvirt is reached at ``uri_template.format(host=NAME)`` (the name the exporters
publish), e.g. ``qemu+ssh://{host}/system``. A migration is
``virDomainMigrateToURI3(destination, params, LIVE | PEER2PEER | PERSIST_DEST | UNDEFINE_SOURCE
[| UNSAFE])``: the source libvirtd talks to the destination's, the VM's definition moves with
it. ``unsafe`` sets VIR_MIGRATE_UNSAFE for storage libvirt cannot recognise as shared.

Bounds: at most ``max_per_host`` migrations involve a host (as source or destination) and at
most ``max_total`` run in the whole fleet. Each migration has a timeout; past it the job is
aborted (virDomainAbortJob). Afterwards the VM must be active on the destination and not on
the source, else the outcome is ``unverified`` with where it was found.

A destination whose libvirtd dies during an incoming migration may, once restarted, hold a
paused copy of a VM that still runs on its source. Such a copy is a duplicate waiting to be
started by mistake: after a failed migration the executor looks at the destination every
``LEFTOVER_RETRY`` seconds until it answers, and destroys a paused, transient copy of a VM that
runs on its source (a persistent one is only reported: someone defined it). A global manager
restarted meanwhile looks again at the destinations of the failed migrations its state file
remembers (GlobalManagerService).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from neat_exporter.globalmanager.executors.base import (
    ExecutorError,
    Migration,
    MigrationOutcome,
    MigrationResult,
    TimedResults,
)

log = logging.getLogger(__name__)

ABORT_GRACE = 30.0
"""Seconds to wait for libvirt to end a job after aborting it."""
LEFTOVER_RETRY = 5.0
"""Seconds between looks at a destination a failed migration may have left a copy on."""
WAKE_POLL = 5.0
"""Seconds between connection attempts to a host being switched on."""


def _libvirt() -> Any:
    try:
        import libvirt
    except ImportError:
        raise ExecutorError(
            "the libvirt executor needs libvirt-python: pip install 'neat-exporter[libvirt]'"
        ) from None
    return libvirt


class LibvirtExecutor(TimedResults):
    name = "libvirt"

    def __init__(
        self,
        uri_template: str,
        *,
        migration_uri_template: str | None = None,
        unsafe: bool = False,
        max_per_host: int = 1,
        max_total: int = 2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if "{host}" not in uri_template:
            raise ExecutorError(f"libvirt URI template {uri_template!r} has no {{host}}")
        self._libvirt = _libvirt()
        self.uri_template = uri_template
        self.migration_uri_template = migration_uri_template
        self.unsafe = unsafe
        self.max_per_host = max_per_host
        self._clock = clock
        self._sleep = sleep
        self._fleet_slots = threading.BoundedSemaphore(max_total)
        self._host_slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()
        self._connections: dict[str, Any] = {}
        self._leftovers: dict[str, Migration] = {}
        """Failed migrations whose destination may hold a copy of the VM, by VM UUID."""
        self._cleaner: threading.Thread | None = None
        self._closing = threading.Event()
        # Keep libvirt's own error printing off stderr: errors become results.
        self._libvirt.registerErrorHandler(lambda *_: None, None)

    def uri(self, host: str) -> str:
        return self.uri_template.format(host=host)

    # --- connections --------------------------------------------------------------------------

    def _connection(self, host: str) -> Any:
        with self._lock:
            conn = self._connections.get(host)
        if conn is not None:
            with contextlib.suppress(self._libvirt.libvirtError):
                if conn.isAlive():
                    return conn
            self._forget(host)
        try:
            conn = self._libvirt.open(self.uri(host))
        except self._libvirt.libvirtError as error:
            reason = f"cannot connect to libvirt of {host}: {_one_line(error)}"
            raise ExecutorError(reason) from None
        with self._lock:
            self._connections[host] = conn
        return conn

    def _forget(self, host: str) -> None:
        with self._lock:
            conn = self._connections.pop(host, None)
        if conn is not None:
            with contextlib.suppress(self._libvirt.libvirtError):
                conn.close()

    def _active_on(self, host: str, uuid: str) -> bool | None:
        """True/False whether ``uuid`` runs on ``host``; None when the host cannot be asked."""
        try:
            domain = self._connection(host).lookupByUUIDString(uuid)
            return bool(domain.isActive())
        except ExecutorError:
            return None
        except self._libvirt.libvirtError as error:
            if error.get_error_code() == self._libvirt.VIR_ERR_NO_DOMAIN:
                return False
            self._forget(host)
            return None

    # --- the protocol -------------------------------------------------------------------------

    def vms_on(self, host: str) -> dict[str, int] | None:
        return None  # the exporters' view in Prometheus is the fleet view

    def migrate(self, migration: Migration, timeout: float) -> MigrationResult:
        started = self._clock()
        slots = self._slots(migration)
        taken: list[threading.BoundedSemaphore] = []
        try:
            for slot in slots:
                left = timeout - (self._clock() - started)
                if left <= 0 or not slot.acquire(timeout=left):
                    return self._result(
                        migration, MigrationOutcome.TIMEOUT, started, "no free migration slot"
                    )
                taken.append(slot)
            return self._migrate(migration, timeout - (self._clock() - started), started)
        finally:
            for slot in reversed(taken):
                slot.release()

    def _slots(self, migration: Migration) -> list[threading.BoundedSemaphore]:
        with self._lock:
            hosts = sorted({migration.source, migration.destination})  # one order: no deadlock
            per_host = [
                self._host_slots.setdefault(h, threading.BoundedSemaphore(self.max_per_host))
                for h in hosts
            ]
        return [self._fleet_slots, *per_host]

    def _migrate(self, migration: Migration, timeout: float, started: float) -> MigrationResult:
        libvirt = self._libvirt
        try:
            domain = self._connection(migration.source).lookupByUUIDString(migration.vm_uuid)
        except ExecutorError as error:
            return self._result(migration, MigrationOutcome.FAILED, started, str(error))
        except libvirt.libvirtError as error:
            return self._result(
                migration,
                MigrationOutcome.FAILED,
                started,
                f"{migration.vm_uuid} not found on {migration.source}: {_one_line(error)}",
            )
        flags = (
            libvirt.VIR_MIGRATE_LIVE
            | libvirt.VIR_MIGRATE_PEER2PEER
            | libvirt.VIR_MIGRATE_PERSIST_DEST
            | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        )
        if self.unsafe:
            flags |= libvirt.VIR_MIGRATE_UNSAFE
        params = {}
        if self.migration_uri_template:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = self.migration_uri_template.format(
                host=migration.destination
            )
        errors: list[str] = []

        def run() -> None:
            try:
                domain.migrateToURI3(self.uri(migration.destination), params, flags)
            except libvirt.libvirtError as error:
                errors.append(_one_line(error))

        worker = threading.Thread(target=run, name=f"migrate-{migration.vm_uuid}", daemon=True)
        worker.start()
        worker.join(max(0.0, timeout))
        if worker.is_alive():
            # Before qemu starts sending, libvirt marks the job and cancels it when it gets there.
            try:
                domain.abortJob()
                aborted = "job aborted"
            except libvirt.libvirtError as error:
                aborted = f"abort failed: {_one_line(error)}"
            log.warning(
                "migration of %s from %s to %s exceeded its timeout (%.0f s): %s",
                migration.vm_uuid,
                migration.source,
                migration.destination,
                timeout,
                aborted,
            )
            worker.join(ABORT_GRACE)
            outcome, error = MigrationOutcome.TIMEOUT, f"not done within {timeout:.0f} s: aborted"
            return self._verified(migration, outcome, started, error)
        if errors:
            return self._verified(migration, MigrationOutcome.FAILED, started, errors[0])
        return self._verified(migration, MigrationOutcome.MIGRATED, started, "")

    def _verified(
        self, migration: Migration, outcome: MigrationOutcome, started: float, error: str
    ) -> MigrationResult:
        """Check where the VM runs; a success that is not on destination-only is unverified,
        a failure or timeout that nevertheless landed on the destination is a success."""
        on_destination = self._active_on(migration.destination, migration.vm_uuid)
        on_source = self._active_on(migration.source, migration.vm_uuid)
        if on_destination and on_source is False:
            return self._result(
                migration, MigrationOutcome.MIGRATED, started, "", migration.destination
            )
        location = (
            migration.source if on_source else migration.destination if on_destination else None
        )
        if on_source and on_destination is not False:
            self.clean_up_after(migration)
        if outcome is MigrationOutcome.MIGRATED:
            seen = {
                True: "running",
                False: "not running",
                None: "unreachable",
            }
            error = (
                f"libvirt reported success but the VM is {seen[on_destination]} on "
                f"{migration.destination} and {seen[on_source]} on {migration.source}"
            )
            outcome = MigrationOutcome.UNVERIFIED
        return self._result(migration, outcome, started, error, location)

    # --- copies left behind by a failed migration --------------------------------------------

    def clean_up_after(self, migration: Migration) -> None:
        """After a failed ``migration``: destroy a paused copy of the VM on the destination,
        now or once the destination answers (see the module docstring)."""
        with self._lock:
            self._leftovers[migration.vm_uuid] = migration
            if self._cleaner is None:
                self._cleaner = threading.Thread(
                    target=self._clean_leftovers, name="libvirt-leftovers", daemon=True
                )
                self._cleaner.start()

    def _clean_leftovers(self) -> None:
        while True:
            with self._lock:
                pending = list(self._leftovers.values())
            for migration in pending:
                if self._clean_leftover(migration):
                    with self._lock:
                        if self._leftovers.get(migration.vm_uuid) is migration:
                            del self._leftovers[migration.vm_uuid]
            with self._lock:
                if not self._leftovers or self._closing.is_set():
                    self._cleaner = None
                    return
            if self._closing.wait(LEFTOVER_RETRY):
                with self._lock:
                    self._cleaner = None
                return

    def _clean_leftover(self, migration: Migration) -> bool:
        """Destroy a paused copy ``migration`` left on its destination; True when there is
        nothing (more) to do, False to look again later (a host does not answer)."""
        libvirt = self._libvirt
        uuid, destination = migration.vm_uuid, migration.destination
        try:
            domain = self._connection(destination).lookupByUUIDString(uuid)
            state = domain.state()[0]
        except ExecutorError:
            return False
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return True
            self._forget(destination)
            return False
        if state != libvirt.VIR_DOMAIN_PAUSED:
            return True  # not a half-arrived copy: _verified reported where the VM runs
        on_source = self._active_on(migration.source, uuid)
        if on_source is None:
            return False
        if not on_source:
            log.error(
                "%s is paused on %s and not on %s: left as it is, it may be the only copy",
                uuid,
                destination,
                migration.source,
            )
            return True
        try:
            if domain.isPersistent():
                log.error(
                    "%s runs on %s and a persistent paused copy is defined on %s: check it",
                    uuid,
                    migration.source,
                    destination,
                )
                return True
            domain.destroy()
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return True
            # libvirt 9.0 may keep a copy recovered after a restart under a migration job it
            # never ends, sometimes with no qemu at all; only the host's operator can remove it.
            log.warning(
                "cannot destroy the paused copy of %s on %s (it runs on %s): %s; trying again "
                "every %.0f s (if it stays, restart libvirtd on %s, after killing the copy's "
                "qemu if it has one; if the restart brings it back, stop libvirtd, remove its "
                "status file /run/libvirt/qemu/NAME.xml and start libvirtd)",
                uuid,
                destination,
                migration.source,
                _one_line(error),
                LEFTOVER_RETRY,
                destination,
            )
            return False
        log.warning(
            "destroyed the paused copy of %s that a failed migration left on %s (it runs on %s)",
            uuid,
            destination,
            migration.source,
        )
        return True

    def host_switching_off(self, host: str, reason: str) -> None:
        """Refuse (ExecutorError) while a domain still runs on the host: no VM is lost."""
        try:
            running = self._connection(host).listDomainsID()
        except self._libvirt.libvirtError as error:
            raise ExecutorError(f"cannot list the VMs of {host}: {_one_line(error)}") from None
        if running:
            raise ExecutorError(f"{host} still runs {len(running)} VM(s): not switched off")
        self._forget(host)

    def host_woken(self, host: str, timeout: float) -> None:
        """Wait until ``host``'s libvirt accepts a connection (see Executor.host_woken)."""
        self._forget(host)  # a connection from before the sleep is dead
        deadline = self._clock() + timeout
        while True:
            try:
                self._connection(host)
                return
            except ExecutorError as error:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise ExecutorError(
                        f"{host} was switched on but libvirt did not answer within "
                        f"{timeout:g} s: {error}"
                    ) from None
                self._sleep(min(WAKE_POLL, remaining))

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            hosts = list(self._connections)
        for host in hosts:
            self._forget(host)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
