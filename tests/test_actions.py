"""The global manager client and the requester, against a real HTTP stand-in of Neat's API."""

from __future__ import annotations

import logging
import time

import pytest
from global_manager import PASSWORD, USER, GlobalManager, client_config, sha1
from prometheus_client import CollectorRegistry, generate_latest
from services import free_port

from neat_exporter.actions import (
    Credentials,
    GlobalManagerClient,
    MigrationRequester,
    Reason,
    Submission,
)
from neat_exporter.config import config_from_mapping

GOOD = Credentials.from_plain(USER, PASSWORD)
VM_A, VM_B = "a0000000-0000-4000-8000-00000000000a", "b0000000-0000-4000-8000-00000000000b"
VM_C, VM_X = "c0000000-0000-4000-8000-00000000000c", "e0000000-0000-4000-8000-00000000000e"


@pytest.fixture
def gm():
    with GlobalManager(USER, PASSWORD) as manager:
        yield manager


def client(url: str, credentials: Credentials = GOOD, **kwargs) -> GlobalManagerClient:
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("backoff", 0.01)
    return GlobalManagerClient(url, credentials, **kwargs)


def requests_count(registry: CollectorRegistry, reason: str, result: str) -> float:
    return registry.get_sample_value(
        "neat_migration_requests_total", {"reason": reason, "result": result}
    )


# -- the client: Neat's protocol and each answer --------------------------------------------------


def test_sends_neats_form_with_sha1_digests(gm):
    outcome = client(gm.url).send("compute1", Reason.OVERLOAD, [VM_A, VM_B])
    assert outcome.ok and outcome.status == 200 and outcome.attempts == 1
    [request] = gm.accepted
    assert (request.host, request.reason, request.vm_uuids) == ("compute1", 1, [VM_A, VM_B])
    assert abs(request.time - time.time()) < 5
    assert GOOD.username_sha1 == sha1(USER) and len(GOOD.password_sha1) == 40


def test_underload_request_carries_the_vm_list(gm):
    assert client(gm.url).send("compute1", Reason.UNDERLOAD, [VM_A, VM_C]).ok
    assert gm.accepted[0].reason == 0 and gm.accepted[0].vm_uuids == [VM_A, VM_C]


def test_wrong_credentials_are_403_and_not_retried(gm):
    outcome = client(gm.url, Credentials.from_plain(USER, "wrong")).send(
        "compute1", Reason.UNDERLOAD, []
    )
    assert (outcome.ok, outcome.status, outcome.attempts) == (False, 403, 1)
    assert "credentials rejected" in outcome.detail
    assert gm.statuses == [403]


@pytest.mark.parametrize("status", [400, 401])
def test_client_errors_are_not_retried(gm, status):
    gm.forced_statuses.append(status)
    outcome = client(gm.url).send("compute1", Reason.UNDERLOAD, [])
    assert (outcome.ok, outcome.status, outcome.attempts) == (False, status, 1)
    assert gm.statuses == [status]


def test_overload_without_vms_is_neats_400(gm):
    outcome = client(gm.url).send("compute1", Reason.OVERLOAD, [])
    assert (outcome.status, outcome.attempts) == (400, 1)


def test_stale_time_is_resent_once_with_a_fresh_time_stamp(gm):
    gm.forced_statuses.append(412)
    outcome = client(gm.url).send("compute1", Reason.OVERLOAD, [VM_A])
    assert outcome.ok and outcome.attempts == 2
    assert gm.statuses == [412, 200]


def test_skewed_clock_gives_up_after_one_resend(gm):
    skewed = client(gm.url, clock=lambda: time.time() - 60)
    outcome = skewed.send("compute1", Reason.OVERLOAD, [VM_A])
    assert (outcome.ok, outcome.status, outcome.attempts) == (False, 412, 2)
    assert "synchronise the clocks" in outcome.detail
    assert gm.accepted == []


def test_server_errors_are_retried_with_backoff(gm):
    gm.forced_statuses.extend([500, 503])
    outcome = client(gm.url, retries=3).send("compute1", Reason.OVERLOAD, [VM_A])
    assert outcome.ok and outcome.attempts == 3
    assert gm.statuses == [500, 503, 200]


def test_server_errors_give_up_after_the_retries(gm):
    gm.forced_statuses.extend([500] * 10)
    outcome = client(gm.url, retries=2).send("compute1", Reason.OVERLOAD, [VM_A])
    assert (outcome.ok, outcome.status, outcome.attempts) == (False, 500, 3)
    assert len(gm.statuses) == 3


def test_unreachable_global_manager_is_retried_then_fails():
    url = f"http://127.0.0.1:{free_port()}/"
    outcome = client(url, retries=2).send("compute1", Reason.OVERLOAD, [VM_A])
    assert (outcome.ok, outcome.status, outcome.attempts) == (False, None, 3)
    assert "cannot reach" in outcome.detail


def test_slow_global_manager_times_out_without_a_resend(gm):
    gm.delay = 1.5
    started = time.monotonic()
    outcome = client(gm.url, timeout=0.3, retries=3).send("compute1", Reason.OVERLOAD, [VM_A])
    assert time.monotonic() - started < 1.0
    assert (outcome.ok, outcome.attempts) == (False, 1)
    assert "no answer within 0.3 s" in outcome.detail


# -- the requester: modes, cooldown, never blocking, counting ------------------------------------


def test_overload_without_vms_is_refused_before_sending():
    requester = MigrationRequester(
        client_config("http://127.0.0.1:1/", "dry_run"), CollectorRegistry()
    )
    with pytest.raises(ValueError, match="needs the selected vm_uuids"):
        requester.submit("compute1", Reason.OVERLOAD, [])


def test_off_mode_does_nothing(gm):
    registry = CollectorRegistry()
    requester = MigrationRequester(client_config(gm.url, "off"), registry)
    assert requester.submit("compute1", Reason.OVERLOAD, [VM_A]) is Submission.OFF
    assert requests_count(registry, "overload", "sent") == 0
    assert gm.statuses == []


def test_dry_run_counts_and_cools_down_without_sending(gm, caplog):
    registry = CollectorRegistry()
    requester = MigrationRequester(client_config(gm.url, "dry_run"), registry)
    with caplog.at_level(logging.INFO, "neat_exporter.actions"):
        assert requester.submit("compute1", 1, [VM_A]) is Submission.DRY_RUN
    assert f"would ask to migrate {VM_A} from compute1" in caplog.text
    assert requester.submit("compute1", 0, [VM_A]) is Submission.SUPPRESSED
    assert requests_count(registry, "overload", "dry_run") == 1
    assert requests_count(registry, "underload", "suppressed") == 1
    assert gm.statuses == []


def test_cooldown_is_per_host_and_expires(gm):
    now = [1000.0]
    registry = CollectorRegistry()
    requester = MigrationRequester(
        client_config(gm.url, cooldown=600), registry, clock=lambda: now[0]
    )
    try:
        assert requester.submit("compute1", 1, [VM_A]) is Submission.QUEUED
        assert requester.submit("compute1", 1, [VM_A]) is Submission.SUPPRESSED
        assert requester.submit("compute2", 0, [VM_X]) is Submission.QUEUED
        now[0] += 601
        assert requester.submit("compute1", 1, [VM_B]) is Submission.QUEUED
        assert requester.wait_idle(10)
    finally:
        requester.close()
    assert [(r.host, r.vm_uuids) for r in gm.accepted] == [
        ("compute1", [VM_A]),
        ("compute2", [VM_X]),
        ("compute1", [VM_B]),
    ]
    assert requests_count(registry, "overload", "sent") == 2
    assert requests_count(registry, "overload", "suppressed") == 1
    assert requests_count(registry, "underload", "sent") == 1
    assert registry.get_sample_value("neat_migration_request_duration_seconds_count") == 3


def test_submit_never_waits_for_a_slow_global_manager(gm):
    gm.delay = 2.0
    registry = CollectorRegistry()
    requester = MigrationRequester(
        client_config(gm.url, timeout=0.5, cooldown=0), registry, queue_size=2
    )
    try:
        started = time.monotonic()
        results = [requester.submit(f"compute{i}", 1, [VM_A]) for i in range(6)]
        assert time.monotonic() - started < 0.5  # a single request takes 2 s
        assert Submission.QUEUE_FULL in results
        assert requester.wait_idle(15)
    finally:
        requester.close()
    queued = results.count(Submission.QUEUED)
    assert requests_count(registry, "overload", "failed") == queued  # timed out
    assert requests_count(registry, "overload", "queue_full") == 6 - queued
    assert registry.get_sample_value("neat_migration_request_duration_seconds_count") == queued


def test_every_fault_is_counted_and_the_requester_keeps_going(gm):
    """Down, 401, 403, 412 twice, 500, slow, then healthy again: each shows in the counters."""
    registry = CollectorRegistry()
    settings = client_config(gm.url, timeout=0.5, retries=1, cooldown=0)
    requester = MigrationRequester(settings, registry)
    try:
        for status in ([401], [403], [412, 412], [500, 500]):
            gm.forced_statuses.extend(status)
            assert requester.submit("compute1", 1, [VM_A]) is Submission.QUEUED
            assert requester.wait_idle(10)
        gm.delay = 1.0
        requester.submit("compute1", 1, [VM_A])
        assert requester.wait_idle(10)
        gm.delay = 0
        requester.submit("compute1", 1, [VM_A])
        assert requester.wait_idle(10)
    finally:
        requester.close()
    assert gm.statuses == [401, 403, 412, 412, 500, 500, 200, 200]
    assert requests_count(registry, "overload", "failed") == 5
    assert requests_count(registry, "overload", "sent") == 1  # the slow one was accepted late

    down = MigrationRequester(
        client_config(f"http://127.0.0.1:{free_port()}/", retries=1, cooldown=0),
        registry := CollectorRegistry(),
    )
    try:
        down.submit("compute1", 0, [VM_A])
        assert down.wait_idle(10)
    finally:
        down.close()
    assert requests_count(registry, "underload", "failed") == 1


def test_credentials_never_reach_logs_metrics_or_reprs(gm, caplog, tmp_path):
    """From a password file and the environment through the config to the wire, and nowhere else."""
    (tmp_path / "password").write_text(PASSWORD + "\n")
    section = {"mode": "on", "url": gm.url, "cooldown": 0, "retries": 1}
    section["password_file"] = str(tmp_path / "password")
    environ = {"NEAT_GLOBAL_MANAGER_USERNAME": USER}
    settings = config_from_mapping({"global_manager": section}, environ=environ).global_manager
    registry = CollectorRegistry()
    with caplog.at_level(logging.DEBUG):
        requester = MigrationRequester(settings, registry)
        try:
            gm.forced_statuses.extend([403, 412, 500])
            for _ in range(4):
                requester.submit("compute1", 1, [VM_A])
                assert requester.wait_idle(10)
        finally:
            requester.close()
    assert len(gm.accepted) == 3  # the file's and the environment's credentials worked
    exposed = caplog.text + generate_latest(registry).decode() + repr(settings) + repr(GOOD)
    exposed += repr(requester.__dict__)
    for secret in (PASSWORD, sha1(PASSWORD), sha1(USER)):
        assert secret not in exposed


def test_invalid_hosts_and_vm_uuids_are_rejected_counted_and_never_sent(gm, caplog):
    """The door of every request: a comma in a "UUID" would name more VMs in Neat's vm_uuids."""
    registry = CollectorRegistry()
    requester = MigrationRequester(client_config(gm.url, cooldown=0), registry)
    try:
        with caplog.at_level(logging.WARNING):
            for host, vms in [
                ("compute1", [f"{VM_A},{VM_B}"]),
                ("compute1", [VM_A, "instance-0001"]),
                ("compute1\r\nforged", [VM_A]),
                ("compute\ud800", [VM_A]),
                ("c" * 256, [VM_A]),
            ]:
                assert requester.submit(host, 1, vms) is Submission.REJECTED
        assert requester.submit("compute1", 1, [VM_A.upper()]) is Submission.QUEUED
        assert requester.wait_idle(10)
    finally:
        requester.close()
    assert requests_count(registry, "overload", "rejected") == 5
    assert [r.vm_uuids for r in gm.accepted] == [[VM_A.upper()]]
    assert "\r" not in caplog.text and "\ud800" not in caplog.text
