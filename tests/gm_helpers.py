"""Building blocks for the global manager's unit tests: fleets, and recording fakes at the two
I/O edges (the migration API and the BMC). The same service runs against real libvirt hosts,
a real Prometheus and the Redfish emulator in tests/test_e2e_global_manager.py."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from neat_exporter.algorithms.placement import BestFitDecreasing
from neat_exporter.globalmanager.audit import AuditLog
from neat_exporter.globalmanager.config import Policy
from neat_exporter.globalmanager.executors.base import (
    Migration,
    MigrationOutcome,
    MigrationResult,
)
from neat_exporter.globalmanager.fleet import FleetHost, FleetView, FleetVm
from neat_exporter.globalmanager.metrics import GlobalManagerMetrics
from neat_exporter.globalmanager.power.base import PowerError, PowerState
from neat_exporter.globalmanager.service import GlobalManagerService
from neat_exporter.globalmanager.state import GlobalManagerState


def vm(uuid: str, *cpu: float, ram: float = 512, name: str = "") -> FleetVm:
    return FleetVm(uuid, ram, tuple(cpu), name)


def host(name, cpu=4000, ram=8192, vms=(), last_cycle=1000.0) -> FleetHost:
    return FleetHost(name, cpu, 0.0, ram, last_cycle, {v.uuid: v for v in vms})


def fleet(*hosts: FleetHost, now: float = 1000.0) -> FleetView:
    return FleetView(now, {h.name: h for h in hosts})


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingExecutor:
    """Moves VMs in a FleetView it shares with the fleet reader; can be held mid-migration."""

    name = "recording"

    def __init__(self, outcome: MigrationOutcome = MigrationOutcome.MIGRATED):
        self.outcome = outcome
        self.migrations: list[Migration] = []
        self.switched_off: list[str] = []
        self.woken: list[str] = []
        self.cleaned: list[Migration] = []
        self.hold = threading.Event()
        self.hold.set()
        self.started = threading.Event()

    def vms_on(self, host: str):
        return None

    def migrate(self, migration: Migration, timeout: float) -> MigrationResult:
        self.started.set()
        self.hold.wait(10)
        self.migrations.append(migration)
        location = (
            migration.destination if self.outcome is MigrationOutcome.MIGRATED else migration.source
        )
        return MigrationResult(migration, self.outcome, 0.5, "", location)

    def clean_up_after(self, migration: Migration) -> None:
        self.cleaned.append(migration)

    def host_switching_off(self, host: str, reason: str) -> None:
        self.switched_off.append(host)

    def host_woken(self, host: str, timeout: float) -> None:
        self.woken.append(host)

    def close(self) -> None:
        pass


class RecordingPower:
    name = "recording"

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.states: dict[str, PowerState] = {}
        self.actions: list[tuple[str, str]] = []

    def power_off(self, host: str) -> None:
        if self.fail:
            raise PowerError(f"{host}: BMC answered 500")
        self.actions.append(("off", host))
        self.states[host] = PowerState.OFF

    def power_on(self, host: str) -> None:
        self.actions.append(("on", host))
        self.states[host] = PowerState.ON

    def power_state(self, host: str) -> PowerState:
        return self.states.get(host, PowerState.UNKNOWN)


def service(
    view,
    executor,
    *,
    power=None,
    policy: Policy | None = None,
    state_file=None,
    audit_file=None,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
) -> GlobalManagerService:
    clock = clock or Clock()
    registry = registry or CollectorRegistry()
    metrics = GlobalManagerMetrics(registry)
    reader = view if callable(view) else (lambda now: view)
    return GlobalManagerService(
        read_fleet=reader,
        placement=BestFitDecreasing({}, time_step=300, migration_time=0),
        executor=executor,
        power=power,
        state=GlobalManagerState(state_file),
        audit=AuditLog(audit_file, clock, on_error=metrics.audit_errors.inc),
        metrics=metrics,
        policy=policy or Policy(wait_for_migrations=True),
        clock=clock,
    )
