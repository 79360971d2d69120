"""Neat's ``local_data_directory`` as a source, for running beside Neat's data collector.

Neat's collector keeps ``<path>/vms/<uuid>`` (the VM's MHz history) and ``<path>/host`` (the
hypervisor overhead history) up to date; Neat's local manager reads them whole every cycle. This
source does the same and never writes there: the collector owns the files. It ``keeps_history``,
so the daemon takes the histories as they are instead of appending to its own.

VM RAM (for the migration time), the capacity and the host name come from libvirt, as in Neat's
local manager, unless ``host_cpu_mhz`` is configured: then no libvirt is needed and every VM is
taken to have ``vm_ram_mb``. With libvirt, VMs libvirt does not know are left out (Neat's
``cleanup_vm_data``).

Files whose name is not a VM UUID are left out and counted (a name "a,b" would name two VMs to
the global manager; one that is not UTF-8 could not be shown on /metrics), as are values that are
not plain numbers within the host's capacity. Symbolic links are not followed.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from neat_exporter.neat_files import VMS_DIR, NeatFiles, read_neat_files
from neat_exporter.sources.base import Reading, Source, SourceError, VmReading


class DirectorySource:
    name = "directory"
    keeps_history = True

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        host_cpu_mhz: float | None = None,
        vm_ram_mb: float = 1024,
        libvirt: Source | None = None,
        host: str | None = None,
    ):
        if host_cpu_mhz is None and libvirt is None:
            raise ValueError("either host_cpu_mhz or a libvirt source is needed")
        self.path = Path(path)
        self.host_cpu_mhz = host_cpu_mhz
        self.vm_ram_mb = vm_ram_mb
        self.libvirt = libvirt
        self.host = host or socket.gethostname()
        self._files = NeatFiles()

    def read_history(self) -> NeatFiles:
        """The histories read by the latest ``collect()``."""
        return self._files

    def _read_files(self, capacity_mhz: float) -> NeatFiles:
        try:
            return read_neat_files(self.path, capacity_mhz)
        except FileNotFoundError:
            if not os.path.isdir(self.path / VMS_DIR):
                raise SourceError(
                    f"{self.path / VMS_DIR}: no such folder (is Neat's data collector running?)"
                ) from None
            # The collector deleted a VM's file between listing and reading; take the next cycle.
            raise SourceError(f"{self.path / VMS_DIR}: changed while being read") from None
        except OSError as error:
            raise SourceError(f"{self.path}: {error.strerror or error}") from None

    def collect(self) -> Reading:
        if self.libvirt is not None and self.host_cpu_mhz is None:
            live = self.libvirt.collect()
            cores, core_mhz, host = live.cpu_cores, live.core_mhz, live.host
        else:
            live = None
            cores = os.cpu_count() or 1
            core_mhz = self.host_cpu_mhz / cores
            host = self.host
        # Values beyond the capacity are no measurement: dropped (and counted) as they are read.
        files = self._files = self._read_files(cores * core_mhz)
        if live is not None:
            known = {uuid: vm for uuid, vm in live.vms.items() if uuid in files.vms}
            ram = {uuid: vm.ram_max_mb for uuid, vm in known.items()}
            info = {uuid: vm.info for uuid, vm in known.items()}
        else:
            ram = dict.fromkeys(files.vms, self.vm_ram_mb)
            info = {}
        vms = {
            uuid: VmReading(
                uuid=uuid,
                cpu_mhz=files.vms[uuid][-1] if files.vms[uuid] else None,
                ram_max_mb=ram[uuid],
                info=info.get(uuid, {}),
            )
            for uuid in ram
        }
        vm_sum = sum(vm.cpu_mhz for vm in vms.values() if vm.cpu_mhz is not None)
        busy = vm_sum + files.host[-1] if files.host else None
        return Reading(
            time=time.time(),
            host=host,
            cpu_cores=cores,
            core_mhz=core_mhz,
            host_busy_mhz=busy,
            vms=vms,
            rejected_vms=files.rejected_names,
        )

    def close(self) -> None:
        if self.libvirt is not None:
            self.libvirt.close()
