"""Neat's ``local_data_directory`` as a source, for running beside Neat's data collector.

Neat's collector keeps ``<path>/vms/<uuid>`` (the VM's MHz history) and ``<path>/host`` (the
hypervisor overhead history) up to date; Neat's local manager reads them whole every cycle. This
source does the same and never writes there: the collector owns the files. It ``keeps_history``,
so the daemon takes the histories as they are instead of appending to its own.

VM RAM (for the migration time), the capacity and the host name come from libvirt, as in Neat's
local manager, unless ``host_cpu_mhz`` is configured: then no libvirt is needed and every VM is
taken to have ``vm_ram_mb``. With libvirt, VMs libvirt does not know are left out (Neat's
``cleanup_vm_data``).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from neat_exporter.history import HOST_FILE, VMS_DIR, read_values
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
        self._vms: dict[str, list[float]] = {}
        self._host: list[float] = []

    def read_history(self) -> tuple[dict[str, list[float]], list[float]]:
        """The histories read by the latest ``collect()``."""
        return self._vms, self._host

    def _read_files(self) -> None:
        vms_dir = self.path / VMS_DIR
        if not vms_dir.is_dir():
            raise SourceError(f"{vms_dir}: no such folder (is Neat's data collector running?)")
        vms: dict[str, list[float]] = {}
        try:
            for entry in sorted(vms_dir.iterdir()):
                if entry.is_file() and not entry.name.startswith("."):
                    vms[entry.name] = read_values(entry).values
            host_path = self.path / HOST_FILE
            host = read_values(host_path).values if host_path.is_file() else []
        except FileNotFoundError:
            # The collector deleted a VM's file between listing and reading; take the next cycle.
            raise SourceError(f"{vms_dir}: changed while being read") from None
        except OSError as error:
            raise SourceError(f"{self.path}: {error.strerror}") from None
        self._vms, self._host = vms, host

    def collect(self) -> Reading:
        self._read_files()
        if self.libvirt is not None and self.host_cpu_mhz is None:
            live = self.libvirt.collect()
            known = {uuid: vm for uuid, vm in live.vms.items() if uuid in self._vms}
            cores, core_mhz, host = live.cpu_cores, live.core_mhz, live.host
            ram = {uuid: vm.ram_max_mb for uuid, vm in known.items()}
            info = {uuid: vm.info for uuid, vm in known.items()}
        else:
            cores = os.cpu_count() or 1
            core_mhz = self.host_cpu_mhz / cores
            host = self.host
            ram = dict.fromkeys(self._vms, self.vm_ram_mb)
            info = {}
        vms = {
            uuid: VmReading(
                uuid=uuid,
                cpu_mhz=self._vms[uuid][-1] if self._vms[uuid] else None,
                ram_max_mb=ram[uuid],
                info=info.get(uuid, {}),
            )
            for uuid in ram
        }
        vm_sum = sum(vm.cpu_mhz for vm in vms.values() if vm.cpu_mhz is not None)
        busy = vm_sum + self._host[-1] if self._host else None
        return Reading(
            time=time.time(),
            host=host,
            cpu_cores=cores,
            core_mhz=core_mhz,
            host_busy_mhz=busy,
            vms=vms,
        )

    def close(self) -> None:
        if self.libvirt is not None:
            self.libvirt.close()
