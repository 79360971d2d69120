"""VM selection and placement (Neat's ``vm_selection/algorithms.py`` and
``vm_placement/bin_packing.py``), by hand and by property."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neat_exporter.algorithms import available, build
from neat_exporter.errors import InputError

SELECTORS = available("vm_selection")["vm_selection"]


def select(name, cpu, ram, params=None):
    selected, state = build("vm_selection", name, params)(cpu, ram, None)
    assert state == {}
    return selected


def test_minimum_utilization_uses_the_newest_value_first_wins_ties():
    cpu = {"a": [5, 1], "b": [1, 3], "c": [0, 1]}
    assert select("minimum_utilization", cpu, {}) == ["a"]


def test_minimum_migration_time_picks_the_least_ram():
    cpu = {"a": [1], "b": [1], "c": [1]}
    assert select("minimum_migration_time", cpu, {"a": 2048, "b": 1024, "c": 1024}) == ["b"]


def test_minimum_migration_time_max_cpu():
    ram = {"a": 1024, "b": 1024, "c": 2048}
    cpu = {"a": [900, 100, 200, 300], "b": [0, 400, 100], "c": [1000, 1000]}
    assert select("minimum_migration_time_max_cpu", cpu, ram) == ["a"]  # 250 vs 250: first
    cpu["b"] = [0, 400, 300]
    assert select("minimum_migration_time_max_cpu", cpu, ram) == ["b"]
    assert select("minimum_migration_time_max_cpu", cpu, ram, {"last_n": 4}) == ["a"]  # 375 > 233


def test_minimum_migration_time_max_cpu_all_idle_picks_the_first_candidate():
    # Neat returns None here (and its local manager then fails).
    ram = {"a": 2048, "b": 512, "c": 512}
    assert select("minimum_migration_time_max_cpu", {"a": [0], "b": [0, 0], "c": []}, ram) == ["b"]


@pytest.mark.parametrize("name", SELECTORS)
def test_no_vms_selects_nothing(name):
    assert select(name, {}, {}) == []


def test_random_is_reproducible_with_a_seed():
    cpu = {str(i): [i] for i in range(20)}
    one, two = (build("vm_selection", "random", {"seed": 3}) for _ in range(2))
    first = [one(cpu, {})[0][0] for _ in range(10)]
    second = [two(cpu, {})[0][0] for _ in range(10)]
    assert first == second and set(first) <= set(cpu) and len(set(first)) > 1


def test_missing_ram_everywhere_is_an_input_error():
    with pytest.raises(InputError, match="vms_ram_mb"):
        select("minimum_migration_time_max_cpu", {"a": [1]}, {})
    with pytest.raises(InputError, match=r"vms_cpu_mhz\['a'\]"):
        select("minimum_utilization", {"a": [1, math.nan]}, {"a": 1})


histories = st.lists(st.floats(0, 1e5, allow_nan=False), max_size=6)
uuids = st.text("0123456789abcdef-", min_size=1, max_size=8)


@settings(max_examples=100, deadline=None)
@given(
    vms=st.dictionaries(uuids, st.tuples(histories, st.integers(1, 8192)), max_size=6),
    name=st.sampled_from(SELECTORS),
    last_n=st.integers(1, 5),
)
def test_selection_returns_one_existing_uuid(vms, name, last_n):
    cpu = {uuid: h for uuid, (h, _) in vms.items()}
    ram = {uuid: r for uuid, (_, r) in vms.items()}
    params = {"last_n": last_n} if name == "minimum_migration_time_max_cpu" else None
    selected = select(name, cpu, ram, params)
    assert all(type(uuid) is str for uuid in selected)
    assert len(selected) == (1 if vms else 0)
    assert set(selected) <= set(cpu)
    if selected and name.startswith("minimum_migration_time"):
        assert ram[selected[0]] == min(ram.values())


# -- placement ------------------------------------------------------------------------------


def place(hosts, inactive, vms_cpu, vms_ram, **params):
    """hosts: name -> (cpu usage, cpu total, ram usage, ram total); inactive: name -> (cpu, ram)."""
    bfd = build("vm_placement", "best_fit_decreasing", params or None)
    mapping, state = bfd(
        {h: v[0] for h, v in hosts.items()},
        {h: v[1] for h, v in hosts.items()},
        {h: v[2] for h, v in hosts.items()},
        {h: v[3] for h, v in hosts.items()},
        {h: v[0] for h, v in inactive.items()},
        {h: v[1] for h, v in inactive.items()},
        vms_cpu,
        vms_ram,
        None,
    )
    assert state == {}
    return mapping


def test_best_fit_decreasing_by_hand():
    # Free: h1 = (int(2400 - 1000), int(3891.2 - 1024)) = (1400, 2867); h2 = (400, 3891).
    hosts = {"h1": (1000, 3000, 1024, 4096), "h2": (2000, 3000, 0, 4096)}
    # Demands: v2 = 2001 // 2 = 1000 (integer history), v1 = 400; placed v2 first.
    vms_cpu = {"v1": [300, 500], "v2": [1000, 1001]}
    assert place(hosts, {}, vms_cpu, {"v1": 512, "v2": 1024}) == {"v2": "h1", "v1": "h2"}


def test_float_histories_use_true_division():
    hosts = {"h": (0, 1000, 0, 1000)}  # free cpu int(800) = 800
    assert place(hosts, {}, {"v": [800, 801]}, {"v": 1}) == {"v": "h"}  # 1601 // 2 = 800
    assert place(hosts, {}, {"v": [800.0, 801.0]}, {"v": 1}) == {}  # 800.5 > 800


def test_inactive_hosts_are_woken_smallest_first_with_full_capacity():
    hosts = {"h": (0, 1000, 0, 1000)}
    inactive = {"i2": (3000, 8192), "i1": (2000, 2048)}
    # 2500 fits neither h (800) nor i1 (2000): i1 then i2 are woken; unscaled capacity 3000.
    assert place(hosts, inactive, {"v": [2500]}, {"v": 1024}) == {"v": "i2"}
    assert place(hosts, inactive, {"v": [1500]}, {"v": 1024}) == {"v": "i1"}


def test_all_or_nothing_and_vms_without_data_are_left_out():
    hosts = {"h": (0, 1000, 0, 1000)}
    assert place(hosts, {}, {"a": [500], "b": [500]}, {"a": 1, "b": 1}) == {}
    assert place(hosts, {}, {"a": [500], "b": []}, {"a": 1, "b": 1}) == {"a": "h"}


def test_placement_input_errors_name_the_item():
    with pytest.raises(InputError, match=r"vms_ram: no RAM size for VM 'a'"):
        place({"h": (0, 1000, 0, 1000)}, {}, {"a": [1]}, {})


@settings(max_examples=150, deadline=None)
@given(
    hosts=st.dictionaries(
        st.sampled_from(["h1", "h2", "h3", "h4"]),
        st.tuples(
            st.integers(0, 4000), st.integers(1, 4000), st.integers(0, 4096), st.integers(1, 8192)
        ),
        max_size=4,
    ),
    inactive=st.dictionaries(
        st.sampled_from(["i1", "i2"]),
        st.tuples(st.integers(0, 4000), st.integers(0, 8192)),
        max_size=2,
    ),
    vms=st.dictionaries(
        st.sampled_from([f"v{i}" for i in range(8)]),
        st.tuples(st.lists(st.integers(0, 3000), max_size=3), st.integers(1, 4096)),
        max_size=8,
    ),
    cpu_threshold=st.sampled_from([0.5, 0.8, 1.0]),
)
def test_bfd_respects_capacity_and_places_all_or_nothing(hosts, inactive, vms, cpu_threshold):
    vms_cpu = {v: h for v, (h, _) in vms.items()}
    vms_ram = {v: r for v, (_, r) in vms.items()}
    mapping = place(hosts, inactive, vms_cpu, vms_ram, cpu_threshold=cpu_threshold)
    with_data = {v for v, h in vms_cpu.items() if h}
    assert mapping == {} or set(mapping) == with_data
    for host in {*hosts, *inactive}:
        placed = [v for v, h in mapping.items() if h == host]
        cpu = sum(sum(vms_cpu[v][-2:]) // len(vms_cpu[v][-2:]) for v in placed)
        ram = sum(vms_ram[v] for v in placed)
        if host in hosts:
            used_cpu, total_cpu, used_ram, total_ram = hosts[host]
            assert cpu <= int(cpu_threshold * total_cpu - used_cpu) or not placed
            assert ram <= int(0.95 * total_ram - used_ram) or not placed
        else:
            assert cpu <= inactive[host][0] and ram <= inactive[host][1]
