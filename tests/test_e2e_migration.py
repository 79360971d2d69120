"""From a decision to a migration request, with the real parts.

The exporter replays two VMs that overload a small host. Alert path: a real Prometheus scrapes it
with the shipped rules (hold times shortened in a generated copy), a real Alertmanager routes the
alert to ``neat-exporter bridge``, which calls the global manager stand-in. Direct path: the
exporter itself in ``global_manager.mode: on``. Both must name the host and the VM the exporter
selected; faults at the global manager must not stop the exporter's loop.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import requests
import yaml
from global_manager import PASSWORD, USER, GlobalManager
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

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "neat-exporter.rules.yml"
HOST = "compute-e2e"
BUSY_VM = "aaaaaaaa-0000-4000-8000-000000000001"  # 95 % of a core: the one to move
OTHER_VM = "bbbbbbbb-0000-4000-8000-000000000002"  # 80 %
TOKEN = "e2e-bridge-token"
CREDENTIALS_ENV = {
    "NEAT_GLOBAL_MANAGER_USERNAME": USER,
    "NEAT_GLOBAL_MANAGER_PASSWORD": PASSWORD,
}


def rules_with_short_holds(target: Path, hold: str = "2s") -> Path:
    """The shipped rules with every ``for:`` set to ``hold`` (the shipped file is untouched)."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = hold
    target.write_text(yaml.safe_dump(rules, sort_keys=False))
    return target


def start_exporter(tmp_path: Path, global_manager: dict) -> Exporter:
    """Two VMs at 95 % and 80 % of a core on a 2-core host: 87.5 % > the 80 % threshold."""
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / BUSY_VM).write_text("95\n" * 50)
    (traces / OTHER_VM).write_text("80\n" * 50)
    config = {
        "host": HOST,
        "interval": 1,
        "source": {
            "type": "replay",
            "replay": {"traces": str(traces), "vms": 2, "cpus": 2, "host_cpu_mhz": 4000},
        },
        "algorithms": {
            "underload": {"name": "threshold", "params": {"threshold": 0.3}},
            "overload": {"name": "threshold", "params": {"threshold": 0.8}},
            "vm_selection": {"name": "minimum_migration_time_max_cpu", "params": {"last_n": 2}},
        },
        "global_manager": global_manager,
    }
    return Exporter(tmp_path, config, env=CREDENTIALS_ENV)


def start_bridge(tmp_path: Path, config: dict, url: str) -> Process:
    """`neat-exporter bridge --config` with ``config``, serving at ``url``."""
    (tmp_path / "bridge.yml").write_text(yaml.safe_dump(config))
    process = Process(
        [*EXPORTER, "bridge", "--config", str(tmp_path / "bridge.yml")],
        tmp_path / "bridge.log",
        env={**os.environ, **CREDENTIALS_ENV},
    )

    def up() -> bool:
        if not process.alive():
            raise RuntimeError(f"the bridge exited: {process.log()[-2000:]}")
        return requests.get(f"{url}/healthz", timeout=1).ok

    try:
        wait_until(up, 30, "the bridge up")
    except Exception:
        process.stop()
        raise
    return process


def overload_requests(samples: dict[tuple, float], result: str) -> float:
    return sample_value(samples, "neat_migration_requests_total", reason="overload", result=result)


@pytest.fixture
def gm():
    with GlobalManager() as manager:
        yield manager


def test_alert_path_prometheus_alertmanager_bridge_global_manager(tmp_path, gm):
    bridge_port = free_port()
    (tmp_path / "token").write_text(TOKEN)
    bridge_config = {
        "global_manager": {"mode": "on", "url": gm.url, "timeout": 5, "cooldown": 600},
        "bridge": {
            "listen": f"127.0.0.1:{bridge_port}",
            "bearer_token_file": str(tmp_path / "token"),
        },
    }
    bridge_url = f"http://127.0.0.1:{bridge_port}"
    stack = []
    try:
        exporter = start_exporter(tmp_path, {"mode": "off"})
        stack.append(exporter)
        stack.append(start_bridge(tmp_path, bridge_config, bridge_url))
        alertmanager = Alertmanager(
            tmp_path / "alertmanager",
            f"{bridge_url}/webhook",
            http_config={"authorization": {"type": "Bearer", "credentials": TOKEN}},
        )
        stack.append(alertmanager)
        prometheus = Prometheus(
            tmp_path / "prometheus",
            [exporter.address],
            rule_files=[rules_with_short_holds(tmp_path / "rules.yml")],
            alertmanager=alertmanager.address,
        )
        stack.append(prometheus)

        selected = prometheus.wait_for("neat_vm_selected_for_migration == 1")
        wait_until(lambda: gm.accepted, 60, "the bridge's request at the global manager", 0.2)
        firing = prometheus.query('ALERTS{alertname="NeatVMSelectedForMigration"}')
        time.sleep(1.5)  # Alertmanager re-sends on every group_interval: still one request
        bridge_metrics = scrape(bridge_url)
    finally:
        for part in reversed(stack):
            part.stop()

    assert [s["metric"]["vm_uuid"] for s in selected] == [BUSY_VM]
    assert firing[0]["metric"]["host"] == HOST and firing[0]["metric"]["vm_uuid"] == BUSY_VM
    [request] = gm.accepted
    assert (request.host, request.reason, request.vm_uuids) == (HOST, 1, [BUSY_VM])
    sent = sample_value(
        bridge_metrics, "neat_bridge_migration_requests_total", reason="overload", result="sent"
    )
    assert sent == 1
    assert sample_value(bridge_metrics, "neat_bridge_webhooks_total", code="200") >= 1


def test_direct_path_exporter_in_on_mode(tmp_path, gm):
    exporter = start_exporter(
        tmp_path, {"mode": "on", "url": gm.url, "timeout": 2, "cooldown": 600}
    )
    try:
        wait_until(lambda: gm.accepted, 20, "the exporter's request at the global manager", 0.1)
        wait_until(
            lambda: overload_requests(exporter.metrics(), "suppressed") >= 2,
            20,
            "cooldown suppressing the next cycles' requests",
        )
        metrics = exporter.metrics()
    finally:
        exporter.stop()
    selected = [
        dict(labels)["vm_uuid"]
        for (name, *labels), v in metrics.items()
        if name == "neat_vm_selected_for_migration" and v == 1
    ]
    [request] = gm.accepted
    assert (request.host, request.reason, request.vm_uuids) == (HOST, 1, selected)
    assert selected == [BUSY_VM]
    assert overload_requests(metrics, "sent") == 1
    assert sample_value(metrics, "neat_migration_request_duration_seconds_count") == 1
    assert PASSWORD not in exporter.log()


def test_exporter_loop_survives_every_global_manager_fault(tmp_path, gm):
    """401, 403, 412 twice, 500 twice, slow, then gone: each is counted, cycles keep coming."""
    gm.forced_statuses.extend([401, 403, 412, 412, 500, 500])
    exporter = start_exporter(
        tmp_path, {"mode": "on", "url": gm.url, "timeout": 0.5, "retries": 1, "cooldown": 0}
    )

    def counts() -> tuple[float, float, float]:
        metrics = exporter.metrics()
        return (
            sample_value(metrics, "neat_cycles_total"),
            overload_requests(metrics, "failed"),
            overload_requests(metrics, "sent"),
        )

    try:
        wait_until(lambda: counts()[2] >= 1, 20, "a request accepted after the refusals")
        assert gm.statuses[:7] == [401, 403, 412, 412, 500, 500, 200]
        cycles, failed, _ = counts()
        assert failed == 4

        gm.delay = 1.5  # slower than the 0.5 s timeout
        time.sleep(2.5)
        slow_cycles, slow_failed, _ = counts()
        assert slow_cycles >= cycles + 2, "the loop stalled behind a slow global manager"
        assert slow_failed > failed

        gm.stop()  # gone
        wait_until(lambda: counts()[1] > slow_failed + 2, 20, "failures counted while it is down")
        assert counts()[0] >= slow_cycles + 2
    finally:
        exporter.stop()
    log = exporter.log()
    assert "401: request carried no username or password" in log
    assert "403: credentials rejected" in log
    assert "synchronise the clocks" in log
    assert "cannot reach the global manager" in log
