"""What the global manager must remember across restarts: sleeping hosts, recent migrations.

Neat kept this in MySQL (``host_states``, ``vm_migrations``); here it is one JSON file, written
whole and atomically after every change, so a crash leaves the old or the new version. Without
it a restart would forget which hosts it switched off (and never wake them), which VMs are in
their cooldown, and which failed migrations may have left a copy of a VM on their destination.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from neat_exporter.errors import InputError
from neat_exporter.files import write_atomically
from neat_exporter.globalmanager.executors.base import Migration

VERSION = 1


@dataclass(frozen=True)
class SleepingHost:
    host: str
    since: float
    cpu_mhz: float
    """Full capacity offered when woken (the fleet has no data for a host that is off)."""
    ram_mb: float


@dataclass(frozen=True)
class MigrationRecord:
    vm_uuid: str
    source: str
    destination: str
    """Where the VM was found afterwards (the source when it did not move)."""
    time: float
    outcome: str
    planned_destination: str | None = None
    """Where it was to go (None in files written before this was kept)."""


class GlobalManagerState:
    """The state in memory, saved to ``path`` after each change (``path`` None: memory only).

    Thread-safe. ``keep_migrations`` seconds of migrations are kept (the cooldown and the
    hourly cap need no more).
    """

    def __init__(self, path: str | Path | None, keep_migrations: float = 3600.0) -> None:
        self.path = None if path is None else Path(path)
        self.keep_migrations = keep_migrations
        self._lock = threading.Lock()
        self.sleeping: dict[str, SleepingHost] = {}
        self.migrations: list[MigrationRecord] = []
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            if document.get("version") != VERSION:
                raise ValueError(f"version {document.get('version')!r}, expected {VERSION}")
            sleeping = [SleepingHost(**entry) for entry in document["sleeping"]]
            migrations = [MigrationRecord(**entry) for entry in document["migrations"]]
            for entry in sleeping:
                if not isinstance(entry.host, str) or not all(
                    isinstance(value, int | float)
                    for value in (entry.since, entry.cpu_mhz, entry.ram_mb)
                ):
                    raise ValueError(f"sleeping host {entry.host!r:.60}: malformed")
            for record in migrations:
                names = (record.vm_uuid, record.source, record.destination, record.outcome)
                if not (
                    all(isinstance(name, str) for name in names)
                    and isinstance(record.time, int | float)
                    and isinstance(record.planned_destination, str | None)
                ):
                    raise ValueError(f"migration of {record.vm_uuid!r:.60}: malformed")
        except OSError as error:
            raise InputError(f"{path}: cannot read the state: {error.strerror}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise InputError(
                f"{path}: not a global manager state file ({error}); move it away to start "
                "afresh (sleeping hosts must then be woken by hand)"
            ) from None
        self.sleeping = {entry.host: entry for entry in sleeping}
        self.migrations = migrations

    def save(self) -> None:
        """Write the file (raises WriteError when it cannot be written)."""
        if self.path is None:
            return
        with self._lock:
            document = {
                "version": VERSION,
                "sleeping": [asdict(entry) for entry in self.sleeping.values()],
                "migrations": [asdict(entry) for entry in self.migrations],
            }
        data = json.dumps(document, indent=1).encode()
        write_atomically(self.path, lambda file: file.write(data))

    def host_asleep(self, entry: SleepingHost) -> None:
        with self._lock:
            self.sleeping[entry.host] = entry

    def host_awake(self, host: str) -> None:
        with self._lock:
            self.sleeping.pop(host, None)

    def record_migrations(self, records: Iterable[MigrationRecord], now: float) -> None:
        with self._lock:
            self.migrations.extend(records)
            self.migrations = [m for m in self.migrations if now - m.time <= self.keep_migrations]

    def last_moved(self, vm_uuid: str) -> float | None:
        """When ``vm_uuid`` last moved (successfully), if it is remembered."""
        with self._lock:
            times = [
                m.time for m in self.migrations if m.vm_uuid == vm_uuid and m.outcome in _MOVED
            ]
        return max(times, default=None)

    def unsettled_migrations(self) -> list[Migration]:
        """Each VM's latest migration when it failed, timed out or could not be verified: its
        planned destination may still hold a copy of the VM (see the executors)."""
        with self._lock:
            latest = {m.vm_uuid: m for m in sorted(self.migrations, key=lambda m: m.time)}
        return [
            Migration(m.vm_uuid, m.source, m.planned_destination)
            for m in latest.values()
            if m.outcome in _UNSETTLED and m.planned_destination
        ]

    def moved_since(self, since: float) -> int:
        """Migrations started since ``since`` (for the hourly cap; failed ones count too)."""
        with self._lock:
            return sum(1 for m in self.migrations if m.time >= since and m.outcome != "dry_run")


_MOVED = ("migrated", "unverified")  # an unverified VM may well have moved: cool it down too
_UNSETTLED = ("failed", "timeout", "unverified")
