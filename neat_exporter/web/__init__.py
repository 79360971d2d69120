"""Serving a WSGI app on an address, shared by the exporter and the bridge.

TLS, client certificates and basic auth come from a web config file in the format of the
Prometheus exporter-toolkit (``--web.config.file``), applied here so that every endpoint of every
server gets them the same way. The parts follow the data: ``config`` reads and checks the file,
``auth`` is the middleware it puts in front of the app, ``reload`` keeps the file in force up to
date, ``server`` is the HTTP server (asyncio and h11) that runs it all.
"""

from neat_exporter.web.auth import BasicAuth, RateLimit
from neat_exporter.web.config import (
    MAX_BCRYPT_COST,
    MIN_BCRYPT_COST,
    WebConfig,
    load_web_config,
)
from neat_exporter.web.server import Limits, Server, format_address, serve_wsgi

__all__ = [
    "MAX_BCRYPT_COST",
    "MIN_BCRYPT_COST",
    "BasicAuth",
    "Limits",
    "RateLimit",
    "Server",
    "WebConfig",
    "format_address",
    "load_web_config",
    "serve_wsgi",
]
