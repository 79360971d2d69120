"""Where samples come from: libvirt, Neat's data directory, or a replayed/synthetic workload."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from neat_exporter.errors import ConfigError, InputError
from neat_exporter.sources.base import Reading, Source, SourceError, VmReading

if TYPE_CHECKING:
    from neat_exporter.config import Config

__all__ = ["Reading", "Source", "SourceError", "VmReading", "open_source"]


def _libvirt(config: Config) -> Source:
    # Imported here: libvirt-python is an optional extra that replay and demo do without.
    from neat_exporter.sources.libvirt import LibvirtSource

    settings = config.source.libvirt
    return LibvirtSource(settings.uri, timeout=settings.timeout, host=config.host)


def open_source(config: Config) -> Source:
    """The source ``config.source.type`` names, ready to collect."""
    kind = config.source.type
    if kind == "libvirt":
        return _libvirt(config)
    if kind == "directory":
        from neat_exporter.sources.directory import DirectorySource

        settings = config.source.directory
        return DirectorySource(
            settings.path,
            host_cpu_mhz=settings.host_cpu_mhz,
            vm_ram_mb=settings.vm_ram_mb,
            libvirt=_libvirt(config) if settings.host_cpu_mhz is None else None,
            host=config.host,
        )
    if kind == "replay":
        from neat_exporter.sources.replay import (
            SYNTHETIC_OVERHEAD,
            ReplaySource,
            synthetic_info,
            synthetic_workload,
        )
        from neat_exporter.traces import read_planetlab

        settings = config.source.replay
        if settings.traces is None:
            traces = synthetic_workload(settings.vms, settings.cpus, seed=settings.seed)
            info, overhead = synthetic_info(list(traces)), SYNTHETIC_OVERHEAD
        else:
            try:
                traces = read_planetlab(settings.traces, count=settings.vms, seed=settings.seed)
            except InputError as error:
                raise ConfigError("source.replay.traces", str(error)) from None
            info, overhead = None, 0.0
        return ReplaySource(
            traces,
            host_cpu_mhz=settings.host_cpu_mhz,
            cpus=settings.cpus,
            vm_ram_mb=settings.vm_ram_mb,
            host=config.host or socket.gethostname(),
            overhead=overhead,
            info=info,
        )
    raise ConfigError("source.type", f"unknown source {kind!r}")
