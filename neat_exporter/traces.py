"""Reading recorded workloads in PlanetLab format: one file per VM, one CPU utilization in percent
per line (one line every 5 minutes), as a folder or a (gzipped) tar of such files.

File names are the VM names. Results are ordered by sorted file name, which is the order
CloudSim's examples assign traces to VMs when their folder listing is sorted.
"""

from __future__ import annotations

import random
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from neat_exporter.errors import InputError

TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def is_trace_archive(path: Path) -> bool:
    return path.name.endswith(TAR_SUFFIXES)


def parse_trace(text: str, where: str) -> np.ndarray:
    """Percent values of one trace file; ``where`` names the file in errors."""
    try:
        values = np.array(text.split(), dtype=np.float64)
    except ValueError:
        for number, line in enumerate(text.splitlines(), start=1):
            try:
                float(line)
            except ValueError:
                if line.strip():
                    raise InputError(f"{where}:{number}: not a number: {line[:40]!r}") from None
        raise  # pragma: no cover - split() and splitlines() agree on what is a number
    if values.size == 0:
        raise InputError(f"{where}: the trace is empty")
    if not np.all(np.isfinite(values)) or values.min() < 0:
        raise InputError(f"{where}: utilization must be finite and not negative")
    return values


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise InputError(f"{where}: not a text trace file") from None


def _iter_folder(folder: Path) -> Iterator[tuple[str, str]]:
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            yield path.name, _decode(path.read_bytes(), str(path))


def _iter_archive(archive: Path) -> Iterator[tuple[str, str]]:
    try:
        with tarfile.open(archive) as tar:
            members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
            for member in members:
                name = member.name.rsplit("/", 1)[-1]
                if name.startswith("."):
                    continue
                yield name, _decode(tar.extractfile(member).read(), f"{archive}/{member.name}")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise InputError(f"{archive}: not a readable tar archive: {error}") from None


def list_days(path: Path) -> dict[str, Path]:
    """Days found under ``path``: ``<day>.tar.gz`` files or ``<day>/`` folders, by day name."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a folder of trace days")
    days: dict[str, Path] = {}
    for entry in sorted(path.iterdir()):
        if entry.is_dir():
            days[entry.name] = entry
        elif is_trace_archive(entry):
            days[entry.name.split(".", 1)[0]] = entry
    return days


def read_planetlab(
    path: str | Path,
    names: Iterable[str] | None = None,
    count: int | None = None,
    seed: int | None = None,
) -> dict[str, np.ndarray]:
    """Traces under ``path`` (a folder or a tar archive) as ``{vm name: percent array}``.

    ``names`` picks traces by file name; otherwise ``count`` takes that many, the first ones in
    sorted order or, with ``seed``, a seeded random sample (kept in sorted order).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    files = _iter_archive(path) if path.is_file() else _iter_folder(path)
    texts = dict(files)
    if not texts:
        raise InputError(f"{path}: holds no trace files")
    if names is not None:
        wanted = list(names)
        missing = [name for name in wanted if name not in texts]
        if missing:
            raise InputError(f"{path}: no trace named {missing[0]!r}")
        chosen = wanted
    else:
        chosen = sorted(texts)
        if count is not None:
            if count < 1:
                raise InputError(f"count must be at least 1, got {count}")
            if seed is not None:
                chosen = sorted(random.Random(seed).sample(chosen, min(count, len(chosen))))
            else:
                chosen = chosen[:count]
    return {name: parse_trace(texts[name], f"{path}/{name}") for name in chosen}
