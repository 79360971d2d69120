"""Per-VM CPU histories and the hypervisor overhead, and their on-disk form.

The on-disk form is Neat's ``local_data_directory`` (neat-reference.md §2): ``vms/<uuid>`` and
``host``, one integer (MHz averaged over an interval) per line, oldest first, at most
``history_length`` lines. Neat's tools can read what the exporter writes and the exporter can
read what Neat's data collector writes.

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

import contextlib
import logging
import math
import os
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from neat_exporter.files import (
    TEMPORARY_PREFIX,
    private_directory,
    read_regular_file,
    replace_file_at,
    subdirectory,
)
from neat_exporter.identifiers import is_vm_uuid
from neat_exporter.sources.base import Reading

log = logging.getLogger(__name__)

VMS_DIR = "vms"
HOST_FILE = "host"
MAX_FILE_BYTES = 1 << 20
"""Of a longer history file only the newest lines within this size are read (Neat's files hold
``data_collector_data_length`` short integers: a few KiB)."""

# What Neat writes: plain decimal numbers in ASCII. float() would also take "1_000", "inf",
# "nan" and the digits of other scripts.
_NUMBER = re.compile(rb"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_DIGITS = b"0123456789"
_LARGEST_WRITTEN = float(2**53)  # integers a float holds exactly: no capacity comes near


@dataclass(frozen=True, slots=True)
class LoadedFile:
    values: list[float]
    dropped: int
    """Lines that were not numbers a host can have, left out."""


def parse_values(data: bytes, ceiling_mhz: float = math.inf) -> LoadedFile:
    """A history file's lines: plain decimal numbers from 0 to ``ceiling_mhz`` (the host's
    capacity: no VM and no hypervisor can use more). Other lines are dropped and counted, not
    fatal; blank lines are skipped."""
    if not data.translate(None, _DIGITS + b"\n"):  # the usual case: integers, one per line
        values = list(map(float, data.split()))
        if not values or max(values) <= ceiling_mhz:
            return LoadedFile(values, 0)
    values, dropped = [], 0
    for line in data.split(b"\n"):
        line = line.strip()
        if not line:
            continue
        if _NUMBER.fullmatch(line) and (value := float(line)) <= ceiling_mhz:
            values.append(value)
        else:
            dropped += 1
    return LoadedFile(values, dropped)


@dataclass
class NeatFiles:
    """What a folder in Neat's format holds."""

    vms: dict[str, list[float]] = field(default_factory=dict)
    host: list[float] = field(default_factory=list)
    dropped_lines: int = 0
    """Lines dropped: not numbers, or beyond the host's capacity."""
    rejected_names: int = 0
    """Files under ``vms`` whose name is not a VM UUID, left out."""


def read_neat_files(root: str | os.PathLike, ceiling_mhz: float, *, own: bool = False) -> NeatFiles:
    """``vms/<uuid>`` and ``host`` under ``root``, never through a symbolic link.

    ``own`` is for the exporter's own ``history_dir``: leftover temporary files of a killed
    write are removed and a file that cannot be read is skipped with a warning (the next save
    rewrites it). Otherwise (Neat's data collector owns the folder) nothing is written and an
    error reading a file raises OSError. A missing ``vms`` folder raises FileNotFoundError."""
    files = NeatFiles()
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with subdirectory(folder, VMS_DIR, create=False) as vms:
            for entry in sorted(os.scandir(vms), key=lambda entry: entry.name):
                if entry.name.startswith(TEMPORARY_PREFIX):
                    if own:
                        _remove_temporary(vms, entry)
                elif not is_vm_uuid(entry.name):  # "x,y" would name two VMs; not UTF-8, none
                    files.rejected_names += 1
                elif not entry.is_dir(follow_symlinks=False):
                    loaded = _read(vms, entry.name, ceiling_mhz, own)
                    if loaded is not None:
                        files.dropped_lines += loaded.dropped
                        files.vms[entry.name] = loaded.values
        for entry in os.scandir(folder):
            if own and entry.name.startswith(f"{TEMPORARY_PREFIX}{HOST_FILE}."):
                _remove_temporary(folder, entry)
        try:
            loaded = _read(folder, HOST_FILE, ceiling_mhz, own)
        except FileNotFoundError:
            loaded = None
        if loaded is not None:
            files.dropped_lines += loaded.dropped
            files.host = loaded.values
    finally:
        os.close(folder)
    return files


def _read(folder: int, name: str, ceiling_mhz: float, own: bool) -> LoadedFile | None:
    try:
        return parse_values(read_regular_file(folder, name, MAX_FILE_BYTES), ceiling_mhz)
    except FileNotFoundError:
        raise
    except OSError as error:
        if not own:
            raise
        log.warning("%s: not loaded: %s", name, error.strerror or error)
        return None


def _remove_temporary(folder: int, entry: os.DirEntry) -> None:
    """A temporary file of a write left behind by a crash (or a SIGKILL)."""
    if entry.is_file(follow_symlinks=False) or entry.is_symlink():
        with contextlib.suppress(OSError):  # a read-only directory keeps it; no harm
            os.unlink(entry.name, dir_fd=folder)


def _integers(values: np.ndarray, ceiling_mhz: float) -> np.ndarray:
    """``values`` as Neat writes them (integers, truncated as int() does), kept within what
    :func:`parse_values` reads back: from 0 to ``ceiling_mhz``, finite."""
    finite = np.nan_to_num(values, nan=0.0, posinf=ceiling_mhz, neginf=0.0)
    return np.clip(finite, 0.0, ceiling_mhz).astype(np.int64)


def _write_integers(folder: int, name: str, integers: list[int]) -> None:
    data = ("%d\n" * len(integers) % tuple(integers)).encode()  # 3 times faster than a join
    replace_file_at(folder, name, lambda file: file.write(data))


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
        self.capacity_mhz = _LARGEST_WRITTEN
        """The host's capacity in the latest reading: what a save writes at most."""

    def record(self, reading: Reading) -> None:
        """Add one collection: a sample per VM that has one, the hypervisor overhead, and forget
        VMs that are no longer on the host. A VM seen for the first time has no sample yet."""
        self.capacity_mhz = min(reading.cpu_mhz_total, _LARGEST_WRITTEN)
        if any(uuid not in reading.vms for uuid in self._rows):
            self._keep([uuid for uuid in self._rows if uuid in reading.vms])
        sampled = [(uuid, vm.cpu_mhz) for uuid, vm in reading.vms.items() if vm.cpu_mhz is not None]
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
        overhead = reading.hypervisor_overhead_mhz
        if overhead is not None:
            self.host.append(overhead)

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
        can write ``directory``; OSError when ``vms`` in it is a symbolic link."""
        ceiling = self.capacity_mhz
        integers = _integers(self._samples, ceiling).tolist()
        length, counts = self.length, self._counts.tolist()
        with private_directory(directory) as root, subdirectory(root, VMS_DIR, create=True) as vms:
            for uuid, row in self._rows.items():
                _write_integers(vms, uuid, integers[row][length - counts[row] :])
            for entry in os.scandir(vms):
                name = entry.name
                gone = not name.startswith(TEMPORARY_PREFIX) and name not in self._rows
                if gone and not entry.is_dir(follow_symlinks=False):
                    os.unlink(name, dir_fd=vms)
            host = _integers(np.fromiter(self.host, float, len(self.host)), ceiling).tolist()
            _write_integers(root, HOST_FILE, host)

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
