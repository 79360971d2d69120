"""The Nova executor against a real control plane (tests/openstack_cloud.py): live migrations
through Nova's API, compute services disabled and enabled, and each way it can fail."""

from __future__ import annotations

import logging

import pytest
import yaml
from openstack_cloud import FLAVOR_RAM_MB, REGION
from prometheus_client import CollectorRegistry

from neat_exporter.globalmanager.executors.base import ExecutorError, Migration, MigrationOutcome
from neat_exporter.globalmanager.executors.nova import NovaExecutor

pytestmark = pytest.mark.openstack


@pytest.fixture
def cloud(openstack_cloud):
    return openstack_cloud


@pytest.fixture
def conn(cloud):
    connection = cloud.connection()
    yield connection
    connection.close()


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def clouds_yaml(cloud, tmp_path):
    """A clouds.yaml naming the test cloud ``ost``, as an operator would write it."""
    path = tmp_path / "clouds.yaml"
    auth = cloud.auth()
    path.write_text(yaml.safe_dump({"clouds": {"ost": {"auth": auth, "region_name": REGION}}}))
    return str(path)


@pytest.fixture
def executor(clouds_yaml, registry):
    nova = NovaExecutor.from_mapping(
        {"cloud": "ost", "clouds_yaml": clouds_yaml, "poll_interval": 0.3, "abort_grace": 30},
        registry=registry,
    )
    yield nova
    nova.close()


@pytest.fixture
def servers(conn):
    """Servers a test boots, deleted afterwards."""
    made = []
    yield made
    for server in made:
        conn.compute.delete_server(server, ignore_missing=True)


def requests_counted(registry, operation: str, result: str) -> float:
    value = registry.get_sample_value(
        "neat_gm_nova_requests_total", {"operation": operation, "result": result}
    )
    return value or 0.0


def test_live_migrates_compute1_to_compute2(cloud, conn, executor, servers, registry):
    server = cloud.boot(conn, "migrate", "compute1")
    servers.append(server)
    assert executor.vms_on("compute1")[server.id] == FLAVOR_RAM_MB
    result = executor.migrate(Migration(server.id, "compute1", "compute2"), timeout=90)
    assert result.outcome is MigrationOutcome.MIGRATED, result
    assert result.location == "compute2" and result.error == ""
    now = conn.compute.get_server(server.id)
    assert (now.compute_host, now.status) == ("compute2", "ACTIVE")
    assert server.id in executor.vms_on("compute2")
    assert server.id not in executor.vms_on("compute1")
    assert requests_counted(registry, "live_migrate", "ok") == 1


def test_underloaded_host_is_emptied_disabled_and_enabled_again(cloud, conn, executor, servers):
    """What the global manager does for an underloaded host: every server Nova has there
    moves, then its compute service is disabled (Nova's scheduler skips it) until woken."""
    servers.extend(cloud.boot(conn, f"drain{i}", "compute2") for i in range(2))
    try:
        leaving = executor.vms_on("compute2")
        assert {s.id for s in servers} <= set(leaving)
        for uuid in leaving:
            result = executor.migrate(Migration(uuid, "compute2", "compute1"), timeout=90)
            assert result.outcome is MigrationOutcome.MIGRATED, result
        assert executor.vms_on("compute2") == {}
        executor.host_switching_off("compute2", "underloaded, switched off by Neat")
        service = next(conn.compute.services(binary="nova-compute", host="compute2"))
        assert service.status == "disabled"
        assert service.disabled_reason == "neat: underloaded, switched off by Neat"
        executor.host_woken("compute2", timeout=60)
        service = next(conn.compute.services(binary="nova-compute", host="compute2"))
        assert service.status == "enabled"
    finally:
        conn.compute.enable_service(None, host="compute2", binary="nova-compute")


def test_nova_refusing_a_migration_is_a_failed_result(cloud, conn, executor, servers, registry):
    """A destination Nova does not know, or one whose compute service is disabled (its scheduler
    finds no valid host), is refused: a failed result naming Nova's reason, nothing moved."""
    server = cloud.boot(conn, "refused", "compute1")
    servers.append(server)
    unknown = executor.migrate(Migration(server.id, "compute1", "compute9"), timeout=60)
    assert unknown.outcome is MigrationOutcome.FAILED
    assert "Nova refused the live migration (HTTP 400" in unknown.error
    assert "compute9" in unknown.error and unknown.location == "compute1"
    assert requests_counted(registry, "live_migrate", "error") == 1
    executor.host_switching_off("compute2", "test")
    try:
        result = executor.migrate(Migration(server.id, "compute1", "compute2"), timeout=90)
    finally:
        executor.host_woken("compute2", timeout=60)
    assert result.outcome is MigrationOutcome.FAILED, result
    assert "No valid host" in result.error, result.error
    assert result.location == "compute1"
    assert requests_counted(registry, "live_migrate", "error") == 2
    assert conn.compute.get_server(server.id).compute_host == "compute1"


def test_a_migration_past_its_timeout_is_aborted(cloud, conn, executor, servers, caplog):
    """Nova's fake driver takes about 5 s per live migration: a 1 s timeout aborts it."""
    server = cloud.boot(conn, "slow", "compute1")
    servers.append(server)
    with caplog.at_level(logging.ERROR, logger="neat_exporter.globalmanager.executors.nova"):
        result = executor.migrate(Migration(server.id, "compute1", "compute2"), timeout=1)
    assert result.outcome is MigrationOutcome.TIMEOUT, result
    assert result.error.startswith("not finished within")
    now = conn.compute.get_server(server.id)
    assert now.status == "ACTIVE" and now.task_state is None
    assert result.location == now.compute_host  # where Nova has it, said in the result
    assert f"server ACTIVE on {now.compute_host}" in result.error
    assert server.id in caplog.text and "not finished within" in caplog.text


def test_wrong_credentials_are_an_executor_error(cloud, monkeypatch, registry):
    """From the OS_* variables, as the global manager's environment would give them; the
    password appears nowhere in the error."""
    for name in [n for n in __import__("os").environ if n.startswith("OS_")]:
        monkeypatch.delenv(name)
    for name, value in cloud.os_environ(password="not-the-password").items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ExecutorError, match="Keystone refused the credentials") as raised:
        NovaExecutor(registry=registry)
    assert "not-the-password" not in str(raised.value)
    assert requests_counted(registry, "authenticate", "error") == 1


def test_settings_are_checked(clouds_yaml):
    with pytest.raises(ExecutorError, match=r"executor\.nova\.password: unknown key"):
        NovaExecutor.from_mapping({"password": "x"})
    with pytest.raises(ExecutorError, match="block_migration"):
        NovaExecutor.from_mapping(
            {"cloud": "ost", "clouds_yaml": clouds_yaml, "block_migration": "yes"}
        )
    with pytest.raises(ExecutorError, match="cloud 'nowhere'"):
        NovaExecutor.from_mapping({"cloud": "nowhere", "clouds_yaml": clouds_yaml})


def test_the_global_manager_moves_servers_and_sleeps_hosts_through_nova(
    cloud, conn, executor, servers, tmp_path
):
    """The global manager's own processing with the Nova executor against the real cloud (the
    fleet view is given here as the exporters would publish it; the BMC is a recording fake):
    an underloaded compute2 is emptied into compute1 and its compute service disabled while it
    sleeps; an overload of compute1 then wakes compute2 (service enabled) and Nova moves the
    server there."""
    from gm_helpers import RecordingPower, fleet, host, service, vm

    from neat_exporter.vocabulary import Reason

    staying = cloud.boot(conn, "gm-stay", "compute1")
    leaving = cloud.boot(conn, "gm-leave", "compute2")
    servers.extend([staying, leaving])
    ram = FLAVOR_RAM_MB
    views = [
        fleet(
            host("compute1", vms=[vm(staying.id, 500, 500, ram=ram)]),
            host("compute2", vms=[vm(leaving.id, 100, 100, ram=ram)]),
        ),
        fleet(  # later: compute1 overloaded by both, compute2 asleep
            host(
                "compute1", vms=[vm(staying.id, 3000, 3000, ram=ram), vm(leaving.id, 900, ram=ram)]
            ),
        ),
    ]
    power = RecordingPower()
    svc = service(lambda now: views[0], executor, power=power, state_file=tmp_path / "state")
    try:
        answer = svc.handle("compute2", Reason.UNDERLOAD, [])
        assert answer.status == 200 and svc.plans[0].result == "executed", svc.plans[0]
        assert conn.compute.get_server(leaving.id).compute_host == "compute1"
        service_record = next(conn.compute.services(binary="nova-compute", host="compute2"))
        assert service_record.status == "disabled"
        assert power.actions == [("off", "compute2")]
        views.pop(0)
        answer = svc.handle("compute1", Reason.OVERLOAD, [staying.id])
        assert answer.status == 200 and svc.plans[0].result == "executed", svc.plans[0]
        assert power.actions[-1] == ("on", "compute2")
        service_record = next(conn.compute.services(binary="nova-compute", host="compute2"))
        assert service_record.status == "enabled"
        now = conn.compute.get_server(staying.id)
        assert (now.compute_host, now.status) == ("compute2", "ACTIVE")
    finally:
        conn.compute.enable_service(None, host="compute2", binary="nova-compute")
