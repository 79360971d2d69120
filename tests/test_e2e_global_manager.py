"""The global manager with the real parts: three libvirt hosts (libvirt_hosts.py), each watched
by its own `neat-exporter run --host NAME`, a real Prometheus scraping them, and
`neat-exporter global-manager --executor libvirt` reading that Prometheus and live-migrating
boot-sector VMs between the hosts.

Hosts: host-a and host-b are made small through their exporters' configuration
(host_cpu_usable_by_vms 0.25: half a core), so one busy VM (a spinning core) overloads them;
host-c is big. host-a's exporter runs in global_manager.mode on; host-b's alerts go through the
shipped rules, a real Alertmanager and `neat-exporter bridge`; host-d's exporter never finds its
host overloaded, so the fault tests send their requests for it with the exporter's own client.
All hosts share this machine's two cores with everything else running on it, so the hypervisor
overhead each exporter measures is the machine's noise: the placement's cpu_threshold is raised
(10) so that host-c always has room and the destination is decided by the hosts' sizes.

The tests run in order and share the hosts, Prometheus and the global manager (module scope).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from gm_helpers import fleet, service
from libvirt_hosts import libvirt_hosts_fixture
from services import (
    EXPORTER,
    Alertmanager,
    Exporter,
    Process,
    Prometheus,
    free_port,
    sample_value,
    scrape,
    wait_until,
)
from test_e2e_migration import rules_with_short_holds

from neat_exporter.actions import Credentials, GlobalManagerClient
from neat_exporter.globalmanager.state import GlobalManagerState, MigrationRecord
from neat_exporter.vocabulary import Reason

pytest.importorskip("libvirt", reason="libvirt-python is not installed")

pytestmark = pytest.mark.services

USER, PASSWORD = "admin", "e2e-gm-Pa55"
CREDENTIALS_ENV = {
    "NEAT_GLOBAL_MANAGER_USERNAME": USER,
    "NEAT_GLOBAL_MANAGER_PASSWORD": PASSWORD,
}
TOKEN = "e2e-gm-bridge-token"
SMALL = {"host-a": True, "host-b": True, "host-c": False, "host-d": False}
COMPUTE = tuple(SMALL)
BMC_HOST = "bmc"  # a libvirt host whose domains stand in for the compute hosts' machines
BMC_USER, BMC_PASSWORD = "bmc-admin", "e2e-bmc-Pa55"

hosts = libvirt_hosts_fixture(*COMPUTE, BMC_HOST, scope="module")


def exporter_config(name: str, uri: str, global_manager: dict) -> dict:
    small = SMALL[name]
    return {
        "host": name,
        "interval": 1,
        "host_cpu_usable_by_vms": 0.25 if small else 1.0,
        "source": {"type": "libvirt", "libvirt": {"uri": uri}},
        "algorithms": {
            # Never underloaded (the overhead is never exactly 0); host-c never overloaded.
            "underload": {"name": "threshold", "params": {"threshold": 0.0}},
            "overload": {"name": "threshold", "params": {"threshold": 0.8 if small else 1000}},
            "vm_selection": {"name": "minimum_migration_time_max_cpu", "params": {"last_n": 2}},
        },
        "global_manager": global_manager,
    }


class Stack:
    """Exporters, Prometheus, Alertmanager, bridge and the global manager, started in order."""

    def __init__(self, hosts, work: Path):
        self.hosts = hosts
        self.work = work
        self.parts: list = []
        self.gm_port = free_port()
        self.gm_url = f"http://127.0.0.1:{self.gm_port}/"
        self._pool = ThreadPoolExecutor(len(COMPUTE) + 1)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        # Asked again every 2 s while overloaded: the first request may come before Prometheus
        # has the new VM's CPU (the plan is then empty); the global manager's cooldown keeps
        # a moved VM from moving back.
        direct = {"mode": "on", "url": self.gm_url, "timeout": 60, "retries": 0, "cooldown": 2}
        # The BMC emulator and the machines' stand-ins start meanwhile (the last test uses them).
        self.redfish = self._pool.submit(self._start_bmc)

        def start_exporter(name: str) -> Exporter:
            section = direct if name == "host-a" else {"mode": "off"}
            config = exporter_config(name, self.hosts.uri(name), section)
            exporter = Exporter(self.work / name, config, env=CREDENTIALS_ENV)
            self.parts.append(exporter)
            return exporter

        self.exporters = dict(zip(COMPUTE, self._pool.map(start_exporter, COMPUTE), strict=True))
        bridge_port = free_port()
        self.bridge_url = f"http://127.0.0.1:{bridge_port}"
        (self.work / "token").write_text(TOKEN)
        bridge_config = {
            "global_manager": {
                "mode": "on",
                "url": self.gm_url,
                "timeout": 60,
                "retries": 0,
                "cooldown": 2,
            },
            "bridge": {
                "listen": f"127.0.0.1:{bridge_port}",
                "bearer_token_file": str(self.work / "token"),
                "dedup_ttl": 5,
            },
        }
        (self.work / "bridge.yml").write_text(yaml.safe_dump(bridge_config))
        self.bridge = self._serve(
            [*EXPORTER, "bridge", "--config", str(self.work / "bridge.yml")],
            "bridge",
            f"{self.bridge_url}/healthz",
        )
        self.alertmanager = Alertmanager(
            self.work / "alertmanager",
            f"{self.bridge_url}/webhook",
            http_config={"authorization": {"type": "Bearer", "credentials": TOKEN}},
        )
        self.parts.append(self.alertmanager)
        self.prometheus = Prometheus(
            self.work / "prometheus",
            [exporter.address for exporter in self.exporters.values()],
            rule_files=[rules_with_short_holds(self.work / "rules.yml")],
            alertmanager=self.alertmanager.address,
        )
        self.parts.append(self.prometheus)
        self.audit_log = self.work / "audit.jsonl"
        self.gm = self.start_gm(self.prometheus.url, self.gm_port, "gm")

    def _start_bmc(self):
        from bmc import RedfishEmulator

        for name in COMPUTE:
            self.hosts.start_vm(BMC_HOST, name, load="idle")
        uri = self.hosts.uri(BMC_HOST)
        redfish = RedfishEmulator(self.work / "redfish", uri, BMC_USER, BMC_PASSWORD)
        self.parts.append(redfish)
        return redfish

    def start_gm(
        self,
        prometheus_url: str,
        port: int,
        name: str,
        placement: dict | None = None,
        power: dict | None = None,
        **policy,
    ) -> Process:
        config = {
            "prometheus": {"stale_after": 6, "cpu_window": 30, "host_lookback": 600},
            "placement": {"params": placement or {"cpu_threshold": 10, "ram_threshold": 0.95}},
            **(power or {}),
            "executor": {"libvirt": {"max_per_host": 2, "max_total": 4}},
            "policy": {
                "migration_timeout": 60,
                "cooldown": 300,
                "wait_for_migrations": True,
                **policy,
            },
            "state_file": str(self.work / f"{name}-state.json"),
            "audit_log": str(self.work / f"{name}-audit.jsonl"),
        }
        (self.work / f"{name}.yml").write_text(yaml.safe_dump(config))
        argv = [
            *EXPORTER,
            "global-manager",
            "--config",
            str(self.work / f"{name}.yml"),
            "--listen",
            f"127.0.0.1:{port}",
            "--prometheus-url",
            prometheus_url,
            "--executor",
            "libvirt",
            "--libvirt-uri-template",
            self.hosts.uri_template,
            "--migrate-unsafe",
        ]
        return self._serve(argv, name, f"http://127.0.0.1:{port}/healthz")

    def _serve(self, argv: list[str], name: str, health: str) -> Process:
        process = Process(argv, self.work / f"{name}.log", env={**os.environ, **CREDENTIALS_ENV})
        self.parts.append(process)

        def up() -> bool:
            if not process.alive():
                raise RuntimeError(f"{name} exited: {process.log()[-3000:]}")
            return requests.get(health, timeout=1).ok

        wait_until(up, 30, f"{name} up")
        return process

    def gm_metrics(self) -> dict[tuple, float]:
        return scrape(self.gm_url.rstrip("/"))

    def gm_value(self, name: str, **labels: str) -> float:
        return sample_value(self.gm_metrics(), name, **labels)

    def status(self) -> dict:
        return requests.get(f"{self.gm_url}api/status", timeout=5).json()

    def audit(self, name: str = "gm") -> list[dict]:
        path = self.work / f"{name}-audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    def client(self, url: str | None = None) -> GlobalManagerClient:
        return GlobalManagerClient(
            url or self.gm_url, Credentials.from_plain(USER, PASSWORD), timeout=90, retries=0
        )

    def vms_listed(self, host: str) -> set[str]:
        return {
            dict(labels)["vm_uuid"]
            for (name, *labels) in self.exporters[host].metrics()
            if name == "neat_vm_info"
        }

    def wait_in_fleet(self, host: str, vm_uuid: str, timeout: float = 30) -> None:
        """Until Prometheus holds the VM's CPU on ``host`` (two scrapes)."""
        expr = (
            f'count_over_time(neat_vm_cpu_usage_hertz{{vm_uuid="{vm_uuid}"}}[30s]) >= 2 '
            f'and on (instance, job) neat_host_info{{host="{host}"}}'
        )
        wait_until(lambda: self.prometheus.query(expr), timeout, f"{vm_uuid} in the fleet", 0.5)

    def stop(self) -> None:
        self._pool.shutdown(wait=True)
        for part in reversed(self.parts):
            part.stop()


@pytest.fixture(scope="module")
def stack(hosts, tmp_path_factory):
    stack = Stack(hosts, tmp_path_factory.mktemp("gm-e2e"))
    yield stack
    stack.stop()
    assert PASSWORD not in (stack.work / "gm.log").read_text()
    assert PASSWORD not in stack.audit_log.parent.joinpath("gm-audit.jsonl").read_text()


def moved_off(hosts, vm_uuid: str, source: str) -> list[str] | None:
    """The VM's one host once it runs elsewhere than ``source`` (and no longer on both)."""
    found = hosts.running_on(vm_uuid)
    return found if len(found) == 1 and found != [source] else None


def one_host_each(hosts, vm_uuids) -> dict[str, list[str]]:
    """Where each VM runs: exactly one host each, or the test fails (no VM lost or doubled)."""
    where = {uuid: hosts.running_on(uuid) for uuid in vm_uuids}
    assert all(len(found) == 1 for found in where.values()), where
    return where


def test_every_daemon_shows_its_process_series(stack):
    """Memory, CPU, open files and start time, as every Prometheus exporter shows them."""
    for url in (stack.exporters["host-c"].url, stack.bridge_url, stack.gm_url.rstrip("/")):
        samples = scrape(url)
        assert sample_value(samples, "process_resident_memory_bytes") > 10e6, url
        assert sample_value(samples, "process_start_time_seconds") > 1.7e9, url
        assert sample_value(samples, "process_open_fds") > 0, url


def test_overload_from_the_exporter_live_migrates_the_vm(stack, hosts):
    vm = hosts.start_vm("host-a", "gm-busy-a", load="busy")
    [destination] = wait_until(
        lambda: moved_off(hosts, vm, "host-a"), 60, "host-a's exporter asking, the VM moving", 0.3
    )
    executed = wait_until(
        lambda: [p for p in stack.status()["plans"] if p["result"] == "executed"],
        30,
        "the plan verified and done",
        0.2,
    )
    assert executed[0]["host"] == "host-a"
    assert executed[0]["migrations"][0]["outcome"] == "migrated"
    assert executed[0]["migrations"][0]["destination"] == destination
    # Both exporters agree within two cycles: gone from host-a, listed on the destination.
    wait_until(
        lambda: vm not in stack.vms_listed("host-a") and vm in stack.vms_listed(destination),
        3,
        "both exporters agreeing",
        0.2,
    )
    assert stack.gm_value("neat_gm_migrations_total", outcome="migrated") == 1
    assert stack.gm_value("neat_gm_requests_total", reason="overload", code="200") >= 1


def test_overload_through_rules_alertmanager_and_bridge(stack, hosts):
    # The smallest VM: the one minimum_migration_time_max_cpu selects on host-b.
    vm = hosts.start_vm("host-b", "gm-busy-b", load="busy", memory_mib=16)
    wait_until(
        lambda: moved_off(hosts, vm, "host-b"),
        90,
        "the VM moved through Prometheus, Alertmanager, the bridge and the global manager",
        0.5,
    )
    bridge = scrape(stack.bridge_url)
    assert (
        sample_value(
            bridge, "neat_bridge_migration_requests_total", reason="overload", result="sent"
        )
        >= 1
    )
    moved = wait_until(
        lambda: [e for e in stack.audit() if e["event"] == "migration" and e["vm_uuid"] == vm],
        30,
        "the migration audited",
        0.2,
    )
    assert moved[-1]["outcome"] == "migrated" and moved[-1]["source"] == "host-b"


def test_the_same_request_twice_starts_one_plan(stack, hosts):
    vms = [hosts.start_vm("host-d", f"gm-twice-{i}", load="idle") for i in range(2)]
    for vm in vms:
        stack.wait_in_fleet("host-d", vm)
    answers = []
    threads = [
        threading.Thread(
            target=lambda: answers.append(stack.client().send("host-d", Reason.OVERLOAD, vms))
        )
        for _ in range(2)
    ]
    busy_before = stack.gm_value("neat_gm_plans_total", reason="overload", result="busy")
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert all(answer.ok for answer in answers), answers
    assert stack.gm_value("neat_gm_plans_total", reason="overload", result="busy") == (
        busy_before + 1
    )
    where = one_host_each(hosts, vms)
    assert all(found != ["host-d"] for found in where.values())
    # Asked again at once: both VMs are in their cooldown, nothing moves back.
    assert stack.client().send("host-c", Reason.OVERLOAD, vms).ok
    assert one_host_each(hosts, vms) == where
    assert stack.status()["plans"][0]["result"] == "empty"


def test_a_migration_over_its_timeout_is_aborted(stack, hosts):
    vm = hosts.start_vm("host-d", "gm-slow", load="idle")
    stack.wait_in_fleet("host-d", vm)
    port = free_port()
    gm = stack.start_gm(stack.prometheus.url, port, "gm-timeout", migration_timeout=2)
    # Every possible destination's daemon stops answering: the migration cannot finish in time.
    others = [name for name in COMPUTE if name != "host-d"]
    for name in others:
        hosts.kill_libvirtd(name, signal.SIGSTOP)

    def resume() -> None:
        for name in others:
            hosts.kill_libvirtd(name, signal.SIGCONT)

    resumer = threading.Thread(
        target=lambda: (
            wait_until(lambda: "exceeded its timeout" in gm.log(), 60, "the timeout", 0.2),
            resume(),
        )
    )
    resumer.start()
    try:
        answer = stack.client(f"http://127.0.0.1:{port}/").send("host-d", Reason.OVERLOAD, [vm])
    finally:
        resumer.join(60)
        resume()
    assert answer.ok
    [event] = [e for e in stack.audit("gm-timeout") if e["event"] == "migration"]
    assert event["outcome"] == "timeout" and "aborted" in event["error"], event
    assert one_host_each(hosts, [vm]) == {vm: ["host-d"]}
    metrics = scrape(f"http://127.0.0.1:{port}")
    assert sample_value(metrics, "neat_gm_migrations_total", outcome="timeout") == 1


def test_destination_libvirtd_killed_mid_plan(stack, hosts):
    vms = [hosts.start_vm("host-d", f"gm-kill-{i}", load="idle") for i in range(2)]
    for vm in vms:
        stack.wait_in_fleet("host-d", vm)
    port = free_port()
    stack.start_gm(stack.prometheus.url, port, "gm-kill", parallel_migrations=1)
    audit = stack.work / "gm-kill-audit.jsonl"
    url = f"http://127.0.0.1:{port}/"
    killed = []

    def kill_the_second_destination() -> None:
        wait_until(lambda: '"event": "migration"' in audit.read_text(), 60, "a migration", 0.1)
        plan = requests.get(f"{url}api/status", timeout=5).json()["plans"][0]
        killed.append(plan["planned"][1]["destination"])
        hosts.kill_libvirtd(killed[0])

    killer = threading.Thread(target=kill_the_second_destination)
    killer.start()
    try:
        answer = stack.client(url).send("host-d", Reason.OVERLOAD, vms)
        killer.join(60)
    finally:
        for name in killed:
            hosts.restart_libvirtd(name)
    assert answer.ok
    events = [e for e in stack.audit("gm-kill") if e["event"] == "migration"]
    outcomes = [e["outcome"] for e in events]
    assert outcomes[0] == "migrated" and outcomes[1] in ("failed", "timeout"), events
    assert events[1]["error"]
    # Killed during the incoming migration, the destination's daemon may come back with a
    # paused, never-started copy: the executor destroys it, so each VM is active on one host;
    # or, where libvirt keeps the copy under a migration job it never ends, it says so.
    log = stack.work / "gm-kill.log"

    def settled() -> bool:
        if all(len(hosts.running_on(vm)) == 1 for vm in vms):
            return True
        return "cannot destroy the paused copy" in log.read_text()

    wait_until(settled, 60, "each VM on one host, or the stuck copy reported", 0.5)
    for name in killed:  # what the log line tells an operator to do
        kill_stuck_copies(hosts, name, vms)
    assert running(hosts, events[1]["vm_uuid"]) == ["host-d"]
    assert all(len(hosts.running_on(vm)) == 1 for vm in vms)
    metrics = scrape(f"http://127.0.0.1:{port}")
    assert sample_value(metrics, "neat_gm_plans_total", reason="overload", result="failed") == 1


def test_a_paused_copy_left_on_a_destination_is_destroyed(hosts, tmp_path):
    """What a destination killed during an incoming migration can come back with: a paused,
    transient copy of a VM that still runs on its source. The executor destroys the copy after
    the failed migration, and so does a global manager restarted since, from its state file:
    the VM is active on one host only."""
    import libvirt

    from neat_exporter.globalmanager.executors.libvirt import LibvirtExecutor

    vm = hosts.start_vm("host-a", "gm-copy", load="idle")
    with hosts.connect("host-a") as source:
        definition = ElementTree.fromstring(source.lookupByUUIDString(vm).XMLDesc())
    devices = definition.find("devices")
    for disk in devices.findall("disk"):  # as an incoming copy, it does not hold the image
        devices.remove(disk)
    with hosts.connect("host-c") as destination:
        destination.createXML(
            ElementTree.tostring(definition, "unicode"), libvirt.VIR_DOMAIN_START_PAUSED
        )
    assert sorted(hosts.running_on(vm)) == ["host-a", "host-c"]
    state_file = tmp_path / "state.json"
    state = GlobalManagerState(state_file)
    state.record_migrations([MigrationRecord(vm, "host-a", "host-a", 0, "failed", "host-c")], 0)
    state.save()
    executor = LibvirtExecutor(hosts.uri_template, unsafe=True)
    try:
        service(fleet(), executor, state_file=state_file)
        wait_until(lambda: hosts.running_on(vm) == ["host-a"], 30, "the copy destroyed", 0.2)
    finally:
        executor.close()
    assert running(hosts, vm) == ["host-a"]
    with hosts.connect("host-a") as source:  # the other tests plan without it
        domain = source.lookupByUUIDString(vm)
        domain.destroy()
        if domain.isPersistent():
            domain.undefine()


def test_prometheus_down_is_refused_with_503_and_counted(stack):
    port = free_port()
    stack.start_gm(f"http://127.0.0.1:{free_port()}", port, "gm-noprom")
    answer = stack.client(f"http://127.0.0.1:{port}/").send("host-d", Reason.OVERLOAD, ["x"])
    assert not answer.ok and answer.status == 503
    metrics = scrape(f"http://127.0.0.1:{port}")
    assert sample_value(metrics, "neat_gm_fleet_errors_total") == 1
    assert "cannot query" in (stack.work / "gm-noprom.log").read_text()


def test_stale_series_leave_a_host_out(stack, hosts):
    vm = hosts.start_vm("host-d", "gm-stale", load="idle")
    stack.wait_in_fleet("host-d", vm)
    exporter = stack.exporters["host-c"]
    exporter.process.signal(signal.SIGSTOP)  # scrapes fail: its series go stale
    try:
        age = (
            "time() - max(last_over_time(neat_last_cycle_timestamp_seconds"
            f'{{instance="{exporter.address}"}}[10m])) > 7'
        )
        wait_until(lambda: stack.prometheus.query(age), 30, "host-c's series stale", 0.5)
        answer = stack.client().send("host-d", Reason.OVERLOAD, [vm])
        plan = stack.status()["plans"][0]
    finally:
        exporter.process.signal(signal.SIGCONT)
    assert answer.ok
    assert stack.gm_value("neat_gm_host_excluded", host="host-c", reason="stale") == 1
    assert all(m["destination"] != "host-c" for m in plan["planned"])
    one_host_each(hosts, [vm])


def redfish_power_state(url: str, system: str) -> str:
    response = requests.get(
        f"{url}/redfish/v1/Systems/{system}", auth=(BMC_USER, BMC_PASSWORD), timeout=5
    )
    response.raise_for_status()
    return response.json()["PowerState"]


def test_underload_switches_hosts_off_through_redfish_and_an_overload_wakes_one(stack, hosts):
    """Last: it stops the main global manager so that the exporter's and the bridge's requests
    cannot move VMs while this one switches hosts off."""
    stack.gm.stop()
    redfish = stack.redfish.result()  # the machines' stand-ins, powered by the emulated BMC
    (stack.work / "bmc-password").write_text(BMC_PASSWORD)
    bmc = {
        "url": redfish.url,
        "username": BMC_USER,
        "password_file": str(stack.work / "bmc-password"),
        "shutdown": "force",  # boot sectors ignore the ACPI power button
        "timeout": 30,
        "poll_interval": 0.2,
    }
    power = {
        "power": {"backend": "redfish"},
        "hosts": {name: {"redfish": {**bmc, "system_id": name}} for name in COMPUTE},
    }
    vms = [hosts.start_vm("host-d", f"gm-under-{i}", load="idle") for i in range(2)]
    for vm in vms:
        stack.wait_in_fleet("host-d", vm)
    on_d = [vm for vm in list_vms(hosts, "host-d")]
    port = free_port()
    gm = stack.start_gm(stack.prometheus.url, port, "gm-power", power=power)
    url = f"http://127.0.0.1:{port}/"
    assert stack.client(url).send("host-d", Reason.UNDERLOAD, []).ok
    plan = requests.get(f"{url}api/status", timeout=5).json()["plans"][0]
    assert plan["result"] == "executed", plan
    assert "host-d" in plan["switch_off"]
    where = one_host_each(hosts, on_d)
    assert all(found != ["host-d"] for found in where.values())
    for name in plan["switch_off"]:
        assert redfish_power_state(redfish.url, name) == "Off"
    state = json.loads((stack.work / "gm-power-state.json").read_text())
    asleep = {entry["host"] for entry in state["sleeping"]}
    assert asleep == set(plan["switch_off"])
    metrics = scrape(url.rstrip("/"))
    off = sample_value(metrics, "neat_gm_power_actions_total", action="off", result="ok")
    assert off == len(asleep)
    assert sample_value(metrics, "neat_gm_host_asleep", host="host-d") == 1
    gm.stop()

    # Restarted on the same state, with a RAM threshold no awake host can meet: the overload
    # needs a sleeping host, which is switched on through the BMC first.
    gm = stack.start_gm(
        stack.prometheus.url,
        port,
        "gm-power",
        placement={"cpu_threshold": 10, "ram_threshold": 1e-9},
        power=power,
    )
    # A VM that has not just moved (those are in their cooldown).
    source, vm = next(
        (name, uuid)
        for name in COMPUTE
        if name not in asleep
        for uuid in list_vms(hosts, name)
        if uuid not in on_d
    )
    assert stack.client(url).send(source, Reason.OVERLOAD, [vm]).ok
    plan = requests.get(f"{url}api/status", timeout=5).json()["plans"][0]
    assert plan["result"] == "executed", plan
    [woken] = plan["wake"]
    assert woken in asleep
    assert redfish_power_state(redfish.url, woken) == "On"
    assert one_host_each(hosts, [vm]) == {vm: [woken]}
    state = json.loads((stack.work / "gm-power-state.json").read_text())
    assert woken not in {entry["host"] for entry in state["sleeping"]}
    assert BMC_PASSWORD not in gm.log()


def list_vms(hosts, host: str) -> list[str]:
    with hosts.connect(host) as conn:
        return sorted(domain.UUIDString() for domain in conn.listAllDomains(1))


def kill_stuck_copies(hosts, host: str, vm_uuids) -> None:
    """What the executor's log line tells an operator to do with the paused copies of
    ``vm_uuids`` on ``host``: kill their qemu (if they have one) and restart the daemon; if the
    restart recovers a copy again (libvirt 9.0 can, for a copy with no qemu under a migration
    job), stop the daemon, remove the copy's status file and start it."""
    for attempt in range(2):
        stuck = _paused_copies(hosts, host, vm_uuids)
        if not stuck:
            return
        for status in stuck:
            pid = int(ElementTree.parse(status).getroot().get("pid", "0"))
            if pid > 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                # A daemon restarted while the process still exists would recover the copy.
                wait_until(lambda pid=pid: not _alive(pid), 30, f"qemu {pid} gone", 0.1)
        if attempt == 0:
            hosts.restart_libvirtd(host)
            continue
        daemon = hosts.hosts[host]
        daemon.kill(signal.SIGTERM)
        for status in stuck:
            status.unlink(missing_ok=True)
        daemon.start()
        daemon.wait_ready()
    assert not _paused_copies(hosts, host, vm_uuids)


def _paused_copies(hosts, host: str, vm_uuids) -> list[Path]:
    """The status files of the paused domains of ``vm_uuids`` on ``host``."""
    import libvirt

    stuck = []
    with hosts.connect(host) as conn:
        for uuid in vm_uuids:
            try:
                domain = conn.lookupByUUIDString(uuid)
            except libvirt.libvirtError:
                continue
            if domain.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
                stuck.append(hosts.hosts[host].root / "run" / "qemu" / f"{domain.name()}.xml")
    return stuck


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def running(hosts, vm_uuid: str) -> list[str]:
    """The hosts on which the VM is in the running state (not paused, not shut off)."""
    import libvirt

    found = []
    for name in hosts.names:
        with hosts.connect(name) as conn:
            try:
                if conn.lookupByUUIDString(vm_uuid).state()[0] == libvirt.VIR_DOMAIN_RUNNING:
                    found.append(name)
            except libvirt.libvirtError as error:
                if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
    return found


def test_a_woken_host_is_waited_for_until_its_libvirt_answers(hosts):
    """A BMC reports a host on long before its system has booted: migrations wait until its
    libvirtd answers, and a host that never answers is a clear error after the timeout."""
    from neat_exporter.globalmanager.executors.base import ExecutorError
    from neat_exporter.globalmanager.executors.libvirt import WAKE_POLL, LibvirtExecutor

    now = [0.0]
    pauses: list[float] = []

    def sleep(seconds: float) -> None:  # the host "boots" during the first pause
        pauses.append(seconds)
        now[0] += seconds
        if len(pauses) == 1:
            hosts.restart_libvirtd("host-d")

    executor = LibvirtExecutor(hosts.uri_template, unsafe=True, clock=lambda: now[0], sleep=sleep)
    hosts.kill_libvirtd("host-d")
    try:
        executor.host_woken("host-d", timeout=60)
        assert pauses == [WAKE_POLL]
        pauses.clear()
        with pytest.raises(ExecutorError) as refused:
            executor.host_woken("host-never", timeout=12)
        assert str(refused.value).startswith(
            "host-never was switched on but libvirt did not answer within 12 s: cannot connect"
        )
        assert pauses == [WAKE_POLL, WAKE_POLL, 2.0]
    finally:
        executor.close()
        if not hosts.hosts["host-d"].alive():
            hosts.restart_libvirtd("host-d")
