"""Two libvirt hosts on one machine (libvirt_hosts.py): a running VM live-migrates between them
with libvirt's own API and afterwards runs on exactly one of them; a killed daemon comes back
and finds its VMs again."""

from __future__ import annotations

import signal
import time
from xml.etree import ElementTree

import pytest
from libvirt_hosts import libvirt_hosts_fixture
from services import wait_until

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

pytestmark = pytest.mark.services

hosts = libvirt_hosts_fixture("host-a", "host-b")

MIGRATE_FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_UNSAFE
)


def cpu_seconds(hosts, host: str, vm_uuid: str) -> float:
    with hosts.connect(host) as conn:
        return conn.lookupByUUIDString(vm_uuid).getCPUStats(True)[0]["cpu_time"] / 1e9


def test_hosts_are_distinct_machines(hosts):
    uuids, names = set(), set()
    for name in hosts.names:
        with hosts.connect(name) as conn:
            uuids.add(ElementTree.fromstring(conn.getCapabilities()).findtext("host/uuid"))
            names.add(conn.getHostname())
    assert names == {"host-a", "host-b"}
    assert len(uuids) == 2  # libvirt refuses to migrate to a host with the same UUID
    assert hosts.uri_template.format(host="host-a") == hosts.uri("host-a")


def test_a_busy_vm_live_migrates_peer_to_peer_and_runs_on_one_host(hosts):
    vm = hosts.start_vm("host-a", "busy-vm", load="busy")
    assert hosts.running_on(vm) == ["host-a"]

    started = time.monotonic()
    with hosts.connect("host-a") as source:
        source.lookupByUUIDString(vm).migrateToURI3(hosts.uri("host-b"), {}, MIGRATE_FLAGS)
    print(f"migration took {time.monotonic() - started:.2f} s")

    assert hosts.running_on(vm) == ["host-b"]
    with hosts.connect("host-a") as source, pytest.raises(libvirt.libvirtError) as missing:
        source.lookupByUUIDString(vm)  # undefined on the source, not merely shut off
    assert missing.value.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
    with hosts.connect("host-b") as destination:
        assert destination.lookupByUUIDString(vm).isPersistent()
    # It still spins, on the destination's CPU accounting (its own cgroup).
    before = cpu_seconds(hosts, "host-b", vm)
    wait_until(lambda: cpu_seconds(hosts, "host-b", vm) > before + 0.1, 10, "the VM to use CPU")


def test_a_killed_daemon_restarts_and_finds_its_vm_again(hosts):
    vm = hosts.start_vm("host-b", "idle-vm", load="idle", persistent=False)
    hosts.kill_libvirtd("host-b", signal.SIGKILL)
    with pytest.raises(libvirt.libvirtError):
        hosts.running_on(vm)  # no honest answer while a daemon is down
    hosts.restart_libvirtd("host-b")
    assert hosts.running_on(vm) == ["host-b"]
