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
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neat_exporter.files import write_atomically
from neat_exporter.sources.base import Reading

log = logging.getLogger(__name__)

VMS_DIR = "vms"
HOST_FILE = "host"


@dataclass(frozen=True, slots=True)
class LoadedFile:
    values: list[float]
    dropped: int
    """Lines that were not numbers and were left out."""


def read_values(path: Path) -> LoadedFile:
    """One history file; unreadable lines are dropped (and counted), not fatal."""
    values: list[float] = []
    dropped = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            value = float(line)
        except ValueError:
            dropped += 1
            continue
        if value != value or value < 0 or value == float("inf"):
            dropped += 1
            continue
        values.append(value)
    return LoadedFile(values, dropped)


def _read_or_skip(path: Path) -> LoadedFile | None:
    """An unreadable file is skipped (the next persist rewrites it), not fatal."""
    try:
        return read_values(path)
    except OSError as error:
        log.warning("%s: not loaded: %s", path, error.strerror or error)
        return None


def write_values(path: Path, values: Iterable[float]) -> None:
    """Neat's format: integers (truncated), one per line, trailing newline; replaced atomically."""
    _write_integers(path, [int(value) for value in values])


def _write_integers(path: Path, integers: list[int]) -> None:
    data = ("%d\n" * len(integers) % tuple(integers)).encode()  # 3 times faster than a join
    write_atomically(path, lambda file: file.write(data))


def _remove_temporary(path: Path) -> None:
    """A temporary file of :func:`write_values` left behind by a crash (or a SIGKILL)."""
    if path.is_file():
        with contextlib.suppress(OSError):  # a read-only directory keeps it; no harm
            path.unlink()


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

    def record(self, reading: Reading) -> None:
        """Add one collection: a sample per VM that has one, the hypervisor overhead, and forget
        VMs that are no longer on the host. A VM seen for the first time has no sample yet."""
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
        return twin

    # --- disk ---------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """Write every history in Neat's format and delete the files of VMs that are gone."""
        root = Path(directory)
        vms_dir = root / VMS_DIR
        vms_dir.mkdir(parents=True, exist_ok=True)
        integers = self._samples.astype(np.int64).tolist()  # truncated, as int() does
        length, counts = self.length, self._counts.tolist()
        for uuid, row in self._rows.items():
            _write_integers(vms_dir / uuid, integers[row][length - counts[row] :])
        for path in vms_dir.iterdir():
            if path.is_file() and not path.name.startswith(".") and path.name not in self._rows:
                path.unlink(missing_ok=True)
        write_values(root / HOST_FILE, self.host)

    @classmethod
    def load(cls, directory: str | os.PathLike, length: int) -> History:
        """A history from Neat's format; a missing directory gives an empty history."""
        history = cls(length)
        root = Path(directory)
        vms_dir = root / VMS_DIR
        vms: dict[str, list[float]] = {}
        try:
            if vms_dir.is_dir():
                for path in sorted(vms_dir.iterdir()):
                    if path.name.startswith("."):
                        _remove_temporary(path)
                    elif path.is_file() and (loaded := _read_or_skip(path)) is not None:
                        history.dropped_lines += loaded.dropped
                        vms[path.name] = loaded.values
            host_path = root / HOST_FILE
            for path in root.glob(f".{HOST_FILE}.*"):
                _remove_temporary(path)
            if host_path.is_file() and (loaded := _read_or_skip(host_path)) is not None:
                history.dropped_lines += loaded.dropped
                history.host.extend(loaded.values)
        except OSError as error:  # the folder itself cannot be listed: start afresh
            log.warning("%s: history not loaded: %s", directory, error.strerror or error)
        history.replace(vms, history.host)
        if history.dropped_lines:
            log.warning("%s: dropped %d corrupt history line(s)", directory, history.dropped_lines)
        return history
