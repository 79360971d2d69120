"""Orchestration: a request → a plan → wake hosts → migrate → verify → switch emptied hosts off.

The guards operators of DRS and the Kubernetes descheduler expect sit here, around Neat's pure
planning (planning.py):

- a host already being processed starts no second plan (``busy``); hosts another plan works on
  (its source, the hosts it wakes or switches off) take no part in other plans;
- a VM that moved within ``cooldown`` seconds is not moved again (no ping-pong); VMs matching an
  opt-out pattern (uuid or domain name) never move; hosts matching ``never_switch_off`` stay on;
- at most ``max_migrations_per_request`` per plan and ``max_migrations_per_hour`` in all;
- plans are computed one at a time against the fleet with every running or recently finished
  migration applied (fleet.with_moves), so two plans never count on the same free capacity;
- the sleeping hosts and recent migrations are persisted (state.py); every request, plan,
  migration and power action is counted (metrics.py) and audited (audit.py).

With the ``dry_run`` executor nothing moves and no host is powered: the plan is computed,
logged, counted and shown. Time is injected (``clock``).
"""

from __future__ import annotations

import fnmatch
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from dataclasses import replace as _replace

from neat_exporter.errors import NeatExporterError
from neat_exporter.globalmanager.audit import AuditLog
from neat_exporter.globalmanager.config import Policy
from neat_exporter.globalmanager.executors.base import (
    Executor,
    ExecutorError,
    Migration,
    MigrationOutcome,
    MigrationResult,
)
from neat_exporter.globalmanager.fleet import FleetView, Move, with_moves
from neat_exporter.globalmanager.metrics import GlobalManagerMetrics
from neat_exporter.globalmanager.planning import (
    EMPTY,
    PLANNED,
    HostCapacity,
    Placement,
    Plan,
    execute_overload,
    execute_underload,
)
from neat_exporter.globalmanager.power.base import PowerBackend, PowerError, PowerState
from neat_exporter.globalmanager.state import GlobalManagerState, MigrationRecord, SleepingHost
from neat_exporter.vocabulary import Reason

log = logging.getLogger(__name__)

IN_PROGRESS = "in_progress"
RUNNING = math.inf  # the time of a Move still running: whatever the exporters saw, apply it
HOUR = 3600.0


@dataclass(frozen=True)
class Answer:
    """What ``PUT /`` answers: the HTTP status and a one-line message."""

    status: int
    message: str
    plan: Plan | None = None


@dataclass
class PlanRecord:
    """A plan as the landing page and the audit log show it."""

    plan: Plan
    time: float
    result: str
    results: list[MigrationResult] = field(default_factory=list)
    power: list[str] = field(default_factory=list)
    done: bool = False


FleetReader = Callable[[float], FleetView]
"""Reads the fleet at a time (raises NeatExporterError, e.g. PrometheusError)."""


class GlobalManagerService:
    def __init__(
        self,
        *,
        read_fleet: FleetReader,
        placement: Placement,
        executor: Executor,
        power: PowerBackend | None,
        state: GlobalManagerState,
        audit: AuditLog,
        metrics: GlobalManagerMetrics,
        policy: Policy,
        clock: Callable[[], float],
    ) -> None:
        self._read_fleet = read_fleet
        self._placement = placement
        self.executor = executor
        self.power = power
        self.state = state
        self.audit = audit
        self.metrics = metrics
        self.policy = policy
        self._clock = clock
        self.dry_run = executor.name == "dry_run"
        self._plan_lock = threading.Lock()  # one plan computed at a time
        self._lock = threading.Lock()  # guards the fields below
        self._busy: dict[str, str] = {}  # host -> the requesting host of the plan using it
        self._in_flight: dict[str, Move] = {}  # vm uuid -> running migration
        self._pool = ThreadPoolExecutor(max(1, policy.parallel_migrations), "gm-migrate")
        self._workers: list[threading.Thread] = []
        self.plans: deque[PlanRecord] = deque(maxlen=20)
        self.latest_fleet: FleetView | None = None
        for host in state.sleeping:
            metrics.host_asleep.labels(host).set(1)
        # A global manager restarted after a failed migration looks at its destination again.
        for migration in state.unsettled_migrations():
            executor.clean_up_after(migration)

    # --- a request ------------------------------------------------------------------------

    def handle(self, host: str, reason: Reason, vm_uuids: Iterable[str]) -> Answer:
        """Plan for one validated request; run it (in the background unless waiting)."""
        vm_uuids = [uuid for uuid in vm_uuids if uuid] if reason is Reason.OVERLOAD else []
        self.audit.event("request", host=host, reason=reason.label, vm_uuids=vm_uuids)
        with self._plan_lock:
            with self._lock:
                busy = host in self._busy
            if busy:
                self.metrics.plans.labels(reason.label, "busy").inc()
                self.audit.event("plan", host=host, reason=reason.label, result="busy")
                log.info("%s request for %s: already being processed", reason.label, host)
                return Answer(200, f"{host} is already being processed: no second plan")
            started = self._clock()
            try:
                fleet = self._fleet(started)
            except NeatExporterError as error:
                self.metrics.fleet_errors.inc()
                self.metrics.plans.labels(reason.label, "fleet_error").inc()
                self.audit.event(
                    "plan", host=host, reason=reason.label, result="fleet_error", error=str(error)
                )
                log.error("cannot plan for %s: %s", host, error)
                return Answer(503, f"cannot read the fleet: {error}")
            plan = self._plan(fleet, host, reason, vm_uuids)
            self.metrics.plan_duration.observe(max(0.0, self._clock() - started))
            self.metrics.last_plan.set(self._clock())
            self._publish_exclusions(fleet, plan)
            if plan.result != PLANNED:
                self.metrics.plans.labels(reason.label, plan.result).inc()
                self._record(PlanRecord(plan, started, plan.result, done=True))
                log.info("%s request for %s: %s (%s)", reason.label, host, plan.result, plan.detail)
                status = 200
                return Answer(status, f"{plan.result}: {plan.detail}", plan)
            record = PlanRecord(plan, started, "dry_run" if self.dry_run else "running")
            self._reserve(plan)
        self._record(record)
        log.info("%s request for %s: %s", reason.label, host, plan.detail)
        if self.policy.wait_for_migrations:
            self._execute(record)
            return Answer(200, f"{record.result}: {plan.detail}", plan)
        worker = threading.Thread(target=self._execute, args=(record,), name=f"gm-plan-{host}")
        with self._lock:
            self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()
        return Answer(200, f"planned: {plan.detail}", plan)

    def _fleet(self, now: float) -> FleetView:
        fleet = self._read_fleet(now)
        with self._lock:
            moves = list(self._in_flight.values())
        moves += [
            Move(m.vm_uuid, m.source, m.destination, m.time)
            for m in self.state.migrations
            if m.outcome in (MigrationOutcome.MIGRATED, MigrationOutcome.UNVERIFIED)
        ]
        fleet = with_moves(fleet, sorted(moves, key=lambda move: move.time))
        self.latest_fleet = fleet
        return fleet

    def _plan(self, fleet: FleetView, host: str, reason: Reason, vm_uuids: list[str]) -> Plan:
        now = self._clock()
        with self._lock:
            unavailable = dict.fromkeys(self._busy, IN_PROGRESS)
        skipped: dict[str, str] = {}
        pinned = {}
        source = fleet.hosts.get(host)
        candidates = vm_uuids if reason is Reason.OVERLOAD else list(source.vms if source else [])
        for uuid in candidates:
            why = self._pinned(fleet, host, uuid, now)
            if why:
                pinned[uuid] = why
        if reason is Reason.UNDERLOAD:
            authority = self.executor.vms_on(host)
            unknown = sorted(set(authority or {}) - set(candidates))
            if unknown:
                return Plan(reason, host, EMPTY, f"no data for VM {', '.join(unknown[:3])}")
            if pinned:  # the host cannot be emptied: moving the others would only churn
                for why in pinned.values():
                    self.metrics.vms_skipped.labels(why).inc()
                return Plan(
                    reason,
                    host,
                    EMPTY,
                    f"host stays on: {len(pinned)} VM(s) must not move ({_reasons(pinned)})",
                    skipped=pinned,
                )
            plan = execute_underload(fleet, host, self._placement, self.state.sleeping, unavailable)
        else:
            for uuid, why in pinned.items():
                self.metrics.vms_skipped.labels(why).inc()
                skipped[uuid] = why
            movable = [uuid for uuid in vm_uuids if uuid not in pinned]
            asleep = {
                name: HostCapacity(entry.cpu_mhz, entry.ram_mb)
                for name, entry in self.state.sleeping.items()
            }
            plan = execute_overload(fleet, host, movable, self._placement, asleep, unavailable)
            for uuid, why in plan.skipped.items():
                self.metrics.vms_skipped.labels("unknown_vm").inc()
                skipped[uuid] = why
        if plan.result == PLANNED:
            plan = self._capped(plan, skipped)
        if skipped:
            plan = _replace(plan, skipped={**plan.skipped, **skipped})
        return plan

    def _pinned(self, fleet: FleetView, host: str, uuid: str, now: float) -> str | None:
        vm = fleet.hosts[host].vms.get(uuid) if host in fleet.hosts else None
        names = [uuid] + ([vm.name] if vm is not None and vm.name else [])
        if any(fnmatch.fnmatchcase(n, p) for n in names for p in self.policy.vm_opt_out):
            return "opt_out"
        last = self.state.last_moved(uuid)
        if last is not None and now - last < self.policy.cooldown:
            return "cooldown"
        return None

    def _capped(self, plan: Plan, skipped: dict[str, str]) -> Plan:
        """Apply the per-request and per-hour caps: an underload that cannot move every VM
        moves none (the host could not be switched off anyway)."""
        now = self._clock()
        with self._lock:
            running = len(self._in_flight)
        left_this_hour = self.policy.max_migrations_per_hour - (
            self.state.moved_since(now - HOUR) + running
        )
        allowed = min(self.policy.max_migrations_per_request, max(0, left_this_hour))
        if len(plan.migrations) <= allowed:
            return plan
        cap = "cap_request" if allowed == self.policy.max_migrations_per_request else "cap_hour"
        if plan.reason is Reason.UNDERLOAD:
            kept, dropped = (), plan.migrations
        else:
            kept, dropped = plan.migrations[:allowed], plan.migrations[allowed:]
        for migration in dropped:
            self.metrics.vms_skipped.labels(cap).inc()
            skipped[migration.vm_uuid] = cap
        if not kept:
            return _replace(
                plan,
                result=EMPTY,
                detail=f"{len(dropped)} migration(s) over the {cap.replace('_', ' ')}",
                migrations=(),
                wake=(),
                switch_off=(),
            )
        destinations = {m.destination for m in kept}
        return _replace(
            plan,
            detail=f"{plan.detail}; {len(dropped)} left by the {cap.replace('_', ' ')}",
            migrations=kept,
            wake=tuple(host for host in plan.wake if host in destinations),
        )

    def _reserve(self, plan: Plan) -> None:
        with self._lock:
            for name in {plan.host, *plan.wake, *plan.switch_off}:
                self._busy[name] = plan.host
            if not self.dry_run:
                for m in plan.migrations:
                    self._in_flight[m.vm_uuid] = Move(m.vm_uuid, m.source, m.destination, RUNNING)

    def _release(self, plan: Plan) -> None:
        with self._lock:
            for name, owner in list(self._busy.items()):
                if owner == plan.host:
                    del self._busy[name]
            for m in plan.migrations:
                self._in_flight.pop(m.vm_uuid, None)

    # --- running a plan ---------------------------------------------------------------------

    def _execute(self, record: PlanRecord) -> None:
        plan = record.plan
        try:
            failed_power = self._wake(record)
            results = self._migrate(record, unreachable=failed_power)
            expected = MigrationOutcome.DRY_RUN if self.dry_run else MigrationOutcome.MIGRATED
            moved = all(r.outcome is expected for r in results)
            failed = bool(failed_power) or not moved
            if plan.switch_off:
                failed |= not self._switch_off(record, source_emptied=moved)
            if self.dry_run:
                record.result = "dry_run"
            else:
                record.result = "failed" if failed else "executed"
        except Exception:  # a bug must not leave hosts reserved forever
            log.exception("plan for %s failed unexpectedly", plan.host)
            record.result = "failed"
        finally:
            self._release(plan)
            record.done = True
            self.metrics.plans.labels(plan.reason.label, record.result).inc()
            self.audit.event(
                "plan",
                host=plan.host,
                reason=plan.reason.label,
                result=record.result,
                detail=plan.detail,
                migrations=[_migration_dict(m) for m in plan.migrations],
                wake=list(plan.wake),
                switch_off=list(plan.switch_off),
                excluded=dict(plan.excluded),
                skipped=dict(plan.skipped),
            )
            self._save_state()

    def _wake(self, record: PlanRecord) -> set[str]:
        """Switch on the plan's sleeping hosts; the ones that failed."""
        failed = set()
        for host in record.plan.wake:
            if self.dry_run or self.power is None:
                result = "dry_run" if self.dry_run else "skipped"
                self._power_event(record, "on", host, result, "")
                if not self.dry_run:
                    failed.add(host)
                continue
            try:
                self.power.power_on(host)
                self.executor.host_woken(host, self.policy.wake_timeout)
            except (PowerError, ExecutorError, NeatExporterError) as error:
                self._power_event(record, "on", host, "failed", str(error))
                failed.add(host)
                continue
            self.state.host_awake(host)
            self.metrics.host_asleep.labels(host).set(0)
            self._power_event(record, "on", host, "ok", "")
        return failed

    def _migrate(self, record: PlanRecord, unreachable: set[str]) -> list[MigrationResult]:
        futures = []
        for migration in record.plan.migrations:
            if migration.destination in unreachable:
                result = MigrationResult(
                    migration,
                    MigrationOutcome.FAILED,
                    0.0,
                    f"{migration.destination} could not be switched on",
                    migration.source,
                )
                self._migration_done(record, result)
                continue
            futures.append(self._pool.submit(self._migrate_one, record, migration))
        for future in futures:
            future.result()
        with self._lock:
            return list(record.results)

    def _migrate_one(self, record: PlanRecord, migration: Migration) -> MigrationResult:
        self.metrics.migrations_in_progress.inc()
        try:
            result = self.executor.migrate(migration, self.policy.migration_timeout)
        except Exception as error:  # the protocol says never; a bug must still be counted
            log.exception("executor %s failed on %s", self.executor.name, migration.vm_uuid)
            result = MigrationResult(migration, MigrationOutcome.FAILED, 0.0, repr(error))
        finally:
            self.metrics.migrations_in_progress.dec()
        self._migration_done(record, result)
        return result

    def _migration_done(self, record: PlanRecord, result: MigrationResult) -> None:
        migration = result.migration
        self.metrics.migrations.labels(result.outcome.value).inc()
        self.metrics.migration_duration.observe(result.seconds)
        now = self._clock()
        with self._lock:
            record.results.append(result)
            self._in_flight.pop(migration.vm_uuid, None)
        if result.outcome is not MigrationOutcome.DRY_RUN:
            self.state.record_migrations(
                [
                    MigrationRecord(
                        migration.vm_uuid,
                        migration.source,
                        result.location or migration.source,
                        now,
                        result.outcome.value,
                        migration.destination,
                    )
                ],
                now,
            )
        self.audit.event(
            "migration",
            **_migration_dict(migration),
            outcome=result.outcome.value,
            seconds=round(result.seconds, 3),
            location=result.location,
            error=result.error,
        )
        level = logging.INFO if result.outcome in _FINE else logging.ERROR
        log.log(
            level,
            "migration of %s from %s to %s: %s%s",
            migration.vm_uuid,
            migration.source,
            migration.destination,
            result.outcome.value,
            f" ({result.error})" if result.error else "",
        )

    def _switch_off(self, record: PlanRecord, source_emptied: bool) -> bool:
        """Power off the plan's emptied hosts, all at once; False when an action failed."""
        hosts = record.plan.switch_off
        with ThreadPoolExecutor(min(8, len(hosts)), "gm-power") as pool:
            return all(pool.map(lambda h: self._switch_off_one(record, h, source_emptied), hosts))

    def _switch_off_one(self, record: PlanRecord, host: str, source_emptied: bool) -> bool:
        if host == record.plan.host and not source_emptied:
            self._power_event(record, "off", host, "skipped", "not every VM left the host")
            return True
        if any(fnmatch.fnmatchcase(host, p) for p in self.policy.never_switch_off):
            self._power_event(record, "off", host, "skipped", "never_switch_off")
            return True
        if self.dry_run or self.power is None:
            result = "dry_run" if self.dry_run else "skipped"
            self._power_event(record, "off", host, result, "" if self.dry_run else "no backend")
            return True
        remaining = self.executor.vms_on(host)
        if remaining:
            self._power_event(record, "off", host, "skipped", f"{len(remaining)} VM(s) on it")
            return True
        fleet = self.latest_fleet
        entry = fleet.hosts.get(host) if fleet else None
        try:
            self.executor.host_switching_off(host, "emptied by the Neat global manager")
            self.power.power_off(host)
        except (PowerError, ExecutorError, NeatExporterError) as error:
            self._power_event(record, "off", host, "failed", str(error))
            return False
        self.state.host_asleep(
            SleepingHost(
                host,
                self._clock(),
                (entry.cpu_mhz if entry else None) or 0.0,
                (entry.ram_mb if entry else None) or 0.0,
            )
        )
        self.metrics.host_asleep.labels(host).set(1)
        self._power_event(record, "off", host, "ok", "")
        return True

    def _power_event(
        self, record: PlanRecord, action: str, host: str, result: str, detail: str
    ) -> None:
        self.metrics.power_actions.labels(action, result).inc()
        record.power.append(f"{action} {host}: {result}" + (f" ({detail})" if detail else ""))
        self.audit.event("power", host=host, action=action, result=result, detail=detail)
        level = logging.ERROR if result == "failed" else logging.INFO
        log.log(level, "power %s %s: %s%s", action, host, result, f" ({detail})" if detail else "")

    # --- bookkeeping ------------------------------------------------------------------------

    def _record(self, record: PlanRecord) -> None:
        with self._lock:
            self.plans.appendleft(record)
        if record.done:
            self.audit.event(
                "plan",
                host=record.plan.host,
                reason=record.plan.reason.label,
                result=record.result,
                detail=record.plan.detail,
                excluded=dict(record.plan.excluded),
                skipped=dict(record.plan.skipped),
            )

    def _publish_exclusions(self, fleet: FleetView, plan: Plan) -> None:
        self.metrics.host_excluded.clear()
        for host, reason in plan.excluded.items():
            self.metrics.host_excluded.labels(host, reason).set(1)
        asleep = set(self.state.sleeping)
        excluded = set(plan.excluded) - asleep
        self.metrics.hosts.labels("asleep").set(len(asleep))
        self.metrics.hosts.labels("excluded").set(len(excluded))
        self.metrics.hosts.labels("active").set(len(set(fleet.hosts) - asleep - excluded))

    def _save_state(self) -> None:
        try:
            self.state.save()
        except NeatExporterError as error:
            self.metrics.audit_errors.inc()
            log.error("cannot save the state: %s", error)

    def fleet_for_display(self, max_age: float = 60.0) -> FleetView | None:
        """The latest fleet, read again when older than ``max_age`` seconds (landing page)."""
        now = self._clock()
        fleet = self.latest_fleet
        if fleet is None or now - fleet.time > max_age:
            try:
                fleet = self._fleet(now)
            except NeatExporterError as error:
                log.warning("cannot read the fleet for the landing page: %s", error)
        return fleet

    def power_states(self) -> dict[str, PowerState]:
        """The BMC's view of each sleeping host (for the landing page)."""
        if self.power is None:
            return {}
        states = {}
        for host in list(self.state.sleeping):
            try:
                states[host] = self.power.power_state(host)
            except (PowerError, NeatExporterError):
                states[host] = PowerState.UNKNOWN
        return states

    def wait_idle(self, timeout: float) -> bool:
        """Wait for running plans (tests, shutdown); False when some still run."""
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(timeout)
        return not any(worker.is_alive() for worker in workers)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
        self.executor.close()
        self.audit.close()


_FINE = (MigrationOutcome.MIGRATED, MigrationOutcome.DRY_RUN)


def _migration_dict(migration: Migration) -> dict[str, str]:
    return {
        "vm_uuid": migration.vm_uuid,
        "source": migration.source,
        "destination": migration.destination,
    }


def _reasons(pinned: dict[str, str]) -> str:
    return ", ".join(f"{uuid} {why}" for uuid, why in sorted(pinned.items())[:3])
