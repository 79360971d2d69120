"""neat_exporter: OpenStack Neat's local manager as a Prometheus exporter."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("neat-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
