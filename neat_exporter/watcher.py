"""Starting OpenStack Watcher audits from alerts.

Watcher runs an audit of type EVENT when its webhook is called: ``POST /v1/webhooks/{audit}``
(API microversion 1.4) with a Keystone token, which Alertmanager cannot send. The bridge
(neat_exporter.bridge) maps firing alerts to audits (by alert name, else by ``neat_reason``)
and hands them to a :class:`WatcherTrigger`, which calls the webhook from one worker thread so
that the bridge answers Alertmanager at once.

Authentication is keystoneauth1 through openstacksdk's configuration loader: a clouds.yaml cloud
(``watcher.cloud``, or ``OS_CLOUD``) or the usual ``OS_*`` variables, application credentials
(``v3applicationcredential``) as well as passwords. Watcher's endpoint comes from the Keystone
catalogue (service type ``infra-optim``) unless ``watcher.url`` is set. Connection errors and
5xx answers are retried with exponential backoff, as the global manager requests are; a 4xx
answer (unknown audit, audit not of type EVENT or not PENDING/SUCCEEDED, policy) is not.
Credentials and tokens are never logged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from neat_exporter.config import WatcherConfig
from neat_exporter.errors import ConfigError
from neat_exporter.worker import QueueWorker

log = logging.getLogger(__name__)

SERVICE_TYPE = "infra-optim"
API_VERSION = "infra-optim 1.4"  # the webhook API's microversion
RESULTS = ("sent", "failed", "queue_full")


@dataclass(frozen=True)
class TriggerOutcome:
    ok: bool
    status: int | None
    attempts: int
    detail: str


class WatcherClient:
    """Calls Watcher's webhook with a Keystone session (not thread-safe: one caller)."""

    def __init__(self, config: WatcherConfig, session: Any = None):
        self.config = config
        self._session = session if session is not None else _session(config)
        self._ksa_errors = _keystoneauth_errors()

    def trigger(self, audit: str) -> TriggerOutcome:
        attempts = 0
        retries_left = self.config.retries
        errors = self._ksa_errors
        while True:
            attempts += 1
            status = None
            try:
                response = self._session.post(**self._request(audit))
            except (errors.Unauthorized, errors.AuthorizationFailure) as error:
                return TriggerOutcome(
                    False, None, attempts, f"Keystone refused the credentials: {_line(error)}"
                )
            except errors.EndpointNotFound:
                return TriggerOutcome(
                    False,
                    None,
                    attempts,
                    f"no {SERVICE_TYPE} (Watcher) endpoint in the Keystone catalogue; "
                    "set watcher.url",
                )
            except (errors.ConnectFailure, errors.ConnectTimeout) as error:
                detail = f"cannot reach Watcher: {_line(error)}"
            except errors.ClientException as error:
                return TriggerOutcome(False, None, attempts, f"request failed: {_line(error)}")
            else:
                status = response.status_code
                if status < 300:
                    return TriggerOutcome(True, status, attempts, "triggered")
                message = _watcher_message(response)
                if status < 500:
                    return TriggerOutcome(False, status, attempts, f"{status}: {message}")
                detail = f"{status}: {message}"
            if retries_left == 0:
                return TriggerOutcome(False, status, attempts, f"{detail} (gave up)")
            delay = self.config.backoff * 2 ** (self.config.retries - retries_left)
            retries_left -= 1
            log.info("Watcher webhook for audit %s: %s; retrying in %.1f s", audit, detail, delay)
            time.sleep(delay)

    def _request(self, audit: str) -> dict[str, Any]:
        request: dict[str, Any] = {
            "json": {},
            "headers": {"OpenStack-API-Version": API_VERSION},
            "timeout": self.config.timeout,
            "raise_exc": False,
        }
        path = f"/v1/webhooks/{audit}"
        if self.config.url:
            request["url"] = self.config.url.rstrip("/") + path
        else:
            request["url"] = path
            request["endpoint_filter"] = {
                "service_type": SERVICE_TYPE,
                "interface": self.config.interface,
                "region_name": self.config.region_name,
            }
        return request


def _keystoneauth_errors() -> Any:
    try:
        import keystoneauth1.exceptions
    except ImportError:
        raise ConfigError(
            "watcher.mode",
            "triggering Watcher needs keystoneauth1 and openstacksdk: "
            "pip install 'neat-exporter[openstack]'",
        ) from None
    return keystoneauth1.exceptions


def _session(config: WatcherConfig) -> Any:
    """A keystoneauth1 session from clouds.yaml or ``OS_*`` (openstacksdk's loader)."""
    _keystoneauth_errors()
    import openstack.config
    import openstack.exceptions

    try:
        loader = openstack.config.OpenStackConfig(
            config_files=[config.clouds_yaml] if config.clouds_yaml else None
        )
        region = loader.get_one(cloud=config.cloud, region_name=config.region_name)
        return region.get_session()
    except openstack.exceptions.SDKException as error:
        where = f"cloud {config.cloud!r}" if config.cloud else "OS_CLOUD / OS_* variables"
        raise ConfigError("watcher.cloud", f"{where}: {_line(error)}") from None


class WatcherTrigger:
    """Triggers audits from a worker thread; ``submit`` never blocks.

    Outcomes are counted in ``neat_bridge_watcher_triggers_total{result}`` (sent, failed,
    queue_full) and round trips in ``neat_bridge_watcher_trigger_duration_seconds``."""

    def __init__(
        self,
        config: WatcherConfig,
        registry: CollectorRegistry,
        *,
        queue_size: int = 16,
        client_factory: Callable[[WatcherConfig], WatcherClient] = WatcherClient,
    ):
        self.config = config
        self.triggers = Counter(
            "neat_bridge_watcher_triggers",
            "Watcher audits triggered through the webhook, by result (sent, failed, queue_full).",
            ["result"],
            registry=registry,
        )
        self.duration = Histogram(
            "neat_bridge_watcher_trigger_duration_seconds",
            "Time from the first attempt to the last answer of a Watcher webhook call.",
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        for result in RESULTS:
            self.triggers.labels(result)
        self._client = client_factory(config)
        self._worker: QueueWorker[str] = QueueWorker("watcher-trigger", self._trigger, queue_size)

    def submit(self, audit: str) -> bool:
        """Queue a trigger of ``audit``; False (and counted) when the queue is full."""
        if self._worker.offer(audit):
            return True
        self.triggers.labels("queue_full").inc()
        log.warning("Watcher trigger of audit %s dropped: the queue is full", audit)
        return False

    def _trigger(self, audit: str) -> None:
        started = time.monotonic()
        try:
            outcome = self._client.trigger(audit)
        except Exception:  # counted as failed; QueueWorker goes on with the next trigger
            log.exception("Watcher trigger of audit %s failed unexpectedly", audit)
            outcome = TriggerOutcome(False, None, 1, "internal error")
        self.duration.observe(time.monotonic() - started)
        self.triggers.labels("sent" if outcome.ok else "failed").inc()
        if outcome.ok:
            log.info("triggered Watcher audit %s", audit)
        else:
            log.error(
                "Watcher audit %s not triggered after %d attempt(s): %s",
                audit,
                outcome.attempts,
                outcome.detail,
            )

    def wait_idle(self, timeout: float) -> bool:
        return self._worker.wait_idle(timeout)

    def close(self, timeout: float = 1.0) -> None:
        self._worker.close(timeout)


def _watcher_message(response: Any) -> str:
    """Watcher's error text ({"error_message": "{\\"faultstring\\": ...}"}), on one line."""
    try:
        body = response.json()
    except ValueError:
        return _line(response.text or response.reason or "")
    message = body.get("error_message", body) if isinstance(body, dict) else body
    if isinstance(message, str):
        try:
            inner = json.loads(message)
            message = inner.get("faultstring", message) if isinstance(inner, dict) else message
        except ValueError:
            pass
    return _line(message)


def _line(value: object) -> str:
    return " ".join(str(value).split())[:300]
