"""The exporter's HTTP endpoints: ``/metrics``, ``/healthz`` and the HTML landing page.

Everything shown is read from the latest snapshot; no request does any measuring or deciding.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import yaml
from prometheus_client import CollectorRegistry

from neat_exporter.config import Config, effective_config
from neat_exporter.exposition import Exposition, MetricsApp
from neat_exporter.landing import landing_page
from neat_exporter.snapshot import Snapshot


class Status(Protocol):
    """What the pages read from the running daemon."""

    config: Config
    snapshot: Snapshot | None
    exposition: Exposition
    last_error: str | None


def make_app(
    registry: CollectorRegistry, status: Status, clock: Callable[[], float] = time.time
) -> ExporterApp:
    """The WSGI application of the exporter's pages, reading ``status`` at every request."""
    return ExporterApp(registry, status, clock)


class ExporterApp:
    """The exporter's pages as a WSGI app."""

    def __init__(self, registry: CollectorRegistry, status: Status, clock: Callable[[], float]):
        self._metrics_app = MetricsApp(registry, status.exposition)
        self._status = status
        self._clock = clock
        self._config_text = yaml.safe_dump(effective_config(status.config), sort_keys=False)

    def inline_app(self, environ: dict[str, Any]) -> ExporterApp | None:
        """Itself for the requests it answers from memory at once, which the HTTP server then
        answers without a thread switch: everything but the landing page (HTML built from the
        snapshot) and a scrape that would encode the snapshot (see MetricsApp.answers_at_once)."""
        path = environ.get("PATH_INFO") or "/"
        if path in ("/", "/index.html"):
            return None
        if path == "/metrics" and not self._metrics_app.answers_at_once(environ):
            return None
        return self

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            # Every page only reads: POST, DELETE, TRACE and the rest are refused.
            start_response(
                "405 Method Not Allowed",
                [("Content-Type", "text/plain; charset=utf-8"), ("Allow", "GET, HEAD")],
            )
            return [b"only GET and HEAD\n"]
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        if path in ("/", "/index.html"):
            status = self._status
            body = landing_page(
                status.snapshot, status.config, status.last_error, self._config_text, self._clock()
            ).encode()
            start_response(
                "200 OK",
                [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
            )
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics\n"]
