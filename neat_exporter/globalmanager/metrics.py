"""The global manager's own metrics (``neat_gm_*``): the contract of docs/metrics.md.

Every request, plan, migration and power action is counted here; the label values are the
constants below, all pre-created at zero so that ``rate()`` and ``absent()`` work from the
first scrape.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REASONS = ("underload", "overload")
"""Neat's reason 0 and 1, as label values."""

REQUEST_CODES = ("200", "400", "401", "403", "412", "413", "503")
"""What ``PUT /`` answers: done, Neat's four refusals, a body too large, the fleet unreadable.
A request that could not be read is counted with the reason ``invalid``."""

PLAN_RESULTS = ("executed", "dry_run", "empty", "no_placement", "busy", "fleet_error", "failed")
"""How a request's plan ended: executed (migrations ran), dry_run (computed and published only),
empty (nothing to move), no_placement (best_fit_decreasing found no complete placement), busy
(the host was already being processed: no second plan), fleet_error (Prometheus could not be
read), failed (the plan ran but some of its migrations or power actions failed)."""

MIGRATION_OUTCOMES = ("migrated", "failed", "timeout", "unverified", "dry_run")
"""The executors' MigrationOutcome values."""

SKIP_REASONS = ("cooldown", "opt_out", "cap_request", "cap_hour", "unknown_vm")
"""Why a VM asked to move was left where it is: it moved within the cooldown, it matches an
opt-out pattern, the per-request or per-hour cap was reached, no fleet data names it."""

POWER_ACTIONS = ("off", "on")
POWER_RESULTS = ("ok", "failed", "dry_run", "skipped")
"""skipped: the host is protected (never switched off) or the power backend is ``none``."""

EXCLUSION_REASONS = (
    "stale",
    "missing_capacity",
    "missing_ram",
    "vm_without_data",
    "asleep",
    "in_progress",
)
"""Why a host took no part in placement as an active host (see fleet.py; in_progress: another
plan is moving VMs off it, waking it or switching it off)."""


class GlobalManagerMetrics:
    """All ``neat_gm_*`` metrics of one global manager, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "neat_gm_requests",
            "PUT / requests answered, by reason (underload, overload, or invalid when it could "
            "not be read) and HTTP status code.",
            ["reason", "code"],
            registry=registry,
        )
        self.plans = Counter(
            "neat_gm_plans",
            "Plans by reason and result (executed, dry_run, empty, no_placement, busy, "
            "fleet_error, failed).",
            ["reason", "result"],
            registry=registry,
        )
        self.plan_duration = Histogram(
            "neat_gm_plan_duration_seconds",
            "Time to read the fleet from Prometheus and compute a plan.",
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )
        self.request_duration = Histogram(
            "neat_gm_request_duration_seconds",
            "Time from a request's arrival to its answer, migrations and power actions included.",
            ["reason"],
            registry=registry,
            buckets=(0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )
        self.migrations = Counter(
            "neat_gm_migrations",
            "Migrations by outcome (migrated, failed, timeout, unverified, dry_run).",
            ["outcome"],
            registry=registry,
        )
        self.migration_duration = Histogram(
            "neat_gm_migration_duration_seconds",
            "Time of one migration, as the executor measured it.",
            registry=registry,
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        )
        self.migrations_in_progress = Gauge(
            "neat_gm_migrations_in_progress",
            "Migrations running now.",
            registry=registry,
        )
        self.vms_skipped = Counter(
            "neat_gm_vms_skipped",
            "VMs asked to move but left in place, by reason (cooldown, opt_out, cap_request, "
            "cap_hour, unknown_vm).",
            ["reason"],
            registry=registry,
        )
        self.power_actions = Counter(
            "neat_gm_power_actions",
            "Host power actions by action (off, on) and result (ok, failed, dry_run, skipped).",
            ["action", "result"],
            registry=registry,
        )
        self.fleet_errors = Counter(
            "neat_gm_fleet_errors",
            "Failed reads of the fleet from Prometheus (unreachable, query refused).",
            registry=registry,
        )
        self.hosts = Gauge(
            "neat_gm_hosts",
            "Hosts in the latest fleet view by state: active, asleep, excluded.",
            ["state"],
            registry=registry,
        )
        self.host_asleep = Gauge(
            "neat_gm_host_asleep",
            "1 for a host the global manager switched off (and has not woken since).",
            ["host"],
            registry=registry,
        )
        self.host_excluded = Gauge(
            "neat_gm_host_excluded",
            "1 for a host the latest plan left out of placement, by reason (stale, "
            "missing_capacity, missing_ram, vm_without_data, asleep, in_progress).",
            ["host", "reason"],
            registry=registry,
        )
        self.last_plan = Gauge(
            "neat_gm_last_plan_timestamp_seconds",
            "When the latest plan was computed, in seconds since the epoch.",
            registry=registry,
        )
        self.audit_errors = Counter(
            "neat_gm_audit_errors",
            "Failed writes of the audit log or the state file.",
            registry=registry,
        )
        for reason in (*REASONS, "invalid"):
            for code in REQUEST_CODES:
                self.requests.labels(reason, code)
        for reason in REASONS:
            for result in PLAN_RESULTS:
                self.plans.labels(reason, result)
            self.request_duration.labels(reason)
        for outcome in MIGRATION_OUTCOMES:
            self.migrations.labels(outcome)
        for reason in SKIP_REASONS:
            self.vms_skipped.labels(reason)
        for action in POWER_ACTIONS:
            for result in POWER_RESULTS:
                self.power_actions.labels(action, result)
        for state in ("active", "asleep", "excluded"):
            self.hosts.labels(state)
