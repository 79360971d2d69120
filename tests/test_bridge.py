"""The Alertmanager bridge over real HTTP, in front of the global manager stand-in."""

from __future__ import annotations

import base64
import collections
import http.client
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import requests
import yaml
from global_manager import PASSWORD, USER, GlobalManager, client_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from services import free_port, wait_until

from neat_exporter.actions import MigrationRequester
from neat_exporter.bridge import Bridge
from neat_exporter.config import BridgeConfig
from neat_exporter.errors import ConfigError
from neat_exporter.web import Limits, serve_wsgi

TOKEN = "t0ken-for-alertmanager"
VM_A, VM_B = "a0000000-0000-4000-8000-00000000000a", "b0000000-0000-4000-8000-00000000000b"
VM_C, VM_D = "c0000000-0000-4000-8000-00000000000c", "d0000000-0000-4000-8000-00000000000d"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def bridge_config(**kwargs) -> BridgeConfig:
    values = dict(
        listen="127.0.0.1:0",
        bearer_token_file=None,
        basic_auth_username=None,
        basic_auth_password_file=None,
        queue_size=10,
        dedup_ttl=3600,
        max_payload_bytes=65536,
        bearer_token=TOKEN,
        basic_auth_password=None,
    )
    values.update(kwargs)
    return BridgeConfig(**values)


class RunningBridge:
    def __init__(self, gm_url: str, mode: str = "on", cooldown: float = 0, clock=None, **kwargs):
        self.registry = CollectorRegistry()
        config = bridge_config(**kwargs)
        extra = {"clock": clock} if clock else {}
        self.requester = MigrationRequester(
            client_config(gm_url, mode, cooldown=cooldown),
            self.registry,
            queue_size=config.queue_size,
            metric_prefix="neat_bridge_migration_request",
            **extra,
        )
        self.app = Bridge(config, self.requester, self.registry, **extra)
        # As `neat-exporter bridge` serves it: the HTTP layer's body limit is the bridge's.
        limits = Limits(max_body_bytes=config.max_payload_bytes)
        self.server = serve_wsgi(self.app, config.listen, limits=limits)
        self.url = f"http://127.0.0.1:{self.server.address[1]}"

    def post(self, payload, headers=AUTH, **kwargs) -> requests.Response:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        kwargs.setdefault("timeout", 5)
        return requests.post(f"{self.url}/webhook", data=data, headers=headers, **kwargs)

    def metric(self, name: str, **labels) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def stop(self) -> None:
        self.server.shutdown()
        self.requester.close()


@pytest.fixture
def gm():
    with GlobalManager() as manager:
        yield manager


@pytest.fixture
def bridge(gm):
    running = RunningBridge(gm.url)
    yield running
    running.stop()


def alert(status="firing", fingerprint=None, starts_at="2026-11-24T10:00:00Z", **labels) -> dict:
    labels.setdefault("alertname", "NeatVMSelectedForMigration")
    return {
        "status": status,
        "labels": labels,
        "annotations": {"summary": "x"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint or f"fp-{abs(hash(tuple(sorted(labels.items())))):x}",
    }


def webhook(*alerts: dict) -> dict:
    return {
        "receiver": "neat",
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "alerts": list(alerts),
        "groupLabels": {"alertname": "NeatVMSelectedForMigration"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}:{alertname="NeatVMSelectedForMigration"}',
        "truncatedAlerts": 0,
    }


def overload(host: str, vm: str, **kwargs) -> dict:
    return alert(host=host, vm_uuid=vm, neat_reason="overload", **kwargs)


def underload(host: str, **kwargs) -> dict:
    return alert(alertname="NeatHostUnderloaded", host=host, neat_reason="underload", **kwargs)


def requests_seen(gm: GlobalManager) -> list[tuple]:
    return sorted((r.host, r.reason, r.vm_uuids) for r in gm.accepted)


# -- authentication ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer wrong",
        f"Bearer {TOKEN}x",
        f"Token {TOKEN}",
        "Basic " + base64.b64encode(b"alertmanager:pw").decode(),
        "Basic !!notbase64",
    ],
)
def test_anything_but_the_token_is_401(bridge, gm, header):
    headers = {"Authorization": header} if header else {}
    response = bridge.post(webhook(overload("h1", VM_A)), headers=headers)
    assert response.status_code == 401
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert gm.statuses == []


def test_basic_auth_and_token_both_work(gm):
    running = RunningBridge(gm.url, basic_auth_username="am", basic_auth_password="pw")
    try:
        assert running.post(webhook(overload("h1", VM_A)), auth=("am", "pw")).status_code == 200
        assert running.post(webhook(overload("h2", VM_B))).status_code == 200
        assert running.post(webhook(overload("h3", VM_C)), auth=("am", "no")).status_code == 401
        assert running.requester.wait_idle(5)
    finally:
        running.stop()
    assert requests_seen(gm) == [("h1", 1, [VM_A]), ("h2", 1, [VM_B])]


def test_mode_on_without_authentication_is_refused(gm):
    with pytest.raises(ConfigError) as error:
        RunningBridge(gm.url, bearer_token=None)
    assert error.value.key == "bridge.bearer_token_file"


# -- what gets sent ------------------------------------------------------------------------------


def test_firing_alerts_are_grouped_by_host_and_reason(bridge, gm):
    payload = webhook(
        overload("h1", VM_A),
        overload("h1", VM_B),
        overload("h2", VM_C),
        underload("h3"),
        overload("h4", VM_D, status="resolved"),
        alert(alertname="NeatSourceDown", host="h5"),  # informational: no neat_reason
        alert(host="h6", neat_reason="overload"),  # overload without a VM: nothing to move
    )
    response = bridge.post(payload)
    assert response.status_code == 200, response.text
    assert response.json()["ignored"] == 2
    assert bridge.requester.wait_idle(5)
    assert requests_seen(gm) == [
        ("h1", 1, [VM_A, VM_B]),
        ("h2", 1, [VM_C]),
        ("h3", 0, None),
    ]
    assert bridge.metric("neat_bridge_alerts_total", status="firing") == 6
    assert bridge.metric("neat_bridge_alerts_total", status="resolved") == 1
    assert bridge.metric("neat_bridge_alerts_ignored_total") == 2
    assert (
        bridge.metric("neat_bridge_migration_requests_total", reason="overload", result="sent") == 2
    )
    assert bridge.metric("neat_bridge_webhooks_total", code="200") == 1


def test_resolved_alerts_send_nothing(bridge, gm):
    response = bridge.post(
        webhook(overload("h1", VM_A, status="resolved"), underload("h2", status="resolved"))
    )
    assert response.status_code == 200
    assert response.json()["requests"] == []
    assert bridge.requester.wait_idle(5)
    assert gm.statuses == []


def test_resends_are_deduplicated_until_the_ttl_expires(gm):
    now = [100.0]
    running = RunningBridge(gm.url, clock=lambda: now[0], dedup_ttl=60)
    try:
        payload = webhook(overload("h1", VM_A))
        for _ in range(3):
            assert running.post(payload).status_code == 200
        assert running.requester.wait_idle(5)
        assert len(gm.accepted) == 1
        assert running.metric("neat_bridge_alerts_deduplicated_total") == 2
        # The same alert firing again later (a new startsAt) is a new decision.
        refired = webhook(overload("h1", VM_A, starts_at="2026-11-24T11:00:00Z"))
        assert running.post(refired).json()["requests"][0]["result"] == "queued"
        now[0] += 61
        assert running.post(payload).json()["requests"][0]["result"] == "queued"
        assert running.requester.wait_idle(5)
    finally:
        running.stop()
    assert len(gm.accepted) == 3


def test_cooldown_suppressed_alerts_are_acted_on_when_resent_later(gm):
    now = [100.0]
    running = RunningBridge(gm.url, cooldown=600, clock=lambda: now[0])
    try:
        assert running.post(webhook(overload("h1", VM_A))).status_code == 200
        second = webhook(overload("h1", VM_A), overload("h1", VM_B))
        assert running.post(second).json()["requests"][0]["result"] == "suppressed"
        now[0] += 601
        assert running.post(second).json()["requests"][0]["result"] == "queued"
        assert running.requester.wait_idle(5)
    finally:
        running.stop()
    assert [r.vm_uuids for r in gm.accepted] == [[VM_A], [VM_B]]


def test_dry_run_sends_nothing(gm):
    running = RunningBridge(gm.url, mode="dry_run")
    try:
        response = running.post(webhook(overload("h1", VM_A), underload("h2")))
        assert [r["result"] for r in response.json()["requests"]] == ["dry_run", "dry_run"]
        metric = running.metric(
            "neat_bridge_migration_requests_total", reason="underload", result="dry_run"
        )
        assert metric == 1
    finally:
        running.stop()
    assert gm.statuses == []


def test_full_queue_answers_503_and_the_retry_is_served(gm):
    gm.delay = 0.5
    running = RunningBridge(gm.url, queue_size=1)
    try:
        codes = [running.post(webhook(overload(f"h{i}", VM_A))).status_code for i in range(4)]
        assert 503 in codes and codes[0] == 200
        assert running.requester.wait_idle(10)
        busy = [i for i, code in enumerate(codes) if code == 503]
        for i in busy:  # what Alertmanager does after a 503
            assert running.post(webhook(overload(f"h{i}", VM_A))).status_code == 200
            assert running.requester.wait_idle(10)
        assert running.metric("neat_bridge_webhooks_total", code="503") == len(busy)
    finally:
        running.stop()
    assert sorted(r.host for r in gm.accepted) == [f"h{i}" for i in range(4)]


def test_webhook_answers_at_once_while_the_global_manager_is_slow(gm):
    gm.delay = 2.0
    running = RunningBridge(gm.url)
    try:
        started = time.monotonic()
        for i in range(3):
            assert running.post(webhook(overload(f"h{i}", VM_A))).status_code == 200
        assert time.monotonic() - started < 1.0
    finally:
        running.stop()


def test_metrics_and_health_endpoints(bridge):
    bridge.post(webhook(overload("h1", VM_A)))
    text = requests.get(f"{bridge.url}/metrics", timeout=5).text
    for name in (
        "neat_bridge_webhooks_total",
        "neat_bridge_alerts_total",
        "neat_bridge_migration_requests_total",
        "neat_bridge_migration_request_duration_seconds_bucket",
        "neat_bridge_queue_length",
    ):
        assert name in text
    assert requests.get(f"{bridge.url}/healthz", timeout=5).status_code == 200
    assert requests.get(f"{bridge.url}/webhook", timeout=5).status_code == 405
    assert requests.get(f"{bridge.url}/nope", timeout=5).status_code == 404


# -- bad input ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lenient_bridge():
    """One bridge for the payload checks (which never reach the global manager)."""
    with GlobalManager() as gm:
        running = RunningBridge(gm.url, max_payload_bytes=1_000_000)
        yield running
        running.stop()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
        (b"[1, 2]", "payload must be a JSON object, got an array"),
        (b"[" * 100_000 + b"]" * 100_000, "malformed JSON"),
        (json.dumps({"alerts": []}).encode(), "version: missing"),
        (json.dumps({"version": "3", "alerts": []}).encode(), 'version: expected "4"'),
        (json.dumps({"version": "4"}).encode(), "alerts: missing"),
        (json.dumps({"version": "4", "alerts": {}}).encode(), "alerts: must be an array"),
        (json.dumps({"version": "4", "alerts": [1]}).encode(), "alerts[0]: must be an object"),
        (
            json.dumps({"version": "4", "alerts": [{"labels": {}}]}).encode(),
            "alerts[0].status: missing",
        ),
        (
            json.dumps({"version": "4", "alerts": [{"status": "odd", "labels": {}}]}).encode(),
            "alerts[0].status: expected",
        ),
        (
            json.dumps({"version": "4", "alerts": [{"status": "firing"}]}).encode(),
            "alerts[0].labels: missing",
        ),
        (
            json.dumps(
                {"version": "4", "alerts": [{"status": "firing", "labels": {"host": 1}}]}
            ).encode(),
            "alerts[0].labels.'host': must be a string",
        ),
        (
            json.dumps(
                {"version": "4", "alerts": [{"status": "firing", "labels": {}, "fingerprint": 5}]}
            ).encode(),
            "alerts[0].fingerprint: must be a string",
        ),
    ],
)
def test_malformed_payloads_are_400_with_the_reason(lenient_bridge, payload, reason):
    response = lenient_bridge.post(payload)
    assert response.status_code == 400
    assert reason in response.json()["error"]


def test_payload_size_is_limited(gm):
    running = RunningBridge(gm.url, max_payload_bytes=1000)
    try:
        big = webhook(*[overload("h1", f"00000000-0000-4000-8000-{i:012d}") for i in range(50)])
        assert running.post(big).status_code == 413
        connection = http.client.HTTPConnection("127.0.0.1", running.server.address[1], timeout=5)
        connection.putrequest("POST", "/webhook")  # no Content-Length
        connection.putheader("Authorization", AUTH["Authorization"])
        connection.endheaders()
        assert connection.getresponse().status == 411
        connection.close()
    finally:
        running.stop()
    assert gm.statuses == []


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
label_sets = st.dictionaries(
    st.sampled_from(["host", "vm_uuid", "neat_reason", "alertname", "x"]),
    st.sampled_from(["h1", VM_A, "overload", "underload", "", "weird,value"]) | json_values,
    max_size=5,
)
alerts = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["firing", "resolved", "other"]) | json_values,
        "labels": label_sets | json_values,
        "fingerprint": st.text(max_size=8) | json_values,
        "startsAt": st.text(max_size=8) | json_values,
    },
)
payloads = st.fixed_dictionaries(
    {},
    optional={
        "version": st.sampled_from(["4", "3", 4]) | json_values,
        "alerts": st.lists(alerts, max_size=5) | json_values,
        "groupKey": json_values,
    },
)
bodies = (
    payloads.map(lambda p: json.dumps(p).encode())
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=200)
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies)
def test_fuzzed_payloads_never_cause_a_server_error(bridge, body):
    response = bridge.post(body)
    assert response.status_code in (200, 400, 503), response.text
    assert response.headers["Content-Type"] == "application/json"
    if response.status_code == 400:
        assert response.json()["error"]


def test_bridge_survives_the_fuzzing_and_still_works(bridge, gm):
    for body in (b"", b"null", b"{}", b'{"version": "4", "alerts": [null]}'):
        assert bridge.post(body).status_code == 400
    assert bridge.post(webhook(overload("h1", VM_A))).status_code == 200
    assert bridge.requester.wait_idle(5)
    assert requests_seen(gm) == [("h1", 1, [VM_A])]


# -- the command ----------------------------------------------------------------------------------


def test_bridge_command_serves_until_sigterm(gm, tmp_path):
    port = free_port()
    (tmp_path / "token").write_text(TOKEN + "\n")
    config = {
        "log_level": "info",
        "global_manager": {"mode": "on", "url": gm.url, "timeout": 2, "retries": 0},
        "bridge": {"listen": f"127.0.0.1:{port}", "bearer_token_file": str(tmp_path / "token")},
    }
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config))
    env = dict(os.environ, NEAT_GLOBAL_MANAGER_USERNAME=USER, NEAT_GLOBAL_MANAGER_PASSWORD=PASSWORD)
    command = [
        sys.executable,
        "-m",
        "neat_exporter",
        "bridge",
        "--config",
        str(tmp_path / "config.yml"),
    ]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(f"{url}/healthz", timeout=1).ok, 20, "bridge up")
        response = requests.post(
            f"{url}/webhook", json=webhook(overload("h1", VM_A)), headers=AUTH, timeout=5
        )
        assert response.status_code == 200
        wait_until(lambda: gm.accepted, 10, "the global manager request")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert "listening on" in stderr
    for secret in (TOKEN, PASSWORD):
        assert secret not in stderr
    assert gm.accepted[0].vm_uuids == [VM_A]


def test_bridge_command_reports_a_bad_config(tmp_path):
    (tmp_path / "config.yml").write_text("global_manager: {mode: on}\n")
    result = subprocess.run(
        [sys.executable, "-m", "neat_exporter", "bridge", "--config", str(tmp_path / "config.yml")],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("NEAT_")},
    )
    assert result.returncode == 2
    assert "global_manager" in result.stderr and "Traceback" not in result.stderr


# -- hostile labels -------------------------------------------------------------------------------

VM_X = "e0000000-0000-4000-8000-00000000000e"


def test_a_vm_uuid_with_commas_adds_no_vms_and_is_counted(bridge, gm):
    """Neat's vm_uuids field is comma-separated: "a,b,c" must not become three VMs."""
    payload = webhook(
        overload("h1", f"{VM_A},{VM_B},{VM_X}"),
        overload("h1", VM_A, fingerprint="fp-good"),
        overload("h2", "not-a-uuid"),
    )
    response = bridge.post(payload)
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == 2
    assert bridge.requester.wait_idle(5)
    assert requests_seen(gm) == [("h1", 1, [VM_A])]
    assert bridge.metric("neat_bridge_alerts_rejected_total", label="vm_uuid") == 2
    assert bridge.metric("neat_bridge_alerts_rejected_total", label="host") == 0


def test_control_characters_in_host_are_rejected_and_never_logged_raw(bridge, gm, caplog):
    forged = "h1\r\n2026-11-24 INFO forged line"
    caplog.set_level("DEBUG")
    response = bridge.post(webhook(overload(forged, VM_A), underload("h2\x1b[31m")))
    assert response.status_code == 200, response.text
    assert response.json()["rejected"] == 2
    assert bridge.metric("neat_bridge_alerts_rejected_total", label="host") == 2
    assert bridge.requester.wait_idle(5)
    assert gm.accepted == []
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert (
        "\r" not in logged and "\x1b" not in logged and "\nforged" not in logged.replace("\\n", "")
    )


def test_a_lone_surrogate_in_a_label_is_a_clear_400(bridge, gm):
    body = json.dumps(webhook(underload("h1"))).replace('"h1"', '"h\\ud800"').encode()
    response = bridge.post(body)
    assert response.status_code == 400
    assert "labels" in response.json()["error"] and "Unicode" in response.json()["error"]
    assert gm.statuses == []


def test_an_overlong_label_is_a_400_and_is_not_forwarded(gm):
    running = RunningBridge(gm.url, max_payload_bytes=1_000_000)
    try:
        response = running.post(webhook(underload("h" * 100_000)))
        assert response.status_code == 400
        assert "longer than" in response.json()["error"]
        assert len(response.text) < 1000  # the label is not echoed back
    finally:
        running.stop()
    assert gm.statuses == []


def test_a_payload_naming_many_hosts_logs_a_line_not_one_per_host(gm, caplog):
    gm.delay = 0.5  # the queue stays full while the webhook is handled
    running = RunningBridge(gm.url, queue_size=5, cooldown=0, max_payload_bytes=10_000_000)
    caplog.set_level("INFO")
    try:
        payload = webhook(*[underload(f"host-{i}", fingerprint=f"f{i}") for i in range(10_000)])
        response = running.post(payload, timeout=60)
        assert response.status_code == 503
        results = collections.Counter(r["result"] for r in response.json()["requests"])
        assert results["queue_full"] > 9_000
        full = running.metric(
            "neat_bridge_migration_requests_total", reason="underload", result="queue_full"
        )
        failed = running.metric(
            "neat_bridge_migration_requests_total", reason="underload", result="failed"
        )
        assert full == results["queue_full"] and failed == 0
    finally:
        gm.delay = 0
        running.stop()
    # One line for the webhook, one when the queue was found full (again if it had room since).
    warnings = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert len(warnings) <= 2 + results["queued"], [r.getMessage() for r in warnings[:5]]
