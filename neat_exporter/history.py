"""Per-VM CPU histories and the hypervisor overhead, and their on-disk form.

The on-disk form is Neat's ``local_data_directory`` (as its ``neat/locals/collector.py`` writes
it): ``vms/<uuid>`` and ``host``, one integer (MHz averaged over an interval) per line, oldest
first, at most ``history_length`` lines. Neat's tools can read what the exporter writes and the
exporter can read what Neat's data collector writes.

What a save promises: every file is replaced atomically (temporary file + ``os.replace``), so a
process killed at any moment (SIGKILL, the OOM killer) leaves each file whole, either as the
previous save or the current one wrote it. Files are written one by one, so a save cut short
leaves some VMs' files of the previous save; each is still a valid history, at most one sample
behind. Nothing is fsynced: a power loss may cost more (older files, or empty ones on some file
systems), which the exporter reads as shorter histories. An fsync per file would make a save at
a thousand VMs take seconds for a cache that refills in ``history_length`` intervals.

What a read trusts: nothing. Only files named by a VM UUID are read (a name "a,b" would name two
VMs to the global manager), never through a symbolic link, and only lines that are plain decimal
numbers from 0 to the host's capacity (no VM can use more) are kept; the others are dropped and
counted. A save writes values within those bounds, so what it writes reads back, and refuses a
folder that others can write (neat_exporter.files).
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Iterable, Mapping

import numpy as np

from neat_exporter.files import TEMPORARY_PREFIX, private_directory, subdirectory
from neat_exporter.neat_files import (
    HOST_FILE,
    LARGEST_WRITTEN,
    VMS_DIR,
    NeatFiles,
    as_integers,
    read_neat_files,
    write_integers,
)
from neat_exporter.sources.base import Reading

log = logging.getLogger(__name__)


class History:
    """The newest ``length`` MHz samples of every VM on the host and of the hypervisor.

    The VMs' samples live in one array, a row per VM (in the order the VMs got their first
    sample), newest sample in the last column, so a cycle at a thousand VMs adds its samples and
    hands them to the algorithms with a few array operations rather than per-VM Python work.
    """

    def __init__(self, length: int):
        if length < 1:
            raise ValueError(f"history length must be at least 1, got {length}")
        self.length = length
        self._rows: dict[str, int] = {}
        self._samples = np.zeros((0, length))
        """Row ``_rows[uuid]`` holds the VM's ``_counts[row]`` samples, right-aligned."""
        self._counts = np.zeros(0, dtype=np.intp)
        self.host: deque[float] = deque(maxlen=length)
        self.dropped_lines = 0
        """Corrupt lines skipped when the history was loaded."""
        self.capacity_mhz = LARGEST_WRITTEN
        """The host's capacity in the latest reading: what a save writes at most."""

    def record(self, reading: Reading) -> None:
        """Add one collection: a sample per VM that has one, the hypervisor overhead, and forget
        VMs that are no longer on the host. A VM seen for the first time has no sample yet."""
        self.capacity_mhz = min(reading.cpu_mhz_total, LARGEST_WRITTEN)
        self.add(
            {uuid: vm.cpu_mhz for uuid, vm in reading.vms.items()},
            reading.hypervisor_overhead_mhz,
        )

    def add(self, vms_mhz: Mapping[str, float | None], overhead_mhz: float | None) -> None:
        """Add one step: ``vms_mhz`` names every VM on the host with its sample (None: on the
        host, no sample this step); VMs not named are forgotten, so a VM that comes back starts
        afresh. A None overhead adds nothing to the hypervisor's history."""
        if any(uuid not in vms_mhz for uuid in self._rows):
            self._keep([uuid for uuid in self._rows if uuid in vms_mhz])
        sampled = [(uuid, mhz) for uuid, mhz in vms_mhz.items() if mhz is not None]
        self._add_rows([uuid for uuid, _ in sampled if uuid not in self._rows])
        if sampled:
            rows = np.fromiter((self._rows[uuid] for uuid, _ in sampled), np.intp, len(sampled))
            values = np.fromiter((mhz for _, mhz in sampled), np.float64, len(sampled))
            samples = self._samples
            if len(rows) == len(samples):  # every VM has a sample: shift them all in place
                samples[:, :-1] = samples[:, 1:]
            else:
                samples[rows, :-1] = samples[rows, 1:]
            samples[rows, -1] = values
            self._counts[rows] = np.minimum(self._counts[rows] + 1, self.length)
        if overhead_mhz is not None:
            self.host.append(overhead_mhz)

    def _add_rows(self, uuids: list[str]) -> None:
        if not uuids:
            return
        first = len(self._rows)
        self._rows.update((uuid, first + index) for index, uuid in enumerate(uuids))
        self._samples = np.concatenate([self._samples, np.zeros((len(uuids), self.length))])
        self._counts = np.concatenate([self._counts, np.zeros(len(uuids), dtype=np.intp)])

    def _keep(self, uuids: list[str]) -> None:
        """Keep only the rows of ``uuids``, in that order."""
        rows = [self._rows[uuid] for uuid in uuids]
        self._samples = self._samples[rows]
        self._counts = self._counts[rows]
        self._rows = {uuid: row for row, uuid in enumerate(uuids)}

    def replace(self, vms: Mapping[str, Iterable[float]], host: Iterable[float]) -> None:
        """Take histories kept by someone else (Neat's data collector) as they are."""
        self._rows = {}
        self._samples = np.zeros((0, self.length))
        self._counts = np.zeros(0, dtype=np.intp)
        self._add_rows(list(vms))
        for uuid, values in vms.items():
            newest = list(values)[-self.length :]
            row = self._rows[uuid]
            self._samples[row, self.length - len(newest) :] = newest
            self._counts[row] = len(newest)
        self.host = deque(host, maxlen=self.length)

    def _series(self, samples: np.ndarray) -> dict[str, np.ndarray]:
        """Every VM's samples as views of rows of ``samples``, VMs without samples left out."""
        length = self.length
        counts = self._counts.tolist()
        return {
            uuid: samples[row, length - counts[row] :]
            for uuid, row in self._rows.items()
            if counts[row]
        }

    def vm_histories(self) -> dict[str, list[float]]:
        return {uuid: values.tolist() for uuid, values in self._series(self._samples).items()}

    def vm_arrays(self) -> dict[str, np.ndarray]:
        """:meth:`vm_histories` as read-only arrays: views of one copy taken now, so later
        records do not change them."""
        samples = self._samples.copy()
        samples.flags.writeable = False
        return self._series(samples)

    def host_history(self) -> list[float]:
        return list(self.host)

    def copy(self) -> History:
        """An independent copy, to save while this one goes on recording."""
        twin = History(self.length)
        twin._rows = dict(self._rows)
        twin._samples = self._samples.copy()
        twin._counts = self._counts.copy()
        twin.host = deque(self.host, maxlen=self.length)
        twin.capacity_mhz = self.capacity_mhz
        return twin

    # --- disk ---------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """Write every history in Neat's format and delete the files of VMs that are gone.

        Values are written as :meth:`load` reads them back: integers from 0 to the capacity (a
        measurement beyond it, clock jitter, is written as the capacity). InputError when others
        can write ``directory``; WriteError when a file cannot be written; OSError when ``vms``
        in it is a symbolic link."""
        ceiling = self.capacity_mhz
        integers = as_integers(self._samples, ceiling).tolist()
        length, counts = self.length, self._counts.tolist()
        with private_directory(directory) as root, subdirectory(root, VMS_DIR, create=True) as vms:
            for uuid, row in self._rows.items():
                write_integers(vms, uuid, integers[row][length - counts[row] :])
            for entry in os.scandir(vms):
                name = entry.name
                gone = not name.startswith(TEMPORARY_PREFIX) and name not in self._rows
                if gone and not entry.is_dir(follow_symlinks=False):
                    os.unlink(name, dir_fd=vms)
            host = as_integers(np.fromiter(self.host, float, len(self.host)), ceiling).tolist()
            write_integers(root, HOST_FILE, host)

    @classmethod
    def load(
        cls, directory: str | os.PathLike, length: int, ceiling_mhz: float = math.inf
    ) -> History:
        """A history from Neat's format, values beyond ``ceiling_mhz`` (the host's capacity)
        dropped and counted; a missing directory gives an empty history."""
        history = cls(length)
        try:
            files = read_neat_files(directory, ceiling_mhz, own=True)
        except FileNotFoundError:
            files = NeatFiles()
        except OSError as error:  # the folder itself cannot be listed: start afresh
            log.warning("%s: history not loaded: %s", directory, error.strerror or error)
            files = NeatFiles()
        history.replace(files.vms, files.host)
        history.dropped_lines = files.dropped_lines
        if files.dropped_lines:
            log.warning("%s: dropped %d corrupt history line(s)", directory, files.dropped_lines)
        if files.rejected_names:  # the next save deletes them
            log.warning(
                "%s: left out %d file(s) not named by a VM UUID", directory, files.rejected_names
            )
        return history
