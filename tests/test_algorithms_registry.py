"""Building algorithms by name: Neat's names and dotted paths, parameter errors, plug-ins."""

import math
import textwrap

import pytest

from neat_exporter.algorithms import KINDS, available, build
from neat_exporter.errors import ParameterError

NEAT_PATHS = [
    ("underload", "neat.locals.underload.trivial.always_underloaded_factory"),
    ("underload", "neat.locals.underload.trivial.threshold_factory"),
    ("underload", "neat.locals.underload.trivial.last_n_average_threshold_factory"),
    ("overload", "neat.locals.overload.trivial.never_overloaded_factory"),
    ("overload", "neat.locals.overload.trivial.threshold_factory"),
    ("overload", "neat.locals.overload.trivial.last_n_average_threshold_factory"),
    ("overload", "neat.locals.overload.statistics.mad_threshold_factory"),
    ("overload", "neat.locals.overload.statistics.iqr_threshold_factory"),
    ("overload", "neat.locals.overload.statistics.loess_factory"),
    ("overload", "neat.locals.overload.statistics.loess_robust_factory"),
    ("overload", "neat.locals.overload.otf.otf_factory"),
    ("overload", "neat.locals.overload.mhod.core.mhod_factory"),
    ("vm_selection", "neat.locals.vm_selection.algorithms.random_factory"),
    ("vm_selection", "neat.locals.vm_selection.algorithms.minimum_utilization_factory"),
    ("vm_selection", "neat.locals.vm_selection.algorithms.minimum_migration_time_factory"),
    ("vm_selection", "neat.locals.vm_selection.algorithms.minimum_migration_time_max_cpu_factory"),
    ("vm_placement", "neat.globals.vm_placement.bin_packing.best_fit_decreasing_factory"),
]
REQUIRED = {
    "mad_threshold": {"threshold": 1.6, "limit": 3},
    "iqr_threshold": {"threshold": 1.6, "limit": 3},
}


@pytest.mark.parametrize(("kind", "path"), NEAT_PATHS)
def test_neat_dotted_paths_and_factory_names_are_aliases(kind, path):
    short = path.rsplit(".", 1)[1].removesuffix("_factory")
    params = REQUIRED.get(short)
    for name in (path, f"{short}_factory", short):
        algorithm = build(kind, name, params)
        assert algorithm.name == short
        assert short in available(kind)[kind]


def test_available_lists_every_kind():
    names = available()
    assert set(names) == set(KINDS)
    assert "mhod" in names["overload"] and "threshold" in names["underload"]


def test_kind_decides_between_same_named_algorithms():
    under = build("underload", "threshold", {"threshold": 0.5})
    over = build("overload", "threshold", {"threshold": 0.5})
    assert under([0.5], None)[0] is True and over([0.5], None)[0] is False


def test_neat_conf_defaults():
    assert build("overload", "mhod").params == {
        "state_config": (0.8,),
        "otf": 0.1,
        "history_size": 500,
        "window_sizes": (30, 40, 50, 60, 70, 80, 90, 100),
        "bruteforce_step": 0.5,
        "learning_steps": 10,
    }
    assert build("underload", "last_n_average_threshold").params == {"threshold": 0.5, "n": 2}
    assert build("vm_selection", "minimum_migration_time_max_cpu").params == {"last_n": 2}
    assert build("vm_placement", "best_fit_decreasing").params == {
        "cpu_threshold": 0.8,
        "ram_threshold": 0.95,
        "last_n_vm_cpu": 2,
    }


@pytest.mark.parametrize(
    ("kind", "name", "message"),
    [
        ("overload", "nope", r"overload\.nope: unknown algorithm \(known: .*mhod"),
        ("underload", "mhod", r"underload\.mhod: unknown algorithm"),
        ("underload", "neat.locals.overload.trivial.threshold_factory", "is a overload algorithm"),
        ("overload", "my.module.thing_factory", "not a Neat module"),
        ("sideways", "threshold", "unknown algorithm kind"),
    ],
)
def test_unknown_names_are_one_clear_error(kind, name, message):
    with pytest.raises(ParameterError, match=message):
        build(kind, name, {})


@pytest.mark.parametrize(
    ("kind", "name", "params", "parameter", "reason"),
    [
        ("overload", "mad_threshold", {"threshold": 1.6}, "limit", "missing"),
        ("overload", "otf", {"otf": 1.5}, "otf", "<= 1"),
        ("overload", "otf", {"otf": math.nan}, "otf", "finite"),
        ("overload", "otf", {"otf": "0.2"}, "otf", "must be a number"),
        ("overload", "otf", {"limit": True}, "limit", "integer"),
        ("overload", "otf", {"limit": 2.5}, "limit", "integer"),
        ("underload", "last_n_average_threshold", {"n": 0}, "n", ">= 1"),
        ("underload", "threshold", {"threshold": -0.1}, "threshold", ">= 0"),
        ("underload", "threshold", {"treshold": 0.1}, "treshold", "unknown parameter"),
        ("overload", "loess", {"length": 2}, "length", ">= 3"),
        ("overload", "mhod", {"state_config": [0.4, 0.8]}, "state_config", "at most 1"),
        ("overload", "mhod", {"state_config": 0.8}, "state_config", "must be a list"),
        ("overload", "mhod", {"window_sizes": [30, 1]}, "window_sizes[1]", ">= 2"),
        ("overload", "mhod", {"window_sizes": [30, 30]}, "window_sizes", "distinct"),
        ("overload", "mhod", {"bruteforce_step": 0}, "bruteforce_step", "> 0"),
        ("vm_selection", "minimum_migration_time_max_cpu", {"last_n": -1}, "last_n", ">= 1"),
        (
            "vm_placement",
            "best_fit_decreasing",
            {"cpu_threshold": math.inf},
            "cpu_threshold",
            "finite",
        ),
    ],
)
def test_bad_parameters_name_the_algorithm_and_the_parameter(kind, name, params, parameter, reason):
    with pytest.raises(ParameterError) as raised:
        build(kind, name, params)
    error = raised.value
    assert (error.algorithm, error.parameter) == (f"{kind}.{name}", parameter)
    assert reason in error.reason
    assert str(error).startswith(f"{kind}.{name}: parameter {parameter!r}: ")


@pytest.mark.parametrize(("time_step", "migration_time"), [(0, 20.0), (300, -1.0), (300, math.nan)])
def test_bad_time_step_or_migration_time(time_step, migration_time):
    with pytest.raises(ParameterError, match=r"time_step|migration_time"):
        build("overload", "otf", None, time_step=time_step, migration_time=migration_time)


def test_params_must_be_a_mapping():
    with pytest.raises(ParameterError, match="mapping"):
        build("overload", "otf", [("otf", 0.1)])


PLUGIN = """
def hot_factory(time_step, migration_time, params):
    limit = params["limit"]
    def hot(utilization, state=None):
        calls = (state or {}).get("calls", 0) + 1
        return utilization[-1] > limit, {"calls": calls, "time_step": time_step}
    return hot


def last_vm_factory(time_step, migration_time, params):
    return lambda vms_cpu, vms_ram, state=None: ([list(vms_cpu)[-1]], {})


def broken_factory(time_step, migration_time, params):
    raise KeyError("limit")
"""


@pytest.fixture
def plugin_dist(tmp_path, monkeypatch):
    """An installed distribution (module + dist-info with entry points) on sys.path."""
    (tmp_path / "neat_plugin_example.py").write_text(PLUGIN)
    info = tmp_path / "neat_plugin_example-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: neat-plugin-example\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [neat_exporter.algorithms]
            overload.hot = neat_plugin_example:hot_factory
            overload.broken = neat_plugin_example:broken_factory
            vm_selection.last_vm = neat_plugin_example:last_vm_factory
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    import sys

    sys.modules.pop("neat_plugin_example", None)


@pytest.mark.usefixtures("plugin_dist")
def test_plugin_detector_through_entry_points():
    assert "hot" in available("overload")["overload"]
    detector = build("overload", "hot", {"limit": 0.5}, time_step=60)
    result = detector.evaluate([0.1, 0.9], None)
    assert result.decision is True and result.state == {"calls": 1, "time_step": 60}
    assert (result.input, result.threshold, result.ready) == (None, None, True)
    decision, state = detector([0.2], result.state)
    assert decision is False and state["calls"] == 2


@pytest.mark.usefixtures("plugin_dist")
def test_plugin_selector_and_failing_factory():
    select = build("vm_selection", "last_vm", {})
    assert select({"a": [1], "b": [2]}, {"a": 1, "b": 1}, None) == (["b"], {})
    with pytest.raises(ParameterError, match=r"overload\.broken: plug-in .* failed: KeyError"):
        build("overload", "broken", {})
    with pytest.raises(ParameterError, match="unknown algorithm"):
        build("underload", "hot", {})
