"""The audit log: one JSON object per line for every request, plan, migration and power action.

Lines are appended and flushed one by one, so ``tail -f`` and log shippers see each event as it
happens. Credentials never reach it: requests are logged by host, reason and VMs only. A failed
write is counted (``neat_gm_audit_errors_total``) and logged, never fatal.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neat_exporter.errors import ConfigError

log = logging.getLogger(__name__)


class AuditLog:
    """Appends events to ``path`` (None: events are only logged at debug level)."""

    def __init__(
        self,
        path: str | Path | None,
        clock: Callable[[], float],
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.path = None if path is None else Path(path)
        self._clock = clock
        self._on_error = on_error
        self._lock = threading.Lock()
        self._file = None
        if self.path is not None:
            try:
                self._file = self.path.open("a", encoding="utf-8")
            except OSError as error:
                reason = f"cannot append to {path}: {error.strerror}"
                raise ConfigError("audit_log", reason) from None

    def event(self, kind: str, **fields: Any) -> None:
        record = {"time": round(self._clock(), 3), "event": kind, **fields}
        line = json.dumps(record, sort_keys=False, default=str)
        log.debug("audit: %s", line)
        if self._file is None:
            return
        with self._lock:
            try:
                self._file.write(line + "\n")
                self._file.flush()
            except OSError as error:
                self._on_error()
                log.error("cannot write the audit log %s: %s", self.path, error.strerror)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
