"""The replay source: PlanetLab traces and the built-in synthetic workload."""

from __future__ import annotations

import numpy as np
import pytest

from neat_exporter.config import config_from_mapping
from neat_exporter.errors import ConfigError
from neat_exporter.sources import open_source
from neat_exporter.sources.replay import (
    SYNTHETIC_OVERHEAD,
    SYNTHETIC_PERIOD,
    ReplaySource,
    synthetic_workload,
)


def test_synthetic_workload_is_seeded():
    first = synthetic_workload(6, 4, seed=3)
    again = synthetic_workload(6, 4, seed=3)
    other = synthetic_workload(6, 4, seed=4)
    assert list(first) == list(again)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert list(first) != list(other)
    assert all(v.min() >= 0 and v.max() <= 100 for v in first.values())


def test_synthetic_host_passes_through_underload_normal_and_overload():
    cpus = 4
    traces = synthetic_workload(8, cpus, seed=0)
    host = sum(traces.values()) / 100 / cpus + SYNTHETIC_OVERHEAD  # host utilization per step
    period = host[:SYNTHETIC_PERIOD]
    assert period[:9].max() < 0.45  # underload
    assert 0.6 < period[15:19].mean() < 0.8  # normal
    assert period[24:31].min() > 0.92  # overload
    assert np.allclose(host[SYNTHETIC_PERIOD : 2 * SYNTHETIC_PERIOD].mean(), period.mean(), 0.05)


def test_replay_source_plays_one_step_per_collection_and_loops():
    source = ReplaySource(
        {"vm1": np.array([10.0, 50.0]), "vm2": np.array([100.0])},
        host_cpu_mhz=8000,
        cpus=4,
        vm_ram_mb=512,
        overhead=0.01,
    )
    first, second, third = (source.collect() for _ in range(3))
    assert first.cpu_mhz_total == 8000
    assert first.vms["vm1"].cpu_mhz == pytest.approx(200)  # 10 % of a 2000 MHz core
    assert second.vms["vm1"].cpu_mhz == pytest.approx(1000)
    assert third.vms["vm1"].cpu_mhz == pytest.approx(200)  # looped
    assert second.vms["vm2"].cpu_mhz == pytest.approx(2000)
    assert second.host_busy_mhz == pytest.approx(1000 + 2000 + 80)
    assert second.vms["vm2"].ram_max_mb == 512


def test_open_source_synthetic_has_nova_labels():
    config = config_from_mapping({"source": {"type": "replay", "replay": {"vms": 3}}})
    reading = open_source(config).collect()
    assert len(reading.vms) == 3
    assert {vm.info["instance_name"] for vm in reading.vms.values()} == {
        "demo-1",
        "demo-2",
        "demo-3",
    }


def test_open_source_planetlab_archive(planetlab_dir):
    archive = planetlab_dir / "20110303.tar.gz"
    config = config_from_mapping(
        {"source": {"type": "replay", "replay": {"traces": str(archive), "vms": 5, "seed": 1}}}
    )
    source = open_source(config)
    readings = [source.collect() for _ in range(3)]
    assert len(readings[0].vms) == 5
    core_mhz = 12000 / 4
    for reading in readings:
        for vm in reading.vms.values():
            assert 0 <= vm.cpu_mhz <= core_mhz


def test_traces_that_do_not_exist_or_parse_are_config_errors(tmp_path):
    with pytest.raises(ConfigError) as error:
        config_from_mapping({"source": {"type": "replay", "replay": {"traces": "/nope"}}})
    assert error.value.key == "source.replay.traces"
    (tmp_path / "vm1").write_text("10\nten\n")
    config = config_from_mapping(
        {"source": {"type": "replay", "replay": {"traces": str(tmp_path)}}}
    )
    with pytest.raises(ConfigError, match="not a number"):
        open_source(config)
