"""Serving a WSGI app on an address, shared by the exporter and the bridge.

TLS and basic auth (exporter-toolkit's web config file) are applied here, so every endpoint of
every server gets them the same way.
"""

from __future__ import annotations

import logging
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from neat_exporter.errors import ConfigError

log = logging.getLogger(__name__)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


def parse_listen_address(value: str, key: str = "listen") -> tuple[str, int]:
    """``host:port``, ``:port`` (all interfaces) or ``[v6]:port``."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class Server:
    """A running server; ``address`` is the bound (host, port), useful when port 0 was asked."""

    def __init__(self, httpd: WSGIServer):
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, name="http", daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return host, port

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def serve_wsgi(app, listen: str, web_config_file: str | None = None) -> Server:
    """Start serving ``app`` in a background thread and return at once."""
    host, port = parse_listen_address(listen)
    if web_config_file:
        raise ConfigError("web.config_file", "TLS and basic auth are not supported yet")
    httpd = make_server(host, port, app, _ThreadingWSGIServer, handler_class=_QuietHandler)
    return Server(httpd)
