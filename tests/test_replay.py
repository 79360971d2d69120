"""`neat-exporter replay`: workloads from PlanetLab traces, CSV and a real Prometheus, figures
checked by hand on small cases, reports and plots, and bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from services import Prometheus, free_port, require_program

from neat_exporter.backtest import ReplayConfig, combine, replay
from neat_exporter.cli import main
from neat_exporter.config import config_from_mapping
from neat_exporter.daemon import Daemon
from neat_exporter.errors import ConfigError
from neat_exporter.sources.replay import ReplaySource
from neat_exporter.traces import read_planetlab
from neat_exporter.vocabulary import AlgorithmConfig, AlgorithmSet, parse_spec
from neat_exporter.workloads import Workload, from_csv

DAY = "20110303.tar.gz"

# Two VMs on a 1000 MHz host, one row a minute. Host utilization (a + b) / 1000:
#   0.5, 1.0, 0.6, 1.2, 1.0, 1.0, 0.1
TINY = """time,a,b
0,250,250
60,500,500
120,300,300
180,700,500
240,500,500
300,500,500
360,50,50
"""
TINY_ALGORITHMS = [
    "--overload",
    "threshold threshold=1.05",
    "--underload",
    "threshold threshold=0.2",
]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["replay", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.csv"
    path.write_text(TINY)
    return path


def tiny_json(capsys, csv_path: Path, *extra: str) -> dict:
    code, out, err = run(
        capsys,
        "--csv",
        str(csv_path),
        "--host-cpu-mhz",
        "1000",
        *TINY_ALGORITHMS,
        "--format",
        "json",
        *extra,
    )
    assert code == 0, err
    return json.loads(out)


def test_otf_and_first_migration_by_hand(capsys, tiny_csv):
    report = tiny_json(capsys, tiny_csv)
    assert report["workload"]["steps"] == 7
    assert report["workload"]["time_step_s"] == 60
    (config,) = report["configurations"]
    # The overload threshold (> 1.05) first holds at step 3 (1.2); the run up to and including
    # it has utilization >= 1.0 at steps 1 and 3: OTF 2/4; the decision comes at 4 x 60 s.
    assert config["first_overload"] == {"step": 3, "time": 180.0, "seconds": 240.0}
    assert config["otf"] == pytest.approx(0.5)
    assert report["workload"]["otf_without_migration"] == pytest.approx(4 / 7)
    assert config["overload_decisions"] == 1
    # Underloaded (<= 0.2) at the last step only.
    assert config["first_underload"]["step"] == 6
    assert config["underload_decisions"] == 1
    # Equal RAM, so the VM with the highest mean of its last two samples leaves: a (500 > 400).
    assert config["first_overload_selected"] == ["a"]
    assert config["selected"] == {"a": 1}
    utilization = [step["utilization"] for step in config["steps"]]
    assert utilization == pytest.approx([0.5, 1.0, 0.6, 1.2, 1.0, 1.0, 0.1])
    decisions = [step["decision"] for step in config["steps"]]
    assert decisions == [None, None, None, "overload", None, None, "underload"]
    assert config["steps"][3]["overload"] == {
        "decision": True,
        "input": pytest.approx(1.2),
        "threshold": 1.05,
        "ready": True,
    }
    # 1024 MB at 10 MB/s.
    assert config["migration_time_s"] == pytest.approx(102.4)


def test_otf_threshold_option(capsys, tiny_csv):
    report = tiny_json(capsys, tiny_csv, "--otf-threshold", "0.55")
    # Up to step 3: 1.0, 0.6 and 1.2 are >= 0.55.
    assert report["configurations"][0]["otf"] == pytest.approx(3 / 4)


def test_stop_at_first_overload(capsys, tiny_csv):
    report = tiny_json(capsys, tiny_csv, "--stop-at-first-overload")
    (config,) = report["configurations"]
    assert [step["step"] for step in config["steps"]] == [0, 1, 2, 3]
    assert config["otf"] == pytest.approx(0.5)
    assert config["first_underload"] is None and config["underload_decisions"] == 0


def test_history_is_a_sliding_window_of_history_length(capsys, tiny_csv, tmp_path):
    config = tmp_path / "short.yml"
    config.write_text(
        "history_length: 3\n"
        "algorithms:\n"
        "  overload: {name: last_n_average_threshold, params: {threshold: 5, n: 100}}\n"
    )
    code, out, err = run(
        capsys,
        "--csv",
        str(tiny_csv),
        "--host-cpu-mhz",
        "1000",
        "--config",
        str(config),
        "--format",
        "json",
    )
    assert code == 0, err
    steps = json.loads(out)["configurations"][0]["steps"]
    utilization = [0.5, 1.0, 0.6, 1.2, 1.0, 1.0, 0.1]
    # A mean over "the last 100" sees only the 3 samples the history keeps.
    for index, step in enumerate(steps):
        window = utilization[max(0, index - 2) : index + 1]
        assert step["overload"]["input"] == pytest.approx(sum(window) / len(window))


def test_a_vm_that_leaves_loses_its_history(tmp_path):
    path = tmp_path / "leaving.csv"
    path.write_text("time,a,b\n0,100,100\n300,100,\n600,100,400\n")
    workload = from_csv(path, host_cpu_mhz=1000)
    algorithms = AlgorithmSet(
        AlgorithmConfig("threshold", {"threshold": 0.0}),
        AlgorithmConfig("never_overloaded"),
        AlgorithmConfig("minimum_migration_time"),
    )
    result = replay(workload, ReplayConfig("t", algorithms))
    # Step 2: b is back with a one-sample history, left-padded with zeros: [0.1, 0.1, 0.5].
    assert [step.utilization for step in result.steps] == pytest.approx([0.2, 0.1, 0.5])


def test_replay_decides_as_the_daemon_does():
    """Replay and the daemon share one pipeline: over the same samples they keep the same
    history, carry the same detector states and decide alike, step for step."""
    rng = np.random.default_rng(7)
    phases = [(0, 40, 25), (75, 100, 30), (40, 70, 25)]  # underloaded, overloaded, neither
    percent = {
        f"vm{i}": np.concatenate([rng.uniform(low, high, n) for low, high, n in phases])
        for i in range(5)
    }
    host_mhz, cpus, ram = 4000.0, 4, 512.0
    mapping = {
        "source": {"type": "replay"},
        "interval": 300,
        "history_length": 12,
        "algorithms": {
            "underload": {"name": "threshold", "params": {"threshold": 0.35}},
            "overload": {"name": "mad_threshold", "params": {"threshold": 1.5, "limit": 5}},
            "vm_selection": {"name": "minimum_migration_time_max_cpu", "params": {"last_n": 2}},
        },
    }
    config = config_from_mapping(mapping)
    daemon = Daemon(config, ReplaySource(percent, host_cpu_mhz=host_mhz, cpus=cpus, vm_ram_mb=ram))
    by_daemon = []
    for _ in range(80):
        assert daemon.run_cycle()
        shot = daemon.snapshot
        overload = shot.detectors["overload"]
        by_daemon.append(
            (shot.decision, shot.selected, shot.utilization, overload.input, overload.threshold)
        )

    core_mhz = host_mhz / cpus
    workload = Workload(
        vms_mhz={name: values / 100 * core_mhz for name, values in percent.items()},
        time_step=300,
        capacity_mhz=host_mhz,
        vms_ram_mb=dict.fromkeys(percent, ram),
        source="test",
        overhead_mhz=np.zeros(80),
    )
    result = replay(workload, ReplayConfig.from_config(config, "same"))
    by_replay = [
        (
            "overload" if step.overloaded else "underload" if step.underloaded else "none",
            tuple(step.selected) if step.overloaded or step.underloaded else (),
            step.utilization,
            step.overload.input,
            step.overload.threshold,
        )
        for step in result.steps
    ]
    assert {decision for decision, *_ in by_daemon} >= {"overload", "underload", "none"}
    assert by_replay == by_daemon


def test_configurations_are_the_product_of_specs():
    base = ReplayConfig(
        "defaults",
        AlgorithmSet(
            AlgorithmConfig("last_n_average_threshold", {"threshold": 0.5, "n": 2}),
            AlgorithmConfig("mhod", {"state_config": [0.8], "otf": 0.1}),
            AlgorithmConfig("minimum_migration_time_max_cpu", {"last_n": 2}),
        ),
    )
    specs = {
        "overload": [
            parse_spec("overload", "mhod otf=0.3"),
            parse_spec("overload", 'otf:{"otf": 0.2}'),
        ],
        "underload": [parse_spec("underload", "threshold  threshold=0.3")],
    }
    configs = combine([base], specs)
    assert [c.label for c in configs] == [
        "underload: threshold threshold=0.3 | overload: mhod otf=0.3",
        'underload: threshold threshold=0.3 | overload: otf:{"otf": 0.2}',
    ]
    # Same algorithm as the base: only the given parameter changes.
    assert configs[0].algorithms.overload == AlgorithmConfig(
        "mhod", {"state_config": [0.8], "otf": 0.3}
    )
    assert configs[1].algorithms.overload == AlgorithmConfig("otf", {"otf": 0.2})
    assert configs[1].algorithms.underload == AlgorithmConfig("threshold", {"threshold": 0.3})


def test_planetlab_smoke_table_json_csv_and_plot(capsys, planetlab_dir, tmp_path):
    trace = str(planetlab_dir / DAY)
    common = [
        "--traces",
        trace,
        "--count",
        "12",
        "--seed",
        "4",
        "--overload",
        "mhod otf=0.2",
        "--overload",
        "loess_robust param=1.1",
    ]
    code, out, err = run(capsys, *common, "--plot", str(tmp_path / "r.png"))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"workload: {trace}: 12 VMs, 288 steps of 300 s, host 12000 MHz")
    header = lines[3].split()
    assert header[:2] == ["configuration", "OTF"]
    assert lines[5].startswith("mhod otf=0.2") and lines[6].startswith("loess_robust param=1.1")
    png = (tmp_path / "r.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000

    code, out, err = run(capsys, *common, "--format", "json", "--output", str(tmp_path / "r.json"))
    assert code == 0 and out == "", err
    report = json.loads((tmp_path / "r.json").read_text())
    assert (tmp_path / "r.json").stat().st_mode & 0o644 == 0o644  # not the temp file's 0600
    assert len(report["workload"]["vms"]) == 12
    for config in report["configurations"]:
        assert len(config["steps"]) == 288
        assert {
            "otf",
            "first_overload",
            "first_underload",
            "overload_decisions",
            "underload_decisions",
            "selected",
            "algorithms",
        } <= set(config)
        assert 0 <= config["otf"] <= 1
        assert config["algorithms"]["overload"]["name"] in ("mhod", "loess_robust")
        assert config["overload_decisions"] == sum(
            s["decision"] == "overload" for s in config["steps"]
        )
        assert sum(config["selected"].values()) == config["overload_decisions"]

    code, out, err = run(capsys, *common, "--format", "csv")
    assert code == 0, err
    rows = out.splitlines()
    assert rows[0].startswith("configuration,otf,first_overload_step")
    assert len(rows) == 3


def test_planetlab_by_name_and_host_model(capsys, planetlab_dir):
    name = "146-179_surfsnel_dsl_internl_net_root"
    percent = read_planetlab(planetlab_dir / DAY, names=[name])[name]
    code, out, err = run(
        capsys,
        "--traces",
        str(planetlab_dir / DAY),
        "--vm",
        name,
        "--host-cpu-mhz",
        "1000",
        "--vm-mhz",
        "500",
        "--format",
        "json",
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["workload"]["vms"] == [name]
    # A VM at 100 % uses 500 of the host's 1000 MHz: utilization = percent / 200.
    steps = report["configurations"][0]["steps"]
    assert [s["utilization"] for s in steps] == pytest.approx(list(percent / 200))


def test_cli_runs_as_a_program(planetlab_dir):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "neat_exporter",
            "replay",
            "--traces",
            str(planetlab_dir / DAY),
            "--count",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "defaults" in result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--traces", "/nonexistent/day.tar.gz"],
            "/nonexistent/day.tar.gz: no such file or folder",
        ),
        (["--csv", "/nonexistent.csv"], "/nonexistent.csv: cannot read"),
        (["--csv", "{bad}", "--overload", "no_such_detector"], "no_such_detector"),
        (["--csv", "{bad}", "--overload", "mhod otf=7"], "otf"),
        (["--csv", "{bad}", "--overload", "mhod otf"], "expected key=value"),
        (["--csv", "{tiny}", "--count", "3"], "--count"),
        (["--csv", "{tiny}", "--vm-mhz", "fast"], "--vm-mhz"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(capsys, tmp_path, tiny_csv, argv, message):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,a\n0,1\n300,1\n")
    argv = [arg.format(bad=bad, tiny=tiny_csv) for arg in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and out == ""


def test_a_folder_of_days_asks_for_one_day(capsys, planetlab_dir):
    code, _, err = run(capsys, "--traces", str(planetlab_dir))
    assert code == 2
    assert f"{planetlab_dir}: a folder of days; replay one day, e.g. {planetlab_dir}/" in err


def test_bad_csv_line_is_named(capsys, tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text("time,a,b\n0,1,2\n300,1,x\n")
    code, _, err = run(capsys, "--csv", str(path))
    assert code == 2
    assert f"{path}:3: b: not a number: 'x'" in err
    path.write_text("time,a,b\n0,1,2\n0,1,2\n")
    code, _, err = run(capsys, "--csv", str(path))
    assert code == 2 and f"{path}:3: time '0' is not after" in err


def test_failed_plot_leaves_no_file(capsys, tiny_csv, tmp_path):
    target = tmp_path / "missing-dir" / "plot.png"
    code, _, err = run(capsys, "--csv", str(tiny_csv), "--plot", str(target))
    assert code == 2 and "cannot write" in err
    assert not target.exists()


# --- a real Prometheus holding the exporter's metrics ------------------------------------------

STEP = 60


def _openmetrics(start: int) -> str:
    """Two hosts; h1 has the tiny workload (1000 MHz), h2 something else."""
    lines = []
    rows = [list(map(int, row.split(","))) for row in TINY.splitlines()[1:]]
    hosts = {"h1": ("10.0.0.1:9840", rows), "h2": ("10.0.0.2:9840", [[0, 900, 900]] * 7)}

    def series(name: str, labels: dict[str, str], values: list[float]) -> None:
        text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for i, value in enumerate(values):
            lines.append(f"{name}{{{text}}} {value} {start + i * STEP}")

    for metric in (
        "neat_host_info",
        "neat_host_cpu_capacity_hertz",
        "neat_host_hypervisor_cpu_usage_hertz",
        "neat_vm_memory_max_bytes",
        "neat_vm_cpu_usage_hertz",
    ):
        lines.append(f"# TYPE {metric} gauge")
        for host, (instance, data) in hosts.items():
            target = {"instance": instance, "job": "neat"}
            if metric == "neat_host_info":
                series(metric, {**target, "host": host}, [1] * 7)
            elif metric == "neat_host_cpu_capacity_hertz":
                series(metric, target, [1e9] * 7)
            elif metric == "neat_host_hypervisor_cpu_usage_hertz":
                series(metric, target, [0] * 7)
            elif metric == "neat_vm_memory_max_bytes":
                for vm in ("a", "b"):
                    series(metric, {**target, "vm_uuid": f"{host}-{vm}"}, [1024 * 2**20] * 7)
            else:
                for column, vm in ((1, "a"), (2, "b")):
                    series(
                        metric,
                        {**target, "vm_uuid": f"{host}-{vm}"},
                        [row[column] * 1e6 for row in data],
                    )
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    promtool = require_program("promtool")
    workdir = tmp_path_factory.mktemp("prometheus")
    start = (int(time.time()) // 3600 - 3) * 3600  # inside one 2 h block, well in the past
    source = workdir / "metrics.om"
    source.write_text(_openmetrics(start))
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(workdir / "data")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    server = Prometheus(workdir, targets=[])
    try:
        yield server, start
    finally:
        server.stop()


def window(server: Prometheus, start: int) -> list[str]:
    """The recorded seven steps."""
    end = start + 6 * STEP
    return [
        "--prometheus",
        server.url,
        "--start",
        str(start),
        "--end",
        str(end),
        "--step",
        f"{STEP}s",
    ]


@pytest.mark.services
def test_prometheus_replay_matches_the_same_data_as_csv(capsys, prometheus, tiny_csv):
    server, start = prometheus
    code, out, err = run(
        capsys, *window(server, start), "--host", "h1", *TINY_ALGORITHMS, "--format", "json"
    )
    assert code == 0, err
    from_prometheus = json.loads(out)
    assert from_prometheus["workload"]["vms"] == ["h1-a", "h1-b"]
    assert from_prometheus["workload"]["host_cpu_mhz"] == 1000  # neat_host_cpu_capacity_hertz
    from_file = tiny_json(capsys, tiny_csv)
    ours, theirs = from_prometheus["configurations"][0], from_file["configurations"][0]
    for key in (
        "otf",
        "first_overload",
        "first_underload",
        "overload_decisions",
        "underload_decisions",
        "migration_time_s",
    ):
        if key.startswith("first_"):
            assert (
                ours[key]["step"] == theirs[key]["step"]
                and ours[key]["time"] == start + theirs[key]["time"]
            )
        else:
            assert ours[key] == pytest.approx(theirs[key]), key
    assert ours["selected"] == {"h1-a": 1}
    assert [s["utilization"] for s in ours["steps"]] == pytest.approx(
        [s["utilization"] for s in theirs["steps"]]
    )

    # By instance instead of host name.
    code, out, err = run(
        capsys, *window(server, start), "--instance", "10.0.0.2:9840", "--format", "json"
    )
    assert code == 0, err
    steps = json.loads(out)["configurations"][0]["steps"]
    assert steps[0]["utilization"] == pytest.approx(1.8)


@pytest.mark.services
def test_prometheus_errors_are_reported(capsys, prometheus):
    server, start = prometheus
    code, _, err = run(capsys, *window(server, start), "--host", "nowhere")
    assert code == 2 and "no neat_vm_cpu_usage_hertz series for host 'nowhere'" in err
    code, _, err = run(capsys, *window(server, start))
    assert code == 2 and "choose one with --host or --instance" in err
    # Prometheus refuses more than 11,000 points per series.
    code, _, err = run(capsys, *window(server, start), "--host", "h1", "--step", "0.01s")
    assert code == 2 and f"Prometheus at {server.url}" in err and "11,000" in err
    closed = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(capsys, *window(server, start)[2:], "--prometheus", closed, "--host", "h1")
    assert code == 2 and f"Prometheus at {closed}: cannot query" in err


def test_durations_and_times():
    from neat_exporter.parsing import parse_duration
    from neat_exporter.workloads import parse_timestamp

    assert parse_duration("300s", "k") == 300 and parse_duration("1h30m", "k") == 5400
    assert parse_duration("5m", "k") == 300 and parse_duration("60", "k") == 60
    assert parse_duration("500ms", "k") == 0.5 and parse_duration("0s", "k") == 0
    for bad in ("5 m", "m5", "-1s", "1e999", True, None, "", "1h1x"):
        with pytest.raises(ConfigError, match=r"^k: expected a duration"):
            parse_duration(bad, "k")
    with pytest.raises(ConfigError, match="above 0"):
        parse_duration("0s", "k", positive=True)
    assert parse_timestamp("now-1d", now=100000) == 100000 - 86400
    assert parse_timestamp("2011-03-03T00:00:00+00:00") == 1299110400
    assert math.isclose(parse_timestamp("1299110400.5"), 1299110400.5)
