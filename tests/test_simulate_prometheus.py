"""The operator's own fleet from Prometheus: a real Prometheus whose TSDB promtool filled from
PlanetLab traces written as the exporters' series gives the same fleet, and the same figures,
as those traces read from the files; `simulate` and `tune` run on it from the command line."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import time

import numpy as np
import pytest
from services import Prometheus, require_program

from neat_exporter.cli import main
from neat_exporter.errors import NeatExporterError
from neat_exporter.promql import PrometheusAPI
from neat_exporter.simulate import parse_policy, simulate_day
from neat_exporter.simulate.inventory import (
    Inventory,
    linear_power,
    parse_host_power,
    power_models,
)
from neat_exporter.simulate.prometheus import read_fleet, time_range
from neat_exporter.simulate.runs import load_day

VMS = 16
HOSTS = (("h0", 2, 1860.0), ("h1", 2, 2660.0), ("h2", 2, 1860.0), ("h3", 2, 2660.0),
         ("h4", 4, 2000.0), ("h5", 2, 2660.0))  # fmt: skip
MB = 1024 * 1024


def planetlab_fleet(planetlab_dir) -> Inventory:
    """The first traces of 20110303 on a small mixed fleet, as read from the files."""
    traces = load_day(planetlab_dir / "20110303.tar.gz", VMS)
    cores = np.array([c for _, c, _ in HOSTS])
    mhz = np.array([m for _, _, m in HOSTS])
    tables, kinds = power_models(cores, mhz, (150.0, 250.0))
    home = np.arange(VMS) % len(HOSTS)
    return Inventory(
        host_names=np.array([name for name, _, _ in HOSTS]),
        host_pes=cores,
        host_pe_mips=mhz,
        host_ram_mb=np.full(len(HOSTS), 8192.0),
        power_tables=tables,
        host_power=kinds,
        vm_names=np.array([f"vm-{i:03d}" for i in range(VMS)]),
        vm_mips=mhz[home],
        vm_ram_mb=np.array([870.0, 1740.0, 1740.0, 613.0])[np.arange(VMS) * 4 // VMS],
        vm_home=home,
        traces=traces,
    )


def openmetrics(fleet: Inventory, start: int) -> str:
    """The fleet as the exporters would have published it, one sample per 300 s."""
    times = start + 300 * np.arange(fleet.traces.shape[1])
    lines = []

    def family(name: str, rows: list[tuple[str, np.ndarray]]) -> None:
        lines.append(f"# TYPE {name} gauge")
        for labels, values in rows:
            lines.extend(
                f"{name}{{{labels}}} {float(v)!r} {t}" for t, v in zip(times, values, strict=True)
            )

    def host_labels(h: int, extra: str = "") -> str:
        return f'instance="{fleet.host_names[h]}:9840",job="neat"{extra}'

    hosts = range(len(fleet.host_names))
    ones = np.ones(len(times))
    family(
        "neat_host_info",
        [
            (
                host_labels(
                    h,
                    f',host="{fleet.host_names[h]}",cpus="{fleet.host_pes[h]}",'
                    f'cpu_mhz="{fleet.host_pe_mips[h]:g}"',
                ),
                ones,
            )
            for h in hosts
        ],
    )
    capacity = fleet.host_pes * fleet.host_pe_mips * 1e6
    family("neat_host_cpu_capacity_hertz", [(host_labels(h), ones * capacity[h]) for h in hosts])
    ram = fleet.host_ram_mb * MB
    family("neat_host_memory_bytes", [(host_labels(h), ones * ram[h]) for h in hosts])
    vms = range(len(fleet.vm_names))
    vm = [(host_labels(fleet.vm_home[v], f',vm_uuid="{fleet.vm_names[v]}"'), v) for v in vms]
    family(
        "neat_vm_cpu_usage_hertz",
        [(labels, fleet.traces[v] * fleet.vm_mips[v] * 1e4) for labels, v in vm],
    )
    vm_ram = fleet.vm_ram_mb * MB
    family("neat_vm_memory_max_bytes", [(labels, ones * vm_ram[v]) for labels, v in vm])
    return "\n".join([*lines, "# EOF", ""])


@pytest.fixture(scope="module")
def filled_prometheus(planetlab_dir, tmp_path_factory):
    promtool = require_program("promtool")
    workdir = tmp_path_factory.mktemp("tun-prometheus")
    fleet = planetlab_fleet(planetlab_dir)
    start = (int(time.time()) // 86_400 - 3) * 86_400  # a whole day, three days ago
    source = workdir / "fleet.om"
    source.write_text(openmetrics(fleet, start))
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(workdir / "data")],
        check=True,
        capture_output=True,
    )
    server = Prometheus(workdir, targets=[])
    yield server, fleet, start, start + 300 * (fleet.traces.shape[1] - 1)
    server.stop()


def test_the_fleet_read_back_is_the_fleet_written(filled_prometheus):
    server, fleet, start, end = filled_prometheus
    days = read_fleet(PrometheusAPI(server.url), start, end, linear_power=(150.0, 250.0))
    assert list(days) == [time.strftime("%Y%m%dT%H%M", time.gmtime(start))]
    read = next(iter(days.values()))
    for name in ("host_names", "host_pes", "host_pe_mips", "host_ram_mb", "host_power",
                 "vm_names", "vm_mips", "vm_ram_mb", "vm_home", "traces"):  # fmt: skip
        assert np.array_equal(getattr(read, name), getattr(fleet, name)), name
    assert np.array_equal(read.power_tables[-1], linear_power(150.0, 250.0))
    # A power model named per host wins over the one its cores and speed give.
    named = read_fleet(
        PrometheusAPI(server.url), start, end, host_power={"h4": "g5", "h0": (50.0, 60.0)}
    )
    named = next(iter(named.values()))
    assert named.host_power[4] == 1
    assert np.array_equal(named.power_tables[named.host_power[0]], linear_power(50.0, 60.0))
    with pytest.raises(NeatExporterError, match="no host 'h9'"):
        read_fleet(PrometheusAPI(server.url), start, end, host_power={"h9": "g4"})
    for bad in ("h0", "h0=g7", "h0=60:50", "=g4"):
        with pytest.raises(NeatExporterError, match=r"host-power|idle"):
            parse_host_power(bad)
    # The same data gives the same figures, whichever way it came in.
    policy = "thr-mmt-0.8 underload=0.5"
    from_files = simulate_day(fleet.traces, parse_policy(policy), inventory=fleet)
    from_prometheus = simulate_day(read.traces, parse_policy(policy), inventory=read)
    assert from_files.migrations > 0
    assert [from_files.energy_kwh, from_files.slatah, from_files.pdm, from_files.migrations] == [
        from_prometheus.energy_kwh,
        from_prometheus.slatah,
        from_prometheus.pdm,
        from_prometheus.migrations,
    ]


def test_simulate_and_tune_on_the_prometheus_fleet(filled_prometheus, tmp_path, capfd):
    server, fleet, start, end = filled_prometheus
    source = ["--prometheus-url", server.url, "--start", str(start), "--end", str(end)]
    source += ["--power-linear", "150", "250"]
    assert main(["simulate", *source, "--policy", "thr-mmt-0.8 underload=0.5", "--format",
                 "json"]) == 0  # fmt: skip
    simulated = json.loads(capfd.readouterr().out)["results"][0]
    expected = simulate_day(
        fleet.traces, parse_policy("thr-mmt-0.8 underload=0.5"), inventory=fleet
    )
    assert simulated["energy_kwh"] == expected.energy_kwh
    assert simulated["migrations"] == expected.migrations

    config = tmp_path / "tuned.yml"
    argv = ["tune", *source, "--trials", "2", "--jobs", "1", "--storage",
            str(tmp_path / "s.db"), "--detectors", "threshold", "--config-out", str(config),
            "--plot", str(tmp_path / "front.png")]  # fmt: skip
    assert main(argv) == 0
    out, err = capfd.readouterr()
    assert len(re.findall(r"^trial \d+: ", err, re.M)) == 2
    assert "Pareto front" in out and f"--prometheus-url {server.url}" in out
    assert config.read_text().count("algorithms:") == 1
    assert (tmp_path / "front.png").stat().st_size > 0


def test_bad_ranges_and_an_empty_prometheus_are_refused(filled_prometheus, capfd):
    server, _, start, _ = filled_prometheus
    now = 1_000_000.0
    assert time_range(None, None, "2h", now) == (now - 7200, now)
    assert time_range("2026-12-01T00:00:00Z", "100", None, now)[1] == 100.0
    for bad in (
        ("1", None, "2h"),
        (None, None, "7x"),
        (None, None, None),
        ("yesterday", None, None),
    ):
        with pytest.raises(Exception, match=r"--range|--start|not a time|give"):
            time_range(*bad, now)
    # A range with no exporter series in it.
    early = ["--start", str(start - 10 * 86_400), "--end", str(start - 9 * 86_400)]
    assert main(["simulate", "--prometheus-url", server.url, *early]) == 2
    assert "no neat_host_info" in capfd.readouterr().err
    assert main(["simulate", "--prometheus-url", "http://127.0.0.1:9", *early]) == 2
    assert main(["simulate", "--traces", "x", "--prometheus-url", server.url]) == 2
    assert "either --traces or --prometheus-url" in capfd.readouterr().err


def test_an_operators_fleet_runs_out_of_ram(planetlab_dir, monkeypatch):
    from neat_exporter.simulate.consolidation import Planner

    fleet = planetlab_fleet(planetlab_dir)
    roomy = simulate_day(fleet.traces, parse_policy("thr-mmt-0.8"), inventory=fleet)
    # Each host has just the RAM of the VMs it starts with: a VM moves only where one finished.
    full = np.bincount(fleet.vm_home, weights=fleet.vm_ram_mb, minlength=len(HOSTS))
    tight = dataclasses.replace(fleet, host_ram_mb=full)
    original = Planner.add

    def add(self, host, vm):
        original(self, host, vm)
        assert self.free_ram[host] >= 0

    monkeypatch.setattr(Planner, "add", add)
    stuck = simulate_day(tight.traces, parse_policy("thr-mmt-0.8"), inventory=tight)
    assert stuck.migrations < roomy.migrations / 10
