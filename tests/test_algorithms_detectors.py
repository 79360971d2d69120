"""Underload, trivial/statistical overload and OTF detectors: Neat's decisions on values worked
out by hand from Neat's ``neat/locals/underload`` and ``neat/locals/overload`` code, and the
explanation each decision carries."""

import math

import numpy as np
import pytest

from neat_exporter.algorithms import Detection, build
from neat_exporter.algorithms.overload.statistics import (
    iqr,
    loess_parameter_estimates,
    loess_robust_parameter_estimates,
    mad,
    tricube_bisquare_weights,
    tricube_weights,
)
from neat_exporter.errors import InputError

EXAMPLE_20 = [2., 4., 7., -20., 22., -1., 0., -1., 7., 15., 8., 4.,
              -4., 11., 11., 12., 3., 12., 18., 1.]  # fmt: skip
EXAMPLE_11 = [105, 109, 107, 112, 102, 118, 115, 104, 110, 116, 108]


def detect(kind, name, params, history, state=None, **kwargs):
    return build(kind, name, params, **kwargs).evaluate(history, state)


# -- underload ------------------------------------------------------------------------------


def test_always_underloaded_compares_nothing():
    assert detect("underload", "always_underloaded", {}, []) == Detection(True, {}, None, None)


@pytest.mark.parametrize(
    ("history", "decision", "value"),
    [([0.5, 0.3], True, 0.3), ([0.31], False, 0.31), ([0.0], True, 0.0)],
)
def test_underload_threshold_is_inclusive(history, decision, value):
    assert detect("underload", "threshold", {"threshold": 0.3}, history) == Detection(
        decision, {}, value, 0.3
    )


@pytest.mark.parametrize(
    ("history", "decision", "mean"),
    [([0.9, 0.4, 0.6], True, 0.5), ([0.4, 0.61], False, 0.505), ([0.2], True, 0.2)],
)
def test_underload_last_n_average_uses_fewer_values_when_short(history, decision, mean):
    result = detect("underload", "last_n_average_threshold", None, history)  # defaults 0.5, 2
    assert (result.decision, result.threshold, result.ready) == (decision, 0.5, True)
    assert result.input == pytest.approx(mean)


@pytest.mark.parametrize("name", ["threshold", "last_n_average_threshold"])
@pytest.mark.parametrize("kind", ["underload", "overload"])
def test_empty_history_decides_false_and_is_not_ready(kind, name):
    result = detect(kind, name, None, [])
    assert (result.decision, result.input, result.ready) == (False, None, False)


# -- trivial overload -----------------------------------------------------------------------


def test_overload_threshold_is_strict():
    assert detect("overload", "threshold", {"threshold": 0.9}, [0.9]).decision is False
    assert detect("overload", "threshold", {"threshold": 0.9}, [0.2, 0.91]) == Detection(
        True, {}, 0.91, 0.9
    )


def test_overload_last_n_average_is_strict():
    params = {"threshold": 0.95, "n": 2}
    assert detect("overload", "last_n_average_threshold", params, [0.9, 1.0]).decision is False
    result = detect("overload", "last_n_average_threshold", params, [0.1, 0.92, 1.0])
    assert result.decision is True
    assert result.input == pytest.approx(0.96)


def test_never_overloaded():
    assert detect("overload", "never_overloaded", {}, [5.0]) == Detection(False, {}, None, None)


# -- MAD / IQR ------------------------------------------------------------------------------


def test_mad_reference_example():
    assert mad(np.array([1, 1, 2, 2, 4, 6, 9], dtype=float)) == 1.0


def test_iqr_reference_examples():
    assert iqr(np.array(EXAMPLE_11, dtype=float)) == 10.0
    assert iqr(np.array(EXAMPLE_20)) == 12.0


def test_iqr_rounds_half_away_from_zero_like_python_2():
    # n = 9: 0.25·10 = 2.5 -> rank 3 (Python 3's round would give rank 2 and IQR 6).
    assert iqr(np.arange(1.0, 10.0)) == 5.0


def test_iqr_of_a_single_value_is_zero():
    assert iqr(np.array([0.7])) == 0.0


def test_mad_threshold_decision_and_explanation():
    # median 0.2, |deviations| sorted [0, 0, .1, .1, .2, .4, .7] -> MAD 0.1 -> 1 - 1.6·0.1
    history = [0.1, 0.1, 0.2, 0.2, 0.4, 0.6, 0.9]
    result = detect("overload", "mad_threshold", {"threshold": 1.6, "limit": 3}, history)
    assert result.decision is True and result.input == 0.9 and result.ready
    assert result.threshold == pytest.approx(0.84)


def test_iqr_threshold_decision_and_explanation():
    history = [v / 100 for v in EXAMPLE_11]  # IQR 0.10 -> 1 - 1.5·0.1 = 0.85 <= 1.08
    result = detect("overload", "iqr_threshold", {"threshold": 1.5, "limit": 3}, history)
    assert result.decision is True and result.input == 1.08
    assert result.threshold == pytest.approx(0.85)
    below = detect("overload", "iqr_threshold", {"threshold": 1.5, "limit": 3}, [*history, 0.8])
    assert below.decision is False


@pytest.mark.parametrize("name", ["mad_threshold", "iqr_threshold"])
def test_statistical_thresholds_wait_for_limit_values(name):
    params = {"threshold": 1.6, "limit": 3}
    assert detect("overload", name, params, []) == Detection(False, {}, None, None, False)
    assert detect("overload", name, params, [0.0, 1.0]) == Detection(False, {}, 1.0, None, False)
    # No spread (MAD and IQR are 0 for six zeros and one other value): the threshold is 1.0.
    zeros = [0.0] * 6
    assert detect("overload", name, params, [*zeros, 1.0]) == Detection(True, {}, 1.0, 1.0)
    assert detect("overload", name, params, [*zeros, 0.9]).decision is False


# -- LR / LRR -------------------------------------------------------------------------------


def test_tricube_weights_reference_values():
    assert tricube_weights(5) == pytest.approx([0.6699, 0.6699, 0.6699, 0.9539, 1.0], abs=1e-4)
    expected = [0.148, 0.148, 0.148, 0.348, 0.568, 0.759, 0.892, 0.967, 0.995, 1.0]
    assert tricube_weights(10) == pytest.approx(expected, abs=1e-3)


def test_tricube_bisquare_weights_reference_values():
    weights = tricube_bisquare_weights(np.array([1.0, 1.0, 2.0, 2.0, 4.0, 6.0, 9.0]))
    assert weights == pytest.approx([0.329, 0.329, 0.329, 0.633, 0.705, 0.554, 0.191], abs=1e-3)


def test_loess_estimates_use_squared_tricube_weights():
    assert loess_parameter_estimates(np.array(EXAMPLE_20)) == pytest.approx(
        (2.2640, 0.3724), abs=1e-4
    )


def test_loess_robust_estimates():
    assert loess_robust_parameter_estimates(np.array(EXAMPLE_20)) == pytest.approx(
        (2.4547, 0.3901), abs=1e-4
    )


@pytest.mark.parametrize("name", ["loess", "loess_robust"])
def test_loess_neat_test_vectors(name):
    params = {"threshold": 1.0, "param": 1.2, "length": 3}
    high = [1.05, 1.09, 1.07, 1.12, 1.02, 1.18, 1.15, 1.04, 1.10, 1.16, 1.08]
    low = [0.55, 0.60, 0.62, 0.59, 0.67, 0.73, 0.85, 0.97, 0.73, 0.68, 0.69, 0.52, 0.51,
           0.55, 0.48, 0.46, 0.52, 0.55, 0.58, 0.65, 0.70]  # fmt: skip
    assert detect("overload", name, params, [], migration_time=20.0) == Detection(
        False, {}, None, 1.0, ready=False
    )
    assert detect("overload", name, params, high, migration_time=20.0).decision is True
    assert detect("overload", name, params, low, migration_time=20.0).decision is False


@pytest.mark.parametrize("name", ["loess", "loess_robust"])
def test_loess_predicts_one_migration_time_ahead(name):
    # An exact line 0.1·x: at x = length + mt = 3 + 300/300 the prediction is 0.4; × param 2.
    params = {"threshold": 0.79, "param": 2.0, "length": 3}
    result = detect("overload", name, params, [0.7, 0.1, 0.2, 0.3], migration_time=300.0)
    assert result.decision is True and result.threshold == 0.79
    assert result.input == pytest.approx(0.8)
    assert detect("overload", name, params, [0.1, 0.2]).ready is False


# -- OTF ------------------------------------------------------------------------------------


def test_otf_counts_calls_and_explains_the_fraction():
    otf = build("overload", "otf", {"otf": 0.5, "threshold": 0.8, "limit": 2}, migration_time=0.0)
    first = otf.evaluate([0.9], None)
    assert first == Detection(False, {"overload": 1, "total": 1}, 1.0, 0.5, ready=False)
    second = otf.evaluate([0.9, 0.5], first.state)
    assert second == Detection(False, {"overload": 1, "total": 2}, 0.5, 0.5, ready=True)
    third = otf.evaluate([0.9, 0.5, 0.85], second.state)
    assert third.decision is True and third.input == pytest.approx(2 / 3)
    assert third.state == {"overload": 2, "total": 3}


def test_otf_adds_the_migration_time_in_steps():
    otf = build("overload", "otf", {"otf": 0.7, "threshold": 0.8, "limit": 0}, migration_time=300.0)
    state = {"overload": 1, "total": 2}
    result = otf.evaluate([0.8], state)  # (1 + 2) / (1 + 3)
    assert result.decision is True and result.input == 0.75
    assert state == {"overload": 1, "total": 2}, "the caller's state is not modified"


def test_otf_on_empty_history_counts_nothing():
    otf = build("overload", "otf", None)
    result = otf.evaluate([], {"overload": 3, "total": 4})
    assert result == Detection(False, {"overload": 3, "total": 4}, None, 0.2, ready=False)


# -- input checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [[0.5, math.nan], [math.inf], [[0.1, 0.2]], ["x"]])
def test_non_finite_or_malformed_history_is_an_input_error(bad):
    with pytest.raises(InputError, match="utilization"):
        detect("overload", "threshold", None, bad)


def test_numpy_history_and_plain_call():
    detector = build("overload", "threshold", {"threshold": 0.5})
    decision, state = detector(np.array([0.2, 0.7]), None)
    assert decision is True and state == {}
    assert type(detector.evaluate(np.array([0.7])).input) is float
