"""`neat-exporter bridge` starting OpenStack Watcher audits, against the real Watcher API and
decision engine of tests/openstack_cloud.py (Keystone tokens, EVENT audits)."""

from __future__ import annotations

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import requests
import yaml
from services import EXPORTER, Process, free_port, sample_value, scrape, wait_until
from test_bridge import underload, webhook

from neat_exporter.config import config_from_mapping
from neat_exporter.watcher import WatcherClient

pytestmark = pytest.mark.openstack

TOKEN = "watcher-bridge-token"
VERSION = {"OpenStack-API-Version": "infra-optim 1.4"}


@pytest.fixture
def session(openstack_cloud):
    return openstack_cloud.session()


def event_audit(cloud, session, name: str) -> str:
    """A new EVENT audit of Watcher's dummy goal; its UUID."""
    url = cloud.watcher_url
    template = session.post(
        f"{url}/v1/audit_templates", json={"name": name, "goal": "dummy"}, headers=VERSION
    ).json()
    audit = session.post(
        f"{url}/v1/audits",
        json={"audit_template_uuid": template["uuid"], "audit_type": "EVENT", "name": name},
        headers=VERSION,
    ).json()
    assert audit["state"] == "PENDING", audit
    return audit["uuid"]


def audit_state(cloud, session, uuid: str) -> str:
    return session.get(f"{cloud.watcher_url}/v1/audits/{uuid}", headers=VERSION).json()["state"]


def watcher_config(**watcher) -> object:
    return config_from_mapping(
        {"watcher": {"mode": "on", "retries": 2, "backoff": 0.05, **watcher}}
    )


def test_firing_alert_triggers_a_watcher_event_audit(openstack_cloud, session, tmp_path):
    """The whole path: Alertmanager's webhook → bridge → Keystone token → Watcher's webhook →
    the decision engine runs the audit, which Watcher's API then shows succeeded."""
    audit = event_audit(openstack_cloud, session, "ost-underload")
    other = event_audit(openstack_cloud, session, "ost-untouched")
    port = free_port()
    config = {
        "bridge": {"listen": f"127.0.0.1:{port}"},
        "watcher": {
            "mode": "on",
            "audits": [
                {"match": "NeatHostUnderloaded", "audit": audit},
                {"match": "overload", "audit": other},
            ],
        },
    }
    (tmp_path / "bridge.yml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    bridge = Process(
        [*EXPORTER, "bridge", "--config", str(tmp_path / "bridge.yml")],
        tmp_path / "bridge.log",
        env={**env, **openstack_cloud.os_environ(), "NEAT_BRIDGE_TOKEN": TOKEN},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/healthz", timeout=1).ok, 30, "the bridge up")
        response = requests.post(
            f"{url}/webhook",
            json=webhook(underload("compute1")),
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        )
        assert response.status_code == 200, response.text
        assert response.json()["watcher_audits"] == [{"audit": audit, "result": "queued"}]
        wait_until(
            lambda: audit_state(openstack_cloud, session, audit) == "SUCCEEDED",
            120,
            "the triggered audit to succeed",
        )
        samples = scrape(url)
        assert sample_value(samples, "neat_bridge_watcher_triggers_total", result="sent") == 1
        assert sample_value(samples, "neat_bridge_watcher_triggers_total", result="failed") == 0
        assert audit_state(openstack_cloud, session, other) == "PENDING"
    finally:
        bridge.stop()
    log = bridge.log()
    assert f"triggered Watcher audit {audit}" in log
    assert openstack_cloud.password not in log


def test_watcher_refusals_are_clear_and_not_retried(openstack_cloud, session):
    client = WatcherClient(
        watcher_config(audits=[{"match": "x", "audit": "y"}]).watcher,
        session=openstack_cloud.session(),
    )
    unknown = client.trigger("9f4bd0f6-7c1c-4e5b-9b3a-2ad9b1c0c0de")
    assert (unknown.ok, unknown.status, unknown.attempts) == (False, 404, 1)
    assert "could not be found" in unknown.detail
    oneshot = session.post(
        f"{openstack_cloud.watcher_url}/v1/audits",
        json={"goal": "dummy", "audit_type": "ONESHOT"},
        headers=VERSION,
    )
    refused = client.trigger(oneshot.json()["uuid"])
    assert (refused.ok, refused.status) == (False, 400), refused
    assert "ONESHOT" in refused.detail


def test_wrong_credentials_are_a_clear_failure(openstack_cloud, tmp_path):
    clouds = tmp_path / "clouds.yaml"
    auth = openstack_cloud.auth(password="wrong-secret")
    clouds.write_text(yaml.safe_dump({"clouds": {"ost": {"auth": auth}}}))
    config = watcher_config(
        cloud="ost", clouds_yaml=str(clouds), audits=[{"match": "x", "audit": "y"}]
    ).watcher
    outcome = WatcherClient(config).trigger("any")
    assert not outcome.ok and outcome.attempts == 1
    assert outcome.detail.startswith("Keystone refused the credentials")
    assert "wrong-secret" not in outcome.detail


class _FlakyWatcher(BaseHTTPRequestHandler):
    """Answers 503 to the first two webhook calls, then 202 (a Watcher API being restarted)."""

    calls: ClassVar[list[str]] = []

    def do_POST(self):
        self.calls.append(self.path)
        self.send_response(503 if len(self.calls) <= 2 else 202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_5xx_answers_are_retried(openstack_cloud):
    """Retries with a real Keystone token against a stand-in Watcher answering 503 twice."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyWatcher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        config = watcher_config(url=url, audits=[{"match": "x", "audit": "y"}]).watcher
        outcome = WatcherClient(config, session=openstack_cloud.session()).trigger("audit-1")
    finally:
        server.shutdown()
    assert (outcome.ok, outcome.status, outcome.attempts) == (True, 202, 3)
    assert _FlakyWatcher.calls == ["/v1/webhooks/audit-1"] * 3
