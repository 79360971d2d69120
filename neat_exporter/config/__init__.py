"""Configuration: each daemon's keys declared once (:mod:`.declare` gives the vocabulary), the
exporter's and the bridge's in :mod:`.exporter`, read and checked by :mod:`.loading` from files
read as hostile input (:mod:`.files`) or an existing Neat ``neat.conf`` (:mod:`.neat_conf`).
The global manager declares its own keys with the same vocabulary
(:mod:`neat_exporter.globalmanager.config`)."""

from neat_exporter.config.declare import LOG_LEVELS
from neat_exporter.config.exporter import (
    DEFAULT_ALGORITHMS,
    ENV_BRIDGE_PASSWORD,
    ENV_BRIDGE_TOKEN,
    ENV_GLOBAL_MANAGER_PASSWORD,
    ENV_GLOBAL_MANAGER_USERNAME,
    BridgeConfig,
    Config,
    DirectorySourceConfig,
    GlobalManagerConfig,
    LibvirtSourceConfig,
    NeatCredentials,
    ReplaySourceConfig,
    SourceConfig,
    WatcherAudit,
    WatcherConfig,
    config_from_mapping,
    effective_config,
    load_config,
    looks_like_neat_conf,
)
from neat_exporter.config.loading import REDACTED, UNSET

__all__ = [
    "DEFAULT_ALGORITHMS",
    "ENV_BRIDGE_PASSWORD",
    "ENV_BRIDGE_TOKEN",
    "ENV_GLOBAL_MANAGER_PASSWORD",
    "ENV_GLOBAL_MANAGER_USERNAME",
    "LOG_LEVELS",
    "REDACTED",
    "UNSET",
    "BridgeConfig",
    "Config",
    "DirectorySourceConfig",
    "GlobalManagerConfig",
    "LibvirtSourceConfig",
    "NeatCredentials",
    "ReplaySourceConfig",
    "SourceConfig",
    "WatcherAudit",
    "WatcherConfig",
    "config_from_mapping",
    "effective_config",
    "load_config",
    "looks_like_neat_conf",
]
