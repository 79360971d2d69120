"""The global manager's cost: reading a 1,000-host fleet from Prometheus and planning, and its own
overhead per live migration on top of libvirt's.

Planning (the default): a real Prometheus (the system's, private data directory, loopback) is
filled with ``promtool tsdb create-blocks-from openmetrics`` with what the exporters of a fleet
publish: ``--hosts`` exporters (job ``neat``, instance ``<host>:9840``) holding ``--vms`` VMs
between them, scraped every ``--scrape-interval`` seconds for ``--minutes``, each exporter deciding
every 300 s. The series are the exporter's own: each host's reading goes through the exporter's
``build_snapshot`` and ``snapshot_families``, so names, labels and values are those of /metrics.
VM CPU comes from PlanetLab traces read at run time (``--traces``, one day of CoMon's 5-minute
samples, dealt round-robin over the VMs), scaled by each VM's vCPUs; RAM and vCPUs from a seeded
choice of flavours. Then, ``--repeat`` times, timed with the global manager's own code and
default settings (query windows, Neat's best_fit_decreasing):

- fleet: every fleet query through ``neat_exporter.promql`` into a FleetView (each query's
  median is printed, and the CPU time Prometheus and the client spend per read);
- overload plan: Neat's execute_overload for the busiest host and its busiest VMs;
- underload plan: Neat's execute_underload for the least busy host;
- total: fleet + the slower plan (target: under 2 s).

Migration (``--migration``): two libvirt hosts on this machine (tests/libvirt_hosts.py), each
watched by its own exporter, a real Prometheus and ``neat-exporter global-manager --executor
libvirt``. A boot-sector VM moves back and forth ``--migrations`` times each way, in turn: a bare
``migrateToURI3`` call with the executor's flags (libvirt's own migration time), the global
manager's libvirt executor called directly, and a ``PUT /`` overload request answered once the
VM has moved (fleet read, plan, migration, verification, state and audit). Printed: the medians,
libvirt's own job time of each (the completed job's ``time_elapsed``), and the differences to
the bare call: the global manager's overhead per migration.

Run: .venv/bin/python bench/bench_global_manager.py [--hosts 1000 --vms 20000] [--migration]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import _harness  # noqa: F401  (the tests' helpers: see bench/_harness.py)
import numpy as np
import requests
import yaml
from services import Prometheus, require_program

from neat_exporter.globalmanager.config import load_settings
from neat_exporter.globalmanager.fleet import FleetView, read_fleet
from neat_exporter.globalmanager.planning import (
    execute_overload,
    execute_underload,
)
from neat_exporter.metrics import snapshot_families
from neat_exporter.promql import PrometheusAPI
from neat_exporter.snapshot import build_snapshot
from neat_exporter.sources.base import Reading, VmReading
from neat_exporter.traces import list_days, read_planetlab
from neat_exporter.vocabulary import AlgorithmConfig, AlgorithmSet

ROOT = Path(__file__).resolve().parent.parent
JOB = "neat"
PORT = 9840
DECISION_INTERVAL = 300.0  # the exporter's default; PlanetLab's step too
HOST_CORES, CORE_MHZ = 32, 2600.0
HOST_RAM_MB = 256 * 1024
HYPERVISOR_MHZ = (800.0, 2500.0)  # overhead range, drawn per host and step
# Nova-like flavours: (name, vCPUs, RAM MB)
FLAVOURS = (("m1.small", 1, 2048), ("m1.medium", 2, 4096), ("m1.large", 4, 8192))
MANAGER_ENV = {"NEAT_GLOBAL_MANAGER_USERNAME": "bench", "NEAT_GLOBAL_MANAGER_PASSWORD": "bench-pw"}
ALGORITHMS = AlgorithmSet(
    underload=AlgorithmConfig("last_n_average_threshold", {"threshold": 0.5, "n": 2}),
    overload=AlgorithmConfig("otf", {"otf": 0.1, "threshold": 0.9, "limit": 30}),
    vm_selection=AlgorithmConfig("minimum_migration_time_max_cpu", {"last_n": 2}),
)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (it may be multi-threaded)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median_seconds(function, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


# --- the fleet's series, as the exporters publish them ---------------------------------------


class FleetModel:
    """Hosts, their VMs (uuid, flavour, trace) and the exporters' readings step by step."""

    def __init__(self, hosts: int, vms: int, traces: list[np.ndarray], seed: int):
        rng = random.Random(seed)
        self.hosts = [f"compute-{index:04d}" for index in range(hosts)]
        self.rng = rng
        self.placement: dict[str, list[tuple[str, str, int, int, np.ndarray]]] = {
            host: [] for host in self.hosts
        }
        for index in range(vms):
            name, vcpus, ram_mb = rng.choice(FLAVOURS)
            vm_uuid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            host = self.hosts[index % hosts]
            self.placement[host].append((vm_uuid, name, vcpus, ram_mb, traces[index % len(traces)]))

    def reading(self, host: str, now: float, cycle: int) -> Reading:
        vms = {}
        for vm_uuid, flavour, vcpus, ram_mb, trace in self.placement[host]:
            percent = float(trace[cycle % len(trace)])
            vms[vm_uuid] = VmReading(
                uuid=vm_uuid,
                cpu_mhz=percent / 100 * vcpus * CORE_MHZ,
                ram_max_mb=float(ram_mb),
                info={
                    "domain": f"instance-{vm_uuid[:8]}",
                    "instance_name": f"vm-{vm_uuid[:8]}",
                    "project_id": "b5e3f4a1c0d94e0f8a7b6c5d4e3f2a1b",
                    "project_name": "bench",
                    "flavor_name": flavour,
                    "user_id": "9f8e7d6c5b4a39281706f5e4d3c2b1a0",
                },
            )
        busy = sum(vm.cpu_mhz for vm in vms.values()) + random.Random(f"{host}/{cycle}").uniform(
            *HYPERVISOR_MHZ
        )
        return Reading(
            time=now,
            host=host,
            cpu_cores=HOST_CORES,
            core_mhz=CORE_MHZ,
            host_busy_mhz=busy,
            vms=vms,
            ram_total_mb=HOST_RAM_MB,
        )


def _labels(names: tuple[str, ...], values: tuple[str, ...], target: str) -> str:
    pairs = [f'instance="{target}"', f'job="{JOB}"']
    pairs += [f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True)]
    return "{" + ",".join(pairs) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def family_rows(snapshot) -> Iterator[tuple[str, tuple[str, ...], tuple[str, ...], float]]:
    """(family, label names, label values, value) of every sample /metrics would show."""
    for family in snapshot_families(snapshot):
        rows = getattr(family, "rows", None)
        if rows is not None:  # the per-VM bulk (GaugeRows)
            for values, value in rows:
                yield family.name, family.label_names, values, value
            continue
        for sample in family.samples:
            names = tuple(sample.labels)
            yield family.name, names, tuple(sample.labels[n] for n in names), sample.value


def write_openmetrics(model: FleetModel, end: float, minutes: int, scrape: int, out: Path) -> int:
    """The fleet's scrapes as one OpenMetrics file (families contiguous, as the format wants);
    returns the number of samples."""
    parts = out.parent / "families"
    parts.mkdir()
    files: dict[str, object] = {}
    samples = 0
    scrapes = range(int(minutes * 60 // scrape), -1, -1)  # oldest first, the last one at `end`
    try:
        for back in scrapes:
            now = end - back * scrape
            cycle = int(now // DECISION_INTERVAL)
            cycle_end = cycle * DECISION_INTERVAL  # what the exporter shows until its next cycle
            for host in model.hosts:
                target = f"{host}:{PORT}"
                snapshot = build_snapshot(
                    now=cycle_end,
                    host=host,
                    source="libvirt",
                    reading=model.reading(host, cycle_end, cycle),
                    capacity_mhz=HOST_CORES * CORE_MHZ,
                    decision=None,
                    algorithms=ALGORITHMS,
                )
                lines: dict[str, list[str]] = {}
                for name, label_names, values, value in family_rows(snapshot):
                    labels = _labels(label_names, values, target)
                    lines.setdefault(name, []).append(f"{name}{labels} {value!r} {now:.3f}\n")
                lines["up"] = [f'up{{instance="{target}",job="{JOB}"}} 1.0 {now:.3f}\n']
                for name, text in lines.items():
                    if name not in files:
                        files[name] = open(parts / name, "w")  # noqa: SIM115 - closed below
                    files[name].writelines(text)
                    samples += len(text)
    finally:
        for handle in files.values():
            handle.close()
    with out.open("w") as whole:
        for name in files:
            whole.write(f"# TYPE {name} gauge\n")
            with (parts / name).open() as part:
                shutil.copyfileobj(part, whole)
        whole.write("# EOF\n")
    shutil.rmtree(parts)
    return samples


@contextlib.contextmanager
def filled_prometheus(args, workdir: Path) -> Iterator[Prometheus]:
    promtool = require_program("promtool")
    day = list_days(args.traces)
    trace_path = day.get(args.day) or next(iter(day.values()))
    traces = list(read_planetlab(trace_path).values())
    model = FleetModel(args.hosts, args.vms, traces, args.seed)
    end = math.floor(time.time())
    metrics_file = workdir / "fleet.om"
    started = time.perf_counter()
    samples = write_openmetrics(model, end, args.minutes, args.scrape_interval, metrics_file)
    size_mb = metrics_file.stat().st_size / 1e6
    print(
        f"generated {samples:,} samples ({size_mb:.0f} MB of OpenMetrics, traces of "
        f"{trace_path.name}) in {time.perf_counter() - started:.1f} s"
    )
    data = workdir / "prometheus" / "data"
    data.mkdir(parents=True)
    started = time.perf_counter()
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(metrics_file), str(data)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    metrics_file.unlink()
    print(f"promtool create-blocks-from openmetrics: {time.perf_counter() - started:.1f} s")
    prometheus = Prometheus(workdir / "prometheus", targets=[])
    try:
        prometheus.wait_for(f'count(neat_vm_cpu_usage_hertz{{job="{JOB}"}})', timeout=120)
        (vms,) = prometheus.query("count(neat_vm_cpu_usage_hertz)")
        (hosts,) = prometheus.query("count(neat_host_info)")
        print(f"Prometheus at {prometheus.url}: {hosts['value'][1]} hosts, {vms['value'][1]} VMs")
        yield prometheus, end
    finally:
        prometheus.stop()


class TimedAPI(PrometheusAPI):
    """The global manager's Prometheus client, recording how long each query takes (the HTTP
    round trip, Prometheus's evaluation and the decoding of its answer)."""

    def __init__(self, url: str) -> None:
        super().__init__(url, timeout=60)
        self.times: dict[str, list[float]] = {}

    def _timed(self, method, expr: str, *args):
        started = time.perf_counter()
        try:
            return method(expr, *args)
        finally:
            self.times.setdefault(expr, []).append(time.perf_counter() - started)

    def query(self, expr: str, at: float | None = None):
        return self._timed(super().query, expr, at)

    def query_raw(self, expr: str, at: float | None = None):
        return self._timed(super().query_raw, expr, at)

    def query_range(self, expr: str, start: float, end: float, step: float):
        return self._timed(super().query_range, expr, start, end, step)


def busiest_and_idlest(fleet: FleetView) -> tuple[str, list[str], str]:
    """The most utilized host with its two busiest VMs (an overload request as the exporter
    would send it), and the least utilized host holding VMs (an underload request)."""
    hosts = [host for host in fleet.hosts.values() if host.usable and host.vms]
    utilization = {host.name: host.cpu_usage_mhz / host.cpu_mhz for host in hosts}
    busiest = max(hosts, key=lambda host: utilization[host.name])
    idlest = min(hosts, key=lambda host: utilization[host.name])
    vms = sorted(busiest.vms.values(), key=lambda vm: vm.cpu_mhz[-1], reverse=True)
    return busiest.name, [vm.uuid for vm in vms[:2]], idlest.name


def bench_planning(args) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="gmo-bench-") as tmp,
        filled_prometheus(args, Path(tmp)) as (prometheus, end),
    ):
        api = TimedAPI(prometheus.url)
        # The global manager's defaults, read as its command reads them: the query windows,
        # Neat's best_fit_decreasing and its history length, VM names only for opt-outs.
        settings = load_settings(None, environ=MANAGER_ENV)
        placement = settings.placement()

        def fleet() -> FleetView:
            return read_fleet(
                api,
                end,
                cpu_window=settings["prometheus.cpu_window"],
                stale_after=settings["prometheus.stale_after"],
                host_lookback=settings["prometheus.host_lookback"],
                last_n=placement.params["last_n_vm_cpu"],
                vm_names=bool(settings["policy.vm_opt_out"]),
            )

        view = fleet()  # warm: Prometheus maps the blocks' chunks on first use
        vms = sum(len(host.vms) for host in view.hosts.values())
        problems = sum(not host.usable for host in view.hosts.values())
        values = statistics.median(
            len(vm.cpu_mhz) for host in view.hosts.values() for vm in host.vms.values()
        )
        print(
            f"fleet view: {len(view.hosts)} hosts ({problems} excluded), {vms} VMs, "
            f"{values:g} CPU values per VM; load average {load_average()}"
        )
        busiest, selected, idlest = busiest_and_idlest(view)
        prometheus_cpu, own_cpu = cpu_seconds(prometheus.process.pid), time.process_time()
        fleet_s, view = median_seconds(fleet, args.repeat)
        prometheus_cpu = (cpu_seconds(prometheus.process.pid) - prometheus_cpu) / args.repeat
        own_cpu = (time.process_time() - own_cpu) / args.repeat
        overload_s, overload = median_seconds(
            lambda: execute_overload(view, busiest, selected, placement), args.repeat
        )
        underload_s, underload = median_seconds(
            lambda: execute_underload(view, idlest, placement), args.repeat
        )
        for expr, times in api.times.items():  # the queries overlap: each one's own wall time
            answer = statistics.median(times[1:]) * 1000  # the first, warming read left out
            print(f"  {answer:7.1f} ms  {expr}")
        print(f"overload plan for {busiest}: {overload.result}, {overload.detail}")
        print(f"underload plan for {idlest}: {underload.result}, {underload.detail}")
        print(
            f"CPU time per fleet read: Prometheus {prometheus_cpu:.2f} s, the global manager's "
            f"client {own_cpu:.2f} s (what a read costs whatever the machine's load)"
        )
        total = fleet_s + max(overload_s, underload_s)
        print(
            f"medians of {args.repeat}: fleet queries {fleet_s * 1000:.0f} ms, overload plan "
            f"{overload_s * 1000:.1f} ms, underload plan {underload_s * 1000:.1f} ms; "
            f"fleet + plan {total:.2f} s (target < 2 s: {'met' if total < 2 else 'NOT met'}); "
            f"load average {load_average()}"
        )


def job_seconds(hosts, host: str, vm_uuid: str) -> float:
    """libvirt's own time for the migration that just ended on ``host``: the completed job's
    ``time_elapsed`` of the incoming domain."""
    import libvirt

    with hosts.connect(host) as conn:
        stats = conn.lookupByUUIDString(vm_uuid).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    return stats["time_elapsed"] / 1000


@contextlib.contextmanager
def migration_stack(workdir: Path, names: list[str]) -> Iterator[tuple]:
    """Two libvirt hosts, each watched by ``neat-exporter run --host NAME`` (1 s cycles), a real
    Prometheus scraping them and ``neat-exporter global-manager --executor libvirt`` reading it
    (cooldown 0, answering after the migrations, cpu_threshold raised because every host
    measures this whole shared machine's CPU as its hypervisor overhead)."""
    from libvirt_hosts import LibvirtHosts
    from services import EXPORTER, Exporter, Process, free_port, wait_until

    parts: list = []
    with LibvirtHosts(workdir / "hosts", names, prefix="gmo") as hosts:
        try:
            for name in names:
                config = {
                    "host": name,
                    "interval": 1,
                    "source": {"type": "libvirt", "libvirt": {"uri": hosts.uri(name)}},
                    "global_manager": {"mode": "off"},
                }
                parts.append(Exporter(workdir / name, config))
            prometheus = Prometheus(workdir / "prometheus", [e.address for e in parts])
            parts.append(prometheus)
            port = free_port()
            config = {
                "prometheus": {
                    "url": prometheus.url,
                    "stale_after": 6,
                    "cpu_window": 30,
                    "host_lookback": 600,
                },
                "placement": {"params": {"cpu_threshold": 10}},
                "policy": {"migration_timeout": 120, "cooldown": 0, "wait_for_migrations": True},
                "executor": {
                    "type": "libvirt",
                    "libvirt": {"uri_template": hosts.uri_template, "unsafe": True},
                },
                "state_file": str(workdir / "gm-state.json"),
                "audit_log": str(workdir / "gm-audit.jsonl"),
                "listen": f"127.0.0.1:{port}",
            }
            (workdir / "gm.yml").write_text(yaml.safe_dump(config))
            manager = Process(
                [*EXPORTER, "global-manager", "--config", str(workdir / "gm.yml")],
                workdir / "gm.log",
                env={**os.environ, **MANAGER_ENV},
            )
            parts.append(manager)
            url = f"http://127.0.0.1:{port}/"
            wait_until(lambda: requests.get(f"{url}healthz", timeout=1).ok, 30, "global manager")
            yield hosts, prometheus, url
        except Exception:
            log = workdir / "gm.log"
            if log.exists():
                print(f"global manager's log:\n{log.read_text()[-3000:]}", file=sys.stderr)
            raise
        finally:
            for part in reversed(parts):
                part.stop()


def bench_migration(args) -> None:
    """Migrations back and forth between two libvirt hosts, in turn: a bare ``migrateToURI3``
    call with the executor's flags, the global manager's libvirt executor called directly, and a
    ``PUT /`` overload request to the running global manager, answered once the VM has moved."""
    import libvirt
    from services import wait_until

    from neat_exporter.actions import Credentials, GlobalManagerClient
    from neat_exporter.globalmanager.executors.base import Migration, MigrationOutcome
    from neat_exporter.globalmanager.executors.libvirt import LibvirtExecutor
    from neat_exporter.vocabulary import Reason

    flags = (
        libvirt.VIR_MIGRATE_LIVE
        | libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        | libvirt.VIR_MIGRATE_UNSAFE
    )
    names = ["gmo-bench-a", "gmo-bench-b"]
    ways = ("bare", "executor", "request")
    figures: dict[str, list[float]] = {way: [] for way in ways}
    jobs: dict[str, list[float]] = {way: [] for way in ways}
    with (
        tempfile.TemporaryDirectory(prefix="gmo-bench-") as tmp,
        migration_stack(Path(tmp), names) as (hosts, prometheus, url),
    ):
        vm_uuid = hosts.start_vm(names[0], "gmo-bench-vm", load="idle")
        executor = LibvirtExecutor(hosts.uri_template, unsafe=True)
        credentials = Credentials.from_plain(*MANAGER_ENV.values())
        client = GlobalManagerClient(url, credentials, timeout=180, retries=0)
        where, arrived = names[0], time.time()

        def bare(destination: str) -> float:
            started = time.perf_counter()
            with hosts.connect(where) as conn:
                domain = conn.lookupByUUIDString(vm_uuid)
                domain.migrateToURI3(hosts.uri(destination), {}, flags)
            return time.perf_counter() - started

        def through_executor(destination: str) -> float:
            result = executor.migrate(Migration(vm_uuid, where, destination), timeout=120)
            if result.outcome is not MigrationOutcome.MIGRATED:
                raise RuntimeError(f"migration {result.outcome}: {result.error}")
            return result.seconds

        def in_fleet_since_arrival() -> list:
            """Three CPU samples of the VM on its current host, all scraped since it arrived."""
            window = max(1, int(time.time() - arrived))
            return prometheus.query(
                f'count_over_time(neat_vm_cpu_usage_hertz{{vm_uuid="{vm_uuid}"}}[{window}s]) >= 3'
                f' and on (instance, job) neat_host_info{{host="{where}"}}'
            )

        def through_request(destination: str) -> float:
            # Not timed: Prometheus must hold a few cycles of the VM on its current host.
            wait_until(in_fleet_since_arrival, 60, "the VM in the fleet view", 0.2)
            started = time.perf_counter()
            answer = client.send(where, Reason.OVERLOAD, [vm_uuid])
            seconds = time.perf_counter() - started
            if not answer.ok or hosts.running_on(vm_uuid) != [destination]:
                raise RuntimeError(f"request {answer}: the VM runs on {hosts.running_on(vm_uuid)}")
            return seconds

        run = {"bare": bare, "executor": through_executor, "request": through_request}
        try:
            for index in range(2 + len(ways) * args.migrations):
                destination = names[1] if where == names[0] else names[0]
                way = ways[index % len(ways)]
                seconds = run[way](destination)
                where, arrived = destination, time.time()
                if index >= 2:  # the first migration to each host starts its qemu cold
                    figures[way].append(seconds)
                    jobs[way].append(job_seconds(hosts, where, vm_uuid))
                if hosts.running_on(vm_uuid) != [where]:
                    raise RuntimeError(f"the VM runs on {hosts.running_on(vm_uuid)}")
        finally:
            client.close()
            executor.close()
    median = {way: statistics.median(values) for way, values in figures.items()}
    job = {way: statistics.median(values) for way, values in jobs.items()}
    print(
        f"medians of {args.migrations} migrations each way (idle 32 MiB TCG VM, two libvirt "
        f"hosts on loopback; libvirt's own job time in brackets): bare migrateToURI3 "
        f"{median['bare']:.3f} s ({job['bare']:.3f} s); the executor {median['executor']:.3f} s "
        f"({job['executor']:.3f} s); a PUT / request {median['request']:.3f} s "
        f"({job['request']:.3f} s). The global manager's overhead per migration: executor "
        f"{(median['executor'] - median['bare']) * 1000:.0f} ms, whole request "
        f"{(median['request'] - median['bare']) * 1000:.0f} ms over the bare call; load average "
        f"{load_average()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--vms", type=int, default=20000)
    parser.add_argument("--minutes", type=int, default=30, help="history held in Prometheus")
    parser.add_argument("--scrape-interval", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--traces", type=Path, default=ROOT.parent / "shared/data/planetlab")
    parser.add_argument("--day", default="20110303")
    parser.add_argument("--migration", action="store_true", help="the migration overhead instead")
    parser.add_argument("--migrations", type=int, default=10, help="measured each way")
    args = parser.parse_args(argv)
    (bench_migration if args.migration else bench_planning)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
