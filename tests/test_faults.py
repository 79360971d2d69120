"""Faults as a user sees them on /metrics: `neat-exporter run` as a real process against a real
libvirtd (test driver), a real global manager stand-in, and history directories that break.

Each test starts its own exporter on a free loopback port with a short interval, breaks one
thing, and checks that /metrics keeps answering with the last good snapshot, that the failure is
counted, and that the exporter recovers on its own."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from global_manager import PASSWORD, USER, GlobalManager
from libvirt_fixtures import domain_xml, vm_uuid
from services import Exporter, Libvirtd

from neat_exporter.sources.replay import synthetic_workload

pytestmark = pytest.mark.services
# Debug logging, so a failing test's log shows every cycle.
LOG_LEVEL = {"log_level": "debug"}


def vm_uuids(samples: dict[tuple, float]) -> set[str]:
    """The VMs with a CPU usage in a scrape."""
    return {dict(key[1:])["vm_uuid"] for key in samples if key[0] == "neat_vm_cpu_usage_hertz"}


def wait_for_recovery(exporter: Exporter, since: float, what: str) -> None:
    """Until a cycle after ``since`` succeeded with the source up again."""
    exporter.wait_for(
        lambda: (
            exporter.value("neat_last_cycle_timestamp_seconds") > since
            and exporter.value("neat_source_up") == 1
        ),
        f"recovery after {what}",
        timeout=30,
    )


@pytest.fixture
def exporters() -> Iterator[list[Exporter]]:
    started: list[Exporter] = []
    yield started
    for exporter in started:
        exporter.stop()


# --- libvirtd faults --------------------------------------------------------------------------


@pytest.fixture
def libvirtd(tmp_path) -> Iterator[Libvirtd]:
    pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    daemon = Libvirtd(tmp_path / "libvirt")
    yield daemon
    daemon.stop()


class Domains:
    """Transient running domains on the daemon's shared test:///default driver. That state
    lives while some connection holds it, so this keeps one open (start() reopens it after a
    libvirtd restart, which forgets every domain)."""

    def __init__(self, libvirtd: Libvirtd):
        self.libvirtd = libvirtd
        self.conn = None

    def start(self, indexes) -> None:
        import libvirt

        if self.conn is None:
            self.conn = libvirt.open(self.libvirtd.uri())
        for index in indexes:
            self.conn.createXML(domain_xml(index), 0)

    def forget(self) -> None:
        self.conn = None  # its daemon is gone; closing would only raise


@pytest.fixture
def domains(libvirtd) -> Iterator[Domains]:
    held = Domains(libvirtd)
    yield held
    if held.conn is not None and libvirtd.process.alive():
        held.conn.close()


def libvirt_exporter(tmp_path, libvirtd, exporters, **config) -> Exporter:
    config = {
        **LOG_LEVEL,
        "interval": 0.3,
        "history_dir": str(tmp_path / "history"),
        "source": {"type": "libvirt", "libvirt": {"uri": libvirtd.uri(), "timeout": 0.5}},
        **config,
    }
    exporter = Exporter(tmp_path / "exporter", config)
    exporters.append(exporter)
    return exporter


def timed_scrape(exporter: Exporter) -> tuple[float, dict]:
    started = time.monotonic()
    metrics = exporter.metrics(timeout=5)
    return time.monotonic() - started, metrics


def test_libvirtd_killed_and_restarted(tmp_path, libvirtd, domains, exporters):
    vms = {vm_uuid(i) for i in range(3)}
    domains.start(range(3))
    exporter = libvirt_exporter(tmp_path, libvirtd, exporters)
    exporter.wait_for(lambda: exporter.value("neat_host_history_samples") >= 3, "some history")
    assert exporter.value("neat_source_up") == 1
    assert vms <= vm_uuids(exporter.metrics())

    libvirtd.kill(signal.SIGKILL)
    domains.forget()
    exporter.wait_for(lambda: exporter.value("neat_source_up") == 0, "neat_source_up 0")
    before = exporter.metrics()
    last_good = before[("neat_last_cycle_timestamp_seconds",)]
    samples_before = before[("neat_host_history_samples",)]
    time.sleep(1)
    elapsed, during = timed_scrape(exporter)
    assert elapsed < 1
    # The last good snapshot is still served, with its (now older) time stamp.
    assert vms <= vm_uuids(during)
    assert during[("neat_last_cycle_timestamp_seconds",)] == last_good
    assert during[("neat_cycle_errors_total", ("stage", "collect"))] >= 1
    assert during[("neat_cycles_total",)] > before[("neat_cycles_total",)]

    libvirtd.start()  # the same socket; the test driver starts empty, so add the VMs again
    domains.start(range(3))
    wait_for_recovery(exporter, since=last_good, what="libvirtd came back")
    exporter.wait_for(
        lambda: exporter.value("neat_host_history_samples") > samples_before,
        "history to continue where it was",
    )
    # The first cycle after the restart may have run before the VMs were added again.
    exporter.wait_for(lambda: vms <= vm_uuids(exporter.metrics()), "the VMs to show again")
    assert exporter.process.alive()


def test_libvirtd_frozen(tmp_path, libvirtd, domains, exporters):
    domains.start(range(3))
    exporter = libvirt_exporter(tmp_path, libvirtd, exporters)
    exporter.wait_for(lambda: exporter.value("neat_host_history_samples") >= 2, "some history")
    errors_before = exporter.value("neat_cycle_errors_total", stage="collect")

    libvirtd.kill(signal.SIGSTOP)
    try:
        slowest = 0.0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            elapsed, metrics = timed_scrape(exporter)
            slowest = max(slowest, elapsed)
            assert ("neat_host_cpu_utilization_ratio",) in metrics  # the last good snapshot
            time.sleep(0.2)
        assert slowest < 1, f"a scrape took {slowest:.2f}s while libvirtd was frozen"
        assert exporter.value("neat_cycle_errors_total", stage="collect") > errors_before
        assert exporter.value("neat_source_up") == 0
        frozen_at = exporter.value("neat_last_cycle_timestamp_seconds")
    finally:
        libvirtd.kill(signal.SIGCONT)
    wait_for_recovery(exporter, since=frozen_at, what="SIGCONT")


def test_vms_vanishing_mid_cycle(tmp_path, libvirtd, domains, exporters):
    """Domains come and go between the bulk stats call and the per-domain reads: they are left
    out of that cycle, never an error, and their series go when they do."""
    domains.start(range(2))
    exporter = libvirt_exporter(tmp_path, libvirtd, exporters, interval=0.05)
    deadline = time.monotonic() + 4
    index = 10
    while time.monotonic() < deadline:
        domain = domains.conn.createXML(domain_xml(index), 0)
        time.sleep(random.uniform(0, 0.03))
        domain.destroy()
        index += 1
    cycles = exporter.value("neat_cycles_total")
    exporter.wait_for(lambda: exporter.value("neat_cycles_total") > cycles + 2, "more cycles")
    metrics = exporter.metrics()
    errors = {k: v for k, v in metrics.items() if k[0] == "neat_cycle_errors_total" and v}
    assert errors == {}
    test_driver_vm = "6695eb01-f6a4-8304-79aa-97f2502e193f"
    assert vm_uuids(exporter.metrics()) <= {vm_uuid(0), vm_uuid(1), test_driver_vm}


# --- history directory faults -----------------------------------------------------------------


def replay_config(tmp_path: Path, vms: int = 4, **extra) -> dict:
    return {
        **LOG_LEVEL,
        "interval": 0.2,
        "history_dir": str(tmp_path / "history"),
        "source": {"type": "replay", "replay": {"vms": vms}},
        **extra,
    }


def namespace_mount(directory: Path, options: str, then: str = "") -> list[str]:
    """A command prefix that runs the exporter in its own mount namespace with a tmpfs mounted
    on ``directory``: the breakage is private to that process and goes with it."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"user and mount namespaces are not available: {probe.stderr.decode()}")
    directory.mkdir(parents=True, exist_ok=True)
    # mode: a tmpfs is world-writable (1777) by default, which the exporter refuses.
    mount = f'mount -t tmpfs -o {options},mode=0755 tmpfs "{directory}"'
    script = f'{mount} && {then or "true"}; exec "$@"'
    return ["unshare", "-rm", "sh", "-c", script, "sh"]


@pytest.mark.parametrize(
    ("options", "then", "reason"),
    [
        ("ro,size=64k", "", "Read-only file system"),
        ("size=64k", 'mkdir "{dir}/vms" && mount -o remount,ro "{dir}"', "Read-only file system"),
        ("size=8k", 'head -c 65536 /dev/zero > "{dir}/fill" 2>/dev/null', "No space left"),
    ],
    ids=["read-only", "read-only-with-folders", "full"],
)
def test_history_dir_that_cannot_be_written(tmp_path, exporters, options, then, reason):
    history = tmp_path / "history"
    then = then.replace("{dir}", str(history))
    exporter = Exporter(
        tmp_path / "exporter", replay_config(tmp_path), wrap=namespace_mount(history, options, then)
    )
    exporters.append(exporter)
    exporter.wait_for(
        lambda: exporter.value("neat_history_persist_errors_total") >= 3, "persist errors counted"
    )
    cycles = exporter.value("neat_cycles_total")
    exporter.wait_for(lambda: exporter.value("neat_cycles_total") >= cycles + 3, "more cycles")
    assert exporter.value("neat_cycle_errors_total", stage="collect") == 0
    assert exporter.value("neat_host_history_samples") >= 3  # kept in memory
    log = exporter.log()
    assert "cannot persist the history" in log and reason in log
    assert "Traceback" not in log
    assert exporter.stop() == 0


def test_corrupt_history_files_at_start(tmp_path, exporters):
    names = sorted(synthetic_workload(3, 8))  # the replayed VMs' names
    vms_dir = tmp_path / "history" / "vms"
    vms_dir.mkdir(parents=True)
    (vms_dir / names[0]).write_text("100\n200\nnot-a-number\n300\n\x00\x00\n400")  # 2 bad
    (vms_dir / names[1]).write_bytes(b"\xff\xfe garbage\n" * 3 + b"150\n-5\nnan\n1e999\n250")  # 6
    (vms_dir / names[2]).write_text("")  # empty
    (vms_dir / "gone-vm").write_text("1\n2\n")  # a VM no longer on the host
    (vms_dir / "a-folder").mkdir()
    (tmp_path / "history" / "host").write_text("10\n20\n30\n40\nten\n")  # 1 bad
    exporter = Exporter(tmp_path / "exporter", replay_config(tmp_path, vms=3))
    exporters.append(exporter)
    assert exporter.value("neat_history_dropped_lines_total") == 9
    assert exporter.value("neat_source_up") == 1
    assert set(names) <= vm_uuids(exporter.metrics())
    exporter.wait_for(lambda: not (vms_dir / "gone-vm").exists(), "the gone VM's file removed")
    assert "Traceback" not in exporter.log()


def test_sigkill_while_persisting_loses_nothing_older_than_the_last_cycle(tmp_path, exporters):
    """Many VMs make each persist take a while; killing at random moments must leave only whole
    files, all from completed cycles."""
    history = tmp_path / "history"
    config = replay_config(tmp_path, vms=300, interval=0.05, history_length=1000)
    seen_samples = 0
    for attempt in range(4):
        exporter = Exporter(tmp_path / f"run-{attempt}", config)
        exporters.append(exporter)
        metrics = exporter.metrics()
        assert metrics[("neat_history_dropped_lines_total",)] == 0
        # Restarted from disk: at least the cycles seen before the kill, minus the one that
        # may have been persisting, plus this run's first cycle.
        assert metrics[("neat_host_history_samples",)] >= seen_samples
        time.sleep(random.uniform(0.3, 1.0))
        seen_samples = exporter.value("neat_host_history_samples")
        exporter.process.signal(signal.SIGKILL)
        exporter.process.popen.wait(5)
        for path in [history / "host", *(history / "vms").iterdir()]:
            if not path.name.startswith("."):
                lines = path.read_text().splitlines()
                assert lines and all(line.isdigit() for line in lines), path
        assert len(list((history / "vms").glob("[!.]*"))) == 300


# --- the global manager misbehaving -----------------------------------------------------------


def test_global_manager_failures_do_not_disturb_the_loop(tmp_path, exporters):
    with GlobalManager() as manager:
        config = replay_config(
            tmp_path,
            algorithms={"underload": {"name": "always_underloaded", "params": {}}},
            global_manager={
                "mode": "on",
                "url": manager.url,
                "timeout": 0.5,
                "retries": 0,
                "cooldown": 0,
            },
        )
        env = {"NEAT_GLOBAL_MANAGER_USERNAME": USER, "NEAT_GLOBAL_MANAGER_PASSWORD": PASSWORD}
        exporter = Exporter(tmp_path / "exporter", config, env=env)
        exporters.append(exporter)

        def counted(result: str) -> float:
            return exporter.value(
                "neat_migration_requests_total", reason="underload", result=result
            )

        exporter.wait_for(lambda: counted("sent") >= 2, "requests accepted")
        for status in (401, 403, 412, 500):
            # A 412 (stale time stamp) is retried once with a fresh one, so two of them make
            # one failed request; every other status fails its request at once.
            target = counted("failed") + 2
            manager.forced_statuses.extend([status] * (4 if status == 412 else 2))
            exporter.wait_for(lambda t=target: counted("failed") >= t, f"{status} counted")
            assert status in manager.statuses
        sent = counted("sent")
        exporter.wait_for(lambda: counted("sent") > sent, "requests accepted again")

        manager.delay = 2  # slower than the client's timeout
        failed = counted("failed")
        exporter.wait_for(lambda: counted("failed") > failed, "a timed-out request counted")
        manager.delay = 0
        cycles_slow = exporter.value("neat_cycles_total")
        exporter.wait_for(lambda: exporter.value("neat_cycles_total") > cycles_slow + 5, "cycles")
    # The global manager is gone now: connection refused.
    failed = counted("failed")
    exporter.wait_for(lambda: counted("failed") > failed, "a refused connection counted")
    for _ in range(3):  # the loop goes on, never waiting for the global manager
        last = exporter.value("neat_last_cycle_timestamp_seconds")
        exporter.wait_for(
            lambda last=last: exporter.value("neat_last_cycle_timestamp_seconds") > last,
            "cycles to go on",
            timeout=5,
        )
    assert exporter.value("neat_cycle_errors_total", stage="act") == 0
    assert "s3cret" not in exporter.log()
