"""The exporter's landing page (``/``): the decision, why in words, and the recent cycles.

Built from the latest snapshot only. The history chart is inline SVG, so the page needs nothing
but the exporter; it refreshes itself with a meta refresh and says so.
"""

from __future__ import annotations

import html
import time

from neat_exporter import __version__
from neat_exporter.config import Config
from neat_exporter.explain import DETECTOR_KINDS, Explanation, Rule, detector_rules
from neat_exporter.snapshot import PastCycle, Snapshot

REFRESH_SECONDS = (5, 60)
"""The page reloads every interval, but not more often or more rarely than these bounds."""
COLOURS = {"overload": "#c62828", "underload": "#1565c0", "none": "#2e7d32"}
HEADLINES = {
    "overload": "Overloaded",
    "underload": "Underloaded",
    "none": "Neither overloaded nor underloaded",
}
CHART_WIDTH, CHART_HEIGHT = 640, 220
_PLOT = (44, 10, 630, 190)  # left, top, right, bottom of the plotting area in the viewBox

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:64em;margin:0 auto;padding:0 1em 2em;color:#222}
h1{font-size:1.2em;font-weight:normal;color:#555;margin:.8em 0}
h2{font-size:1.15em;margin:1.4em 0 .5em}
.decision{color:#fff;border-radius:.4em;padding:.8em 1em}
.decision .value{font-size:1.8em;font-weight:bold}
.decision p{margin:.3em 0 0}
.meta{color:#555;font-size:.9em}
.error{background:#fff3e0;border-left:4px solid #ef6c00;padding:.5em 1em}
.detectors{display:grid;grid-template-columns:repeat(auto-fit,minmax(18em,1fr));gap:1em}
.detector{border:1px solid #ddd;border-radius:.4em;padding:.6em 1em}
.detector h3{margin:.2em 0;font-size:1em}
.fired{color:#c62828}.quiet{color:#2e7d32}
ul.conditions{list-style:none;padding:0;margin:.4em 0}
ul.conditions li{margin:.2em 0}
.held:before{content:"✓ ";color:#2e7d32;font-weight:bold}
.failed:before{content:"✗ ";color:#c62828;font-weight:bold}
.unknown:before{content:"· ";color:#777;font-weight:bold}
svg{width:100%;height:auto;max-width:56em;display:block}
.legend>span{margin-right:1em;white-space:nowrap}
.swatch{display:inline-block;width:.8em;height:.8em;border-radius:50%;vertical-align:middle}
table{border-collapse:collapse}
td,th{padding:.25em .7em;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.vms{max-height:32em;overflow:auto;border:1px solid #ddd;border-radius:.4em}
.vms table{width:100%}
.vms th{position:sticky;top:0;background:#f4f4f4}
.vms tr:nth-child(even) td{background:#fafafa}
.vms tr.selected td{background:#ffebee}
.uuid{font-family:ui-monospace,monospace;font-size:.85em;word-break:break-all}
pre{background:#f4f4f4;padding:1em;overflow:auto}
@media (max-width:40em){body{padding:0 .5em}.vms td,.vms th{padding:.2em .35em}.ram{display:none}}
"""


def refresh_seconds(interval: float) -> int:
    low, high = REFRESH_SECONDS
    return int(min(max(interval, low), high))


def landing_page(
    snapshot: Snapshot | None,
    config: Config,
    last_error: str | None,
    config_text: str,
    now: float,
) -> str:
    """The HTML of ``/`` at wall-clock time ``now``."""
    e = html.escape
    refresh = refresh_seconds(config.interval)
    decision = snapshot.decision if snapshot else "none"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<meta http-equiv='refresh' content='{refresh}'>",
        f"<title>{e(HEADLINES[decision] if snapshot else 'waiting')} · neat_exporter</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>neat_exporter {e(__version__)} · <a href='/metrics'>Metrics</a> · "
        "<a href='/healthz'>Health</a></h1>",
    ]
    if last_error:
        parts.append(f"<p class='error'><strong>Latest cycle failed:</strong> {e(last_error)}</p>")
    if snapshot is None:
        parts.append("<p>No cycle has completed yet.</p>")
        parts.append(f"<p class='meta'>This page refreshes itself every {refresh} s.</p>")
    else:
        rules = detector_rules(config.algorithms, config.time_step)
        parts += _decision(snapshot, now, refresh)
        parts += _detectors(snapshot, rules)
        parts += _history(snapshot, rules, config.interval)
        parts += _host(snapshot, config)
        parts += _vms(snapshot)
    parts += [
        "<details><summary>Configuration</summary>",
        f"<pre>{e(config_text)}</pre></details>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _n(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _decision(snapshot: Snapshot, now: float, refresh: int) -> list[str]:
    e = html.escape
    decision = snapshot.decision
    overload = snapshot.detectors.get("overload")
    if decision == "overload":
        summary = (
            f"The overload detector fired: {len(snapshot.selected)} VM(s) selected to leave "
            f"({e(', '.join(snapshot.selected)) or 'none could be chosen'})."
        )
    elif decision == "underload":
        summary = "The underload detector fired: every VM may leave, so the host can be emptied."
        if overload is not None and overload.fired:
            summary += " The overload detector fired too; underload wins, as in Neat."
    elif not snapshot.detectors:
        summary = "Nothing to decide yet: no utilization history."
    else:
        summary = "Neither detector fired this cycle: nothing to do. The reasons are below."
    return [
        f"<section class='decision' id='decision' data-decision='{decision}' "
        f"style='background:{COLOURS[decision]}'>",
        f"<div>Host <strong>{e(snapshot.host)}</strong></div>",
        f"<div class='value'>{HEADLINES[decision]}</div>",
        f"<p>{summary}</p></section>",
        f"<p class='meta'>Utilization {_n(snapshot.utilization)} · cycle "
        f"{now - snapshot.time:.0f} s ago · this page refreshes itself every {refresh} s.</p>",
    ]


def _detectors(snapshot: Snapshot, rules: dict[str, Rule]) -> list[str]:
    e = html.escape
    parts = ["<h2>Why</h2><div class='detectors'>"]
    for kind in DETECTOR_KINDS:
        view = snapshot.detectors.get(kind)
        rule = rules[kind]
        explanation: Explanation = rule.explain(view, snapshot.utilization)
        if view is None:
            verdict, css = "did not run", "quiet"
        elif not view.ready:
            verdict, css = "not deciding yet: the history is too short", "quiet"
        else:
            verdict, css = ("fired", "fired") if view.fired else ("did not fire", "quiet")
        parts += [
            f"<div class='detector' id='detector-{kind}'>",
            f"<h3>{kind.capitalize()}: {e(rule.name)} — <span class='{css}'>{verdict}</span></h3>",
            f"<p>{e(explanation.rule)}</p>",
        ]
        if explanation.conditions:
            parts.append("<ul class='conditions'>")
            for condition in explanation.conditions:
                css = {True: "held", False: "failed", None: "unknown"}[condition.held]
                parts.append(f"<li class='{css}'>{e(condition.text)}</li>")
            parts.append("</ul>")
        parts.append("</div>")
    selection = snapshot.algorithms.vm_selection.name
    parts.append(f"</div><p class='meta'>VM selection when overloaded: {e(selection)}.</p>")
    return parts


def _history(snapshot: Snapshot, rules: dict[str, Rule], interval: float) -> list[str]:
    cycles = [c for c in snapshot.recent if c.utilization is not None]
    title = f"Utilization, last {len(cycles)} cycle{'s' if len(cycles) != 1 else ''}"
    parts = [f"<h2>{title}</h2>"]
    if not cycles:
        return [*parts, "<p>No utilization yet.</p>"]
    parts.append(history_chart(cycles, rules))
    parts.append(
        "<p class='legend meta'>"
        "<span><span class='swatch' style='background:#444'></span> utilization</span> "
        f"<span style='color:{COLOURS['overload']}'>- - overload threshold</span> "
        f"<span style='color:{COLOURS['underload']}'>- - underload threshold</span> "
        f"<span><span class='swatch' style='background:{COLOURS['overload']}'></span> overload "
        "decided</span> "
        f"<span><span class='swatch' style='background:{COLOURS['underload']}'></span> underload "
        f"decided</span> · one cycle every {interval:g} s, newest on the right.</p>"
    )
    return parts


def history_chart(cycles: list[PastCycle], rules: dict[str, Rule]) -> str:
    """An inline SVG of the utilization per cycle with each detector's threshold (where it has
    one in utilization) and the cycles that decided overload or underload."""
    left, top, right, bottom = _PLOT
    lines = {
        kind: [rules[kind].utilization_line(c.detectors.get(kind)) for c in cycles]
        for kind in DETECTOR_KINDS
    }
    values = [c.utilization for c in cycles] + [v for ls in lines.values() for v in ls if v]
    high = max(1.0, *values) * 1.05
    step = (right - left) / max(len(cycles) - 1, 1)

    def x(i: int) -> float:
        return left + i * step if len(cycles) > 1 else (left + right) / 2

    def y(value: float) -> float:
        # An adaptive threshold can fall below 0 (1 − k × a wide spread): drawn at the axis.
        return bottom - (bottom - top) * min(max(value, 0.0), high) / high

    svg = [
        f"<svg id='history' viewBox='0 0 {CHART_WIDTH} {CHART_HEIGHT}' role='img' "
        "aria-label='utilization history with thresholds and decisions' "
        "xmlns='http://www.w3.org/2000/svg' font-size='13' font-family='sans-serif'>"
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        svg.append(
            f"<line x1='{left}' x2='{right}' y1='{y(tick):.1f}' y2='{y(tick):.1f}' "
            f"stroke='#e0e0e0'/><text x='{left - 6}' y='{y(tick) + 4:.1f}' "
            f"text-anchor='end' fill='#666'>{tick:.2f}</text>"
        )
    for kind in DETECTOR_KINDS:
        points = [(x(i), y(v)) for i, v in enumerate(lines[kind]) if v is not None]
        if points:
            svg.append(
                f"<polyline class='threshold-{kind}' fill='none' stroke='{COLOURS[kind]}' "
                f"stroke-dasharray='6 4' points='{_points(points)}'/>"
            )
    utilization = [(x(i), y(c.utilization)) for i, c in enumerate(cycles)]
    svg.append(
        f"<polyline class='utilization' fill='none' stroke='#444' stroke-width='2' "
        f"points='{_points(utilization)}'/>"
    )
    for i, cycle in enumerate(cycles):
        stamp = time.strftime("%H:%M:%S", time.gmtime(cycle.time))
        radius, colour = (4, COLOURS[cycle.decision]) if cycle.decision != "none" else (2, "#888")
        svg.append(
            f"<circle class='cycle {cycle.decision}' cx='{x(i):.1f}' "
            f"cy='{y(cycle.utilization):.1f}' r='{radius}' fill='{colour}'>"
            f"<title>{stamp} UTC: utilization {cycle.utilization:.3f}, {cycle.decision}</title>"
            "</circle>"
        )
    svg.append("</svg>")
    return "".join(svg)


def _points(points: list[tuple[float, float]]) -> str:
    return " ".join(f"{px:.1f},{py:.1f}" for px, py in points)


def _host(snapshot: Snapshot, config: Config) -> list[str]:
    e = html.escape
    overhead = snapshot.hypervisor_hz
    usable = config.host_cpu_usable_by_vms
    return [
        "<h2>Host</h2><table>",
        f"<tr><th>utilization</th><td>{_n(snapshot.utilization)} of the usable capacity</td></tr>",
        f"<tr><th>usable capacity</th><td>{snapshot.capacity_hz / 1e6:.0f} MHz = "
        f"{snapshot.cpus} × {snapshot.core_mhz:.0f} MHz × host_cpu_usable_by_vms {usable:g}"
        "</td></tr>",
        "<tr><th>hypervisor overhead</th><td>"
        f"{'–' if overhead is None else f'{overhead / 1e6:.0f} MHz'}: every CPU cycle not spent "
        "in a VM counts here, as in Neat, so other work on this host raises the utilization and "
        "can cause an overload; lower host_cpu_usable_by_vms to keep headroom for it.</td></tr>",
        f"<tr><th>history samples</th><td>{snapshot.history_samples}</td></tr>",
        f"<tr><th>migration time</th><td>{_n(snapshot.migration_time, 1)} s</td></tr>",
        f"<tr><th>source</th><td>{e(snapshot.source)}</td></tr>",
        "</table>",
    ]


def _vms(snapshot: Snapshot) -> list[str]:
    e = html.escape
    # Selected VMs first, then the busiest: what a reader looks for in a long list.
    vms = sorted(snapshot.vms, key=lambda vm: (not vm.selected, -(vm.cpu_hz or 0), vm.uuid))
    selected = sum(vm.selected for vm in vms)
    parts = [
        f"<h2>VMs: {len(vms)}, {selected} selected to leave</h2>",
        "<div class='vms'><table><thead><tr><th>VM</th><th class='num'>CPU (MHz)</th>"
        "<th class='num ram'>RAM (MiB)</th><th>selected</th></tr></thead><tbody>",
    ]
    for vm in vms:
        cpu = "–" if vm.cpu_hz is None else f"{vm.cpu_hz / 1e6:.0f}"
        name = vm.info.get("instance_name", "")
        label = f"{e(name)}<br>" if name else ""
        parts.append(
            f"<tr{' class=selected' if vm.selected else ''}><td>{label}"
            f"<span class='uuid'>{e(vm.uuid)}</span></td><td class='num'>{cpu}</td>"
            f"<td class='num ram'>{vm.memory_max_bytes / 2**20:.0f}</td>"
            f"<td>{'yes' if vm.selected else ''}</td></tr>"
        )
    parts.append("</tbody></table></div>")
    return parts
