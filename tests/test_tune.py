"""`neat-exporter tune`: the search space, the round's knobs, a real search on a slice of a
PlanetLab day (SQLite, parallel processes, resume), and one search shared by two worker
processes through a real PostgreSQL server."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import optuna
import pytest
from postgres import PostgreSQL
from test_simulate import small_workload

from neat_exporter.cli import main
from neat_exporter.errors import NeatExporterError
from neat_exporter.simulate import parse_policy, simulate_day
from neat_exporter.simulate.consolidation import Planner
from neat_exporter.simulate.fleet import Fleet, FleetSpec
from neat_exporter.simulate.policies import PRESETS
from neat_exporter.tune.space import Space, suggest
from neat_exporter.tune.study import shares, storage_url

SLICE = ["--days", "20110303", "--vms", "30", "--hosts", "20"]
TUNE = [sys.executable, "-m", "neat_exporter", "tune"]


def test_a_candidate_is_one_policy_text_and_one_exporter_block():
    trial = optuna.trial.FixedTrial(
        {
            "detector": "loess",
            "loess.param": 1.35,
            "selection": "mu",
            "underload": 0.25,
            "placement": 1.0,
            "history": 30,
        }
    )
    candidate = suggest(trial, Space())
    assert candidate.policy == (
        "neat:loess param=1.35 threshold=1 length=10 selection=mu underload=0.25 history=30"
    )
    assert candidate.exporter_config() == {
        "history_length": 30,
        "algorithms": {
            "underload": {"name": "threshold", "params": {"threshold": 0.25}},
            "overload": {
                "name": "loess",
                "params": {"param": 1.35, "threshold": 1.0, "length": 10},
            },
            "vm_selection": {"name": "minimum_utilization", "params": {}},
        },
    }
    policy = parse_policy(candidate.policy)
    assert (policy.underload, policy.placement, policy.history_length) == (0.25, None, 30)
    with pytest.raises(NeatExporterError, match="unknown"):
        Space(detectors=("nope",))
    with pytest.raises(NeatExporterError, match="underload"):
        Space(underload=(0.0, 0.5))


@pytest.mark.parametrize(
    "text",
    [
        "iqr-mmt-1.5 underload=0",
        "iqr-mmt-1.5 underload=1.5",
        "iqr-mmt-1.5 placement=x",
        "iqr-mmt-1.5 history=11",
        "iqr-mmt-1.5 history=20.5",
        "iqr-mmt-1.5 selection=mu",
        "iqr-mmt-1.5 underload=0.5 underload=0.6",
        "npa underload=0.5",
        "neat:threshold selection=nope",
        "underload=0.5",
    ],
)
def test_bad_round_options_are_refused(text):
    with pytest.raises(NeatExporterError):
        parse_policy(text)


def test_underload_limit_and_placement_limit_act_on_the_round(monkeypatch):
    workload = small_workload(vms=32, samples=40)
    spec = FleetSpec(hosts=16, limit=300 * 39)
    plain = simulate_day(workload, parse_policy("thr-mmt-0.9"), spec=spec)
    limited = simulate_day(workload, parse_policy("thr-mmt-0.9 underload=0.2"), spec=spec)
    assert limited.migrations < plain.migrations
    # No host that already runs VMs is given one that takes it past the placement limit.
    original = Planner.find_host
    seen = []

    def checked(self, vm, excluded):
        target = original(self, vm, excluded)
        if target is not None and self.allocated[target] != 0:
            after = (self.allocated[target] + self.requested[vm]) / self.total[target]
            seen.append(after)
            assert after <= 0.75
        return target

    monkeypatch.setattr(Planner, "find_host", checked)
    simulate_day(workload, parse_policy("thr-mmt-0.9 placement=0.75"), spec=spec)
    assert seen
    fleet = Fleet(workload, parse_policy("thr-mmt-0.9 history=17"), spec)
    assert fleet.history.shape[1] == 17


def test_budget_shares_and_storage_urls(tmp_path):
    assert shares(5, 2) == [3, 2]
    assert shares(1, 4) == [1]
    assert shares(None, 2) == [None, None]
    assert storage_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert storage_url(str(tmp_path / "s.db")) == f"sqlite:///{tmp_path / 's.db'}"
    with pytest.raises(NeatExporterError, match="does not exist"):
        storage_url(str(tmp_path / "missing" / "s.db"))


def _medians(text: str, label: str) -> list[str]:
    """The figures of the row starting with ``label`` in a tune or simulate table."""
    for line in text.splitlines():
        if line.startswith(label):
            return line.split()[len(label.split()) : len(label.split()) + 6]
    raise AssertionError(f"no row {label!r} in:\n{text}")


def test_tune_searches_resumes_and_its_choice_reproduces(planetlab_dir, tmp_path, capfd):
    storage = tmp_path / "study.db"
    common = [
        "tune",
        "--traces",
        str(planetlab_dir),
        "--train",
        "20110303",
        "--test",
        "20110306",
        "--vms",
        "30",
        "--hosts",
        "20",
        "--storage",
        str(storage),
        "--seed",
        "7",
        "--detectors",
        "threshold",
        "iqr_threshold",
    ]
    config = tmp_path / "tuned.yml"
    plot = tmp_path / "front.png"
    assert main([*common, "--trials", "4", "--jobs", "2", "--config-out", str(config),
                 "--plot", str(plot)]) == 0  # fmt: skip
    out, err = capfd.readouterr()
    assert len(re.findall(r"^trial \d+: ", err, re.M)) == 4, err
    assert "Pareto front of study 'neat-tune'" in out and "of 4 trials" in out
    assert plot.stat().st_size > 0
    chosen = int(re.search(r"Chosen: trial (\d+)", out).group(1))
    train = _medians(out, f"{chosen} train")
    test = _medians(out, f"{chosen} test")
    assert train != test
    policy = re.search(r"--policy '([^']+)'", out).group(1)

    # The printed spec reproduces the trial's figures exactly.
    argv = ["simulate", "--traces", str(planetlab_dir), *SLICE, "--policy", policy]
    assert main([*argv, "--format", "json"]) == 0
    simulated = json.loads(capfd.readouterr().out)["results"][0]
    study = optuna.load_study(study_name="neat-tune", storage=f"sqlite:///{storage}")
    trial = next(t for t in study.trials if t.number == chosen)
    assert [simulated[name] for name in ("energy_kwh", "slav", "migrations")] == trial.values
    assert f"{simulated['energy_kwh']:.2f}" == train[0]

    # The configuration block is one the exporter accepts.
    checked = subprocess.run(
        [sys.executable, "-m", "neat_exporter", "check-config", str(config)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
    assert "history_length:" in checked.stdout

    # Resumed: two more trials join the four, and --pick reports another one.
    assert main([*common, "--trials", "2", "--jobs", "1", "--pick", "0"]) == 0
    out, _ = capfd.readouterr()
    assert "of 6 trials" in out and "Chosen: trial 0." in out
    # A different search in the same study is refused.
    assert main([*common[:-1], "--trials", "1"]) == 2
    assert "searched" in capfd.readouterr().err


def test_two_workers_share_one_search_in_postgresql(planetlab_dir, tmp_path):
    server = PostgreSQL()
    try:
        argv = [
            *TUNE,
            "--traces",
            str(planetlab_dir),
            "--train",
            "20110303",
            "--vms",
            "12",
            "--hosts",
            "8",
            "--storage",
            server.url,
            "--study",
            "shared",
            "--trials",
            "2",
            "--jobs",
            "1",
            "--detectors",
            "threshold",
        ]
        workers = [
            subprocess.Popen(
                [*argv, "--seed", str(index)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for index in range(2)
        ]
        outputs = [worker.communicate(timeout=240) for worker in workers]
        for worker, (_, err) in zip(workers, outputs, strict=True):
            assert worker.returncode == 0, err
        study = optuna.load_study(study_name="shared", storage=server.url)
        trials = study.get_trials()
        assert len(trials) == 4
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        assert sorted(t.number for t in trials) == list(range(4))
        assert len({t._trial_id for t in trials}) == 4
        assert len({t.user_attrs["worker"] for t in trials}) == 2
        # Each trial was evaluated once, by one worker: the progress lines say which.
        evaluated = [int(n) for _, err in outputs for n in re.findall(r"^trial (\d+): ", err, re.M)]
        assert sorted(evaluated) == list(range(4))
        assert json.loads(json.dumps(study.user_attrs["search"]))["days"] == ["20110303"]
    finally:
        server.stop()


def test_the_esv_best_preset_and_its_exporter_configuration(capsys):
    from conftest import ROOT

    preset = parse_policy("esv-best")
    spelled = parse_policy(PRESETS["esv-best"])
    assert preset.name == "esv-best"
    assert (preset.underload, preset.placement) == (0.2, 0.85)
    workload = small_workload(vms=32, samples=30)
    spec = FleetSpec(hosts=16, limit=300 * 29)
    assert simulate_day(workload, preset, spec=spec).as_dict() | {"policy": "", "seconds": 0} == (
        simulate_day(workload, spelled, spec=spec).as_dict() | {"policy": "", "seconds": 0}
    )
    example = ROOT / "config.esv-best.example.yml"
    assert main(["check-config", str(example)]) == 0
    shown = capsys.readouterr().out
    assert "name: threshold" in shown and "minimum_migration_time" in shown
    with pytest.raises(NeatExporterError, match="no options"):
        parse_policy("esv-best underload=0.5")
