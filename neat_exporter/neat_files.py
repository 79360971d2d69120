"""Neat's ``local_data_directory`` format, read and written as hostile input.

Neat's data collector writes ``vms/<uuid>`` (a VM's MHz history) and ``host`` (the hypervisor
overhead history), one integer per line, oldest first (its ``neat/locals/collector.py``). The
exporter's own history is kept in the same format, and the directory source reads Neat's. Only
files named by a VM UUID are read (a name "a,b" would name two VMs to the global manager), never
through a symbolic link, and only lines that are plain decimal numbers from 0 to the host's
capacity (no VM can use more) are kept; the others are dropped and counted. Values are written
within those bounds, so what is written reads back.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from dataclasses import dataclass, field

import numpy as np

from neat_exporter.files import TEMPORARY_PREFIX, read_regular_file, replace_file_at, subdirectory
from neat_exporter.identifiers import is_vm_uuid

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
LARGEST_WRITTEN = float(2**53)  # integers a float holds exactly: no capacity comes near


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


def as_integers(values: np.ndarray, ceiling_mhz: float) -> np.ndarray:
    """``values`` as Neat writes them (integers, truncated as int() does), kept within what
    :func:`parse_values` reads back: from 0 to ``ceiling_mhz``, finite."""
    finite = np.nan_to_num(values, nan=0.0, posinf=ceiling_mhz, neginf=0.0)
    return np.clip(finite, 0.0, ceiling_mhz).astype(np.int64)


def write_integers(folder: int, name: str, integers: list[int]) -> None:
    data = ("%d\n" * len(integers) % tuple(integers)).encode()  # one pass: faster than a join
    replace_file_at(folder, name, lambda file: file.write(data))
