"""The fleet view built from PromQL results (build_fleet is pure; read_fleet is tested against a
real Prometheus in tests/test_e2e_global_manager.py)."""

from __future__ import annotations

import pytest
import requests

from neat_exporter.globalmanager.fleet import FleetQueryResults, build_fleet, cpu_per_cycle
from neat_exporter.promql import PrometheusAPI, PrometheusError, RangeSeries, Sample

MIB = 1024 * 1024


def target(instance: str, **labels: str) -> dict[str, str]:
    return {"instance": instance, "job": "neat", **labels}


def results(**overrides) -> FleetQueryResults:
    """Two hosts: h1 (two VMs) and h2 (one VM), both cycling every 10 s, scraped every 5 s."""
    h1, h2 = "10.0.0.1:9840", "10.0.0.2:9840"
    scrapes = (960.0, 965.0, 970.0, 975.0, 980.0, 985.0)
    cycles = (950.0, 960.0, 960.0, 970.0, 970.0, 980.0)  # the cycle each scrape saw
    base = dict(
        host_info=[Sample(target(h1, host="h1"), 1, 990), Sample(target(h2, host="h2"), 1, 990)],
        last_cycle=[Sample(target(h1), 980, 990), Sample(target(h2), 980, 990)],
        capacity=[Sample(target(h1), 4e9, 990), Sample(target(h2), 8e9, 990)],
        overhead=[Sample(target(h1), 1e8, 990)],
        memory=[Sample(target(h1), 8192 * MIB, 990), Sample(target(h2), 4096 * MIB, 990)],
        vm_memory=[
            Sample(target(h1, vm_uuid="v1"), 512 * MIB, 990),
            Sample(target(h1, vm_uuid="v2"), 1024 * MIB, 990),
            Sample(target(h2, vm_uuid="v3"), 256 * MIB, 990),
        ],
        vm_info=[Sample(target(h1, vm_uuid="v1", domain="web-1"), 1, 990)],
        vm_cpu=[
            RangeSeries(
                target(h1, vm_uuid="v1"),
                tuple(zip(scrapes, (1e8, 2e8, 2e8, 3e8, 3e8, 3e8), strict=True)),
            ),
            RangeSeries(target(h2, vm_uuid="v3"), ((985.0, 5e8),)),
        ],
        cycles=[
            RangeSeries(target(h1), tuple(zip(scrapes, cycles, strict=True))),
            RangeSeries(target(h2), ((985.0, 980.0),)),
        ],
    )
    base.update(overrides)
    return FleetQueryResults(**base)


def test_hosts_and_vms_in_mhz_and_mb():
    view = build_fleet(results(), now=990, stale_after=60)
    h1, h2 = view.hosts["h1"], view.hosts["h2"]
    assert (h1.cpu_mhz, h1.ram_mb, h1.overhead_mhz) == (4000, 8192, 100)
    assert h2.overhead_mhz is None
    assert h1.vms["v1"].ram_mb == 512 and h1.vms["v1"].name == "web-1"
    # One value per cycle, not per scrape: the 3e8 of cycles 970 and 980 count twice.
    assert h1.vms["v1"].cpu_mhz == (100, 200, 300, 300)
    assert h1.cpu_usage_mhz == 100 + 300
    assert h1.ram_usage_mb == 512 + 1024
    assert view.host_of("v3") == "h2"


def test_a_vm_without_cpu_data_marks_its_host():
    view = build_fleet(results(), now=990, stale_after=60)
    assert [p.reason for p in view.hosts["h1"].problems] == ["vm_without_data"]
    assert "v2" in view.hosts["h1"].problems[0].detail
    assert view.hosts["h2"].usable


def test_stale_and_missing_data_are_reasons():
    view = build_fleet(results(memory=[]), now=2000, stale_after=60)
    reasons = [p.reason for p in view.hosts["h2"].problems]
    assert reasons == ["stale", "missing_ram"]
    assert "1020 s ago" in view.hosts["h2"].problems[0].detail
    view = build_fleet(results(capacity=[], last_cycle=[]), now=990, stale_after=60)
    assert {p.reason for p in view.hosts["h2"].problems} == {"stale", "missing_capacity"}


def test_a_vm_seen_on_two_hosts_belongs_to_the_newest_cycle():
    h1, h2 = "10.0.0.1:9840", "10.0.0.2:9840"
    base = results()
    moved = results(
        last_cycle=[Sample(target(h1), 970, 990), Sample(target(h2), 985, 990)],
        vm_memory=[*base.vm_memory, Sample(target(h2, vm_uuid="v1"), 512 * MIB, 990)],
    )
    view = build_fleet(moved, now=990, stale_after=60)
    assert view.host_of("v1") == "h2"
    assert "v1" not in view.hosts["h1"].vms


def test_cycle_grouping_without_cycle_time_stamps():
    series = RangeSeries({}, ((1.0, 5.0), (2.0, 5.0), (3.0, 6.0)))
    assert cpu_per_cycle(series, {}) == (5.0, 5.0, 6.0)
    assert cpu_per_cycle(series, {1.0: 0.0, 2.0: 0.0, 3.0: 1.0}) == (5.0, 6.0)


def test_prometheus_errors_are_one_clear_line():
    api = PrometheusAPI("http://127.0.0.1:9", timeout=2)  # the discard port: refused
    with pytest.raises(PrometheusError, match=r"Prometheus at http://127\.0\.0\.1:9: cannot query"):
        api.query("up")


class _Answer:
    def __init__(self, status: int, body):
        self.status_code, self._body = status, body

    def json(self):
        if isinstance(self._body, Exception):
            raise self._body
        return self._body


class _Session(requests.Session):
    """An I/O-edge fake for answers a real Prometheus does not give on demand."""

    def __init__(self, answer: _Answer):
        super().__init__()
        self.answer = answer

    def get(self, *args, **kwargs):
        return self.answer


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (_Answer(502, ValueError("no JSON")), "HTTP 502 and not a Prometheus API answer"),
        (_Answer(400, {"status": "error", "errorType": "bad_data", "error": "parse"}), "bad_data"),
        (_Answer(200, {"status": "success", "data": {"resultType": "matrix"}}), "not an instant"),
        (_Answer(200, {"status": "success", "data": {"resultType": "vector", "result": [1]}}),
         "malformed"),
    ],
)  # fmt: skip
def test_bad_answers_are_prometheus_errors(answer, message):
    api = PrometheusAPI("http://prometheus:9090", session=_Session(answer))
    with pytest.raises(PrometheusError, match=message):
        api.query("up")


def test_moves_the_exporters_have_not_seen_yet_are_applied():
    from neat_exporter.globalmanager.fleet import FleetHost, FleetView, FleetVm, Move, with_moves

    vm = FleetVm("v1", 512, (100.0,))
    view = FleetView(
        1000,
        {
            "a": FleetHost("a", 4000, 0, 8192, 990.0, {"v1": vm}),
            "b": FleetHost("b", 4000, 0, 8192, 990.0, {}),
        },
    )
    moved = with_moves(view, [Move("v1", "a", "b", 995.0)])
    assert moved.host_of("v1") == "b" and moved.hosts["b"].cpu_usage_mhz == 100
    # The source's exporter ran a cycle after the move: its view is the truth.
    assert with_moves(view, [Move("v1", "a", "b", 980.0)]).host_of("v1") == "a"
    assert with_moves(view, [Move("v1", "a", "gone", 995.0)]).host_of("v1") is None


def test_exporter_intervals_come_from_their_cycle_time_stamps():
    from neat_exporter.globalmanager.fleet import cycle_intervals

    every_10 = RangeSeries({}, tuple((t, 950.0 + 10 * (t // 10)) for t in range(0, 60, 5)))
    every_30 = RangeSeries({}, ((0.0, 900.0), (30.0, 930.0), (60.0, 960.0)))
    assert cycle_intervals([every_10, every_30]) == (10.0, 30.0)
    assert cycle_intervals([RangeSeries({}, ((0.0, 900.0), (5.0, 900.0)))]) is None
