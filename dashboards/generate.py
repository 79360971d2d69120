"""Generate the Grafana dashboards from code.

    python dashboards/generate.py           # rewrite neat-host.json and neat-fleet.json
    python dashboards/generate.py --check   # exit 1 if the committed JSON is out of date

The JSON files next to this script are what Grafana imports and what the Helm chart ships; edit
this script, never the JSON. Metric names are those of docs/metrics.md.

Every query selects exporters through ``instance`` (from ``neat_host_info``), and joins
``neat_host_info`` on ``(instance, job)`` where a panel shows host names, because the exporter puts
the hypervisor's name only on ``neat_host_info``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig, VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import (
    AnnotationQuery,
    CustomVariable,
    Dashboard,
    DashboardLink,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    BigValueColorMode,
    BigValueGraphMode,
    BigValueTextMode,
    GraphDrawStyle,
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
    TimeZoneBrowser,
    VizOrientation,
)

HERE = Path(__file__).resolve().parent
TAGS = ["neat", "neat-exporter", "openstack"]
HOST_UID = "neat-host"
FLEET_UID = "neat-fleet"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Selector shared by every query: the exporters the dashboard's variables picked.
SELECTED = 'instance=~"$instance"'
# Joins the hypervisor name onto a per-exporter series.
WITH_HOST = "* on (instance, job) group_left (host) neat_host_info"

# Colours of the three decisions, used by every panel that shows one.
DECISION_MAPPINGS = [
    model.ValueMap(
        options={
            "-1": model.ValueMappingResult(text="underload", color="blue", index=0),
            "0": model.ValueMappingResult(text="normal", color="green", index=1),
            "1": model.ValueMappingResult(text="overload", color="red", index=2),
        }
    )
]
# -1 underload, 0 normal, 1 overload: the two 0/1 gauges never both hold 1.
DECISION = f"neat_host_overloaded{{{SELECTED}}} - neat_host_underloaded{{{SELECTED}}}"


def binary_mappings(zero: str, one: str, zero_color: str = "red") -> list[model.ValueMapping]:
    return [
        model.ValueMap(
            options={
                "0": model.ValueMappingResult(text=zero, color=zero_color, index=0),
                "1": model.ValueMappingResult(text=one, color="green", index=1),
            }
        )
    ]


DASHED = model.DynamicConfigValue(
    id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}
)


def fixed_color(color: str) -> model.DynamicConfigValue:
    return model.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})


def steps(*pairs: tuple[float | None, str]) -> ThresholdsConfig:
    return (
        ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in pairs])
    )


def query(expr: str, legend: str = "__auto", instant: bool = False) -> Dataquery:
    target = Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)
    return target.instant() if instant else target.range()


def tile(title: str, description: str | None = None) -> stat.Panel:
    """A stat panel of the overview rows: a sixth of the width, four rows high."""
    panel = stat.Panel().title(title).span(4).height(4)
    return panel if description is None else panel.description(description)


def graph(title: str, description: str | None, span: int = 12, height: int = 8) -> timeseries.Panel:
    """A time series panel, ``span`` of the 24 columns wide (half by default), ``height`` rows
    high."""
    panel = timeseries.Panel().title(title)
    panel = panel if description is None else panel.description(description)
    return panel.span(span).height(height)


def bars(title: str, description: str) -> timeseries.Panel:
    """A :func:`graph` of counts as stacked bars, in whole numbers."""
    return (
        graph(title, description)
        .draw_style(GraphDrawStyle.BARS)
        .fill_opacity(80)
        .stacking(StackingConfig().mode(StackingMode.NORMAL))
        .unit("short")
        .decimals(0)
    )


def timeline(title: str, description: str, span: int = 12, height: int = 8) -> statetimeline.Panel:
    """A state timeline panel, sized as :func:`graph`."""
    return statetimeline.Panel().title(title).description(description).span(span).height(height)


def host_link(title: str = "Host: ${__field.labels.host}") -> DashboardLink:
    """A data link from a series carrying a ``host`` label to that host's dashboard."""
    return DashboardLink(title).url(
        f"/d/{HOST_UID}/?var-datasource=${{datasource}}&var-host=${{__field.labels.host}}"
        "&${__url_time_range}"
    )


def dashboard_link(other_uid: str, title: str) -> DashboardLink:
    """A link in the dashboard's header that keeps the time range and the variables."""
    return (
        DashboardLink(title)
        .type(model.DashboardLinkType.LINK)
        .url(f"/d/{other_uid}/")
        .icon("dashboard")
        .include_vars(True)
        .keep_time(True)
    )


# Without a saved selection Grafana would pick the first value, not All.
ALL = model.VariableOption(selected=True, text=["All"], value=["$__all"])


def variables(dash: Dashboard, multi_host: bool) -> Dashboard:
    """The datasource, job, host and instance variables, each narrowing the next."""
    host = (
        QueryVariable("host")
        .label("Host")
        .description("Hypervisor name, as the global manager knows it (neat_host_info)")
        .datasource(DATASOURCE)
        .query('label_values(neat_host_info{job=~"$job"}, host)')
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )
    if multi_host:
        host = host.multi(True).include_all(True).all_value(".*").current(ALL)
    return (
        dash.with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            QueryVariable("job")
            .label("Job")
            .datasource(DATASOURCE)
            .query("label_values(neat_host_info, job)")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(ALL)
        )
        .with_variable(host)
        .with_variable(
            QueryVariable("instance")
            .label("Exporter")
            .description("Scrape target(s) of the selected host(s)")
            .datasource(DATASOURCE)
            .query('label_values(neat_host_info{job=~"$job", host=~"$host"}, instance)')
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            # No custom "All" value: All must mean the instances of the selected hosts.
            .include_all(True)
            .current(ALL)
            .hide(model.VariableHide.HIDE_VARIABLE)
        )
    )


def finish(dash: model.Dashboard) -> model.Dashboard:
    """Panel ids 1..n in layout order, refIds A, B, … per panel (the SDK leaves both unset)
    and the datasource variable on every panel that queries."""
    for number, panel in enumerate(dash.panels or [], start=1):
        panel.id_val = number
        targets = getattr(panel, "targets", None) or []
        if targets:
            panel.datasource = DATASOURCE
        for index, target in enumerate(targets):
            target.ref_id = chr(ord("A") + index)
    return dash


def new_dashboard(title: str, uid: str, description: str) -> Dashboard:
    return (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .refresh("1m")
        .time("now-6h", "now")
        .timezone(TimeZoneBrowser)
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .annotation(
            # Grafana's own annotations and alerts, as on a dashboard created in the UI.
            AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .built_in(1)
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
        )
    )


def host_dashboard() -> model.Dashboard:
    dash = new_dashboard(
        "Neat / Host",
        HOST_UID,
        "One compute host: what Neat's local manager measured, what it decided and why, "
        "which VMs it chose to move, and whether the exporter itself is healthy. As in Neat, "
        "every CPU cycle the host spends outside VMs counts as hypervisor overhead in the "
        "utilization, so other work on the host (backups, builds, agents) can trigger an "
        "overload; host_cpu_usable_by_vms (Capacity tile) keeps a share of the CPU for it.",
    )
    dash = variables(dash, multi_host=False).link(dashboard_link(FLEET_UID, "Neat / Fleet"))
    dash = (
        dash.with_row(Row("Decision"))
        .with_panel(
            tile("Decision", "Decision of the latest cycle")
            .with_target(query(DECISION, "decision", instant=True))
            .mappings(DECISION_MAPPINGS)
            .color_mode(BigValueColorMode.BACKGROUND)
            .graph_mode(BigValueGraphMode.NONE)
        )
        .with_panel(
            tile(
                "Utilization", "Latest host CPU utilization: (Σ VMs + hypervisor) / usable capacity"
            )
            .with_target(query(f"neat_host_cpu_utilization_ratio{{{SELECTED}}}", "utilization"))
            .unit("percentunit")
            .decimals(1)
            .thresholds(steps((None, "green"), (0.8, "orange"), (1.0, "red")))
        )
        .with_panel(
            tile("VMs", "VMs on the host, and how many the latest cycle selected to leave it")
            .with_target(query(f"count(neat_vm_cpu_usage_hertz{{{SELECTED}}})", "running"))
            .with_target(query(f"sum(neat_vm_selected_for_migration{{{SELECTED}}})", "selected"))
            .graph_mode(BigValueGraphMode.NONE)
        )
        .with_panel(
            tile("Capacity", "Usable CPU: cores × MHz × host_cpu_usable_by_vms")
            .with_target(query(f"neat_host_cpu_capacity_hertz{{{SELECTED}}}", "capacity"))
            .unit("hertz")
            .graph_mode(BigValueGraphMode.NONE)
        )
        .with_panel(
            tile("History", "Samples in the utilization history the detectors saw")
            .with_target(query(f"neat_host_history_samples{{{SELECTED}}}", "samples"))
            .graph_mode(BigValueGraphMode.NONE)
        )
        .with_panel(
            tile("Decision age", "Time since the latest successful cycle")
            .with_target(query(f"time() - neat_last_cycle_timestamp_seconds{{{SELECTED}}}", "age"))
            .unit("s")
            .graph_mode(BigValueGraphMode.NONE)
        )
        .with_panel(
            graph(
                "Utilization, detector input and threshold",
                "Host utilization with the value each detector compared (input) and what it "
                "compared it against (threshold). A detector fires when its input crosses its "
                "threshold: overload above, underload below.",
                span=24,
                height=9,
            )
            .with_target(query(f"neat_host_cpu_utilization_ratio{{{SELECTED}}}", "utilization"))
            .with_target(query(f"neat_detector_input_ratio{{{SELECTED}}}", "{{detector}} input"))
            .with_target(
                query(f"neat_detector_threshold_ratio{{{SELECTED}}}", "{{detector}} threshold")
            )
            .unit("percentunit")
            .min(0)
            .override_by_regexp(
                ".* threshold",
                [
                    DASHED,
                    model.DynamicConfigValue(id_val="custom.lineWidth", value=2),
                ],
            )
            .override_by_regexp(
                ".* input",
                [model.DynamicConfigValue(id_val="custom.fillOpacity", value=0)],
            )
            .override_by_name(
                "utilization",
                [
                    model.DynamicConfigValue(id_val="custom.fillOpacity", value=15),
                    model.DynamicConfigValue(id_val="custom.lineWidth", value=2),
                ],
            )
        )
        .with_panel(
            timeline("Decisions", "Decision of each cycle: underload, normal or overload", height=5)
            .with_target(query(DECISION, "decision"))
            .mappings(DECISION_MAPPINGS)
        )
        .with_panel(
            timeline(
                "Detector readiness",
                "A detector is warming up until it has enough history to decide",
                height=5,
            )
            .with_target(query(f"neat_detector_ready{{{SELECTED}}}", "{{detector}}"))
            .mappings(binary_mappings("warming up", "ready", zero_color="yellow"))
        )
    )
    dash = (
        dash.with_row(Row("Virtual machines"))
        .with_panel(
            graph(
                "CPU by VM",
                "CPU use of each VM and of the hypervisor, stacked, against the usable capacity. "
                "Hypervisor is all non-VM CPU use of the host, whatever runs it.",
                span=24,
                height=10,
            )
            .with_target(
                query(
                    f"neat_vm_cpu_usage_hertz{{{SELECTED}}}"
                    f" * on (instance, job, vm_uuid) group_left (instance_name)"
                    f" neat_vm_info{{{SELECTED}}}",
                    "{{instance_name}} {{vm_uuid}}",
                )
            )
            .with_target(query(f"neat_host_hypervisor_cpu_usage_hertz{{{SELECTED}}}", "hypervisor"))
            .with_target(query(f"neat_host_cpu_capacity_hertz{{{SELECTED}}}", "capacity"))
            .unit("hertz")
            .min(0)
            .fill_opacity(40)
            .line_width(1)
            .stacking(StackingConfig().mode(StackingMode.NORMAL).group("vms"))
            .override_by_name(
                "capacity",
                [
                    model.DynamicConfigValue(
                        id_val="custom.stacking", value={"mode": "none", "group": "capacity"}
                    ),
                    model.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
                    DASHED,
                    fixed_color("red"),
                ],
            )
            .legend(
                VizLegendOptions()
                .display_mode(LegendDisplayMode.TABLE)
                .placement(LegendPlacement.RIGHT)
                .show_legend(True)
                .calcs(["lastNotNull", "max"])
            )
        )
        .with_panel(
            timeline(
                "VMs selected for migration", "VMs each cycle chose to move off this host", span=24
            )
            .with_target(
                query(
                    f"neat_vm_selected_for_migration{{{SELECTED}}}"
                    f" * on (instance, job, vm_uuid) group_left (instance_name)"
                    f" neat_vm_info{{{SELECTED}}}",
                    "{{instance_name}} {{vm_uuid}}",
                )
            )
            .mappings(binary_mappings("stays", "selected", zero_color="transparent"))
        )
    )
    dash = (
        dash.with_row(Row("Migrations"))
        .with_panel(
            graph(
                "Migration time",
                "Estimated time to migrate the host's VMs (memory / network_migration_bandwidth),"
                " used by the time-aware algorithms",
            )
            .with_target(query(f"neat_migration_time_seconds{{{SELECTED}}}", "migration time"))
            .unit("s")
            .min(0)
        )
        .with_panel(
            bars(
                "Migration requests by result",
                "Requests to the global manager: sent, failed, dry_run (not sent, mode dry_run) "
                "and suppressed (cooldown)",
            ).with_target(
                query(
                    "sum by (reason, result) (increase(neat_migration_requests_total"
                    f"{{{SELECTED}}}[$__rate_interval]))",
                    "{{reason}} {{result}}",
                )
            )
        )
    )
    dash = (
        dash.with_row(Row("Exporter"))
        .with_panel(
            graph("Cycle duration", "Time one decision cycle takes: collect, detect, select, act")
            .with_target(
                query(
                    "histogram_quantile(0.5, sum by (le) (rate(neat_cycle_duration_seconds_bucket"
                    f"{{{SELECTED}}}[$__rate_interval])))",
                    "p50",
                )
            )
            .with_target(
                query(
                    "histogram_quantile(0.95, sum by (le) (rate(neat_cycle_duration_seconds_bucket"
                    f"{{{SELECTED}}}[$__rate_interval])))",
                    "p95",
                )
            )
            .with_target(
                query(
                    f"sum(rate(neat_cycle_duration_seconds_sum{{{SELECTED}}}[$__rate_interval]))"
                    f" / sum(rate(neat_cycle_duration_seconds_count{{{SELECTED}}}"
                    "[$__rate_interval]))",
                    "mean",
                )
            )
            .unit("s")
            .min(0)
        )
        .with_panel(
            graph("Cycles and errors", "Cycles per second, and failed cycles by stage")
            .with_target(
                query(
                    f"sum(rate(neat_cycles_total{{{SELECTED}}}[$__rate_interval]))",
                    "cycles",
                )
            )
            .with_target(
                query(
                    "sum by (stage) (rate(neat_cycle_errors_total"
                    f"{{{SELECTED}}}[$__rate_interval]))",
                    "errors {{stage}}",
                )
            )
            .unit("ops")
            .min(0)
        )
        .with_panel(
            timeline(
                "Source up",
                "Whether the latest collection reached its source (libvirt, directory)",
                height=5,
            )
            .with_target(query(f"neat_source_up{{{SELECTED}}}", "source"))
            .with_target(query(f"up{{{SELECTED}}}", "scrape"))
            .mappings(binary_mappings("down", "up"))
        )
        .with_panel(
            stat.Panel()
            .title("Algorithms")
            .description("The configured underload, overload and VM selection algorithms")
            .with_target(
                query(
                    f"neat_algorithm_info{{{SELECTED}}}",
                    "underload: {{underload}} · overload: {{overload}} · "
                    "selection: {{vm_selection}}",
                    instant=True,
                )
            )
            .text_mode(BigValueTextMode.NAME)
            .graph_mode(BigValueGraphMode.NONE)
            .span(8)
            .height(5)
        )
        .with_panel(
            stat.Panel()
            .title("Version")
            .with_target(
                query(f"neat_exporter_build_info{{{SELECTED}}}", "{{version}}", instant=True)
            )
            .text_mode(BigValueTextMode.NAME)
            .graph_mode(BigValueGraphMode.NONE)
            .span(4)
            .height(5)
        )
    )
    return finish(dash.build())


def fleet_dashboard() -> model.Dashboard:
    dash = new_dashboard(
        "Neat / Fleet",
        FLEET_UID,
        "Every compute host running neat-exporter: which hosts are overloaded or underloaded, "
        "the busiest hosts, migration requests, and exporters that stopped deciding.",
    )
    dash = (
        variables(dash, multi_host=True)
        .with_variable(
            CustomVariable("stale_after")
            .label("Stale after (s)")
            .description("A host's decision is stale when its latest cycle is older than this")
            .values("300,900,1800,3600")
            .current(model.VariableOption(text="900", value="900", selected=True))
        )
        .link(dashboard_link(HOST_UID, "Neat / Host"))
    )
    stale = f"(time() - neat_last_cycle_timestamp_seconds{{{SELECTED}}}) > $stale_after"
    dash = (
        dash.with_row(Row("Overview"))
        .with_panel(
            tile("Hosts")
            .with_target(query(f'count(neat_host_info{{{SELECTED}, host=~"$host"}})', "hosts"))
            .graph_mode(BigValueGraphMode.NONE)
        )
        .with_panel(
            tile("Overloaded", "Hosts whose latest decision was overload")
            .with_target(query(f"sum(neat_host_overloaded{{{SELECTED}}})", "overloaded"))
            .thresholds(steps((None, "green"), (1, "red")))
            .color_mode(BigValueColorMode.BACKGROUND)
        )
        .with_panel(
            tile("Underloaded", "Hosts whose latest decision was underload")
            .with_target(query(f"sum(neat_host_underloaded{{{SELECTED}}})", "underloaded"))
            .thresholds(steps((None, "green"), (1, "blue")))
            .color_mode(BigValueColorMode.BACKGROUND)
        )
        .with_panel(
            tile(
                "Exporters up", "Scrape targets of the selected jobs that answered the last scrape"
            )
            .with_target(query('sum(up{job=~"$job"})', "up"))
            .with_target(query('count(up{job=~"$job"})', "targets"))
            .graph_mode(BigValueGraphMode.NONE)
        )
        .with_panel(
            tile(
                "Stale decisions",
                "Hosts whose latest successful cycle is older than $stale_after s",
            )
            .with_target(query(f"count({stale}) or vector(0)", "stale"))
            .thresholds(steps((None, "green"), (1, "orange")))
            .color_mode(BigValueColorMode.BACKGROUND)
        )
        .with_panel(
            stat.Panel()
            .title("Migration requests")
            .description("Requests to the global manager in the dashboard's time range")
            .with_target(
                query(
                    f"sum(increase(neat_migration_requests_total{{{SELECTED}}}[$__range]))",
                    "requests",
                    instant=True,
                )
            )
            .decimals(0)
            .graph_mode(BigValueGraphMode.NONE)
            .span(4)
            .height(4)
        )
    )
    dash = (
        dash.with_row(Row("Decisions"))
        .with_panel(
            graph("Hosts by state", "Number of hosts in each state, stacked")
            .with_target(query(f"sum(neat_host_overloaded{{{SELECTED}}})", "overload"))
            .with_target(query(f"sum(neat_host_underloaded{{{SELECTED}}})", "underload"))
            .with_target(
                query(
                    f"count(neat_host_overloaded{{{SELECTED}}})"
                    f" - sum(neat_host_overloaded{{{SELECTED}}})"
                    f" - sum(neat_host_underloaded{{{SELECTED}}})",
                    "normal",
                )
            )
            .stacking(StackingConfig().mode(StackingMode.NORMAL))
            .fill_opacity(60)
            .decimals(0)
            .min(0)
            .override_by_name(
                "overload",
                [fixed_color("red")],
            )
            .override_by_name(
                "underload",
                [
                    model.DynamicConfigValue(
                        id_val="color", value={"mode": "fixed", "fixedColor": "blue"}
                    )
                ],
            )
            .override_by_name(
                "normal",
                [
                    model.DynamicConfigValue(
                        id_val="color", value={"mode": "fixed", "fixedColor": "green"}
                    )
                ],
            )
        )
        .with_panel(
            timeline(
                "Decision per host",
                "Each host's decisions over time; click a host for its dashboard",
            )
            .with_target(query(f"({DECISION}) {WITH_HOST}", "{{host}}"))
            .mappings(DECISION_MAPPINGS)
            .data_links([host_link()])
        )
    )
    dash = (
        dash.with_row(Row("Utilization"))
        .with_panel(
            bargauge.Panel()
            .title("Top hosts by utilization")
            .description("The 10 busiest hosts now; click a bar for the host's dashboard")
            .with_target(
                query(
                    f"topk(10, neat_host_cpu_utilization_ratio{{{SELECTED}}} {WITH_HOST})",
                    "{{host}}",
                    instant=True,
                )
            )
            .unit("percentunit")
            .min(0)
            .max(1)
            .thresholds(steps((None, "blue"), (0.5, "green"), (0.8, "orange"), (1.0, "red")))
            .display_mode(BarGaugeDisplayMode.GRADIENT)
            .orientation(VizOrientation.HORIZONTAL)
            .data_links([host_link()])
            .span(8)
            .height(10)
        )
        .with_panel(
            graph("Utilization by host", None, span=16, height=10)
            .with_target(
                query(f"neat_host_cpu_utilization_ratio{{{SELECTED}}} {WITH_HOST}", "{{host}}")
            )
            .unit("percentunit")
            .min(0)
            .data_links([host_link()])
        )
    )
    dash = (
        dash.with_row(Row("Migrations and exporters"))
        .with_panel(
            graph("Migration request rate", "Requests to the global manager per second, by result")
            .with_target(
                query(
                    "sum by (result) (rate(neat_migration_requests_total"
                    f"{{{SELECTED}}}[$__rate_interval]))",
                    "{{result}}",
                )
            )
            .unit("reqps")
            .min(0)
        )
        .with_panel(
            graph("Migration request failures", "Failed requests per second, by host and reason")
            .with_target(
                query(
                    "sum by (host, reason) (rate(neat_migration_requests_total"
                    f'{{{SELECTED}, result="failed"}}[$__rate_interval]) {WITH_HOST})',
                    "{{host}} {{reason}}",
                )
            )
            .unit("reqps")
            .min(0)
            .data_links([host_link()])
        )
        .with_panel(
            timeline("Exporters up", "Each scrape target of the selected jobs")
            .with_target(query('up{job=~"$job"}', "{{instance}}"))
            .mappings(binary_mappings("down", "up"))
        )
        .with_panel(
            graph(
                "Decision age",
                "Time since each host's latest successful cycle; above $stale_after s the "
                "decision is stale (libvirt hung, cycles failing, or the exporter stuck)",
            )
            .with_target(
                query(
                    f"(time() - neat_last_cycle_timestamp_seconds{{{SELECTED}}}) {WITH_HOST}",
                    "{{host}}",
                )
            )
            .unit("s")
            .min(0)
            .data_links([host_link()])
        )
    )
    return finish(global_manager_row(dash).build())


def quantile(q: float, histogram: str, legend: str) -> Dataquery:
    """A quantile of a global manager histogram over Grafana's interval."""
    return query(
        f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket[$__rate_interval])))",
        legend,
    )


def counts(title: str, description: str, counter: str, labels: tuple[str, ...]) -> timeseries.Panel:
    """Events per Grafana interval of a global manager counter, by ``labels``, as stacked bars
    half the width."""
    by = ", ".join(labels)
    legend = " ".join(f"{{{{{label}}}}}" for label in labels)
    return (
        bars(title, description)
        .with_target(query(f"sum by ({by}) (increase({counter}[$__rate_interval]))", legend))
        .min(0)
    )


def global_manager_row(dash: Dashboard) -> Dashboard:
    """What ``neat-exporter global-manager`` did with the fleet's requests: its ``neat_gm_*``
    series carry no host selection (one global manager per fleet), so they are read whole."""
    return (
        dash.with_row(Row("Global manager"))
        .with_panel(
            tile("Active hosts", "Hosts the global manager's latest fleet view holds as active")
            .with_target(query('sum(neat_gm_hosts{state="active"})', "active"))
            .graph_mode(BigValueGraphMode.NONE)
        )
        .with_panel(
            tile("Asleep hosts", "Hosts the global manager switched off and has not woken")
            .with_target(query('sum(neat_gm_hosts{state="asleep"})', "asleep"))
            .thresholds(steps((None, "text"), (1, "blue")))
            .graph_mode(BigValueGraphMode.NONE)
        )
        .with_panel(
            tile(
                "Excluded hosts",
                "Hosts the latest plan left out of placement (stale or missing data)",
            )
            .with_target(query('sum(neat_gm_hosts{state="excluded"})', "excluded"))
            .thresholds(steps((None, "green"), (1, "orange")))
            .color_mode(BigValueColorMode.BACKGROUND)
        )
        .with_panel(
            tile("Migrations in progress")
            .with_target(query("sum(neat_gm_migrations_in_progress)", "running"))
            .graph_mode(BigValueGraphMode.NONE)
        )
        .with_panel(
            tile(
                "Failed migrations",
                "Migrations that failed, timed out or could not be verified in the time range",
            )
            .with_target(
                query(
                    "sum(increase(neat_gm_migrations_total"
                    '{outcome=~"failed|timeout|unverified"}[$__range]))',
                    "failed",
                    instant=True,
                )
            )
            .decimals(0)
            .thresholds(steps((None, "green"), (1, "red")))
            .color_mode(BigValueColorMode.BACKGROUND)
        )
        .with_panel(
            tile("Plan age", "Time since the global manager's latest plan")
            .with_target(query("time() - max(neat_gm_last_plan_timestamp_seconds)", "age"))
            .unit("s")
            .graph_mode(BigValueGraphMode.NONE)
        )
        .with_panel(
            graph(
                "Hosts active and asleep",
                "The global manager's fleet view: active, asleep and excluded hosts",
            )
            .with_target(query("sum by (state) (neat_gm_hosts)", "{{state}}"))
            .stacking(StackingConfig().mode(StackingMode.NORMAL))
            .fill_opacity(60)
            .decimals(0)
            .min(0)
            .override_by_name("active", [fixed_color("green")])
            .override_by_name("asleep", [fixed_color("blue")])
            .override_by_name("excluded", [fixed_color("orange")])
        )
        .with_panel(
            timeline(
                "Hosts asleep", "Each host the global manager switched off, until it woke it again"
            )
            .with_target(query("max by (host) (neat_gm_host_asleep)", "{{host}}"))
            .mappings(
                [
                    model.ValueMap(
                        options={
                            "0": model.ValueMappingResult(text="awake", color="green", index=0),
                            "1": model.ValueMappingResult(text="asleep", color="blue", index=1),
                        }
                    )
                ]
            )
            .data_links([host_link()])
        )
        .with_panel(
            counts(
                "Requests by outcome",
                "PUT / requests the global manager answered, by reason and HTTP status "
                "(200 done; 401/403 bad credentials; 400/412 bad request)",
                "neat_gm_requests_total",
                ("reason", "code"),
            )
        )
        .with_panel(
            counts(
                "Plans by result",
                "executed, dry_run, empty (nothing to move), no_placement (no host fits), busy "
                "(host already being processed), fleet_error (Prometheus unreadable), failed",
                "neat_gm_plans_total",
                ("reason", "result"),
            )
        )
        .with_panel(
            counts(
                "Migrations by outcome",
                "migrated (verified on the destination), failed, timeout, unverified, dry_run",
                "neat_gm_migrations_total",
                ("outcome",),
            )
            .override_by_name("migrated", [fixed_color("green")])
            .override_by_name("failed", [fixed_color("red")])
            .override_by_name("timeout", [fixed_color("orange")])
        )
        .with_panel(
            graph(
                "Migration and plan duration",
                "Median and 95th percentile of one live migration, and of reading the fleet "
                "and planning",
            )
            .with_target(quantile(0.5, "neat_gm_migration_duration_seconds", "migration p50"))
            .with_target(quantile(0.95, "neat_gm_migration_duration_seconds", "migration p95"))
            .with_target(quantile(0.95, "neat_gm_plan_duration_seconds", "plan p95"))
            .unit("s")
            .min(0)
        )
        .with_panel(
            counts(
                "Power actions",
                "Hosts switched off and on, by result: ok, failed, dry_run, skipped "
                "(protected host or no power backend)",
                "neat_gm_power_actions_total",
                ("action", "result"),
            )
        )
        .with_panel(
            counts(
                "VMs left in place",
                "VMs asked to move that the global manager kept where they were: cooldown, "
                "opt_out, cap_request, cap_hour, unknown_vm",
                "neat_gm_vms_skipped_total",
                ("reason",),
            )
        )
    )


DASHBOARDS: dict[str, Callable[[], model.Dashboard]] = {
    "neat-host.json": host_dashboard,
    "neat-fleet.json": fleet_dashboard,
}


def render(dash: model.Dashboard) -> str:
    """The committed form: sorted keys and a final newline, so diffs stay small."""
    return json.dumps(dash, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the files")
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write into")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        text = render(build())
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
            continue
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    if stale:
        print(
            f"out of date: {', '.join(stale)}; run python dashboards/generate.py", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
