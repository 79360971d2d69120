"""The exporter's HTTP endpoints: ``/metrics``, ``/healthz`` and a plain HTML landing page.

Everything shown is read from the latest snapshot; no request does any measuring or deciding.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import yaml
from prometheus_client import CollectorRegistry

from neat_exporter import __version__
from neat_exporter.config import Config, effective_config
from neat_exporter.exposition import Exposition, MetricsApp
from neat_exporter.snapshot import Snapshot


class Status(Protocol):
    """What the pages read from the running daemon."""

    config: Config
    snapshot: Snapshot | None
    exposition: Exposition
    last_error: str | None


def make_app(
    registry: CollectorRegistry, status: Status, clock: Callable[[], float] = time.time
) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    """The WSGI application of the exporter's pages, reading ``status`` at every request."""
    metrics_app = MetricsApp(registry, status.exposition)
    config_text = yaml.safe_dump(effective_config(status.config), sort_keys=False)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            # Every page only reads: POST, DELETE, TRACE and the rest are refused.
            start_response(
                "405 Method Not Allowed",
                [("Content-Type", "text/plain; charset=utf-8"), ("Allow", "GET, HEAD")],
            )
            return [b"only GET and HEAD\n"]
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        if path in ("/", "/index.html"):
            body = landing_page(status, config_text, clock()).encode()
            start_response(
                "200 OK",
                [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
            )
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics\n"]

    return app


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def landing_page(status: Status, config_text: str, now: float) -> str:
    """The HTML of ``/``: the latest decision, the detectors, the VMs and the configuration."""
    e = html.escape
    snapshot = status.snapshot
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>neat_exporter</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:1em auto}"
        "td,th{padding:.2em .8em;text-align:left}pre{background:#f4f4f4;padding:1em}</style>",
        "</head><body>",
        f"<h1>neat_exporter {e(__version__)}</h1>",
        "<p><a href='/metrics'>Metrics</a> · <a href='/healthz'>Health</a></p>",
    ]
    if status.last_error:
        parts.append(f"<p><strong>Latest cycle failed:</strong> {e(status.last_error)}</p>")
    if snapshot is None:
        parts.append("<p>No cycle has completed yet.</p>")
    else:
        a = snapshot.algorithms
        parts += [
            f"<h2>Host {e(snapshot.host)}: decision <em>{e(snapshot.decision)}</em></h2>",
            "<table>",
            f"<tr><th>utilization</th><td>{_number(snapshot.utilization)}</td></tr>",
            f"<tr><th>capacity</th><td>{snapshot.capacity_hz / 1e6:.0f} MHz "
            f"({snapshot.cpus} × {snapshot.core_mhz:.0f} MHz, usable fraction applied)</td></tr>",
            f"<tr><th>history samples</th><td>{snapshot.history_samples}</td></tr>",
            f"<tr><th>migration time</th><td>{_number(snapshot.migration_time, 1)} s</td></tr>",
            f"<tr><th>selected for migration</th><td>{e(', '.join(snapshot.selected)) or '–'}"
            "</td></tr>",
            f"<tr><th>snapshot age</th><td>{now - snapshot.time:.1f} s</td></tr>",
            f"<tr><th>source</th><td>{e(snapshot.source)}</td></tr>",
            "</table>",
            "<h2>Detectors</h2><table><tr><th>detector</th><th>algorithm</th><th>input</th>"
            "<th>threshold</th><th>ready</th></tr>",
        ]
        for detector, algorithm in (("underload", a.underload), ("overload", a.overload)):
            view = snapshot.detectors.get(detector)
            parts.append(
                f"<tr><td>{detector}</td><td>{e(algorithm.name)}</td>"
                f"<td>{_number(view and view.input)}</td>"
                f"<td>{_number(view and view.threshold)}</td>"
                f"<td>{'yes' if view and view.ready else 'no'}</td></tr>"
            )
        parts.append(
            f"</table><p>VM selection: {e(a.vm_selection.name)}</p>"
            "<h2>VMs</h2><table><tr><th>uuid</th><th>name</th><th>CPU (MHz)</th>"
            "<th>RAM (MiB)</th><th>selected</th></tr>"
        )
        for vm in snapshot.vms:
            cpu = "–" if vm.cpu_hz is None else f"{vm.cpu_hz / 1e6:.0f}"
            parts.append(
                f"<tr><td>{e(vm.uuid)}</td><td>{e(vm.info.get('instance_name', ''))}</td>"
                f"<td>{cpu}</td><td>{vm.memory_max_bytes / 2**20:.0f}</td>"
                f"<td>{'yes' if vm.selected else ''}</td></tr>"
            )
        parts.append("</table>")
    parts += [
        "<h2>Configuration</h2>",
        f"<pre>{e(config_text)}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)
