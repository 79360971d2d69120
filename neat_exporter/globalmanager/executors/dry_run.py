"""The default executor: plans are computed, logged, counted and shown; nothing moves."""

from __future__ import annotations

import logging

from neat_exporter.globalmanager.executors.base import (
    Migration,
    MigrationOutcome,
    MigrationResult,
)

log = logging.getLogger(__name__)


class DryRunExecutor:
    name = "dry_run"

    def vms_on(self, host: str) -> dict[str, int] | None:
        return None  # the Prometheus fleet view is the only one

    def migrate(self, migration: Migration, timeout: float) -> MigrationResult:
        log.info(
            "dry run: would migrate %s from %s to %s",
            migration.vm_uuid,
            migration.source,
            migration.destination,
        )
        return MigrationResult(migration, MigrationOutcome.DRY_RUN, 0.0)

    def clean_up_after(self, migration: Migration) -> None:
        pass  # nothing moved

    def host_switching_off(self, host: str, reason: str) -> None:
        log.info("dry run: would switch %s off (%s)", host, reason)

    def host_woken(self, host: str, timeout: float) -> None:
        log.info("dry run: would wake %s", host)

    def close(self) -> None:
        pass
