"""neat_exporter: OpenStack Neat's local manager as a Prometheus exporter."""

# The one place the version is written: the package metadata (pyproject.toml), the image's
# labels and the Helm chart's appVersion (checked by a test) all follow it.
__version__ = "0.1.0"
