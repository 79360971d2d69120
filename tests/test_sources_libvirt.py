"""The libvirt source against libvirt's test driver, in-process and through a real libvirtd.

The test driver's CPU times are the wall clock (every domain burns exactly one core), so these
tests check inventory, metadata, lifecycle and failure handling; MHz against known load is
checked with real VMs in test_libvirt_qemu.py.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import pytest
from libvirt_fixtures import (
    NOVA_1_0,
    NOVA_1_1,
    domain_xml,
    expected_info,
    nova_metadata,
    vm_uuid,
    write_node_xml,
)
from prometheus_client import generate_latest
from served import served
from services import Libvirtd, wait_until

from neat_exporter.config import config_from_mapping
from neat_exporter.daemon import Daemon
from neat_exporter.identifiers import MAX_INFO_LABEL_LENGTH
from neat_exporter.sources import SourceError
from neat_exporter.sources.base import VM_INFO_LABELS
from neat_exporter.sources.libvirt import LibvirtSource, cpu_mhz

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")


@pytest.fixture
def default_driver():
    """A read-write connection to the process-wide ``test:///default`` state, which every
    connection in this process shares; domains the test creates are destroyed afterwards."""
    conn = libvirt.open("test:///default")
    created: list = []

    def create(xml: str):
        domain = conn.createXML(xml, 0)
        created.append(domain)
        return domain

    yield create
    for domain in created:
        with contextlib.suppress(libvirt.libvirtError):  # the test destroyed it already
            domain.destroy()
    conn.close()


def test_inventory_host_and_nova_metadata_from_a_node_file(tmp_path):
    node = write_node_xml(tmp_path / "node.xml", domains=20, cpus=(1, 2, 4, 2), mhz=2000)
    source = LibvirtSource(f"test:///{node}")
    try:
        first = source.collect()
        time.sleep(0.05)
        second = source.collect()
    finally:
        source.close()

    running = {vm_uuid(i) for i in range(20) if i % 10 != 9}
    assert set(first.vms) == running == set(second.vms)
    assert (first.cpu_cores, first.core_mhz, first.cpu_mhz_total) == (16, 2000.0, 32000.0)
    assert first.host == second.host == libvirt.open("test:///default").getHostname()
    assert first.skipped_vms == 0
    vm = second.vms[vm_uuid(5)]
    assert vm.ram_max_mb == 512 + 5 % 4 * 512
    assert dict(vm.info) == expected_info(5)
    assert all(v.cpu_mhz is None for v in first.vms.values()), "no baseline on first sight"
    # The test driver's cpuTime is the wall clock: one full core each, i.e. ~core MHz.
    assert all(1000 < v.cpu_mhz < 3000 for v in second.vms.values())
    # Its node CPU counters never move, so there is no host busy figure to compute.
    assert first.host_busy_mhz is None and second.host_busy_mhz is None


def test_configured_host_name_wins(tmp_path):
    node = write_node_xml(tmp_path / "node.xml", domains=1)
    source = LibvirtSource(f"test:///{node}", host="compute-7")
    assert source.collect().host == "compute-7"
    source.close()


def test_vms_appearing_pausing_and_disappearing(default_driver):
    source = LibvirtSource("test:///default")
    try:
        assert not {vm_uuid(i) for i in range(3)} & source.collect().vms.keys()
        with_1_1 = default_driver(domain_xml(0, metadata=NOVA_1_1))
        with_1_0 = default_driver(domain_xml(1, metadata=NOVA_1_0))
        default_driver(domain_xml(2, metadata=None, name="plain"))

        seen = source.collect().vms
        assert {vm_uuid(0), vm_uuid(1), vm_uuid(2)} <= seen.keys()
        assert seen[vm_uuid(0)].cpu_mhz is None
        assert dict(seen[vm_uuid(0)].info) == expected_info(0)
        assert dict(seen[vm_uuid(1)].info) == expected_info(1)
        no_metadata = {**dict.fromkeys(VM_INFO_LABELS, ""), "domain": "plain"}
        assert dict(seen[vm_uuid(2)].info) == no_metadata
        assert seen[vm_uuid(1)].ram_max_mb == 2048

        assert source.collect().vms[vm_uuid(0)].cpu_mhz > 0

        with_1_1.suspend()  # only running VMs count
        with_1_0.destroy()
        seen = source.collect().vms
        assert vm_uuid(0) not in seen and vm_uuid(1) not in seen and vm_uuid(2) in seen

        with_1_1.resume()  # back, but its baseline is gone: no MHz until the next cycle
        assert source.collect().vms[vm_uuid(0)].cpu_mhz is None
        assert source.collect().vms[vm_uuid(0)].cpu_mhz > 0
    finally:
        source.close()


def test_nova_metadata_labels_are_cut_to_a_bounded_length(default_driver, caplog):
    huge_name = "n" * 100_000
    metadata = nova_metadata(3).replace(
        "<nova:name>vm-3</nova:name>", f"<nova:name>{huge_name}</nova:name>"
    )
    metadata = metadata.replace('name="m1.small-0"', f'name="{"f" * 300}"')
    xml = domain_xml(3, metadata=None).replace(
        "</domain>", f"<metadata>{metadata}</metadata></domain>"
    )
    default_driver(xml)
    source = LibvirtSource("test:///default")
    try:
        with caplog.at_level("WARNING", logger="neat_exporter.sources.libvirt"):
            info = dict(source.collect().vms[vm_uuid(3)].info)
            source.collect()  # the metadata is cached: cut and said once
    finally:
        source.close()
    assert info["instance_name"] == "n" * (MAX_INFO_LABEL_LENGTH - 3) + "..."
    assert info["flavor_name"] == "f" * (MAX_INFO_LABEL_LENGTH - 3) + "..."
    assert info["project_name"] == expected_info(3)["project_name"]  # short values untouched
    cuts = [r.getMessage() for r in caplog.records if "characters, cut" in r.getMessage()]
    assert len(cuts) == 1
    assert "instance_name (100000 characters), flavor_name (300 characters)" in cuts[0]


def test_metadata_of_many_new_domains_is_spread_over_collections(tmp_path):
    node = write_node_xml(tmp_path / "node.xml", domains=3, shut_off_every=0)
    source = LibvirtSource(f"test:///{node}", metadata_budget=0)  # one domain per collection
    try:
        with_metadata = []
        for _ in range(4):
            vms = source.collect().vms
            assert len(vms) == 3
            with_metadata.append(sum(1 for vm in vms.values() if vm.info["instance_name"]))
            pending = [vm for vm in vms.values() if not vm.info["instance_name"]]
            assert all(vm.info["domain"].startswith("instance-") for vm in pending)
    finally:
        source.close()
    assert with_metadata == [1, 2, 3, 3]
    assert dict(vms[vm_uuid(2)].info) == expected_info(2)


def test_vms_vanishing_during_collections_are_skipped_not_fatal(default_driver):
    """Domains are destroyed and created while collections run; none may fail the cycle."""
    source = LibvirtSource("test:///default")
    churn_done = threading.Event()
    conn = libvirt.open("test:///default")

    def churn() -> None:
        for _ in range(30):
            domains = [conn.createXML(domain_xml(100 + i, metadata=None), 0) for i in range(60)]
            for domain in domains:
                domain.destroy()
        churn_done.set()

    thread = threading.Thread(target=churn)
    thread.start()
    readings = []
    try:
        while not churn_done.is_set():
            readings.append(source.collect())
    finally:
        thread.join()
        conn.close()
        source.close()
    churned = {vm_uuid(100 + i) for i in range(60)}
    assert len(readings) > 3
    assert any(reading.vms.keys() & churned for reading in readings)
    for reading in readings:
        assert all(reading.vms[u].ram_max_mb == 2048 for u in reading.vms.keys() & churned)
    # Some domains vanish between the bulk call and their info(): skipped and counted.
    assert sum(reading.skipped_vms for reading in readings) > 0


def test_neats_mhz_formula_and_a_counter_going_backwards(tmp_path):
    assert cpu_mhz(2000, 3e9, 2.0) == 3000.0  # 1.5 cores busy
    source = LibvirtSource(f"test:///{write_node_xml(tmp_path / 'n.xml', 1)}")
    from neat_exporter.sources.libvirt import _DomainSample

    assert source._vm_mhz(_DomainSample("u", "d", 10_000_000_000, 1024, at=100.0), 2000) is None
    assert source._vm_mhz(_DomainSample("u", "d", 11_000_000_000, 1024, at=102.0), 2000) == 1000.0
    # The VM restarted: its counter went back, so the previous value is reused.
    assert source._vm_mhz(_DomainSample("u", "d", 500_000_000, 1024, at=104.0), 2000) == 1000.0
    assert source._vm_mhz(_DomainSample("u", "d", 2_500_000_000, 1024, at=105.0), 2000) == 4000.0


# -- through a real libvirtd -----------------------------------------------------------------


@pytest.mark.services
def test_libvirtd_killed_and_restarted_mid_run(tmp_path):
    daemon = Libvirtd(tmp_path / "libvirtd")
    uri = daemon.uri()
    source = LibvirtSource(uri, timeout=2.0, reconnect_delay=0.3, max_reconnect_delay=1.0)
    try:
        # The shared test+unix:///default state lives as long as some client stays connected.
        keeper = libvirt.open(uri)
        keeper.createXML(domain_xml(0), 0)
        assert dict(source.collect().vms[vm_uuid(0)].info) == expected_info(0)
        assert source.collect().vms[vm_uuid(0)].cpu_mhz > 0

        daemon.kill(signal.SIGKILL)
        with pytest.raises(SourceError):
            source.collect()  # the dead connection
        with pytest.raises(SourceError):
            source.collect()  # the first reconnect attempt fails and starts the backoff
        started = time.monotonic()
        with pytest.raises(SourceError, match="next attempt in"):
            source.collect()  # backing off: the dead socket is not touched
        assert time.monotonic() - started < 0.1

        daemon.start()
        keeper = libvirt.open(uri)
        keeper.createXML(domain_xml(0), 0)
        keeper.createXML(domain_xml(1), 0)
        reading = wait_until(_collect_or_none(source), 5, "the source to reconnect", 0.1)
        assert {vm_uuid(0), vm_uuid(1)} <= reading.vms.keys()
        assert dict(reading.vms[vm_uuid(1)].info) == expected_info(1)
        keeper.close()
    finally:
        source.close()
        daemon.stop()


@pytest.mark.services
def test_reconnect_backoff_grows_and_is_capped(tmp_path):
    daemon = Libvirtd(tmp_path / "libvirtd")
    daemon.kill(signal.SIGKILL)
    now = [0.0]
    # Binary fractions of a second, so the source's clock and its delays add up exactly.
    source = LibvirtSource(
        daemon.uri(), reconnect_delay=0.125, max_reconnect_delay=0.5, monotonic=lambda: now[0]
    )
    attempts = []
    for tick in range(128):  # the source's clock every 1/64 s for 2 s
        now[0] = tick / 64
        try:
            source.collect()
        except SourceError as error:
            if "next attempt in" not in str(error):
                attempts.append(now[0])
    daemon.stop()
    # The delay doubles from 0.125 s and stops at its cap of 0.5 s.
    assert attempts == [0.0, 0.125, 0.375, 0.875, 1.375, 1.875]


@pytest.mark.services
def test_a_hung_libvirtd_bounds_the_collection_and_leaves_one_stuck_call(tmp_path):
    daemon = Libvirtd(tmp_path / "libvirtd")
    source = LibvirtSource(daemon.uri(), timeout=0.5, reconnect_delay=0.1)
    keeper = libvirt.open(daemon.uri())
    keeper.createXML(domain_xml(3), 0)
    try:
        assert vm_uuid(3) in source.collect().vms
        daemon.kill(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(SourceError, match="did not answer"):
            source.collect()
        assert 0.45 < time.monotonic() - started < 1.5
        threads_before = threading.active_count()
        for _ in range(5):  # refused at once while the first call is still stuck
            started = time.monotonic()
            with pytest.raises(SourceError):
                source.collect()
            assert time.monotonic() - started < 0.1
            time.sleep(0.12)
        assert threading.active_count() == threads_before
        daemon.kill(signal.SIGCONT)
        reading = wait_until(_collect_or_none(source), 5, "the source to recover", 0.1)
        assert vm_uuid(3) in reading.vms
    finally:
        daemon.kill(signal.SIGCONT)
        keeper.close()
        source.close()
        daemon.stop()


@pytest.mark.services
def test_the_daemon_reports_the_source_down_and_up_again(tmp_path):
    daemon = Libvirtd(tmp_path / "libvirtd")
    uri = daemon.uri()
    keeper = libvirt.open(uri)
    keeper.createXML(domain_xml(4), 0)
    config = config_from_mapping({"source": {"libvirt": {"uri": uri, "timeout": 2}}})
    exporter = Daemon(config, LibvirtSource(uri, reconnect_delay=0.1))

    def source_up() -> float:
        return exporter.registry.get_sample_value("neat_source_up")

    try:
        assert exporter.run_cycle() and source_up() == 1
        body = generate_latest(served(exporter)).decode()
        assert f'vm_uuid="{vm_uuid(4)}"' in body and 'project_name="project4"' in body
        daemon.kill(signal.SIGKILL)
        assert not exporter.run_cycle() and source_up() == 0
        assert exporter.snapshot is not None, "the last good snapshot stays"
        daemon.start()
        wait_until(exporter.run_cycle, 5, "a cycle after libvirtd restarted", 0.1)
        assert source_up() == 1
    finally:
        exporter.source.close()
        daemon.stop()


def _collect_or_none(source: LibvirtSource):
    def attempt():
        try:
            return source.collect()
        except SourceError:
            return None

    return attempt


def test_memory_in_use_as_ceilometer_counts_it():
    """Guest statistics give available − unused; without them, the balloon's current size."""
    from neat_exporter.sources.libvirt import _used_memory_kib

    guest = {"balloon.current": 2097152, "balloon.available": 2000000, "balloon.unused": 500000}
    assert _used_memory_kib(guest) == 1500000
    assert _used_memory_kib({"balloon.current": 2097152}) == 2097152
    assert _used_memory_kib({}) is None
