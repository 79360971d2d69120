"""The fleet simulator: CloudSim 3.0.3's accounting on hand-computed cases, invariants of the
event loop on a small fleet, and the command line on a slice of a PlanetLab day."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest

from neat_exporter.cli import main
from neat_exporter.simulate import FleetSpec, parse_policy, simulate_day
from neat_exporter.simulate.accounting import Accounting, HostStates, VmStates
from neat_exporter.simulate.consolidation import Planner
from neat_exporter.simulate.fleet import Fleet
from neat_exporter.simulate.policies import (
    FleetDetector,
    LocalRegression,
    SpreadThreshold,
    iqr,
    least_squares_prediction,
    mad,
)
from neat_exporter.simulate.power import energy_joules, specpower
from neat_exporter.simulate.state import IN, RoundState

G4, G5 = 0, 1
CHARGED_SECONDS = 86_100.1 - 300.1  # first tick at 300.1 s, last at 86,100.1 s


# --- power and energy --------------------------------------------------------------------------


def test_specpower_table_points_and_interpolation():
    kinds = np.array([G4, G5, G5, G4])
    power = specpower(kinds, np.array([0.0, 1.0, 0.25, 0.55]))
    assert power.tolist() == pytest.approx([86.0, 135.0, (101 + 105) / 2, (102 + 106) / 2])


def test_energy_of_an_idle_host_is_zero_and_otherwise_a_trapezoid():
    joules = energy_joules(
        np.array([G5, G5, G4]), np.array([0.0, 0.5, 0.2]), np.array([0.8, 0.5, 0.0]), 300.0
    )
    assert joules.tolist() == pytest.approx([0.0, 116 * 300, (92.6 + 86) / 2 * 300])


def one_vm(percent: float, samples: int = 288) -> np.ndarray:
    return np.full((1, samples), percent)


def test_dvfs_energy_of_one_constant_vm_by_hand():
    # One VM (High-CPU Medium, 2500 MIPS) at 50 %: first fit skips the G4 host (1860-MIPS cores).
    result = simulate_day(one_vm(50), parse_policy("dvfs"), spec=FleetSpec(hosts=2))
    utilization = 0.5 * 2500 / 5320
    watts = 101 + (105 - 101) / 10 * (utilization - 0.2) * 100
    assert result.energy_kwh == pytest.approx(watts * CHARGED_SECONDS / 3.6e6, rel=1e-12)
    assert (result.migrations, result.slatah, result.pdm) == (0, 0.0, 0.0)


def test_npa_closed_form_and_cloudsims_first_interval():
    result = simulate_day(np.full((4, 288), 10.0), parse_policy("npa"), spec=FleetSpec(hosts=800))
    closed_form = (400 * 117 + 400 * 135) * 86_400 / 3.6e6
    assert closed_form == pytest.approx(2419.2)
    # CloudSim charges from 0 to its last tick at 86,100.1 s: 2410.80 kWh.
    assert result.energy_kwh == pytest.approx((400 * 117 + 400 * 135) * 86_100.1 / 3.6e6)
    assert round(result.energy_kwh, 2) == 2410.80


def test_a_vm_asking_for_nothing_is_removed_and_its_host_sleeps():
    trace = np.full((1, 288), 40.0)
    trace[0, 100:] = 0  # CloudSim destroys a VM whose demand is exactly 0 at an update
    result = simulate_day(trace, parse_policy("dvfs"), spec=FleetSpec(hosts=2))
    fleet_time = 0.1 + 300 * 100  # last tick with demand: data[99] + interpolation to 0
    assert result.energy_kwh < 130 * fleet_time / 3.6e6


# --- pooled metrics ----------------------------------------------------------------------------


def test_slatah_and_pdm_are_pooled_time_weighted_ratios():
    accounting = Accounting()
    hosts = HostStates(
        allocated=np.array([100.0, 50.0, 0.0]), requested=np.array([100.0, 80.0, 0.0])
    )
    vms = VmStates(
        recorded=np.array([True, True, False]),
        allocated=np.array([90.0, 50.0, 0.0]),
        requested=np.array([100.0, 80.0, 0.0]),
        in_migration=np.array([True, False, False]),
    )
    accounting.record(0.0, hosts, vms)
    accounting.advance(10.0)
    accounting.record(10.0, HostStates(np.array([100.0, 0.0, 0.0]), np.array([100.0, 0, 0])), vms)
    accounting.advance(40.0)
    # Host 1 violates for 10 s of 40 active host-seconds (10 + 10 + 30 + 0).
    assert accounting.slatah == pytest.approx(10 / 50)
    # VM 0 loses 10 MIPS for 40 s while migrating; VM 1's shortfall is not migration's.
    assert accounting.pdm == pytest.approx(10 * 40 / ((100 + 80) * 40))
    result = accounting.result("d", "p", 2, 3, 0.0)
    assert result.slav == pytest.approx(result.slatah * result.pdm)
    assert result.esv == pytest.approx(result.energy_kwh * result.slav)


# --- detectors ---------------------------------------------------------------------------------


def test_lr_predicts_with_plain_least_squares_one_step_ahead():
    history = np.linspace(0.3, 0.75, 10)[::-1]  # newest first, rising by 0.05 per step
    assert least_squares_prediction(history[None, ::-1], 11.0)[0] == pytest.approx(0.8)
    noisy = np.random.default_rng(1).random((5, 10))
    expected = [np.polyval(np.polyfit(np.arange(1, 11), row, 1), 12.0) for row in noisy]
    assert least_squares_prediction(noisy, 12.0) == pytest.approx(expected)
    detector = LocalRegression(1.2)
    rows = np.vstack([history, history * 0.5, np.r_[history[:9], 0]])
    decision = detector.overloaded(np.array([0.1, 0.1, 0.75]), rows, np.array([10, 10, 9]), 1)
    # 1.2 × 0.8 < 1; 1.2 × 0.4 < 1; too short: THR 0.7 on the requested utilization.
    assert decision.tolist() == [False, False, True]
    assert LocalRegression(1.3).overloaded(np.array([0.1]), history[None], np.array([10]), 1)[0]


def test_mad_and_iqr_follow_cloudsims_math_util():
    rows = np.array([[1.0, 2, 3, 4, 100]])
    assert mad(rows).tolist() == [1.0]
    # MathUtil.iqr: sorted[round(0.75·6) − 1] − sorted[round(0.25·6) − 1] = 100 − 2
    assert iqr(rows).tolist() == [98.0]
    detector = SpreadThreshold("mad", 2.5)
    history = np.tile(np.r_[0.5, 0.6], 6)[None]
    # MAD 0.05 → threshold 0.875; fewer than 12 values → THR 0.7
    decide = detector.overloaded
    assert decide(np.array([0.88]), history, np.array([12]), 1).tolist() == [True]
    assert decide(np.array([0.86]), history, np.array([12]), 1).tolist() == [False]
    assert decide(np.array([0.71]), history, np.array([11]), 1).tolist() == [True]


# --- the event loop on a small fleet -------------------------------------------------------------


def small_workload(vms: int = 48, samples: int = 60, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(5, 60, size=(vms, 1))
    return np.clip(base + rng.integers(-30, 40, size=(vms, samples)), 0, 99).astype(float)


def check_membership(fleet: Fleet) -> None:
    homes = [vm for members in fleet.vms for vm in members]
    entries = fleet.entries()
    vms, hosts, kinds = entries.vms, entries.hosts, entries.kinds
    resident = vms[kinds != IN]
    assert sorted(resident.tolist()) == sorted(np.flatnonzero(fleet.alive).tolist())
    assert len(set(resident.tolist())) == len(resident)  # nobody twice as a resident
    for vm, host in zip(vms[kinds != IN], hosts[kinds != IN], strict=True):
        assert fleet.home[vm] == host
    incoming = sorted((vm, target) for _, vm, target in fleet.inflight)
    pairs = zip(vms[kinds == IN].tolist(), hosts[kinds == IN].tolist(), strict=True)
    assert sorted(pairs) == incoming
    assert len(homes) == len(resident) + len(incoming)


def test_no_vm_lost_or_duplicated_and_placements_fit(monkeypatch):
    original = Planner.find_host
    placements = []

    def checked_find_host(self, vm, excluded):
        host = original(self, vm, excluded)
        if host is not None:
            # PABFD only picks a host with a core and free MIPS for the VM's current demand.
            assert self.pe[host] >= self.requested[vm]
            assert self.available[host] >= self.requested[vm]
            assert not excluded[host]
            placements.append(host)
        return host

    monkeypatch.setattr(Planner, "find_host", checked_find_host)
    spec = FleetSpec(hosts=24, limit=300 * 59)
    fleet = Fleet(small_workload(), parse_policy("lr-mmt-1.2"), spec)
    fleet.run(progress=lambda step, total: check_membership(fleet))
    check_membership(fleet)
    assert fleet.accounting.migrations > 10
    assert len(placements) >= fleet.accounting.migrations


@pytest.mark.parametrize("policy", ["lr-mmt-1.2", "mad-mmt-2.5", "neat:otf otf=0.1"])
def test_placement_takes_cloudsims_host_whatever_it_asks_first(monkeypatch, policy):
    """find_host asks the detector about the cheapest hosts first; every choice must be
    CloudSim's: all busy candidates checked, then the least power increase, first on ties."""
    original = Planner.find_host
    choices = 0

    def exhaustive(self, vm, excluded):
        candidates = np.flatnonzero(~excluded & (self.fits >= self.requested[vm]))
        allocated = self.allocated[candidates]
        busy = allocated != 0
        keep = np.ones(candidates.size, dtype=bool)
        if busy.any():
            keep[busy] = ~self._overloaded_with(candidates[busy], vm)
        candidates, allocated = candidates[keep], allocated[keep]
        if candidates.size == 0:
            return None
        after = (allocated + self.requested[vm]) / self.total[candidates]
        increase = specpower(self.kinds[candidates], after) - self.power_now[candidates]
        return int(candidates[np.argmin(increase)])

    def checked(self, vm, excluded):
        nonlocal choices
        host = original(self, vm, excluded)
        assert host == exhaustive(self, vm, excluded)
        choices += host is not None
        return host

    monkeypatch.setattr(Planner, "find_host", checked)
    monkeypatch.setattr(FleetDetector, "hosts_per_call", 1)  # the most batches
    spec = FleetSpec(hosts=24, limit=300 * 59)
    result = simulate_day(small_workload(), parse_policy(policy), spec=spec)
    assert result.migrations > 10 and choices >= result.migrations


def same_state(state: RoundState, before: RoundState) -> bool:
    def parts(value):
        return dataclasses.astuple(value) if dataclasses.is_dataclass(value) else (value,)

    for item in dataclasses.fields(RoundState):
        now, then = parts(getattr(state, item.name)), parts(getattr(before, item.name))
        for a, b in zip(now, then, strict=True):
            if not (np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b):
                return False
    return True


@pytest.mark.parametrize("policy", ["lr-mc-1.2", "neat:otf otf=0.1", "thr-rs-0.8"])
def test_a_round_reads_the_fleet_state_and_changes_none_of_it(policy):
    spec = FleetSpec(hosts=24, limit=300 * 39)
    fleet = Fleet(small_workload(samples=40), parse_policy(policy), spec)
    planned = 0

    def plan_aside(step, total):
        nonlocal planned
        state = fleet.round_state()
        before = copy.deepcopy(state)
        # A copy of the policy: the fleet's detector and VM selection keep their own state.
        planned += len(Planner(state, copy.deepcopy(fleet.policy)).optimize())
        assert same_state(state, before)

    fleet.run(progress=plan_aside)
    assert planned > 10


@pytest.mark.parametrize("policy", ["thr-mmt-0.8", "iqr-mc-1.5", "mad-mu-2.5", "lrr-rs-1.2"])
def test_every_cloudsim_policy_runs_and_accounts(policy):
    spec = FleetSpec(hosts=16, limit=300 * 39)
    result = simulate_day(small_workload(vms=32, samples=40), parse_policy(policy), spec=spec)
    assert result.energy_kwh > 0
    assert 0 <= result.slatah <= 1 and 0 <= result.pdm <= 1
    assert result.migrations > 0


def test_neat_detectors_plug_in():
    spec = FleetSpec(hosts=16, limit=300 * 29)
    workload = small_workload(vms=32, samples=30)
    result = simulate_day(workload, parse_policy("neat:threshold threshold=0.8"), spec=spec)
    reference = simulate_day(workload, parse_policy("thr-mmt-0.8"), spec=spec)
    # Neat's plain threshold on the host's history decides as CloudSim's THR on demand.
    assert result.migrations == reference.migrations > 0
    assert result.energy_kwh == pytest.approx(reference.energy_kwh)


def test_bad_policy_names_are_refused():
    from neat_exporter.errors import ParameterError

    for name in ("lr-mmt", "xyz-mmt-1.0", "lr-abc-1.2"):
        with pytest.raises(ParameterError):
            parse_policy(name)


# --- command line ------------------------------------------------------------------------------


def test_cli_json_for_one_day_slice(planetlab_dir, capsys):
    code = main(
        [
            "simulate",
            "--traces",
            str(planetlab_dir),
            "--days",
            "20110303",
            "--policy",
            "lr-mmt-1.2",
            "--policy",
            "npa",
            "--vms",
            "16",
            "--hosts",
            "8",
            "--jobs",
            "1",
            "--format",
            "json",
        ]
    )
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    by_policy = {row["policy"]: row for row in document["results"]}
    assert set(by_policy) == {"lr-mmt-1.2", "npa"}
    for key in ("energy_kwh", "slatah", "pdm", "slav", "esv", "migrations"):
        assert key in by_policy["lr-mmt-1.2"]
    assert by_policy["npa"]["energy_kwh"] == pytest.approx((4 * 117 + 4 * 135) * 86_100.1 / 3.6e6)
    assert by_policy["lr-mmt-1.2"]["day"] == "20110303"


def test_cli_table_csv_and_errors(planetlab_dir, capsys, tmp_path):
    out = tmp_path / "runs.csv"
    args = [
        "simulate",
        "--traces",
        str(planetlab_dir),
        "--days",
        "20110303",
        "--vms",
        "8",
        "--hosts",
        "4",
        "--jobs",
        "1",
        "--policy",
        "dvfs",
    ]
    assert main([*args, "--format", "csv", "-o", str(out)]) == 0
    assert out.read_text().splitlines()[0].startswith("day,policy,vms,hosts,energy_kwh")
    pytest.importorskip("matplotlib", reason="plots need the plot extra")
    plot = tmp_path / "runs.png"
    assert main([*args, "--plot", str(plot)]) == 0
    assert "dvfs" in capsys.readouterr().out
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert main(["simulate", "--traces", str(planetlab_dir), "--days", "19990101"]) == 2
    assert "no day '19990101'" in capsys.readouterr().err
    assert main([*args, "--policy", "lr-xx-1"]) == 2


def test_cli_reads_a_folder_of_day_folders_like_archives(planetlab_dir, tmp_path, capsys):
    import tarfile

    day = tmp_path / "days" / "20110303"
    day.mkdir(parents=True)
    with tarfile.open(planetlab_dir / "20110303.tar.gz") as archive:
        members = sorted((m for m in archive.getmembers() if m.isfile()), key=lambda m: m.name)
        for member in members[:6]:
            (day / member.name.rsplit("/", 1)[-1]).write_bytes(archive.extractfile(member).read())
    common = [
        "--days",
        "20110303",
        "--policy",
        "dvfs",
        "--vms",
        "6",
        "--hosts",
        "4",
        "--jobs",
        "1",
        "--format",
        "json",
    ]
    assert main(["simulate", "--traces", str(tmp_path / "days"), *common]) == 0
    from_folder = json.loads(capsys.readouterr().out)["results"][0]
    assert main(["simulate", "--traces", str(planetlab_dir), *common]) == 0
    from_archive = json.loads(capsys.readouterr().out)["results"][0]
    assert from_folder["energy_kwh"] == from_archive["energy_kwh"] > 0
