"""The global manager's orchestration: dry run, guards, caps, power, state and audit."""

from __future__ import annotations

import json
import threading

from gm_helpers import (
    Clock,
    RecordingExecutor,
    RecordingPower,
    fleet,
    host,
    service,
    vm,
)
from prometheus_client import CollectorRegistry

from neat_exporter.globalmanager.config import Policy
from neat_exporter.globalmanager.executors.base import Migration, MigrationOutcome
from neat_exporter.globalmanager.executors.dry_run import DryRunExecutor
from neat_exporter.globalmanager.state import GlobalManagerState
from neat_exporter.promql import PrometheusError
from neat_exporter.vocabulary import Reason


def sample(registry: CollectorRegistry, name: str, **labels) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def two_hosts():
    return fleet(
        host("a", vms=[vm("a1", 1000, name="web-1"), vm("a2", 500, name="db-1")]),
        host("b", vms=[vm("b1", 200)]),
    )


def test_dry_run_computes_and_counts_but_moves_nothing(tmp_path):
    registry = CollectorRegistry()
    power = RecordingPower()
    svc = service(two_hosts(), DryRunExecutor(), power=power, registry=registry)
    answer = svc.handle("a", Reason.UNDERLOAD, [])
    assert answer.status == 200
    record = svc.plans[0]
    assert record.result == "dry_run"
    assert [m.destination for m in record.plan.migrations] == ["b", "b"]
    assert {r.outcome for r in record.results} == {MigrationOutcome.DRY_RUN}
    assert power.actions == []  # a dry run never touches a BMC
    assert sample(registry, "neat_gm_plans_total", reason="underload", result="dry_run") == 1
    assert sample(registry, "neat_gm_migrations_total", outcome="dry_run") == 2
    assert sample(registry, "neat_gm_power_actions_total", action="off", result="dry_run") == 1
    assert svc.state.migrations == []  # no cooldown from a dry run


def test_overload_migrates_then_the_vm_cools_down():
    registry = CollectorRegistry()
    executor = RecordingExecutor()
    svc = service(two_hosts(), executor, registry=registry)
    svc.handle("a", Reason.OVERLOAD, ["a1"])
    assert executor.migrations == [Migration("a1", "a", "b")]
    assert sample(registry, "neat_gm_migrations_total", outcome="migrated") == 1
    # The fleet (not yet updated by the exporters) still shows a1 on a: asking again moves
    # nothing, because the VM is in its cooldown.
    answer = svc.handle("a", Reason.OVERLOAD, ["a1"])
    assert executor.migrations == [Migration("a1", "a", "b")]
    assert "a1" in svc.plans[0].plan.skipped
    assert sample(registry, "neat_gm_vms_skipped_total", reason="cooldown") == 1
    assert answer.status == 200


def test_opt_out_patterns_match_uuid_or_name():
    registry = CollectorRegistry()
    executor = RecordingExecutor()
    policy = Policy(wait_for_migrations=True, vm_opt_out=("db-*",))
    svc = service(two_hosts(), executor, policy=policy, registry=registry)
    svc.handle("a", Reason.OVERLOAD, ["a1", "a2"])
    assert executor.migrations == [Migration("a1", "a", "b")]
    assert sample(registry, "neat_gm_vms_skipped_total", reason="opt_out") == 1
    # An underloaded host with an opted-out VM cannot be emptied: nothing moves.
    svc.handle("a", Reason.UNDERLOAD, [])
    assert len(executor.migrations) == 1
    assert "must not move" in svc.plans[0].plan.detail


def test_a_host_in_progress_starts_no_second_plan():
    registry = CollectorRegistry()
    executor = RecordingExecutor()
    executor.hold.clear()
    svc = service(two_hosts(), executor, policy=Policy(), registry=registry)
    assert svc.handle("a", Reason.OVERLOAD, ["a1"]).status == 200  # answers after planning
    assert executor.started.wait(5)
    second = svc.handle("a", Reason.OVERLOAD, ["a2"])
    assert "already being processed" in second.message
    assert sample(registry, "neat_gm_plans_total", reason="overload", result="busy") == 1
    executor.hold.set()
    assert svc.wait_idle(5)
    assert executor.migrations == [Migration("a1", "a", "b")]


def test_caps_per_request_and_per_hour():
    registry = CollectorRegistry()
    executor = RecordingExecutor()
    clock = Clock()
    view = fleet(
        host("a", vms=[vm(f"a{i}", 100) for i in range(5)]),
        host("b", cpu=100000, vms=[vm("b1", 1)]),
    )
    policy = Policy(wait_for_migrations=True, max_migrations_per_request=2)
    svc = service(view, executor, policy=policy, registry=registry, clock=clock)
    svc.handle("a", Reason.OVERLOAD, ["a0", "a1", "a2"])
    assert len(executor.migrations) == 2
    assert sample(registry, "neat_gm_vms_skipped_total", reason="cap_request") == 1
    svc.handle("a", Reason.UNDERLOAD, [])  # 3 VMs left (in the fleet: 5) > 2: all or none
    assert len(executor.migrations) == 2
    policy = Policy(wait_for_migrations=True, max_migrations_per_hour=3)
    svc = service(view, RecordingExecutor(), policy=policy, registry=CollectorRegistry())
    svc.handle("a", Reason.OVERLOAD, ["a0", "a1"])
    svc.handle("a", Reason.OVERLOAD, ["a2", "a3"])
    assert len(svc.executor.migrations) == 3
    assert svc.plans[0].plan.skipped == {"a3": "cap_hour"}


def test_underload_switches_off_persists_and_wakes_on_overload(tmp_path):
    state_file = tmp_path / "state.json"
    audit_file = tmp_path / "audit.jsonl"
    registry = CollectorRegistry()
    executor = RecordingExecutor()
    power = RecordingPower()
    view = fleet(
        host("a", vms=[vm("a1", 100)]),
        host("b", vms=[vm("b1", 3000)]),
        host("c", vms=[vm("c1", 200)]),
    )
    svc = service(
        view,
        executor,
        power=power,
        state_file=state_file,
        audit_file=audit_file,
        registry=registry,
    )
    svc.handle("a", Reason.UNDERLOAD, [])
    assert executor.migrations == [Migration("a1", "a", "b")]  # the best (tightest) fit
    assert power.actions == [("off", "a")] and executor.switched_off == ["a"]
    assert sample(registry, "neat_gm_host_asleep", host="a") == 1
    # The state survives a restart: a new service knows a is asleep and offers it when needed.
    assert set(GlobalManagerState(state_file).sleeping) == {"a"}
    after = fleet(host("b", vms=[vm("b1", 3000), vm("b2", 3000)]), host("c", vms=[vm("c1", 3000)]))
    svc = service(after, executor, power=power, state_file=state_file, registry=CollectorRegistry())
    svc.handle("b", Reason.OVERLOAD, ["b2"])
    assert power.actions[-1] == ("on", "a") and executor.woken == ["a"]
    assert executor.migrations[-1] == Migration("b2", "b", "a")
    assert GlobalManagerState(state_file).sleeping == {}
    events = [json.loads(line) for line in audit_file.read_text().splitlines()]
    kinds = [event["event"] for event in events]
    assert kinds == ["request", "migration", "power", "plan"]
    assert events[2] == {**events[2], "host": "a", "action": "off", "result": "ok"}


def test_protected_hosts_and_failed_power_actions():
    registry = CollectorRegistry()
    view = fleet(host("a", vms=[vm("a1", 100)]), host("b", vms=[vm("b1", 100)]))
    policy = Policy(wait_for_migrations=True, never_switch_off=("a",))
    power = RecordingPower()
    svc = service(view, RecordingExecutor(), power=power, policy=policy, registry=registry)
    svc.handle("a", Reason.UNDERLOAD, [])
    assert power.actions == []
    assert sample(registry, "neat_gm_power_actions_total", action="off", result="skipped") == 1
    registry = CollectorRegistry()
    svc = service(view, RecordingExecutor(), power=RecordingPower(fail=True), registry=registry)
    svc.handle("a", Reason.UNDERLOAD, [])
    assert svc.plans[0].result == "failed"
    assert "BMC answered 500" in svc.plans[0].power[0]
    assert sample(registry, "neat_gm_power_actions_total", action="off", result="failed") == 1
    assert svc.state.sleeping == {}


def test_a_failed_migration_keeps_the_host_on():
    registry = CollectorRegistry()
    view = fleet(host("a", vms=[vm("a1", 100)]), host("b", vms=[vm("b1", 100)]))
    power = RecordingPower()
    executor = RecordingExecutor(MigrationOutcome.FAILED)
    svc = service(view, executor, power=power, registry=registry)
    svc.handle("a", Reason.UNDERLOAD, [])
    assert power.actions == []
    assert svc.plans[0].result == "failed"
    assert sample(registry, "neat_gm_migrations_total", outcome="failed") == 1
    assert sample(registry, "neat_gm_plans_total", reason="underload", result="failed") == 1


def test_a_restarted_service_looks_again_where_failed_migrations_were_going(tmp_path):
    """A failed migration may leave a copy of the VM on its destination; the executor looks for
    it, and a global manager restarted before it could still does, from its state file."""
    state_file = tmp_path / "state.json"
    view = fleet(host("a", vms=[vm("a1", 100)]), host("b", vms=[vm("b1", 100)]))
    executor = RecordingExecutor(MigrationOutcome.TIMEOUT)
    service(view, executor, state_file=state_file).handle("a", Reason.UNDERLOAD, [])
    assert executor.cleaned == []  # the executor's own business while it runs

    restarted = RecordingExecutor()
    service(view, restarted, state_file=state_file, registry=CollectorRegistry())
    assert restarted.cleaned == [Migration("a1", "a", "b")]


def test_only_each_vms_latest_unsettled_migration_is_looked_at_again(tmp_path):
    state_file = tmp_path / "state.json"
    records = [
        # (vm, source, found on, time, outcome, planned destination)
        ("v1", "a", "a", 10.0, "failed", "b"),  # moved since: nothing to look for
        ("v1", "a", "c", 20.0, "migrated", "c"),
        ("v2", "a", "a", 10.0, "migrated", "a"),
        ("v2", "a", "a", 30.0, "unverified", "d"),
        ("v3", "b", "b", 40.0, "failed", None),  # from a file that did not keep it
        ("v4", "b", "b", 50.0, "timeout", "e"),
    ]
    keys = ("vm_uuid", "source", "destination", "time", "outcome", "planned_destination")
    document = {
        "version": 1,
        "sleeping": [],
        "migrations": [dict(zip(keys, record, strict=True)) for record in records],
    }
    del document["migrations"][4]["planned_destination"]
    state_file.write_text(json.dumps(document))
    executor = RecordingExecutor()
    service(fleet(host("a")), executor, state_file=state_file)
    assert executor.cleaned == [Migration("v2", "a", "d"), Migration("v4", "b", "e")]


def test_prometheus_down_is_a_503_and_counted():
    registry = CollectorRegistry()

    def unreadable(now):
        raise PrometheusError("Prometheus at http://p:9090: cannot query: refused")

    svc = service(unreadable, RecordingExecutor(), registry=registry)
    answer = svc.handle("a", Reason.OVERLOAD, ["a1"])
    assert answer.status == 503 and "cannot query" in answer.message
    assert sample(registry, "neat_gm_fleet_errors_total") == 1
    assert sample(registry, "neat_gm_plans_total", reason="overload", result="fleet_error") == 1


def test_plans_never_count_on_capacity_a_running_plan_takes():
    executor = RecordingExecutor()
    executor.hold.clear()
    view = fleet(
        host("a", vms=[vm("a1", 1500)]),
        host("c", vms=[vm("c1", 1500)]),
        host("b", vms=[vm("b1", 1500)]),  # room for one 1500 MHz VM (0.8 * 4000 - 1500)
    )
    svc = service(view, executor, policy=Policy())
    svc.handle("a", Reason.OVERLOAD, ["a1"])
    assert executor.started.wait(5)
    done = threading.Event()

    def second():
        svc.handle("c", Reason.OVERLOAD, ["c1"])
        done.set()

    threading.Thread(target=second).start()
    assert done.wait(5)
    executor.hold.set()
    assert svc.wait_idle(5)
    destinations = sorted(m.destination for m in executor.migrations)
    # a1 went to one of b/c; c1 could not go where a1 went, nor to c (its source, busy).
    assert len(set(destinations)) == len(destinations)


def test_a_corrupt_state_file_is_a_clear_error(tmp_path):
    import pytest

    from neat_exporter.errors import InputError

    path = tmp_path / "state.json"
    path.write_text('{"version": 1, "sleeping": [{"host": 3}]')
    with pytest.raises(InputError, match="not a global manager state file"):
        GlobalManagerState(path)
    path.write_text('{"version": 1, "sleeping": [{"host": "h", "since": 1, "cpu_mhz": "x", '
                    '"ram_mb": 1}], "migrations": []}')  # fmt: skip
    with pytest.raises(InputError, match="malformed"):
        GlobalManagerState(path)
    path.write_text('{"version": 1, "sleeping": [], "migrations": [{"vm_uuid": "v", '
                    '"source": "a", "destination": "a", "time": 1, "outcome": "failed", '
                    '"planned_destination": ["b"]}]}')  # fmt: skip
    with pytest.raises(InputError, match="migration of 'v': malformed"):
        GlobalManagerState(path)
