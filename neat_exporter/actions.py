"""Asking OpenStack Neat's global manager to migrate VMs.

The wire protocol is Neat's (``neat/globals/manager.py``): ``PUT /`` with a form-encoded body of
``username`` and ``password`` (SHA-1 hex digests of the global manager's ``os_admin_user`` and
``os_admin_password``), ``time`` (Unix time; the global manager answers 412 when it is more than
5 s old on arrival), ``host``, ``reason`` (0 underloaded, 1 overloaded) and ``vm_uuids``
(comma-separated; required for reason 1, ignored for reason 0).

:class:`GlobalManagerClient` sends one request with timeouts and bounded retries.
:class:`MigrationRequester` sits between the decision loop and the client: it applies the mode
(off / dry_run / on) and a per-host cooldown, counts every outcome, and sends from a single
worker thread so that a slow or dead global manager never holds up the caller.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import requests
from prometheus_client import CollectorRegistry, Counter, Histogram

from neat_exporter.config import GlobalManagerConfig
from neat_exporter.errors import ConfigError, InputError, innermost_cause
from neat_exporter.identifiers import check_host_name, check_vm_uuid
from neat_exporter.vocabulary import Reason
from neat_exporter.worker import QueueWorker

log = logging.getLogger(__name__)


# Why the global manager refused a request, in the words of Neat's validate_params.
_REFUSALS = {
    400: "request rejected as incomplete (reason, time, host or vm_uuids)",
    401: "request carried no username or password",
    403: "credentials rejected: the username/password must be Neat's os_admin_user/"
    "os_admin_password",
    405: "method not allowed: is the URL the global manager's root?",
    412: "request older than 5 s on arrival: synchronise the clocks of this host and the "
    "global manager (NTP)",
}


class Submission(enum.StrEnum):
    """What :meth:`MigrationRequester.submit` did with a request."""

    QUEUED = "queued"  # will be sent by the worker
    DRY_RUN = "dry_run"  # logged, not sent
    SUPPRESSED = "suppressed"  # the host is in its cooldown
    QUEUE_FULL = "queue_full"  # dropped: the worker is behind
    REJECTED = "rejected"  # not sent: the host name or a VM UUID is not a valid value
    OFF = "off"  # mode off: nothing done


@dataclass(frozen=True)
class Credentials:
    """The SHA-1 hex digests Neat's global manager compares; kept out of every repr."""

    username_sha1: str = field(repr=False)
    password_sha1: str = field(repr=False)

    @classmethod
    def from_plain(cls, username: str, password: str) -> Credentials:
        return cls(_sha1(username), _sha1(password))


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RequestOutcome:
    """How one request ended: ``ok`` only on HTTP 200."""

    ok: bool
    status: int | None  # the last HTTP status; None when no answer came
    attempts: int
    detail: str


class GlobalManagerClient:
    """Sends Neat's migration request, one at a time (not thread-safe: one caller per client).

    Every attempt has ``timeout`` seconds to connect and as long to get an answer. Connection
    errors and 5xx answers are retried up to ``retries`` times with exponential backoff; a 412
    (stale time stamp) is retried once; every attempt carries a fresh time stamp. A read timeout
    is not retried: Neat's global manager answers only after the migrations finished, so the
    request may well be in progress and sending it again would queue the same work twice.
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        clock: Callable[[], float] = time.time,
    ):
        self.url = url
        self._credentials = credentials
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._clock = clock
        self._session = requests.Session()

    def send(self, host: str, reason: Reason, vm_uuids: Sequence[str]) -> RequestOutcome:
        attempts = 0
        retries_left = self.retries
        restamped = False
        while True:
            attempts += 1
            try:
                response = self._session.put(
                    self.url, data=self._form(host, reason, vm_uuids), timeout=self.timeout
                )
            except requests.ConnectionError as error:
                detail = f"cannot reach the global manager at {self.url}: {innermost_cause(error)}"
                status = None
            except requests.Timeout:
                return RequestOutcome(
                    False,
                    None,
                    attempts,
                    f"no answer within {self.timeout:g} s (the global manager may still be "
                    "processing the request; not retried)",
                )
            except requests.RequestException as error:
                detail = f"request failed: {innermost_cause(error)}"
                return RequestOutcome(False, None, attempts, detail)
            else:
                status = response.status_code
                if status == 200:
                    return RequestOutcome(True, status, attempts, "accepted")
                if status == 412 and not restamped:
                    restamped = True
                    log.info("global manager answered 412 (stale time); resending once")
                    continue
                if status < 500:
                    reason_text = _REFUSALS.get(status, "unexpected answer")
                    return RequestOutcome(False, status, attempts, f"{status}: {reason_text}")
                detail = f"{status}: global manager error"
            if retries_left == 0:
                return RequestOutcome(False, status, attempts, f"{detail} (gave up)")
            delay = self.backoff * 2 ** (self.retries - retries_left)
            retries_left -= 1
            log.info("%s; retrying in %.1f s", detail, delay)
            time.sleep(delay)

    def _form(self, host: str, reason: Reason, vm_uuids: Sequence[str]) -> dict[str, str]:
        form = {
            "username": self._credentials.username_sha1,
            "password": self._credentials.password_sha1,
            "time": repr(self._clock()),
            "host": host,
            "reason": str(int(reason)),
        }
        if vm_uuids:
            form["vm_uuids"] = ",".join(vm_uuids)
        return form

    def close(self) -> None:
        self._session.close()


class MigrationRequester:
    """Turns decisions into global manager requests without ever blocking the caller.

    ``submit`` returns at once. Within ``cooldown`` seconds after a request for a host, further
    requests for that host are suppressed, so a host that stays overloaded cycle after cycle does
    not become a request storm. Outcomes are counted in ``<prefix>s_total{reason,result}`` (result
    ``sent``, ``failed``, ``dry_run``, ``suppressed``, ``queue_full``, ``rejected``) and round
    trips in ``<prefix>_duration_seconds``.

    Every host name and VM UUID is checked before anything is done with it (``vm_uuids`` is
    comma-separated on the wire, so "a,b" would name two VMs): a request naming an invalid one is
    rejected whole, counted and logged with the value escaped.
    """

    RESULTS = ("sent", "failed", "dry_run", "suppressed", "queue_full", "rejected")

    def __init__(
        self,
        config: GlobalManagerConfig,
        registry: CollectorRegistry,
        *,
        queue_size: int = 16,
        metric_prefix: str = "neat_migration_request",
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self._clock = clock
        self._last_request: dict[str, float] = {}
        self._lock = threading.Lock()
        self._full = False  # the queue was found full and nothing was queued since
        self.requests = Counter(
            f"{metric_prefix}s",
            "Migration requests for the global manager by reason and result "
            "(sent, failed, dry_run, suppressed by the cooldown).",
            ["reason", "result"],
            registry=registry,
        )
        self.duration = Histogram(
            f"{metric_prefix}_duration_seconds",
            "Time from the first attempt to the last answer of a global manager request.",
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        for reason in Reason:
            for result in self.RESULTS:
                self.requests.labels(reason.label, result)
        self._client: GlobalManagerClient | None = None
        self._worker: QueueWorker | None = None
        if config.mode == "on":
            if config.username is None or config.password is None:
                raise ConfigError("global_manager", "mode is on but the credentials are missing")
            self._client = GlobalManagerClient(
                config.url,
                Credentials.from_plain(
                    config.username.get_secret_value(), config.password.get_secret_value()
                ),
                timeout=config.timeout,
                retries=config.retries,
            )
            self._worker = QueueWorker("global-manager", self._send, queue_size)

    def submit(self, host: str, reason: Reason | int, vm_uuids: Sequence[str]) -> Submission:
        """Ask for ``vm_uuids`` to leave ``host``; all its VMs for an underload."""
        reason = Reason(reason)
        mode = self.config.mode
        if mode == "off":
            return Submission.OFF
        if reason is Reason.OVERLOAD and not vm_uuids:
            raise ValueError("an overload request needs the selected vm_uuids")
        try:
            check_host_name(host)
            for vm_uuid in vm_uuids:
                check_vm_uuid(vm_uuid)
        except InputError as error:
            self.requests.labels(reason.label, "rejected").inc()
            log.warning("%s request not sent: %s", reason.label, error)
            return Submission.REJECTED
        with self._lock:
            now = self._clock()
            last = self._last_request.get(host)
            if last is not None and now - last < self.config.cooldown:
                self.requests.labels(reason.label, "suppressed").inc()
                log.debug("%s request for %s suppressed (cooldown)", reason.label, host)
                return Submission.SUPPRESSED
            if mode == "dry_run":
                self._last_request[host] = now
                self.requests.labels(reason.label, "dry_run").inc()
                log.info(
                    "dry run: would ask to migrate %s from %s (%s)",
                    ",".join(vm_uuids),
                    host,
                    reason.label,
                )
                return Submission.DRY_RUN
            if not self._worker.offer((host, reason, tuple(vm_uuids))):
                self.requests.labels(reason.label, "queue_full").inc()
                if not self._full:  # once until a request is queued again, not once per drop
                    self._full = True
                    log.warning(
                        "%s request for %s dropped: %d requests already wait for the global "
                        "manager (further drops are only counted until the queue has room)",
                        reason.label,
                        host,
                        self._worker.maxsize,
                    )
                return Submission.QUEUE_FULL
            self._full = False
            self._last_request[host] = now
        return Submission.QUEUED

    def _send(self, item: tuple[str, Reason, tuple[str, ...]]) -> None:
        host, reason, vm_uuids = item
        started = time.monotonic()
        try:
            outcome = self._client.send(host, reason, vm_uuids)
        except Exception:  # counted as failed; QueueWorker goes on with the next request
            log.exception("global manager request for %s failed unexpectedly", host)
            outcome = RequestOutcome(False, None, 1, "internal error")
        self.duration.observe(time.monotonic() - started)
        result = "sent" if outcome.ok else "failed"
        self.requests.labels(reason.label, result).inc()
        if outcome.ok:
            log.info(
                "asked the global manager to migrate %s from %s (%s)",
                ",".join(vm_uuids) or "all VMs",
                host,
                reason.label,
            )
        else:
            log.error(
                "%s request for %s failed after %d attempt(s): %s",
                reason.label,
                host,
                outcome.attempts,
                outcome.detail,
            )

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued request has been answered; False on timeout."""
        return self._worker is None or self._worker.wait_idle(timeout)

    @property
    def queue_length(self) -> int:
        return 0 if self._worker is None else self._worker.queue_length

    def close(self, timeout: float = 1.0) -> None:
        """Stop the worker once the queue is drained (waits at most ``timeout`` seconds)."""
        if self._worker is not None and self._worker.close(timeout):
            self._client.close()
