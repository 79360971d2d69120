import math

import numpy as np
import pytest

from neat_exporter.errors import InputError
from neat_exporter.utilization import host_utilization, migration_time


def test_host_utilization_reference_example():
    vms = {"a": [100, 200, 300], "b": [300, 100, 300, 200], "c": [100, 100, 700]}
    assert host_utilization(vms, [300, 0, 300], 3000) == pytest.approx([0.1, 0.2, 0.2, 0.5])


def test_host_overhead_longer_than_vm_histories_is_cut_to_the_newest_values():
    assert host_utilization({"a": [100, 100]}, [900, 900, 0, 100], 1000) == [0.1, 0.2]


def test_vm_histories_are_left_padded_with_zeros():
    assert host_utilization({"a": [500], "b": [100, 100, 100]}, [], 1000) == [0.1, 0.1, 0.6]


def test_values_may_exceed_one_and_numpy_input_is_accepted():
    result = host_utilization({"a": np.array([1500.0, 2500.0])}, np.array([0.0, 500.0]), 2000)
    assert result == [0.75, 1.5]
    assert all(type(v) is float for v in result)


def test_no_vms_gives_an_empty_history():
    assert host_utilization({}, [100, 200], 1000) == []
    assert host_utilization({"a": []}, [100], 1000) == []


@pytest.mark.parametrize("capacity", [0, -1, math.nan, math.inf, "1000"])
def test_bad_capacity_is_named(capacity):
    with pytest.raises(InputError, match="capacity_mhz"):
        host_utilization({"a": [1]}, [], capacity)


@pytest.mark.parametrize("as_series", [list, np.array], ids=["lists", "arrays"])
def test_non_finite_vm_sample_names_the_vm(as_series):
    vms = {"a": as_series([1.0, 2.0]), "b": as_series([1.0, math.nan])}
    with pytest.raises(InputError, match=r"vms_mhz\['b'\].*index 1"):
        host_utilization(vms, [], 1000)


def test_migration_time_is_mean_ram_over_bandwidth():
    assert migration_time({"a": 1024, "b": 2048}, 10) == pytest.approx(153.6)
    assert migration_time([512, 512, 2048], 64) == pytest.approx(16.0)
    assert migration_time({}, 10) == 0.0


@pytest.mark.parametrize("bandwidth", [0, -5, math.inf])
def test_migration_time_rejects_bad_bandwidth(bandwidth):
    with pytest.raises(InputError, match="bandwidth_mb_s"):
        migration_time([1024], bandwidth)


def test_migration_time_rejects_bad_ram():
    with pytest.raises(InputError, match="vms_ram_mb"):
        migration_time({"a": math.inf}, 10)
