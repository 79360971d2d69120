"""What an exporter's /metrics serves, as one registry to read values from or encode."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from neat_exporter.daemon import Daemon


def served(daemon: Daemon) -> CollectorRegistry:
    """The daemon's live metrics and its latest snapshot's families, which /metrics serves side
    by side (the snapshot's from the encoding the cycle made)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(daemon.exposition)
    registry.register(daemon.registry)  # a registry collects like any collector
    return registry
