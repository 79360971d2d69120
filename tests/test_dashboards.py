"""The Grafana dashboards: generated from code, well-formed, and every query returns data from
a real Prometheus scraping a running exporter (no Grafana server runs on these machines)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_checks import scraped_exporter
from services import EXPORTER, Process, Prometheus, free_port, require_program, wait_until

from neat_exporter.actions import Credentials, GlobalManagerClient
from neat_exporter.vocabulary import Reason

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
NAMES = ("neat-host.json", "neat-fleet.json")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24


def load_generator():
    spec = importlib.util.spec_from_file_location("generate_dashboards", DASHBOARDS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def committed(name: str) -> dict:
    return json.loads((DASHBOARDS / name).read_text())


def query_panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def all_targets() -> list[tuple[str, str, dict]]:
    """(dashboard, panel title, target) for every query of both dashboards."""
    return [
        (name, panel["title"], target)
        for name in NAMES
        for panel in query_panels(committed(name))
        for target in panel["targets"]
    ]


def variables(dashboard: dict) -> dict[str, dict]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


# --- generated, not hand-edited ----------------------------------------------------------------


def test_regenerating_gives_exactly_the_committed_files():
    generator = load_generator()
    assert set(generator.DASHBOARDS) == set(NAMES)
    for name, build in generator.DASHBOARDS.items():
        assert generator.render(build()) == (DASHBOARDS / name).read_text(), (
            f"{name} is out of date: run python dashboards/generate.py"
        )


def test_check_mode_reports_a_stale_file(tmp_path):
    script = str(DASHBOARDS / "generate.py")
    subprocess.run([sys.executable, script, "--out", str(tmp_path)], check=True)
    check = [sys.executable, script, "--check", "--out", str(tmp_path)]
    assert subprocess.run(check).returncode == 0
    (tmp_path / "neat-host.json").write_text("{}\n")
    result = subprocess.run(check, capture_output=True, text=True)
    assert result.returncode == 1
    assert "neat-host.json" in result.stderr


# --- structure ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_panel_ids_and_ref_ids_are_unique(name):
    dashboard = committed(name)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and None not in ids
    for panel in query_panels(dashboard):
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert panel["targets"], f"{panel['title']} has no query"
        assert len(ref_ids) == len(set(ref_ids)) and "" not in ref_ids, panel["title"]


@pytest.mark.parametrize("name", NAMES)
def test_panels_fit_the_grid_without_overlapping(name):
    taken: set[tuple[int, int]] = set()
    for panel in committed(name)["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["h"] > 0, panel["title"]
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


@pytest.mark.parametrize("name", NAMES)
def test_every_query_uses_the_datasource_variable(name):
    dashboard = committed(name)
    assert variables(dashboard)["datasource"]["type"] == "datasource"
    assert variables(dashboard)["datasource"]["query"] == "prometheus"
    for panel in query_panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
    for variable in variables(dashboard).values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]


@pytest.mark.parametrize("name", NAMES)
def test_variables_that_offer_all_start_at_all(name):
    for variable in variables(committed(name)).values():
        if variable.get("includeAll"):
            assert variable["current"]["value"] == ["$__all"], variable["name"]


@pytest.mark.parametrize("name", NAMES)
def test_host_variables_come_from_neat_host_info(name):
    found = variables(committed(name))
    assert "neat_host_info" in found["host"]["query"]
    assert "neat_host_info" in found["instance"]["query"]
    assert "$host" in found["instance"]["query"]


def test_uids_tags_and_links_between_the_dashboards():
    host, fleet = committed("neat-host.json"), committed("neat-fleet.json")
    assert (host["uid"], fleet["uid"]) == ("neat-host", "neat-fleet")
    for dashboard, other in ((host, fleet), (fleet, host)):
        assert "neat" in dashboard["tags"]
        urls = [link["url"] for link in dashboard["links"]]
        assert f"/d/{other['uid']}/" in urls
        assert all(link["keepTime"] and link["includeVars"] for link in dashboard["links"])
    # Fleet panels that show hosts link each host to its own dashboard.
    data_links = [
        link["url"]
        for panel in query_panels(fleet)
        for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", [])
    ]
    assert data_links and all(url.startswith("/d/neat-host/") for url in data_links)


def test_required_panels_are_there():
    titles = {name: {p["title"] for p in committed(name)["panels"]} for name in NAMES}
    assert {
        "Utilization, detector input and threshold",
        "Decisions",
        "VMs selected for migration",
        "CPU by VM",
        "Migration time",
        "Migration requests by result",
        "Cycle duration",
        "Source up",
        "Detector readiness",
    } <= titles["neat-host.json"]
    assert {
        "Hosts by state",
        "Overloaded",
        "Underloaded",
        "Top hosts by utilization",
        "Migration request rate",
        "Migration request failures",
        "Exporters up",
        "Stale decisions",
        # the global manager
        "Active hosts",
        "Asleep hosts",
        "Hosts active and asleep",
        "Hosts asleep",
        "Requests by outcome",
        "Plans by result",
        "Migrations by outcome",
        "Migration and plan duration",
        "Power actions",
    } <= titles["neat-fleet.json"]
    decisions = next(p for p in committed("neat-host.json")["panels"] if p["title"] == "Decisions")
    assert decisions["type"] == "state-timeline"
    cpu = next(p for p in committed("neat-host.json")["panels"] if p["title"] == "CPU by VM")
    assert cpu["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"


def test_ranges_follow_grafana_not_a_fixed_window():
    for name, title, target in all_targets():
        for window in re.findall(r"\[([^\]]+)\]", target["expr"]):
            assert window in ("$__rate_interval", "$__range"), f"{name} / {title}: [{window}]"


def test_queries_use_only_documented_metrics():
    """Every metric a panel reads is in the metric reference (docs/metrics.md)."""
    known = set(re.findall(r"`(neat_[a-z_]+)", (ROOT / "docs" / "metrics.md").read_text()))
    for name, title, target in all_targets():
        for metric in re.findall(r"\bneat_[a-z_]+", target["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", metric)
            assert metric in known or base in known, f"{name} / {title}: {metric}"


# --- the queries, with Grafana's variables filled in ------------------------------------------


def regex_value(values: list[str]) -> str:
    """How Grafana formats a multi-value variable for Prometheus: an alternation, each special
    character escaped with two backslashes (one for the PromQL string, one for the regex)."""
    escaped = [re.sub(r"([\\$^*{}\[\]'+?.()|])", r"\\\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(expr: str, values: dict[str, str]) -> str:
    # Longest names first, so $host does not eat the front of $hostname-like names.
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${name}", values[name]).replace(f"${{{name}}}", values[name])
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


STATIC = {"__rate_interval": "15s", "__interval": "5s", "__range": "2m", "stale_after": "60"}


def test_every_query_parses_with_promtool(tmp_path):
    promtool = require_program("promtool")
    values = {**STATIC, "job": "neat", "host": "compute1", "instance": "127.0.0.1:9840"}
    rules = [
        {"record": f"check:{index}", "expr": substitute(target["expr"], values)}
        for index, (_, _, target) in enumerate(all_targets())
    ]
    path = tmp_path / "queries.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- every panel query against a real Prometheus scraping a running exporter -----------------


def exporter_config() -> dict:
    """The demo's accelerated workload, with dry-run migration requests so their counters move."""
    from neat_exporter.commands.demo import DEMO_CONFIG

    return {
        **DEMO_CONFIG,
        "host": "compute-7",
        "global_manager": {"mode": "dry_run", "url": "http://127.0.0.1:9/", "cooldown": 0},
    }


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    """Prometheus scraping the exporter and a dry_run global manager that reads the exporter's
    series from it and has answered one overload request for the exporter's host."""
    require_program("prometheus")
    workdir = tmp_path_factory.mktemp("dashboards")
    manager_address = f"127.0.0.1:{free_port()}"
    with scraped_exporter(workdir, exporter_config(), [manager_address]) as server:
        flags = ["--listen", manager_address, "--prometheus-url", server.url]
        manager = Process(
            [*EXPORTER, "global-manager", *flags, "--executor", "dry_run"],
            workdir / "global-manager.log",
            env={**os.environ, **MANAGER_CREDENTIALS},
        )
        try:
            url = f"http://{manager_address}/"
            wait_until(lambda: requests.get(f"{url}healthz", timeout=1).ok, 20, "global manager")
            vm = server.wait_for("neat_vm_info")[0]["metric"]["vm_uuid"]  # selected or not
            client = GlobalManagerClient(url, Credentials.from_plain(*MANAGER_CREDENTIALS.values()))
            answer = client.send("compute-7", Reason.OVERLOAD, [vm])
            assert answer.ok, (answer, manager.log()[-2000:])
            # rate() over $__rate_interval needs two scrapes; the histograms need events in them.
            server.wait_for("rate(neat_cycles_total[15s]) > 0", timeout=40)
            server.wait_for("increase(neat_gm_requests_total[15s])", timeout=30)
            yield server
        finally:
            manager.stop()


MANAGER_CREDENTIALS = {
    "NEAT_GLOBAL_MANAGER_USERNAME": "dashboards-admin",
    "NEAT_GLOBAL_MANAGER_PASSWORD": "dashboards-secret",
}
# Panels whose series exist only once something happened (a host was switched off); each may be
# empty only while Prometheus holds no series of its metric at all.
ONLY_AFTER_EVENTS = {"Hosts asleep": "neat_gm_host_asleep"}


def label_values(prometheus: Prometheus, query: str) -> list[str]:
    """Grafana's label_values(selector, label), through the same Prometheus API it uses."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
    selector, label = match.groups()
    response = requests.get(
        f"{prometheus.url}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=5
    )
    response.raise_for_status()
    return response.json()["data"]


def resolve_variables(prometheus: Prometheus, dashboard: dict) -> dict[str, str]:
    """Fill the variables in order, as Grafana does: All where allowed, else the first value."""
    values = dict(STATIC)
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        options = label_values(prometheus, substitute(variable["query"], values))
        assert options, f"variable {variable['name']} has no values"
        if variable.get("includeAll"):
            values[variable["name"]] = variable.get("allValue") or regex_value(options)
        else:
            values[variable["name"]] = regex_value(options[:1])
    return values


def run_query(prometheus: Prometheus, target: dict, expr: str) -> list[dict]:
    if target.get("instant"):
        params, path = {"query": expr}, "query"
    else:
        now = requests.get(f"{prometheus.url}/api/v1/query", params={"query": "time()"}).json()
        end = float(now["data"]["result"][0])
        params, path = {"query": expr, "start": end - 30, "end": end, "step": 2}, "query_range"
    response = requests.get(f"{prometheus.url}/api/v1/{path}", params=params, timeout=10)
    assert response.ok, f"{expr}: {response.text}"
    return response.json()["data"]["result"]


@pytest.mark.services
@pytest.mark.parametrize("name", NAMES)
def test_every_panel_query_returns_data(prometheus, name):
    dashboard = committed(name)
    values = resolve_variables(prometheus, dashboard)
    assert values["host"] in ("compute-7", ".*")
    empty = []
    for panel in query_panels(dashboard):
        for target in panel["targets"]:
            expr = substitute(target["expr"], values)
            if not run_query(prometheus, target, expr):
                metric = ONLY_AFTER_EVENTS.get(panel["title"])
                if metric is None or prometheus.query(metric):
                    empty.append(f"{panel['title']} [{target['refId']}]: {expr}")
    assert empty == [], "queries without data:\n" + "\n".join(empty)


@pytest.mark.services
def test_host_series_carry_the_host_name(prometheus):
    """Panels that join neat_host_info show the hypervisor's name, not the scrape address."""
    fleet = committed("neat-fleet.json")
    values = resolve_variables(prometheus, fleet)
    top = next(p for p in fleet["panels"] if p["title"] == "Top hosts by utilization")
    result = run_query(prometheus, top["targets"][0], substitute(top["targets"][0]["expr"], values))
    assert [series["metric"]["host"] for series in result] == ["compute-7"]


@pytest.mark.services
def test_migration_panel_counts_dry_run_requests(prometheus):
    """The exporter runs in dry_run mode: its would-be requests show in the host dashboard."""
    host = committed("neat-host.json")
    values = resolve_variables(prometheus, host)
    panel = next(p for p in host["panels"] if p["title"] == "Migration requests by result")
    target = panel["targets"][0]
    expr = substitute(target["expr"].replace("$__rate_interval", "$__range"), values)

    def dry_runs() -> float:
        result = run_query(prometheus, {"instant": True}, expr)
        return sum(float(s["value"][1]) for s in result if s["metric"]["result"] == "dry_run")

    assert wait_until(lambda: dry_runs() > 0, 30, "a dry_run migration request")
