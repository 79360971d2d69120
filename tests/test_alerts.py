"""The shipped Prometheus rules: syntax, promtool unit tests and what every alert must carry."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from services import require_program

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts" / "neat-exporter.rules.yml"
GM_RULES = ROOT / "alerts" / "neat-global-manager.rules.yml"
RULE_FILES = (RULES, GM_RULES)
TESTS = sorted((ROOT / "alerts" / "tests").glob("*.yml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"

EXPECTED_ALERTS = {
    "NeatHostOverloaded",
    "NeatHostUnderloaded",
    "NeatVMSelectedForMigration",
    "NeatExporterDown",
    "NeatSourceDown",
    "NeatDecisionStale",
    "NeatMigrationRequestsFailing",
    "NeatMigrationsNotConverging",
    "NeatGlobalManagerDown",
    "NeatGlobalManagerMigrationsFailing",
    "NeatGlobalManagerPowerActionFailing",
    "NeatGlobalManagerRequestsRefused",
    "NeatGlobalManagerNoPlacement",
    "NeatGlobalManagerFleetUnreadable",
    "NeatGlobalManagerHostExcluded",
    "NeatGlobalManagerStateNotSaved",
}


def alerting_rules() -> list[dict]:
    groups = [g for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = require_program("promtool")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda p: p.name)
def test_rules_pass_promtool_check(rules):
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(test_file):
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("rules", "test_name", "right", "wrong", "alert"),
    [
        (
            RULES,
            "neat-exporter.rules.test.yml",
            "vm_uuid: vm-1",
            "vm_uuid: vm-2",
            "NeatVMSelectedForMigration",
        ),
        (
            GM_RULES,
            "neat-global-manager.rules.test.yml",
            "outcome: timeout",
            "outcome: failed",
            "NeatGlobalManagerMigrationsFailing",
        ),
    ],
    ids=["exporter", "global-manager"],
)
def test_a_wrong_expectation_fails(tmp_path, rules, test_name, right, wrong, alert):
    """The unit tests can fail: the same tests with one expected label changed do."""
    [test_file] = [p for p in TESTS if p.name == test_name]
    broken = test_file.read_text().replace(right, wrong, 1)
    assert broken != test_file.read_text()
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / test_file.name).write_text(broken)
    (tmp_path / rules.name).write_text(rules.read_text())
    result = promtool("test", "rules", str(tmp_path / "tests" / test_file.name))
    assert result.returncode == 1
    assert alert in result.stdout + result.stderr


def test_every_alert_has_severity_summary_description_and_runbook():
    rules = alerting_rules()
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    anchors = {heading.lower() for heading in re.findall(r"^## (\w+)$", RUNBOOKS.read_text(), re.M)}
    for rule in rules:
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        assert annotations["runbook_url"] == f"docs/runbooks.md#{rule['alert'].lower()}"
        assert rule["alert"].lower() in anchors, f"no runbook section for {rule['alert']}"


def test_action_alerts_carry_what_the_bridge_needs():
    actions = {r["alert"]: r for r in alerting_rules() if "neat_reason" in r.get("labels", {})}
    assert actions.keys() == {"NeatHostUnderloaded", "NeatVMSelectedForMigration"}
    assert actions["NeatHostUnderloaded"]["labels"]["neat_reason"] == "underload"
    assert actions["NeatVMSelectedForMigration"]["labels"]["neat_reason"] == "overload"
    for rule in actions.values():  # the host name comes from neat_host_info
        assert "group_left (host) neat_host_info" in rule["expr"]
        assert rule["for"]


def test_every_alert_is_tested_firing_and_not_firing():
    firing: set[str] = set()
    silent: set[str] = set()
    for test_file in TESTS:
        for test in yaml.safe_load(test_file.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert firing >= EXPECTED_ALERTS, EXPECTED_ALERTS - firing
    assert silent >= EXPECTED_ALERTS, EXPECTED_ALERTS - silent


def test_global_manager_alerts_select_its_job_and_series():
    """They read only the global manager's own series, and its job by the chart's name."""
    groups = yaml.safe_load(GM_RULES.read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        metrics = set(re.findall(r"\b(neat_[a-z_]+|up)\b", rule["expr"]))
        assert metrics and all(m.startswith("neat_gm_") or m == "up" for m in metrics), rule
        if "up" in metrics:
            assert 'job="neat-global-manager"' in rule["expr"]


def documented_metrics() -> set[str]:
    text = (ROOT / "docs" / "metrics.md").read_text()
    return set(re.findall(r"`(neat_[a-z_]*[a-z])", text))  # not the `neat_gm_*` of the prose


def test_rules_use_only_documented_metrics():
    known = documented_metrics()
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for metric in re.findall(r"\bneat_[a-z_]+", rule["expr"]):
                    base = re.sub(r"_(bucket|sum|count)$", "", metric)
                    assert metric in known or base in known, f"{path.name}: {metric}"


def test_every_global_manager_metric_is_documented():
    """docs/metrics.md lists exactly what the global manager registers."""
    from prometheus_client import CollectorRegistry

    from neat_exporter.globalmanager.metrics import GlobalManagerMetrics

    registry = CollectorRegistry()
    GlobalManagerMetrics(registry)
    registered = set()
    for family in registry.collect():
        suffix = "_total" if family.type == "counter" else ""
        registered.add(family.name + suffix)
    documented = {name for name in documented_metrics() if name.startswith("neat_gm_")}
    # The Nova executor registers its own counter when it is chosen.
    assert registered == documented - {"neat_gm_nova_requests_total"}


@pytest.mark.services
def test_global_manager_alerts_fire_on_a_running_global_manager(tmp_path):
    """The rules against the real thing: a global manager whose Prometheus is unreachable and
    that gets requests with wrong credentials, scraped by a Prometheus loading the rules."""
    import os

    import requests
    from services import EXPORTER, Process, Prometheus, free_port, wait_until

    from neat_exporter.actions import Credentials, GlobalManagerClient
    from neat_exporter.vocabulary import Reason

    require_program("prometheus")
    environ = {"NEAT_GLOBAL_MANAGER_USERNAME": "admin", "NEAT_GLOBAL_MANAGER_PASSWORD": "alerts"}
    address = f"127.0.0.1:{free_port()}"
    nowhere = f"http://127.0.0.1:{free_port()}"  # no Prometheus answers there
    flags = ["--listen", address, "--prometheus-url", nowhere, "--executor", "dry_run"]
    manager = Process(
        [*EXPORTER, "global-manager", *flags],
        tmp_path / "global-manager.log",
        env={**os.environ, **environ},
    )
    prometheus = None
    try:
        url = f"http://{address}/"
        wait_until(lambda: requests.get(f"{url}healthz", timeout=1).ok, 20, "global manager")
        prometheus = Prometheus(tmp_path / "prometheus", [address], rule_files=[GM_RULES])
        prometheus.wait_for("neat_gm_fleet_errors_total")  # scraped once at 0
        right = GlobalManagerClient(url, Credentials.from_plain(*environ.values()), retries=0)
        wrong = GlobalManagerClient(url, Credentials.from_plain("admin", "wrong"), retries=0)
        assert not right.send("compute-1", Reason.OVERLOAD, ["vm-1"]).ok  # fleet unreadable
        assert wrong.send("compute-1", Reason.UNDERLOAD, []).status == 403
        # A counter's new series counts from its first scrape: a second refusal raises it.
        prometheus.wait_for('neat_gm_requests_total{code="403"}')
        assert wrong.send("compute-1", Reason.UNDERLOAD, []).status == 403

        def firing(alert: str, **labels: str) -> list:
            matchers = "".join(f', {name}="{value}"' for name, value in labels.items())
            return prometheus.query(f'ALERTS{{alertname="{alert}", alertstate="firing"{matchers}}}')

        wait_until(lambda: firing("NeatGlobalManagerFleetUnreadable"), 30, "fleet alert")
        wait_until(
            lambda: firing("NeatGlobalManagerRequestsRefused", code="403", reason="invalid"),
            30,
            "refused requests alert",
        )
        assert not firing("NeatGlobalManagerMigrationsFailing")
    finally:
        if prometheus is not None:
            prometheus.stop()
        manager.stop()
