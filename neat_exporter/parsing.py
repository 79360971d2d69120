"""Values operators type, read one way everywhere: durations and listen addresses.

Configuration files, web configurations and command-line flags all take durations in
Prometheus' syntax and listen addresses as exporters do, so each is parsed here once.
"""

from __future__ import annotations

import math
import re

from neat_exporter.errors import ConfigError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(value: object, key: str, *, positive: bool = False) -> float:
    """Seconds in a Prometheus duration (``300s``, ``5m``, ``1h30m``, ``500ms``) or a plain number
    of seconds; at least 0, or above 0 when ``positive``. A bad value raises ConfigError naming
    ``key``."""
    if isinstance(value, bool):
        seconds = math.nan
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _seconds(value.strip())
    else:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        smallest = "above 0" if positive else "0 or more"
        raise ConfigError(
            key, f"expected a duration {smallest} like 30s, 5m or 1h30m, got {value!r}"
        )
    return seconds


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return math.nan
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def parse_listen_address(value: str, key: str = "listen") -> tuple[str, int]:
    """``host:port``, ``:port`` (all interfaces) or ``[v6]:port``."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)
