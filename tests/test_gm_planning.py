"""The global manager's planning: Neat's execute_underload / execute_overload (§7.2–7.3)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from neat_exporter.algorithms.placement import BestFitDecreasing
from neat_exporter.globalmanager.executors.base import Migration
from neat_exporter.globalmanager.fleet import FleetHost, FleetView, FleetVm, HostProblem
from neat_exporter.globalmanager.planning import (
    EMPTY,
    NO_PLACEMENT,
    PLANNED,
    HostCapacity,
    execute_overload,
    execute_underload,
)
from neat_exporter.vocabulary import Reason


def bfd(**params) -> BestFitDecreasing:
    return BestFitDecreasing(params, time_step=300, migration_time=0)


def vm(uuid: str, *cpu: float, ram: float = 512) -> FleetVm:
    return FleetVm(uuid, ram, tuple(cpu))


def host(name, cpu=4000, ram=8192, overhead=0, vms=(), problems=()) -> FleetHost:
    return FleetHost(name, cpu, overhead, ram, 1000.0, {v.uuid: v for v in vms}, tuple(problems))


def fleet(*hosts: FleetHost) -> FleetView:
    return FleetView(1000.0, {h.name: h for h in hosts})


def test_overload_moves_the_listed_vms_to_the_best_fit():
    view = fleet(
        host("a", vms=[vm("a1", 1000, 3000), vm("a2", 500)]),
        host("b", vms=[vm("b1", 2000)]),  # free 0.8*4000-2000 = 1200: best fit for 2000
        host("c", vms=[vm("c1", 100)]),  # free 3100
    )
    plan = execute_overload(view, "a", ["a1"], bfd())
    assert plan.result == PLANNED
    # a1's demand is the mean of its last 2 values: 2000, which only c can take.
    assert plan.migrations == (Migration("a1", "a", "c"),)
    assert plan.wake == () and plan.switch_off == ()


def test_overload_uses_the_placement_parameters():
    view = fleet(host("a", vms=[vm("a1", 900)]), host("b", cpu=1000, vms=[vm("b1", 0)]))
    assert execute_overload(view, "a", ["a1"], bfd()).result == NO_PLACEMENT  # 800 free
    plan = execute_overload(view, "a", ["a1"], bfd(cpu_threshold=0.9))
    assert plan.migrations == (Migration("a1", "a", "b"),)


def test_overload_wakes_a_sleeping_host_when_the_awake_ones_are_full():
    view = fleet(host("a", vms=[vm("a1", 3000)]), host("b", vms=[vm("b1", 3000)]))
    asleep = {"z": HostCapacity(4000, 8192), "y": HostCapacity(8000, 8192)}
    plan = execute_overload(view, "a", ["a1"], bfd(), asleep)
    # The smallest inactive host that fits is woken (ascending cpu, ram, name).
    assert plan.wake == ("z",)
    assert plan.migrations == (Migration("a1", "a", "z"),)
    assert plan.excluded == {"z": "asleep", "y": "asleep"}


def test_overload_offers_awake_empty_hosts_as_inactive_without_waking_them():
    view = fleet(host("a", vms=[vm("a1", 3000)]), host("e", cpu=3500))
    plan = execute_overload(view, "a", ["a1"], bfd())
    # Unscaled capacity (3500 >= 3000) as in Neat; the host is awake, nothing to wake.
    assert plan.migrations == (Migration("a1", "a", "e"),)
    assert plan.wake == ()


def test_overload_skips_vms_without_data_or_elsewhere():
    view = fleet(host("a", vms=[vm("a1", 100), vm("a2")]), host("b", vms=[vm("b1", 10)]))
    plan = execute_overload(view, "a", ["a1", "a2", "nowhere"], bfd())
    assert plan.migrations == (Migration("a1", "a", "b"),)
    assert set(plan.skipped) == {"a2", "nowhere"}
    assert execute_overload(view, "a", ["a2"], bfd()).result == EMPTY


def test_hosts_with_problems_take_no_part_and_say_why():
    stale = HostProblem("stale", "last cycle 900 s ago")
    view = fleet(
        host("a", vms=[vm("a1", 100)]),
        host("s", vms=[vm("s1", 10)], problems=[stale]),
        host("b", cpu=1000, vms=[vm("b1", 10)]),
    )
    plan = execute_overload(view, "a", ["a1"], bfd())
    assert plan.migrations == (Migration("a1", "a", "b"),)  # s would be the best fit
    assert plan.excluded == {"s": "stale"}


def test_a_stale_requesting_host_drops_the_request():
    stale = HostProblem("stale", "last cycle 900 s ago")
    view = fleet(host("a", vms=[vm("a1", 100)], problems=[stale]), host("b", vms=[vm("b", 1)]))
    assert execute_overload(view, "a", ["a1"], bfd()).result == EMPTY
    plan = execute_underload(view, "a", bfd())
    assert plan.result == EMPTY and "stale" in plan.detail


def test_underload_empties_the_host_and_switches_idle_hosts_off():
    view = fleet(
        host("a", vms=[vm("a1", 300), vm("a2", 200)]),
        host("b", vms=[vm("b1", 1000)]),
        host("idle"),
        host("s", problems=[HostProblem("stale", "no cycle reported")]),
    )
    plan = execute_underload(view, "a", bfd(), asleep={"z"})
    assert plan.result == PLANNED
    assert plan.migrations == (Migration("a1", "a", "b"), Migration("a2", "a", "b"))
    # The stale host is kept active, the sleeping one is already off, idle is switched off.
    assert plan.switch_off == ("a", "idle")
    assert plan.excluded == {"z": "asleep", "s": "stale"}


def test_underload_without_placement_keeps_the_host_on():
    view = fleet(host("a", vms=[vm("a1", 3900)]), host("b", vms=[vm("b1", 1000)]), host("e"))
    plan = execute_underload(view, "a", bfd())
    # Hosts without VMs are not offered in underload; the idle one is still switched off.
    assert plan.migrations == ()
    assert plan.switch_off == ("e",)
    view = fleet(host("a", vms=[vm("a1", 3900)]), host("b", vms=[vm("b1", 1000)]))
    plan = execute_underload(view, "a", bfd())
    assert plan.result == NO_PLACEMENT and plan.switch_off == ()


def test_underload_is_dropped_when_a_vm_has_no_data():
    view = fleet(host("a", vms=[vm("a1", 10), vm("a2")]), host("b", vms=[vm("b1", 1)]))
    plan = execute_underload(view, "a", bfd())
    assert plan.result == EMPTY and plan.migrations == ()
    assert "a2" in plan.detail


def test_underload_counts_overhead_and_ram():
    view = fleet(
        host("a", vms=[vm("a1", 500, ram=1000)]),
        host("b", overhead=2800, vms=[vm("b1", 100)]),  # 0.8*4000 - 2900 = 300 free
        host("c", ram=1500, vms=[vm("c1", 100, ram=600)]),  # RAM 0.95*1500-600 = 825 free
        host("d", vms=[vm("d1", 100, ram=100)]),
    )
    plan = execute_underload(view, "a", bfd())
    assert plan.migrations == (Migration("a1", "a", "d"),)
    assert plan.reason is Reason.UNDERLOAD


@st.composite
def fleets(draw):
    names = [f"h{i}" for i in range(draw(st.integers(2, 6)))]
    hosts, asleep = [], {}
    for name in names:
        if name != "h0" and draw(st.booleans()) and draw(st.booleans()):
            asleep[name] = HostCapacity(draw(st.integers(500, 8000)), 8192)
            continue
        count = draw(st.integers(0 if name != "h0" else 1, 4))
        vms = [
            vm(f"{name}-{i}", *draw(st.lists(st.integers(0, 3000), min_size=1, max_size=3)))
            for i in range(count)
        ]
        stale = [HostProblem("stale", "old")] if name != "h0" and draw(st.booleans()) else []
        hosts.append(host(name, cpu=draw(st.integers(500, 8000)), vms=vms, problems=stale))
    return fleet(*hosts), asleep


@settings(max_examples=200, deadline=None)
@given(fleets(), st.data())
def test_plans_respect_neat_invariants(generated, data):
    view, asleep = generated
    source = view.hosts["h0"]
    asked = data.draw(st.lists(st.sampled_from(sorted(source.vms)), min_size=1, unique=True))
    plan = execute_overload(view, "h0", asked, bfd(), asleep)
    assert set(plan.wake) <= set(asleep)
    for migration in plan.migrations:
        assert migration.source == "h0" and migration.vm_uuid in asked
        assert migration.destination != "h0"
        assert migration.destination not in plan.excluded or migration.destination in plan.wake
    if plan.result == PLANNED:
        assert {m.vm_uuid for m in plan.migrations} == set(asked)
    under = execute_underload(view, "h0", bfd(), asleep)
    for name in under.switch_off:  # never a host with VMs other than the emptied source
        assert name not in asleep and under.excluded.get(name) is None
        assert name == "h0" or not view.hosts[name].vms
    assert all(
        m.destination in view.hosts and view.hosts[m.destination].vms for m in under.migrations
    )
