"""Live migration through Nova's Compute API, for OpenStack clouds.

In an OpenStack cloud Nova owns the placement of every server: moving a VM behind its back with
libvirt would leave Nova's database (and Placement's allocations) wrong. This executor asks Nova
instead, with openstacksdk:

- ``vms_on(host)``: the servers Nova has on ``host`` (``GET /servers/detail?host=``, all
  projects) and their flavors' RAM, as Neat's global manager read them (neat-reference §7.2).
- ``migrate``: ``live_migrate_server`` to the destination placement chose (``host`` given, not
  forced: Nova's scheduler still checks it), then polls the migration record until it ends and
  checks that the server is ACTIVE on the destination. A migration that failed or was cancelled
  while the server stayed ACTIVE elsewhere is retried ``retries`` times (Neat re-queued such VMs,
  §7.4). Past the timeout the migration is aborted (``DELETE /servers/{id}/migrations/{id}``)
  and the outcome is ``timeout``. An answer of Nova's API (4xx: no valid host, server locked,
  host unknown ...) is a ``failed`` result naming Nova's message.
- ``host_switching_off``/``host_woken``: disable the host's nova-compute service with a reason
  (Nova's scheduler then places nothing there) and enable it again.

Credentials come from clouds.yaml (``cloud``, or ``OS_CLOUD``) or the usual ``OS_*`` variables,
through openstacksdk; they are never logged. Keystone refusing them, or the cloud being
unreachable, raises :class:`ExecutorError`; everything about one server is a result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from neat_exporter.globalmanager.executors.base import (
    ExecutorError,
    Migration,
    MigrationOutcome,
    MigrationResult,
    TimedResults,
)

log = logging.getLogger(__name__)

COMPUTE_BINARY = "nova-compute"
LIVE_MIGRATION = "live-migration"
# Migration record statuses after which nothing more happens.
_DONE = {"completed", "done"}
_ENDED = _DONE | {"error", "failed", "cancelled"}
_ABORTABLE = {"queued", "preparing", "running"}
_MAX_REASON = 255  # Nova's column for disabled_reason
OPERATIONS = (
    "authenticate",
    "list_servers",
    "get_server",
    "list_migrations",
    "live_migrate",
    "abort_migration",
    "list_services",
    "disable_service",
    "enable_service",
)


def _sdk() -> tuple[Any, Any]:
    try:
        import keystoneauth1.exceptions
        import openstack
        import openstack.config
        import openstack.exceptions
    except ImportError:
        raise ExecutorError(
            "the nova executor needs openstacksdk: pip install 'neat-exporter[openstack]'"
        ) from None
    return openstack, keystoneauth1.exceptions


class NovaExecutor(TimedResults):
    """See the module docstring. ``connection`` (an openstack.connection.Connection) replaces
    the one made from ``cloud``/``clouds_yaml``/``OS_*``."""

    name = "nova"

    def __init__(
        self,
        *,
        cloud: str | None = None,
        clouds_yaml: str | None = None,
        region_name: str | None = None,
        block_migration: bool | str = "auto",
        poll_interval: float = 2.0,
        retries: int = 1,
        abort_grace: float = 60.0,
        registry: CollectorRegistry | None = None,
        connection: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if block_migration not in ("auto", True, False):
            raise ExecutorError(
                f"block_migration must be auto, true or false, not {block_migration!r}"
            )
        self._openstack, self._ksa_errors = _sdk()
        self.block_migration = block_migration
        self.poll_interval = poll_interval
        self.retries = retries
        self.abort_grace = abort_grace
        self._clock = clock
        self._sleep = sleep
        self.requests = Counter(
            "neat_gm_nova_requests",
            "Calls of the Nova executor to Nova's API by operation and result (ok, error).",
            ["operation", "result"],
            registry=registry,
        )
        for operation in OPERATIONS:
            for result in ("ok", "error"):
                self.requests.labels(operation, result)
        self._conn = connection or self._connect(cloud, clouds_yaml, region_name)
        self._call("authenticate", self._conn.authorize)  # bad credentials fail here, at start

    @classmethod
    def from_mapping(
        cls, settings: Mapping[str, Any], registry: CollectorRegistry | None = None
    ) -> NovaExecutor:
        """Build from the global manager's ``executor.nova`` section (keys as the keyword
        arguments: cloud, clouds_yaml, region_name, block_migration, poll_interval, retries,
        abort_grace)."""
        known = {
            "cloud",
            "clouds_yaml",
            "region_name",
            "block_migration",
            "poll_interval",
            "retries",
            "abort_grace",
        }
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ExecutorError(
                f"executor.nova.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})"
            )
        return cls(**settings, registry=registry)

    def _connect(self, cloud: str | None, clouds_yaml: str | None, region_name: str | None) -> Any:
        openstack = self._openstack
        try:
            config = openstack.config.OpenStackConfig(
                config_files=[clouds_yaml] if clouds_yaml else None
            )
            region = config.get_one(cloud=cloud, region_name=region_name)
            return openstack.connection.Connection(config=region, app_name="neat-exporter")
        except (openstack.exceptions.SDKException, self._ksa_errors.ClientException) as error:
            where = f"cloud {cloud!r}" if cloud else "OS_CLOUD / OS_* variables"
            raise ExecutorError(
                f"cannot configure OpenStack from {where}: {_line(error)}"
            ) from None

    # --- calls to Nova ----------------------------------------------------------------------

    def _call(self, operation: str, function: Callable[..., Any], *args: Any, **kwargs: Any):
        """Run one SDK call; authentication and connection failures become ExecutorError, any
        other API error is re-raised as :class:`_NovaRefused` with Nova's message."""
        errors = self._ksa_errors
        sdk_errors = self._openstack.exceptions
        try:
            result = function(*args, **kwargs)
        except (errors.Unauthorized, errors.AuthorizationFailure) as error:
            self._count(operation, "error")
            raise ExecutorError(f"Keystone refused the credentials: {_line(error)}") from None
        except errors.ConnectFailure as error:
            self._count(operation, "error")
            raise ExecutorError(f"cannot reach OpenStack: {_line(error)}") from None
        except sdk_errors.HttpException as error:
            self._count(operation, "error")
            if error.status_code == 401:
                raise ExecutorError(f"Keystone refused the credentials: {_line(error)}") from None
            if error.status_code == 403:
                raise ExecutorError(
                    f"Nova's policy forbids {operation} for these credentials (admin role "
                    f"needed): {_nova_message(error)}"
                ) from None
            raise _NovaRefused(error.status_code, _nova_message(error)) from None
        except (sdk_errors.SDKException, errors.ClientException) as error:
            self._count(operation, "error")
            cause = _root_cause(error)  # openstacksdk wraps keystoneauth's errors
            if isinstance(cause, errors.Unauthorized | errors.AuthorizationFailure):
                raise ExecutorError(f"Keystone refused the credentials: {_line(cause)}") from None
            if isinstance(cause, errors.ConnectFailure):
                raise ExecutorError(f"cannot reach OpenStack: {_line(cause)}") from None
            raise ExecutorError(f"OpenStack call {operation} failed: {_line(error)}") from None
        self._count(operation, "ok")
        return result

    def _count(self, operation: str, result: str) -> None:
        self.requests.labels(operation, result).inc()

    # --- the protocol -----------------------------------------------------------------------

    def vms_on(self, host: str) -> dict[str, int] | None:
        servers = self._call(
            "list_servers",
            lambda: list(
                self._conn.compute.servers(details=True, all_projects=True, compute_host=host)
            ),
        )
        vms = {}
        for server in servers:
            if server.compute_host != host:  # the filter is Nova's; keep only exact matches
                continue
            vms[server.id] = int(self._flavor_ram_mb(server))
        return vms

    def _flavor_ram_mb(self, server: Any) -> int:
        flavor = server.flavor
        ram = flavor.get("ram") if isinstance(flavor, Mapping) else getattr(flavor, "ram", None)
        if ram is None:  # before microversion 2.47 the server names its flavor by id only
            flavor_id = flavor.get("id") if isinstance(flavor, Mapping) else flavor.id
            ram = self._call("list_servers", self._conn.compute.get_flavor, flavor_id).ram
        return ram

    def migrate(self, migration: Migration, timeout: float) -> MigrationResult:
        started = self._clock()
        deadline = started + timeout
        attempts_left = 1 + self.retries
        while True:
            attempts_left -= 1
            result = self._attempt(migration, started, deadline)
            retry = (
                result.outcome is MigrationOutcome.FAILED
                and result.location == migration.source
                and attempts_left > 0
                and self._clock() < deadline
                and result.error.startswith("the migration ended")
            )
            if not retry:
                if result.outcome in (MigrationOutcome.FAILED, MigrationOutcome.UNVERIFIED):
                    log.error(
                        "live migration of %s from %s to %s %s: %s",
                        migration.vm_uuid,
                        migration.source,
                        migration.destination,
                        result.outcome,
                        result.error,
                    )
                return result
            log.warning(
                "live migration of %s from %s to %s failed (%s); retrying once more",
                migration.vm_uuid,
                migration.source,
                migration.destination,
                result.error,
            )

    def _attempt(self, migration: Migration, started: float, deadline: float) -> MigrationResult:
        uuid = migration.vm_uuid
        try:
            server = self._server(uuid)
            if server is None:
                return self._result(migration, MigrationOutcome.FAILED, started, "not in Nova")
            host = server.compute_host
            if host == migration.destination and server.status == "ACTIVE":
                log.info("%s is already on %s", uuid, migration.destination)
                return self._result(migration, MigrationOutcome.MIGRATED, started, "", host)
            if host != migration.source:
                return self._result(
                    migration,
                    MigrationOutcome.FAILED,
                    started,
                    f"Nova has it on {host}, not on {migration.source}",
                    host,
                )
            if server.status != "ACTIVE":
                return self._result(
                    migration,
                    MigrationOutcome.FAILED,
                    started,
                    f"server is {server.status}, not ACTIVE",
                    host,
                )
            known = {m.id for m in self._migrations(uuid)}
            try:
                self._call(
                    "live_migrate",
                    self._conn.compute.live_migrate_server,
                    uuid,
                    host=migration.destination,
                    block_migration=self.block_migration,
                )
            except _NovaRefused as refusal:
                return self._result(
                    migration,
                    MigrationOutcome.FAILED,
                    started,
                    f"Nova refused the live migration ({refusal})",
                    host,
                )
            log.info(
                "Nova is live-migrating %s from %s to %s",
                uuid,
                migration.source,
                migration.destination,
            )
            return self._follow(migration, known, started, deadline)
        except _NovaRefused as refusal:
            return self._result(
                migration, MigrationOutcome.FAILED, started, f"Nova answered {refusal}"
            )

    def _follow(
        self, migration: Migration, known: set, started: float, deadline: float
    ) -> MigrationResult:
        """Poll the new migration record until it ends or the deadline passes."""
        uuid = migration.vm_uuid
        record = None
        while self._clock() < deadline:
            record = self._new_migration(uuid, known) or record
            if record is not None and record.status in _ENDED:
                return self._ended(migration, record, started)
            self._sleep(min(self.poll_interval, max(0.0, deadline - self._clock())))
        return self._timed_out(migration, record, started)

    def _ended(self, migration: Migration, record: Any, started: float) -> MigrationResult:
        server = self._wait_settled(migration.vm_uuid, self._clock() + self.abort_grace)
        host = server.compute_host if server is not None else None
        status = server.status if server is not None else "gone"
        if record.status in _DONE:
            if host == migration.destination and status == "ACTIVE":
                log.info("%s now runs on %s", migration.vm_uuid, host)
                return self._result(migration, MigrationOutcome.MIGRATED, started, "", host)
            return self._result(
                migration,
                MigrationOutcome.UNVERIFIED,
                started,
                f"Nova reported the migration completed but the server is {status} on {host}",
                host,
            )
        reason = self._failure_reason(migration.vm_uuid)
        return self._result(
            migration,
            MigrationOutcome.FAILED,
            started,
            f"the migration ended {record.status}: {reason}; server {status} on {host}",
            host,
        )

    def _timed_out(self, migration: Migration, record: Any, started: float) -> MigrationResult:
        uuid = migration.vm_uuid
        timeout = self._clock() - started
        if record is None:
            detail = "Nova never started it"
        elif record.status in _ABORTABLE:
            try:
                self._call(
                    "abort_migration",
                    self._conn.compute.abort_server_migration,
                    record.id,
                    uuid,
                    ignore_missing=False,
                )
                detail = "aborted"
            except _NovaRefused as refusal:
                detail = f"Nova refused to abort it ({refusal})"
        else:
            detail = f"the migration is {record.status} and cannot be aborted"
        server = self._wait_settled(uuid, self._clock() + self.abort_grace)
        host = server.compute_host if server is not None else None
        status = server.status if server is not None else "gone"
        error = f"not finished within {timeout:.0f} s; {detail}; server {status} on {host}"
        log.error("live migration of %s to %s: %s", uuid, migration.destination, error)
        return self._result(migration, MigrationOutcome.TIMEOUT, started, error, host)

    def _wait_settled(self, uuid: str, deadline: float) -> Any:
        """The server once no task runs on it (or at the deadline)."""
        while True:
            server = self._server(uuid)
            if server is None or server.task_state is None or self._clock() >= deadline:
                return server
            self._sleep(self.poll_interval)

    def _server(self, uuid: str) -> Any:
        """The server, or None when Nova does not know it."""
        try:
            return self._call("get_server", self._conn.compute.get_server, uuid)
        except _NovaRefused as refusal:
            if refusal.status == 404:
                return None
            raise

    def _migrations(self, uuid: str) -> list[Any]:
        return self._call(
            "list_migrations",
            lambda: list(
                self._conn.compute.migrations(server_id=uuid, migration_type=LIVE_MIGRATION)
            ),
        )

    def _new_migration(self, uuid: str, known: set) -> Any:
        fresh = [m for m in self._migrations(uuid) if m.id not in known]
        return max(fresh, key=lambda m: m.id) if fresh else None

    def _failure_reason(self, uuid: str) -> str:
        """Nova's reason for the latest live migration's failure, from the instance action's
        events (their tracebacks are shown to admins); "no reason given" otherwise."""
        try:
            actions = self._call(
                "get_server", lambda: list(self._conn.compute.server_actions(uuid))
            )
            latest = next((a for a in actions if a.action == LIVE_MIGRATION), None)
            if latest is None:
                return "no reason given"
            action = self._call(
                "get_server", self._conn.compute.get_server_action, latest.request_id, uuid
            )
        except _NovaRefused:
            return "no reason given"
        for event in action.events or []:
            event = event if isinstance(event, Mapping) else event.to_dict()
            if event.get("result") == "Error":
                lines = [ln.strip() for ln in (event.get("traceback") or "").splitlines()]
                last = next((ln for ln in reversed(lines) if ln), "")
                return last.rpartition("nova.exception.")[2] or f"{event.get('event')} failed"
        return action.message or "no reason given"

    def clean_up_after(self, migration: Migration) -> None:
        pass  # nova-compute rolls a failed live migration back on the destination itself

    def host_switching_off(self, host: str, reason: str) -> None:
        service = self._compute_service(host)
        text = f"neat: {reason}"[:_MAX_REASON]
        try:
            self._call(
                "disable_service",
                self._conn.compute.disable_service,
                service,
                disabled_reason=text,
            )
        except _NovaRefused as refusal:
            raise ExecutorError(
                f"Nova refused to disable nova-compute on {host}: {refusal}"
            ) from None
        log.info("disabled nova-compute on %s in Nova (%s)", host, text)

    def host_woken(self, host: str, timeout: float) -> None:
        """Wait until Nova sees the host's nova-compute up, then enable it."""
        deadline = self._clock() + timeout
        while (service := self._compute_service(host)).state != "up":
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise ExecutorError(
                    f"{host} was switched on but Nova did not see its nova-compute up within "
                    f"{timeout:g} s (state {service.state})"
                )
            self._sleep(min(self.poll_interval, remaining))
        try:
            self._call("enable_service", self._conn.compute.enable_service, service)
        except _NovaRefused as refusal:
            raise ExecutorError(
                f"Nova refused to enable nova-compute on {host}: {refusal}"
            ) from None
        log.info("enabled nova-compute on %s in Nova", host)

    def _compute_service(self, host: str) -> Any:
        try:
            services = self._call(
                "list_services",
                lambda: list(self._conn.compute.services(binary=COMPUTE_BINARY, host=host)),
            )
        except _NovaRefused as refusal:
            raise ExecutorError(f"cannot list Nova's services: {refusal}") from None
        for service in services:
            if service.host == host:
                return service
        raise ExecutorError(f"Nova has no nova-compute service on host {host!r}")

    def close(self) -> None:
        self._conn.close()


class _NovaRefused(Exception):
    """Nova's API answered an error about this request (not about the credentials)."""

    def __init__(self, status: int | None, message: str):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status


def _nova_message(error: Any) -> str:
    """The message of Nova's error body ({"badRequest": {"message": ...}}), on one line."""
    details = getattr(error, "details", None) or getattr(error, "message", None) or str(error)
    return _line(details)


def _root_cause(error: BaseException) -> BaseException:
    seen = set()
    while (error.__cause__ or error.__context__) is not None and id(error) not in seen:
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return error


def _line(value: object) -> str:
    return " ".join(str(value).split())[:300]
