"""Alertmanager webhook receiver that asks Neat's global manager to migrate VMs.

Alertmanager POSTs its notifications (webhook payload version 4) to ``/webhook``. Firing alerts
that carry a ``neat_reason`` label (``underload`` or ``overload``) and a ``host`` label are
grouped by host and reason, and each group becomes one global manager request: an ``overload``
alert must also carry the ``vm_uuid`` of a VM to move (the shipped rule NeatVMSelectedForMigration
does), an ``underload`` alert moves every VM of the host. Resolved alerts and alerts without
those labels send nothing. An alert whose ``host`` or ``vm_uuid`` is not a valid value
(:mod:`neat_exporter.identifiers`: "a,b" is not one VM) is left out and counted; labels that are
not text or longer than 1024 characters make the payload malformed (400).

Firing alerts can also start OpenStack Watcher audits: ``watcher.audits`` maps an alert name
(label ``alertname``), else a ``neat_reason``, to an EVENT audit, which a
:class:`~neat_exporter.watcher.WatcherTrigger` starts through Watcher's webhook, once per audit
per webhook.

Alertmanager re-sends a group's alerts on every ``group_interval`` change and ``repeat_interval``;
an alert (its fingerprint and start time) leads to at most one request within ``dedup_ttl``.
The webhook answers at once: requests go through the bounded queue of a
:class:`~neat_exporter.actions.MigrationRequester`, and a full queue answers 503 so that
Alertmanager tries again later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app

from neat_exporter.actions import MigrationRequester, Submission
from neat_exporter.config import BridgeConfig
from neat_exporter.errors import ConfigError, InputError
from neat_exporter.identifiers import (
    MAX_LABEL_LENGTH,
    check_host_name,
    check_label,
    check_vm_uuid,
    shown,
)
from neat_exporter.vocabulary import Reason
from neat_exporter.watcher import WatcherTrigger

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhook"
REASON_LABEL = "neat_reason"
ALERTNAME_LABEL = "alertname"
HOST_LABEL = "host"
VM_LABEL = "vm_uuid"
_MAX_REMEMBERED = 100_000  # dedup keys kept at most, whatever the TTL
_REASONS = {reason.label: reason for reason in Reason}


@dataclass(frozen=True)
class Alert:
    status: str
    labels: dict[str, str]
    dedup_key: str


def parse_webhook(body: bytes) -> list[Alert]:
    """The alerts of an Alertmanager webhook payload (version 4).

    Raises :class:`InputError` naming the first malformed field.
    """
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise InputError(f"malformed JSON: {error}") from None
    if not isinstance(payload, dict):
        raise InputError(f"payload must be a JSON object, got {_json_type(payload)}")
    if "version" not in payload:
        raise InputError('version: missing (expected Alertmanager\'s webhook version "4")')
    if payload["version"] != "4":
        raise InputError(f'version: expected "4", got {payload["version"]!r:.40}')
    alerts = _field(payload, "alerts", list, "payload")
    return [_parse_alert(alert, f"alerts[{index}]") for index, alert in enumerate(alerts)]


def _parse_alert(alert: Any, where: str) -> Alert:
    if not isinstance(alert, dict):
        raise InputError(f"{where}: must be an object, got {_json_type(alert)}")
    status = _field(alert, "status", str, where)
    if status not in ("firing", "resolved"):
        raise InputError(f'{where}.status: expected "firing" or "resolved", got {status!r:.40}')
    labels = _field(alert, "labels", dict, where)
    for name, value in labels.items():
        if not isinstance(value, str):
            raise InputError(f"{where}.labels.{shown(name)}: must be a string")
        try:
            check_label(name, value)
        except InputError as error:
            raise InputError(f"{where}.labels: {error}") from None
    fingerprint = _optional_field(alert, "fingerprint", where)
    starts_at = _optional_field(alert, "startsAt", where)
    if not fingerprint:  # Alertmanager always sends one; derive a stable one otherwise
        canonical = json.dumps(labels, sort_keys=True).encode()
        fingerprint = hashlib.sha256(canonical).hexdigest()[:16]
    return Alert(status, labels, f"{fingerprint}@{starts_at}")


def _field(obj: dict, name: str, kind: type, where: str) -> Any:
    prefix = f"{where}.{name}" if where != "payload" else name
    if name not in obj:
        raise InputError(f"{prefix}: missing")
    value = obj[name]
    if not isinstance(value, kind):
        raise InputError(f"{prefix}: must be {_JSON_NAMES[kind]}, got {_json_type(value)}")
    return value


def _optional_field(obj: dict, name: str, where: str) -> str:
    value = obj.get(name, "")
    if not isinstance(value, str):
        raise InputError(f"{where}.{name}: must be a string, got {_json_type(value)}")
    if len(value) > MAX_LABEL_LENGTH:  # kept in the de-duplication memory
        raise InputError(f"{where}.{name}: longer than {MAX_LABEL_LENGTH} characters")
    return value


_JSON_NAMES = {dict: "an object", list: "an array", str: "a string"}


def _json_type(value: Any) -> str:
    for kind, name in _JSON_NAMES.items():
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


class _Remembered:
    """Keys seen within the last ``ttl`` seconds."""

    def __init__(self, ttl: float, clock: Callable[[], float]):
        self._ttl = ttl
        self._clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        self._expire()
        return key in self._expiry

    def add(self, keys: Iterable[str]) -> None:
        expiry = self._clock() + self._ttl
        for key in keys:
            self._expiry[key] = expiry
            self._expiry.move_to_end(key)
        while len(self._expiry) > _MAX_REMEMBERED:
            self._expiry.popitem(last=False)

    def _expire(self) -> None:
        now = self._clock()
        while self._expiry and next(iter(self._expiry.values())) <= now:
            self._expiry.popitem(last=False)


class _Authenticator:
    """Bearer token and/or basic auth; with neither configured every request passes."""

    def __init__(self, config: BridgeConfig):
        token = config.bearer_token
        self._token = token.get_secret_value().encode() if token else None
        self._basic = None
        if config.basic_auth_username and config.basic_auth_password:
            password = config.basic_auth_password.get_secret_value()
            self._basic = f"{config.basic_auth_username}:{password}".encode()
        challenges = []
        if self._token:
            challenges.append('Bearer realm="neat-exporter bridge"')
        if self._basic:
            challenges.append('Basic realm="neat-exporter bridge"')
        self.challenge = ", ".join(challenges)

    @property
    def enabled(self) -> bool:
        return bool(self._token or self._basic)

    def allows(self, header: str | None) -> bool:
        if not self.enabled:
            return True
        scheme, _, credentials = (header or "").strip().partition(" ")
        credentials = credentials.strip().encode("latin-1", "replace")
        if scheme.lower() == "bearer" and self._token:
            return hmac.compare_digest(credentials, self._token)
        if scheme.lower() == "basic" and self._basic:
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return False
            return hmac.compare_digest(decoded, self._basic)
        return False


class Bridge:
    """The WSGI app: ``POST /webhook``, ``GET /metrics``, ``GET /healthz``."""

    def __init__(
        self,
        config: BridgeConfig,
        requester: MigrationRequester,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.monotonic,
        watcher: WatcherTrigger | None = None,
    ):
        self.config = config
        self.requester = requester
        self.watcher = watcher
        self._auth = _Authenticator(config)
        if (requester.config.mode == "on" or watcher is not None) and not self._auth.enabled:
            raise ConfigError(
                "bridge.bearer_token_file",
                "global_manager.mode or watcher.mode is on, so the webhook can trigger "
                "migrations: set a bearer token or basic auth (bridge.basic_auth_username and "
                "basic_auth_password_file)",
            )
        self._remembered = _Remembered(config.dedup_ttl, clock)
        self._lock = threading.Lock()
        self._metrics_app = make_wsgi_app(registry)
        self.webhooks = Counter(
            "neat_bridge_webhooks",
            "Webhook requests answered, by HTTP status code.",
            ["code"],
            registry=registry,
        )
        self.alerts = Counter(
            "neat_bridge_alerts",
            "Alerts received in webhooks, by status (firing, resolved).",
            ["status"],
            registry=registry,
        )
        self.ignored = Counter(
            "neat_bridge_alerts_ignored",
            "Firing alerts without the neat_reason and host labels (or an overload alert "
            "without vm_uuid) and mapped to no Watcher audit: nothing to do.",
            registry=registry,
        )
        self.rejected = Counter(
            "neat_bridge_alerts_rejected",
            "Firing alerts whose label is not a valid value, by label: vm_uuid (not a UUID, "
            "e.g. a list with commas) or host (control characters, too long).",
            ["label"],
            registry=registry,
        )
        self.duplicates = Counter(
            "neat_bridge_alerts_deduplicated",
            "Firing alerts already acted on (Alertmanager re-sends).",
            registry=registry,
        )
        queue_length = Gauge(
            "neat_bridge_queue_length",
            "Requests waiting for the global manager.",
            registry=registry,
        )
        queue_length.set_function(lambda: requester.queue_length)
        for status in ("firing", "resolved"):
            self.alerts.labels(status)
        for label in (HOST_LABEL, VM_LABEL):
            self.rejected.labels(label)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == WEBHOOK_PATH:
            if method != "POST":
                return _respond(start_response, 405, {"error": "use POST"}, [("Allow", "POST")])
            code, body, headers = self._webhook(environ)
            self.webhooks.labels(str(code)).inc()
            return _respond(start_response, code, body, headers)
        if method not in ("GET", "HEAD"):  # the other pages only read
            return _respond(start_response, 405, {"error": "use GET"}, [("Allow", "GET, HEAD")])
        if path == "/metrics":
            return self._metrics_app(environ, start_response)
        if path == "/healthz":
            return _respond(start_response, 200, {"status": "ok"})
        if path == "/":
            return _respond(
                start_response,
                200,
                {"service": "neat-exporter bridge", "webhook": WEBHOOK_PATH, "metrics": "/metrics"},
            )
        return _respond(start_response, 404, {"error": f"no such path: {path:.80}"})

    def _webhook(self, environ: dict) -> tuple[int, dict, list[tuple[str, str]]]:
        if not self._auth.allows(environ.get("HTTP_AUTHORIZATION")):
            return 401, {"error": "unauthorized"}, [("WWW-Authenticate", self._auth.challenge)]
        length_header = environ.get("CONTENT_LENGTH") or ""
        if not length_header.isdigit():
            return 411, {"error": "a Content-Length header is required"}, []
        length = int(length_header)
        limit = self.config.max_payload_bytes
        if length > limit:
            return 413, {"error": f"payload of {length} bytes exceeds {limit}"}, []
        body = environ["wsgi.input"].read(length)
        try:
            alerts = parse_webhook(body)
        except InputError as error:
            log.warning("rejected a webhook: %s", error)
            return 400, {"error": str(error)}, []
        return self._act(alerts)

    def _act(self, alerts: list[Alert]) -> tuple[int, dict, list[tuple[str, str]]]:
        groups: dict[tuple[str, Reason], tuple[set[str], list[str]]] = {}
        audits: dict[str, list[str]] = {}
        summary = {"requests": [], "ignored": 0, "duplicates": 0, "rejected": 0}
        first_rejection = None
        with self._lock:  # the dedup check and the submit must not interleave between webhooks
            for alert in alerts:
                self.alerts.labels(alert.status).inc()
                if alert.status != "firing":
                    continue
                target = _target(alert.labels)
                audit = self._audit(alert.labels)
                if target is None and audit is None:
                    self.ignored.inc()
                    summary["ignored"] += 1
                    continue
                if target is not None:
                    rejected_label, error = _invalid_label(target[0], target[2])
                    if rejected_label is not None:
                        self.rejected.labels(rejected_label).inc()
                        summary["rejected"] += 1
                        first_rejection = first_rejection or f"{rejected_label}: {error}"
                        continue
                if alert.dedup_key in self._remembered:
                    self.duplicates.inc()
                    summary["duplicates"] += 1
                    continue
                if audit is not None:
                    audits.setdefault(audit, []).append(alert.dedup_key)
                if target is None:
                    continue
                host, reason, vm_uuid = target
                vms, keys = groups.setdefault((host, reason), (set(), []))
                if vm_uuid:
                    vms.add(vm_uuid)
                keys.append(alert.dedup_key)
            busy = False
            if audits:
                summary["watcher_audits"] = []
            for audit, keys in audits.items():
                queued = self.watcher.submit(audit)
                if queued:
                    self._remembered.add(keys)
                busy |= not queued
                summary["watcher_audits"].append(
                    {"audit": audit, "result": "queued" if queued else "queue_full"}
                )
            dropped = 0
            for (host, reason), (vm_set, keys) in groups.items():
                vms = sorted(vm_set)
                result = self.requester.submit(host, reason, vms)
                if result in (Submission.QUEUED, Submission.DRY_RUN):
                    self._remembered.add(keys)
                dropped += result is Submission.QUEUE_FULL
                summary["requests"].append(
                    {
                        "host": host,
                        "reason": reason.label,
                        "vm_uuids": vms,
                        "result": result,
                    }
                )
        # One line per webhook, whatever the number of alerts in it.
        if first_rejection:
            log.warning(
                "webhook: %d alert(s) rejected (first: %s)", summary["rejected"], first_rejection
            )
        if dropped:
            log.warning(
                "webhook: %d of %d request(s) not queued: the global manager queue is full "
                "(answered 503, Alertmanager retries)",
                dropped,
                len(groups),
            )
            return 503, {"error": "the global manager queue is full, retry later", **summary}, []
        if busy:
            return 503, {"error": "the Watcher queue is full, retry later", **summary}, []
        return 200, summary, []

    def _audit(self, labels: dict[str, str]) -> str | None:
        """The Watcher audit an alert starts: by alert name, else by neat_reason."""
        if self.watcher is None:
            return None
        audits = self.watcher.config.audit_by_match
        return audits.get(labels.get(ALERTNAME_LABEL, "")) or audits.get(
            labels.get(REASON_LABEL, "")
        )


def _target(labels: dict[str, str]) -> tuple[str, Reason, str | None] | None:
    """(host, reason, vm_uuid) for an actionable alert, None otherwise."""
    host = labels.get(HOST_LABEL)
    vm_uuid = labels.get(VM_LABEL) or None
    reason = _REASONS.get(labels.get(REASON_LABEL, ""))
    if not host or reason is None or (reason is Reason.OVERLOAD and not vm_uuid):
        return None
    return host, reason, vm_uuid


def _invalid_label(host: str, vm_uuid: str | None) -> tuple[str | None, str]:
    """(the label, why) when the target's host or VM is not a valid value, (None, "") if valid."""
    try:
        check_host_name(host)
    except InputError as error:
        return HOST_LABEL, str(error)
    try:
        if vm_uuid is not None:
            check_vm_uuid(vm_uuid)
    except InputError as error:
        return VM_LABEL, str(error)
    return None, ""


def _respond(
    start_response: Callable, code: int, body: dict, headers: list[tuple[str, str]] = ()
) -> list[bytes]:
    data = json.dumps(body).encode() + b"\n"
    status = f"{code} {HTTPStatus(code).phrase}"
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers],
    )
    return [data]
