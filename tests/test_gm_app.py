"""Neat's PUT / protocol as the global manager serves it over HTTP, with the exporter's own
client, plus /metrics, /healthz, the landing page and the subcommand's configuration."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
import requests
from gm_helpers import RecordingExecutor, fleet, host, service, vm
from prometheus_client import CollectorRegistry

from neat_exporter.actions import Credentials, GlobalManagerClient
from neat_exporter.errors import ConfigError
from neat_exporter.globalmanager.app import GlobalManagerApp
from neat_exporter.globalmanager.config import Policy, effective_settings, load_settings
from neat_exporter.vocabulary import Reason
from neat_exporter.web import serve_wsgi

USER, PASSWORD = "admin", "adminpassword"
ROOT = Path(__file__).resolve().parent.parent


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


@pytest.fixture
def gm():
    registry = CollectorRegistry()
    executor = RecordingExecutor()
    view = fleet(
        host("h1", vms=[vm("v1", 1000, name="web-<1>")]),
        host("h2", vms=[vm("v2", 100)]),
    )
    svc = service(view, executor, registry=registry, policy=Policy(wait_for_migrations=True))
    app = GlobalManagerApp(svc, Credentials.from_plain(USER, PASSWORD), registry)
    server = serve_wsgi(app, "127.0.0.1:0")
    url = f"http://127.0.0.1:{server.address[1]}/"
    yield url, svc, registry
    server.shutdown()


def form(**overrides) -> dict[str, str]:
    values = {
        "username": sha1(USER),
        "password": sha1(PASSWORD),
        "time": repr(time.time()),
        "host": "h1",
        "reason": "1",
        "vm_uuids": "v1",
    }
    values.update(overrides)
    return {key: value for key, value in values.items() if value is not None}


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"username": None}, 401),
        ({"password": None, "username": "wrong"}, 401),  # 401 before 403
        ({"username": sha1("other")}, 403),
        ({"password": sha1(USER), "reason": None}, 403),  # 403 before 400
        ({"reason": None}, 400),
        ({"host": None}, 400),
        ({"time": None}, 400),
        ({"reason": "2"}, 400),
        ({"reason": "x"}, 400),  # Neat: 500
        ({"vm_uuids": None}, 400),  # reason 1 needs vm_uuids
        ({"host": "h\x001"}, 400),
        ({"time": "0", "reason": "2"}, 400),  # 400 before 412
        ({"time": repr(time.time() - 60)}, 412),
        ({"reason": "0", "vm_uuids": None}, 200),
        ({}, 200),
    ],
)
def test_neat_validation_order(gm, fields, status):
    url, _, registry = gm
    response = requests.put(url, data=form(**fields), timeout=5)
    assert response.status_code == status, response.text
    label = (
        "invalid"
        if status in (400, 401, 403)
        else ("underload", "overload")[int(fields.get("reason", "1"))]
    )
    sample = registry.get_sample_value(
        "neat_gm_requests_total", {"reason": label, "code": str(status)}
    )
    assert sample == 1


def test_other_methods_are_405_and_get_is_the_landing_page(gm):
    url, _, _ = gm
    for method in ("POST", "DELETE", "PATCH"):
        response = requests.request(method, url, timeout=5)
        assert response.status_code == 405
        assert response.headers["Allow"] == "PUT"
    requests.put(url, data=form(), timeout=5)
    page = requests.get(url, timeout=5)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
    assert "h1" in page.text and "v1 h1 → h2: migrated" in page.text
    assert requests.get(url + "healthz", timeout=5).text.strip() == "ok"
    status = requests.get(url + "api/status", timeout=5).json()
    assert status["plans"][0]["migrations"][0]["outcome"] == "migrated"
    assert {h["host"] for h in status["hosts"]} == {"h1", "h2"}
    metrics = requests.get(url + "metrics", timeout=5).text
    assert 'neat_gm_migrations_total{outcome="migrated"} 1.0' in metrics


def test_the_exporters_client_is_answered_and_moves_a_vm(gm):
    url, svc, _ = gm
    client = GlobalManagerClient(url, Credentials.from_plain(USER, PASSWORD), retries=0)
    outcome = client.send("h1", Reason.OVERLOAD, ["v1"])
    assert outcome.ok, outcome.detail
    assert [m.vm_uuid for m in svc.executor.migrations] == ["v1"]
    wrong = GlobalManagerClient(url, Credentials.from_plain(USER, "nope"), retries=0)
    assert wrong.send("h1", Reason.OVERLOAD, ["v1"]).status == 403


def test_settings_from_flags_and_environment_never_show_secrets(tmp_path):
    environ = {"NEAT_GLOBAL_MANAGER_USERNAME": USER, "NEAT_GLOBAL_MANAGER_PASSWORD": PASSWORD}
    settings = load_settings(None, {"executor.type": "libvirt"}, environ)
    assert settings["executor.type"] == "libvirt" and settings["listen"] == ":60080"
    printed = str(effective_settings(settings))
    assert PASSWORD not in printed and "<redacted>" in printed
    with pytest.raises(ConfigError, match="username_file"):
        load_settings(None, {}, {})
    (tmp_path / "gm.yml").write_text("policy: {cooldown: -1}\n")
    with pytest.raises(ConfigError, match=r"policy\.cooldown"):
        load_settings(tmp_path / "gm.yml", {}, environ)
    (tmp_path / "gm.yml").write_text("placement: {params: {cpu_threshold: x}}\n")
    with pytest.raises(ConfigError, match=r"placement\.params\.cpu_threshold"):
        load_settings(tmp_path / "gm.yml", {}, environ)
    with pytest.raises(ConfigError, match="uri_template"):
        load_settings(None, {"executor.libvirt.uri_template": "qemu:///system"}, environ)
    with pytest.raises(ConfigError, match="uri_template: not a valid template"):
        load_settings(None, {"executor.libvirt.uri_template": "qemu://{host}{host.x}/"}, environ)


def test_check_config_prints_the_effective_configuration(tmp_path, capsys, monkeypatch):
    from neat_exporter.cli import main

    (tmp_path / "password").write_text(PASSWORD + "\n")
    (tmp_path / "gm.yml").write_text(f"password_file: {tmp_path / 'password'}\n")
    monkeypatch.setenv("NEAT_GLOBAL_MANAGER_USERNAME", USER)
    monkeypatch.delenv("NEAT_GLOBAL_MANAGER_PASSWORD", raising=False)
    config = ["global-manager", "--config", str(tmp_path / "gm.yml"), "--check-config"]
    assert main([*config, "--executor", "libvirt"]) == 0
    out = capsys.readouterr().out
    assert "type: libvirt" in out and PASSWORD not in out
    assert main(["global-manager", "--check-config", "--listen", "nowhere:x"]) == 2
    err = capsys.readouterr().err
    assert "error: listen" in err and "Traceback" not in err
