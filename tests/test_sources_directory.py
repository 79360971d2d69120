"""The directory source: Neat's local_data_directory, written by Neat's data collector."""

from __future__ import annotations

import os

import pytest

from neat_exporter.config import config_from_mapping
from neat_exporter.daemon import Daemon
from neat_exporter.sources import SourceError, open_source
from neat_exporter.sources.directory import DirectorySource

A, B = "a0000000-0000-4000-8000-000000000001", "b0000000-0000-4000-8000-000000000002"
TEST_DRIVER_VM = "6695eb01-f6a4-8304-79aa-97f2502e193f"  # libvirt's test:///default domain


def neat_directory(root, vms: dict[str, list[int]], host: list[int]):
    """A folder shaped as Neat's data collector leaves it."""
    (root / "vms").mkdir(parents=True)
    for uuid, values in vms.items():
        (root / "vms" / uuid).write_text("".join(f"{v}\n" for v in values))
    (root / "host").write_text("".join(f"{v}\n" for v in host))
    return root


def snapshot_of(tree):
    return {p.relative_to(tree): p.read_bytes() for p in tree.rglob("*") if p.is_file()}


def test_reads_neats_files_as_they_are(tmp_path):
    root = neat_directory(tmp_path, {A: [100, 200, 300], B: [50, 60]}, host=[10, 20, 30])
    source = DirectorySource(root, host_cpu_mhz=4000, vm_ram_mb=2048, host="compute1")
    reading = source.collect()
    assert reading.host == "compute1"
    assert reading.cpu_mhz_total == pytest.approx(4000)
    assert reading.vms[A].cpu_mhz == 300
    assert reading.vms[B].cpu_mhz == 60
    assert reading.vms[A].ram_max_mb == 2048
    assert reading.host_busy_mhz == 300 + 60 + 30
    files = source.read_history()
    assert (files.vms, files.host) == ({A: [100, 200, 300], B: [50, 60]}, [10, 20, 30])


def test_missing_directory_is_a_source_error(tmp_path):
    source = DirectorySource(tmp_path / "absent", host_cpu_mhz=4000)
    with pytest.raises(SourceError, match="vms"):
        source.collect()


def test_daemon_decides_from_the_files_and_never_writes_them(tmp_path):
    root = neat_directory(tmp_path / "neat", {A: [300, 300], B: [100, 100]}, host=[0, 0])
    config = config_from_mapping(
        {
            "host": "compute1",
            "source": {"type": "directory", "directory": {"path": str(root), "host_cpu_mhz": 4000}},
            "algorithms": {"overload": {"name": "threshold", "params": {"threshold": 0.9}}},
        }
    )
    before = snapshot_of(root)
    daemon = Daemon(config, open_source(config))
    assert daemon.run_cycle()
    assert daemon.snapshot.decision == "underload"  # (300 + 100) / 4000 = 0.1
    assert daemon.snapshot.history_samples == 2
    assert daemon.snapshot.utilization == pytest.approx(0.1)
    # Neat's collector appends a sample: the next cycle sees it.
    (root / "vms" / A).write_text("300\n300\n3700\n")
    (root / "host").write_text("0\n0\n100\n")
    before = snapshot_of(root)
    assert daemon.run_cycle()
    assert daemon.snapshot.decision == "overload"  # (3700 + 100 + 100) / 4000 > 0.9
    assert daemon.snapshot.selected == (A,)
    assert daemon.snapshot.history_samples == 3
    assert snapshot_of(root) == before


def test_with_libvirt_for_ram_capacity_and_host(tmp_path):
    pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    root = neat_directory(tmp_path, {TEST_DRIVER_VM: [500, 600], A: [100]}, host=[5, 5])
    config = config_from_mapping(
        {
            "source": {
                "type": "directory",
                "directory": {"path": str(root)},
                "libvirt": {"uri": "test:///default"},
            }
        }
    )
    source = open_source(config)
    try:
        reading = source.collect()
    finally:
        source.close()
    assert set(reading.vms) == {TEST_DRIVER_VM}  # A is unknown to libvirt: left out, as in Neat
    assert reading.vms[TEST_DRIVER_VM].ram_max_mb == 8192
    assert reading.vms[TEST_DRIVER_VM].cpu_mhz == 600
    assert reading.cpu_cores == 16


# --- hostile file names and values ----------------------------------------------------------------


def directory_daemon(root, host_cpu_mhz: float = 4000, **config) -> Daemon:
    config = config_from_mapping(
        {
            "host": "compute1",
            "source": {
                "type": "directory",
                "directory": {"path": str(root), "host_cpu_mhz": host_cpu_mhz},
            },
            "algorithms": {"overload": {"name": "threshold", "params": {"threshold": 0.9}}},
            **config,
        }
    )
    return Daemon(config, open_source(config))


def scrape(daemon: Daemon) -> tuple[str, str]:
    from neat_exporter.server import make_app

    app = make_app(daemon.registry, daemon)
    answer = {}
    environ = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "HTTP_ACCEPT": "text/plain"}
    body = b"".join(app(environ, lambda status, headers: answer.update(status=status)))
    return answer["status"], body.decode()


def test_file_names_that_are_not_vm_uuids_are_skipped_and_counted(tmp_path):
    """A file "x,y" named two VMs to the global manager; one whose name is not UTF-8 made every
    /metrics a 500. Both are left out and counted; the cycle and /metrics go on."""
    root = neat_directory(tmp_path / "neat", {A: [100, 200], B: [50]}, host=[10])
    (root / "vms" / f"{A},{B}").write_text("3000\n")
    os.symlink("/dev/null", root / "vms" / "not-a-uuid")
    (root / "vms" / os.fsdecode(b"\xff\xfe-latin1")).write_text("3000\n")
    daemon = directory_daemon(root)
    assert daemon.run_cycle()
    assert {vm.uuid for vm in daemon.snapshot.vms} == {A, B}
    assert daemon.snapshot.decision != "overload"
    assert value(daemon, "neat_vms_rejected_total") == 3
    status, text = scrape(daemon)
    assert status.startswith("200")
    assert f'neat_vm_cpu_usage_hertz{{vm_uuid="{A}"}}' in text
    assert "neat_vms_rejected_total 3.0" in text


def test_values_above_the_hosts_capacity_are_dropped_and_counted(tmp_path):
    """99999999 MHz on a 4000 MHz host drove overload decisions; 1e308 made sums infinite."""
    root = neat_directory(tmp_path / "neat", {A: [100, 99999999], B: [50]}, host=[10])
    (root / "host").write_text("10\n1.5e308\n1_000\n")
    daemon = directory_daemon(root)
    assert daemon.run_cycle()
    assert daemon.snapshot.decision == "underload"
    assert daemon.pipeline.history.vm_histories() == {A: [100], B: [50]}
    assert value(daemon, "neat_history_dropped_lines_total") == 3


def value(daemon: Daemon, name: str, **labels: str) -> float | None:
    return daemon.registry.get_sample_value(name, labels)
