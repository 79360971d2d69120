"""Where samples come from: libvirt, Neat's data directory, or a replayed/synthetic workload."""

from neat_exporter.sources.base import Reading, Source, SourceError, VmReading

__all__ = ["Reading", "Source", "SourceError", "VmReading"]
