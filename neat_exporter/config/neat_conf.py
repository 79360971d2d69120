"""Reading an existing OpenStack Neat ``neat.conf`` as the exporter's configuration.

Neat's file is INI with everything in ``[DEFAULT]`` and every value a string. The options the
local manager uses are translated to the YAML keys (Neat's ``neat/config.py`` lists them all);
the others (database, Keystone, host power management, ...) concern the global manager and are
ignored.
``local_data_directory`` makes Neat's data collector the source: the exporter reads its files
(``vms/<uuid>``, ``host``) instead of measuring, and leaves them alone.
"""

from __future__ import annotations

import configparser
import json
from typing import Any

from neat_exporter.errors import ConfigError

# neat.conf option -> (YAML key, converter)
_SCALARS = {
    "local_manager_interval": ("interval", float),
    "data_collector_interval": ("time_step", float),
    "data_collector_data_length": ("history_length", int),
    "host_cpu_usable_by_vms": ("host_cpu_usable_by_vms", float),
    "network_migration_bandwidth": ("network_migration_bandwidth", float),
}

_ALGORITHMS = {
    "underload": "algorithm_underload_detection",
    "overload": "algorithm_overload_detection",
    "vm_selection": "algorithm_vm_selection",
}

# Neat's log_level (0 off, 1 warning, 2 info, 3 debug) as the exporter's; the exporter has no
# "off", so 0 keeps the errors.
_LOG_LEVELS = {"0": "error", "1": "warning", "2": "info", "3": "debug"}


def algorithm_name(factory: str) -> str:
    """``neat.locals.overload.mhod.core.mhod_factory`` -> ``mhod``; other names unchanged
    (a third-party dotted path is resolved by the algorithm registry)."""
    if factory.startswith("neat.") and factory.endswith("_factory"):
        return factory.rsplit(".", 1)[-1].removesuffix("_factory")
    return factory


def parse_neat_conf(text: str, origin: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The YAML-shaped mapping and the plain credentials (``username``, ``password``)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text, source=origin)
    except configparser.MissingSectionHeaderError as error:
        raise ConfigError(
            "config", f"{origin}: not a valid neat.conf: line {error.lineno}: before any [section]"
        ) from None
    except configparser.ParsingError as error:
        # configparser quotes the lines, which may hold os_admin_password: numbers only.
        lines = ", ".join(str(number) for number, _ in error.errors)
        raise ConfigError(
            "config", f"{origin}: not a valid neat.conf: line {lines}: expected option = value"
        ) from None
    except configparser.Error as error:  # duplicate options or sections: names, no values
        raise ConfigError("config", f"{origin}: not a valid neat.conf: {error}") from None
    options = dict(parser.defaults())
    for section in parser.sections():
        options.update(parser.items(section, raw=True))
    raw: dict[str, Any] = {}
    for option, (key, convert) in _SCALARS.items():
        if option in options:
            try:
                raw[key] = convert(options[option])
            except ValueError:
                raise ConfigError(
                    option, f"must be a {convert.__name__} number, got {options[option]!r}"
                ) from None
    if options.get("log_level") in _LOG_LEVELS:
        raw["log_level"] = _LOG_LEVELS[options["log_level"]]
    algorithms: dict[str, Any] = {}
    for kind, prefix in _ALGORITHMS.items():
        factory = options.get(f"{prefix}_factory")
        if not factory:
            continue
        params_text = options.get(f"{prefix}_parameters", "{}") or "{}"
        try:
            params = json.loads(params_text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{prefix}_parameters", f"not valid JSON: {error}") from None
        if not isinstance(params, dict):
            raise ConfigError(f"{prefix}_parameters", "must be a JSON object")
        algorithms[kind] = {"name": algorithm_name(factory), "params": params}
    if algorithms:
        raw["algorithms"] = algorithms
    if options.get("local_data_directory"):
        raw["source"] = {
            "type": "directory",
            "directory": {"path": options["local_data_directory"]},
        }
    host = options.get("global_manager_host")
    if host:
        port = options.get("global_manager_port", "60080")
        raw["global_manager"] = {"url": f"http://{host}:{port}/"}
    secrets = {}
    if options.get("os_admin_user"):
        secrets["username"] = options["os_admin_user"]
    if options.get("os_admin_password"):
        secrets["password"] = options["os_admin_password"]
    return raw, secrets
