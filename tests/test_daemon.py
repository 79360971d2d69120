"""The decision cycle, the loop's timer, the HTTP pages, signals, and the commands run/demo."""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from served import served
from services import Process, free_port, wait_until

from neat_exporter.cli import main
from neat_exporter.config import config_from_mapping
from neat_exporter.daemon import Daemon, make_requester
from neat_exporter.errors import ConfigError
from neat_exporter.history import History
from neat_exporter.neat_files import NeatFiles
from neat_exporter.server import make_app
from neat_exporter.sources import SourceError
from neat_exporter.sources.base import Reading, VmReading
from neat_exporter.sources.replay import ReplaySource
from neat_exporter.web import serve_wsgi

EXPORTER = [sys.executable, "-m", "neat_exporter"]
TEST_DRIVER_VM = "6695eb01-f6a4-8304-79aa-97f2502e193f"
VM_A, VM_B = "a0000000-0000-4000-8000-00000000000a", "b0000000-0000-4000-8000-00000000000b"

# Threshold detectors decide from the latest values at once, which keeps these tests short.
QUICK = {
    "host": "compute1",
    "interval": 300,
    "source": {"type": "replay"},
    "algorithms": {
        "underload": {"name": "last_n_average_threshold", "params": {"threshold": 0.5, "n": 1}},
        "overload": {"name": "threshold", "params": {"threshold": 0.9}},
    },
}


def replay(steps: dict[str, list[float]]) -> ReplaySource:
    """Two cores of 1000 MHz: a VM at 100 % is half the host."""
    traces = {name: np.array(values, dtype=float) for name, values in steps.items()}
    return ReplaySource(traces, host_cpu_mhz=2000, cpus=2, vm_ram_mb=1024)


class FlakySource:
    """A real replay source that fails while ``down`` is set."""

    name = "replay"
    keeps_history = False

    def __init__(self, inner: ReplaySource):
        self.inner = inner
        self.down = False

    def collect(self) -> Reading:
        if self.down:
            raise SourceError("the source is unreachable")
        return self.inner.collect()

    def read_history(self) -> NeatFiles:
        return self.inner.read_history()

    def close(self) -> None:
        pass


def value(daemon: Daemon, name: str, **labels: str) -> float | None:
    return served(daemon).get_sample_value(name, labels)


def test_decisions_follow_the_load():
    # Steps: idle, overloaded (vm-b busiest), normal.
    source = replay({"vm-a": [10, 90, 60], "vm-b": [10, 100, 70]})
    daemon = Daemon(config_from_mapping(QUICK), source)
    daemon.run_cycle()
    assert daemon.snapshot.decision == "underload"
    assert daemon.snapshot.selected == ("vm-a", "vm-b")
    assert value(daemon, "neat_host_underloaded") == 1
    daemon.run_cycle()
    assert daemon.snapshot.decision == "overload"
    assert daemon.snapshot.utilization == pytest.approx(0.95)
    assert daemon.snapshot.selected == ("vm-b",)
    assert value(daemon, "neat_vm_selected_for_migration", vm_uuid="vm-b") == 1
    assert value(daemon, "neat_vm_selected_for_migration", vm_uuid="vm-a") == 0
    assert value(daemon, "neat_detector_input_ratio", detector="overload") == pytest.approx(0.95)
    assert value(daemon, "neat_detector_threshold_ratio", detector="overload") == 0.9
    daemon.run_cycle()
    assert daemon.snapshot.decision == "none"
    assert daemon.snapshot.selected == ()
    assert value(daemon, "neat_host_history_samples") == 3
    for decision in ("underload", "overload", "none"):
        assert value(daemon, "neat_decisions_total", decision=decision) == 1
    assert value(daemon, "neat_cycles_total") == 3
    assert value(daemon, "neat_cycle_duration_seconds_count") == 3


def test_a_host_without_vms_decides_nothing():
    source = ReplaySource({}, host_cpu_mhz=2000, cpus=2, vm_ram_mb=1024)
    daemon = Daemon(config_from_mapping(QUICK), source)
    assert daemon.run_cycle()
    assert daemon.snapshot.decision == "none"
    assert daemon.snapshot.detectors == {}
    assert value(daemon, "neat_detector_ready", detector="overload") == 0


def test_a_failed_cycle_keeps_the_last_snapshot_with_its_age():
    now = [1000.0]
    source = FlakySource(replay({"vm": [10, 20]}))
    daemon = Daemon(config_from_mapping(QUICK), source, clock=lambda: now[0])
    assert daemon.run_cycle()
    good = daemon.snapshot
    assert value(daemon, "neat_source_up") == 1
    source.down = True
    now[0] = 1300.0
    assert not daemon.run_cycle()
    assert daemon.snapshot is good
    assert value(daemon, "neat_source_up") == 0
    assert value(daemon, "neat_cycle_errors_total", stage="collect") == 1
    assert value(daemon, "neat_last_cycle_timestamp_seconds") == 1000.0
    assert value(daemon, "neat_host_underloaded") == 1  # still served
    page = make_app(daemon.registry, daemon, clock=lambda: now[0])
    body = call(page, "/")[1]
    assert "Latest cycle failed" in body and "unreachable" in body
    assert "cycle 300 s ago" in body  # the snapshot's age
    source.down = False
    assert daemon.run_cycle()
    assert daemon.snapshot is not good
    assert daemon.last_error is None


class BrokenSource(FlakySource):
    """A source whose reading makes the detectors fail."""

    def __init__(self):
        super().__init__(replay({"vm": [10]}))

    def collect(self) -> Reading:
        vm = VmReading("vm", math.nan, 1024)
        return Reading(0.0, "h", 2, 1000.0, 100.0, {"vm": vm})


def test_a_detector_failure_is_counted_by_stage():
    daemon = Daemon(config_from_mapping(QUICK), BrokenSource())
    assert not daemon.run_cycle()
    assert value(daemon, "neat_cycle_errors_total", stage="detect") == 1
    assert value(daemon, "neat_cycle_errors_total", stage="collect") == 0
    assert daemon.snapshot is None


def test_a_selection_failure_is_counted_by_stage():
    daemon = Daemon(config_from_mapping(QUICK), replay({"a": [10, 100], "b": [10, 100]}))
    assert daemon.run_cycle()  # underloaded: the algorithms are built, selection not called

    def broken_selection(vms_cpu_mhz, vms_ram_mb, state):
        raise RuntimeError("selection bug")

    daemon.pipeline.manager._built["vm_selection"] = broken_selection
    assert not daemon.run_cycle()  # overloaded: selection runs and fails
    assert value(daemon, "neat_cycle_errors_total", stage="select") == 1
    assert value(daemon, "neat_cycle_errors_total", stage="detect") == 0


def test_decisions_reach_the_migration_requester_in_dry_run():
    config = config_from_mapping({**QUICK, "global_manager": {"mode": "dry_run"}})
    daemon = Daemon(config, replay({VM_A: [10, 90], VM_B: [10, 100]}))
    daemon.requester = make_requester(config, daemon.registry)
    daemon.run_cycle()
    dry_run = {"reason": "underload", "result": "dry_run"}
    assert value(daemon, "neat_migration_requests_total", **dry_run) == 1
    daemon.run_cycle()  # overloaded, but within the cooldown
    suppressed = {"reason": "overload", "result": "suppressed"}
    assert value(daemon, "neat_migration_requests_total", **suppressed) == 1


def test_a_failing_requester_counts_an_act_error():
    class Refusing:
        def submit(self, host, reason, vm_uuids):
            raise RuntimeError("queue broken")

    daemon = Daemon(config_from_mapping(QUICK), replay({"vm": [10]}), requester=Refusing())
    assert not daemon.run_cycle()
    assert value(daemon, "neat_cycle_errors_total", stage="act") == 1
    assert daemon.snapshot.decision == "underload"  # the decision is still published


def test_history_is_persisted_every_cycle_and_reloaded(tmp_path):
    config = config_from_mapping({**QUICK, "history_dir": str(tmp_path)})
    daemon = Daemon(config, replay({VM_A: [10, 20, 30]}))
    for _ in range(3):
        daemon.run_cycle()
    # The third cycle was shown once the second's history was written; its own is on the way.
    assert (tmp_path / "vms" / VM_A).read_text() in ("100\n200\n", "100\n200\n300\n")
    assert daemon.wait_for_persist(5)
    assert (tmp_path / "vms" / VM_A).read_text() == "100\n200\n300\n"
    restarted = Daemon(config, replay({VM_A: [40]}))
    restarted.run_cycle()
    assert restarted.snapshot.history_samples == 4
    assert restarted.wait_for_persist(5)
    assert History.load(tmp_path, 100).vm_histories() == {VM_A: [100, 200, 300, 400]}


def test_history_writes_never_overlap_and_the_next_snapshot_waits_for_them(tmp_path, monkeypatch):
    writing: list[History] = []  # the writes in progress
    others_in_progress: list[int] = []  # at the start of each write
    written: list[int] = []  # the VM's samples, per finished write
    save = History.save

    def slow_save(history, directory):
        others_in_progress.append(len(writing))
        writing.append(history)
        time.sleep(0.2)
        save(history, directory)
        written.append(len(history.vm_histories()[VM_A]))
        writing.remove(history)

    monkeypatch.setattr(History, "save", slow_save)
    config = config_from_mapping({**QUICK, "history_dir": str(tmp_path)})
    daemon = Daemon(config, replay({VM_A: [10, 20, 30, 40]}))
    written_when_shown: list[int] = []
    publish = daemon.exposition.publish

    def publish_and_note(families):
        written_when_shown.append(len(written))
        publish(families)

    monkeypatch.setattr(daemon.exposition, "publish", publish_and_note)
    for cycle in range(1, 5):
        started = time.monotonic()
        daemon.run_cycle()
        assert written == list(range(1, cycle))  # the previous write was done; this one goes on
        assert cycle == 1 or time.monotonic() - started >= 0.1
    daemon.persist()  # as at shutdown: after the write in progress, never beside it
    assert daemon.wait_for_persist(5)
    assert written_when_shown == [0, 1, 2, 3]  # a snapshot is shown once the previous is saved
    assert written == [1, 2, 3, 4, 4]
    assert others_in_progress == [0] * 5


class FakeTime:
    """A monotonic clock that moves only when told to, or when the loop waits on it."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def wait(self, event: threading.Event, timeout: float) -> bool:
        self.now += max(timeout, 0.0)
        return event.is_set()


def test_the_timer_accounts_for_the_cycle_time():
    """Cycles start every interval, the cycle's own time not added to the wait; a cycle that
    overruns moves the next start to the next whole interval."""
    fake = FakeTime()
    durations = [0.125, 0.125, 0.625, 0.125, 0.125]  # binary fractions: exact sums
    starts: list[float] = []

    class SlowSource(FlakySource):
        def collect(self) -> Reading:
            starts.append(fake.now)
            fake.now += durations[len(starts) - 1]
            if len(starts) == len(durations):
                daemon.stop()
            return super().collect()

    config = config_from_mapping({**QUICK, "interval": 0.25})
    source = SlowSource(replay({"vm": [10]}))
    daemon = Daemon(config, source, monotonic=fake.monotonic, wait=fake.wait)
    daemon.loop()
    assert starts == [0.0, 0.25, 0.5, 1.25, 1.5]
    assert value(daemon, "neat_cycle_duration_seconds_sum") == sum(durations)


def call(app, path: str) -> tuple[str, str]:
    result = {}

    def start_response(status, headers):
        result["status"] = status

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, start_response))
    return result["status"], body.decode()


def test_landing_page_healthz_and_metrics_over_http():
    config = config_from_mapping({**QUICK, "listen": "127.0.0.1:0"})
    daemon = Daemon(config, replay({"vm-a": [10], "vm-<b>": [20]}))
    daemon.run_cycle()
    server = serve_wsgi(make_app(daemon.registry, daemon), config.listen)
    try:
        base = f"http://127.0.0.1:{server.address[1]}"
        page = requests.get(f"{base}/", timeout=5)
        assert page.status_code == 200
        assert page.headers["Content-Type"].startswith("text/html")
        assert "href='/metrics'" in page.text
        assert "data-decision='underload'" in page.text
        assert "last_n_average_threshold" in page.text and "≤ 0.5" in page.text  # threshold
        assert "vm-&lt;b&gt;" in page.text  # escaped
        assert "interval: 300" in page.text  # the configuration
        health = requests.get(f"{base}/healthz", timeout=5)
        assert (health.status_code, health.text) == (200, "ok\n")
        metrics = requests.get(f"{base}/metrics", timeout=5)
        assert "neat_host_underloaded 1.0" in metrics.text
        assert requests.get(f"{base}/nope", timeout=5).status_code == 404
    finally:
        server.shutdown()


def test_bad_configuration_exits_2_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yml"
    bad.write_text("source: {type: replay}\nalgorithms: {overload: {name: otf, params: {otf: 7}}}")
    assert main(["run", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "algorithms.overload.params.otf" in err and "Traceback" not in err


def get_metrics(port: int) -> str:
    return requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text


def metric(text: str, line_start: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_persists_and_exits_0_within_5_seconds(tmp_path, signum):
    port = free_port()
    history = tmp_path / "history"
    argv = [*EXPORTER, "demo", "--listen", f"127.0.0.1:{port}", "--interval", "0.2"]
    process = Process([*argv, "--history-dir", str(history)], tmp_path / "log")
    try:
        wait_until(lambda: metric(get_metrics(port), "neat_cycles_total") >= 3, 30, "3 cycles")
        process.signal(signum)
        started = time.monotonic()
        process.popen.wait(5)
        assert time.monotonic() - started < 5
        assert process.popen.returncode == 0, process.log()
        files = list((history / "vms").iterdir())
        assert len(files) == 8
        assert all(len(f.read_text().splitlines()) >= 3 for f in files)
        assert (history / "host").exists()
    finally:
        process.stop()


def test_run_from_flags_alone_on_libvirt(tmp_path):
    pytest.importorskip("libvirt", reason="libvirt-python is not installed")
    port = free_port()
    argv = [*EXPORTER, "run", "--libvirt-uri", "test:///default", "--listen", f"127.0.0.1:{port}"]
    process = Process([*argv, "--interval", "0.3"], tmp_path / "log")
    try:

        def decided() -> str | None:
            text = get_metrics(port)
            return text if "neat_host_underloaded" in text else None

        text = wait_until(decided, 30, "a decision on /metrics")
        assert metric(text, "neat_source_up") == 1
        assert f'vm_uuid="{TEST_DRIVER_VM}"' in text
    finally:
        assert process.stop() == 0, process.log()


def test_demo_shows_underload_overload_and_selection_within_a_minute(tmp_path):
    port = free_port()
    process = Process([*EXPORTER, "demo", "--listen", f"127.0.0.1:{port}"], tmp_path / "log")
    seen: set[str] = set()

    def watch() -> bool:
        text = get_metrics(port)
        if metric(text, "neat_host_underloaded") == 1:
            seen.add("underload")
        if metric(text, "neat_host_overloaded") == 1:
            seen.add("overload")
            selected = [line for line in text.splitlines() if line.startswith("neat_vm_selected")]
            if sum(line.endswith(" 1.0") for line in selected) == 1:
                seen.add("selection")
        return seen == {"underload", "overload", "selection"}

    try:
        wait_until(watch, 60, "underload, overload and selection", interval=0.5)
        assert f"http://127.0.0.1:{port}/" in Path(process.log_path).read_text()
    finally:
        process.stop()


def test_a_vm_name_that_is_not_a_uuid_never_reaches_the_global_manager():
    """The direct path: a source naming a VM "a,b" (Neat's vm_uuids is comma-separated)."""
    config = config_from_mapping({**QUICK, "global_manager": {"mode": "dry_run"}})
    daemon = Daemon(config, replay({f"{VM_A},{VM_B}": [100], VM_B: [100]}))
    daemon.requester = make_requester(config, daemon.registry)
    assert daemon.run_cycle()
    assert daemon.snapshot.decision == "overload"
    rejected = {"reason": "overload", "result": "rejected"}
    assert value(daemon, "neat_migration_requests_total", **rejected) == 1
    assert value(daemon, "neat_migration_requests_total", reason="overload", result="dry_run") == 0


class ScriptedSource:
    """Hands out the given readings, one per collection (an I/O edge: what a source returns)."""

    name = "scripted"
    keeps_history = False

    def __init__(self, *readings: Reading):
        self.readings = list(readings)

    def collect(self) -> Reading:
        return self.readings.pop(0)

    def read_history(self) -> NeatFiles:
        return NeatFiles()

    def close(self) -> None:
        pass


def vm_reading(info: dict[str, str]) -> Reading:
    vm = VmReading(VM_A, 500.0, 1024, info)
    return Reading(0.0, "compute1", 2, 1000.0, 600.0, {VM_A: vm})


def test_a_snapshot_that_cannot_be_exposed_is_a_counted_failure_and_metrics_stay_up():
    """A label /metrics cannot encode (a lone surrogate) made every scrape a 500 and the cycle's
    error went uncounted. The cycle fails at its publish stage, the last good snapshot stays."""
    good, bad = vm_reading({"domain": "instance-1"}), vm_reading({"domain": "instance-\udcff"})
    daemon = Daemon(config_from_mapping(QUICK), ScriptedSource(bad, good, bad))
    app = make_app(daemon.registry, daemon)

    def scrape() -> tuple[str, bytes]:
        environ = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "HTTP_ACCEPT": ""}
        answer = {}
        body = b"".join(app(environ, lambda status, headers: answer.update(status=status)))
        return answer["status"], body

    assert not daemon.run_cycle()
    assert value(daemon, "neat_cycle_errors_total", stage="publish") == 1
    assert daemon.snapshot is None and scrape()[0].startswith("200")
    assert daemon.run_cycle()
    shown = daemon.snapshot
    assert b'domain="instance-1"' in scrape()[1]
    assert not daemon.run_cycle()
    assert value(daemon, "neat_cycle_errors_total", stage="publish") == 2
    assert daemon.snapshot is shown
    status, body = scrape()
    assert status.startswith("200") and b'domain="instance-1"' in body


def test_a_history_dir_others_can_write_is_refused_at_start(tmp_path):
    """Others could plant links there and make the exporter (often root) write elsewhere."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    config = config_from_mapping({**QUICK, "history_dir": str(shared)})
    with pytest.raises(ConfigError) as error:
        Daemon(config, replay({VM_A: [10]}))
    assert error.value.key == "history_dir"
    assert "others can write" in error.value.reason and "chmod go-w" in error.value.reason
