"""MHOD: Neat's worked examples, and the incremental estimator against the full-rebuild oracle."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from neat_mhod_oracle import OracleMhod, estimate

from neat_exporter.algorithms import build
from neat_exporter.algorithms.overload.mhod.core import utilization_to_states
from neat_exporter.algorithms.overload.mhod.estimation import MultisizeEstimator
from neat_exporter.algorithms.overload.mhod.nlp import frange, l0, l1, optimize

# Neat's 44-step real-data test (tests/locals/overload/mhod/test_core_real_data.py).
REAL_DATA = [
    0.859, 0.6988333333333333, 0.811, 0.7685833333333333, 0.88, 0.79475, 0.7965,
    0.7471666666666666, 0.92675, 0.8313333333333334, 0.9466666666666667, 0.7655833333333333,
    0.803, 1.0415833333333333, 0.9058333333333334, 0.7433333333333333, 0.9835,
    0.9040833333333333, 0.9189166666666667, 0.8335, 1.10275, 0.8660833333333333, 0.93475,
    0.773, 0.91825, 0.8491666666666666, 0.7414166666666666, 0.8538333333333333,
    0.8065833333333333, 0.9409166666666666, 1.1623333333333334, 0.9215833333333333,
    0.8944166666666666, 0.96475, 0.8331666666666667, 1.2955, 0.8536666666666667,
    0.9679166666666666, 1.197, 0.9381666666666667, 0.98875, 1.0150833333333333,
    1.1393333333333333, 1.0570833333333334,
]  # fmt: skip
REAL_DATA_PARAMS = {"state_config": [0.99], "otf": 0.2, "learning_steps": 30}


def test_frange_accumulates_the_step():
    assert list(frange(0, 1.0, 0.2)) == [0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
    assert list(frange(0, 1.0, 0.5)) == [0, 0.5, 1.0]


def test_l_functions_reference_example():
    p, pi, m = [[0.4, 0.6], [0.9, 0.1]], [1, 0], [0.2, 0.8]
    assert l0(pi, p, m) == pytest.approx(0.98 / 0.58)  # 1.690
    assert l1(pi, p, m) == pytest.approx(0.48 / 0.58)  # 0.828


def test_optimize_returns_no_policy_when_the_constraint_cannot_hold():
    p = [[0.8, 0.2], [0.1666, 0.0666]]
    assert optimize((0, 0.5, 1.0), 0.2, 20 / 300, p, [0, 1], 43, 7) == [0, 0]
    assert optimize((0, 0.5, 1.0), 0.01, 20 / 300, p, [0, 1], 43, 40) == []


def test_states_from_thresholds():
    states = utilization_to_states(np.array([0.4, 0.7]), np.array([0.39, 0.4, 0.69, 0.7, 2.0]))
    assert states.tolist() == [0, 1, 1, 2, 2]


def test_neat_real_data_test():
    mhod = build("overload", "mhod", REAL_DATA_PARAMS, time_step=300, migration_time=20.0)
    state = None
    for k in range(1, len(REAL_DATA) + 1):
        result = mhod.evaluate(REAL_DATA[:k], state)
        state = result.state
        assert result.ready is (k >= 30)
        assert result.decision is (k == 44)
        if k < 43:
            assert "policy" not in state, "the solver only runs at steps 43 and 44"
        if k == 43:
            assert state["policy"] == [0, 0]
            assert (state["time_in_states"], state["time_in_state_n"]) == (43, 7)
            assert np.array(state["p"]) == pytest.approx(np.array([[0.8, 0.2], [1 / 6, 1 / 30]]))
    assert state["policy"] == []
    assert state["selected_windows"] == [[30, 30], [30, 30]]
    assert np.array(state["p"]) == pytest.approx(np.array([[0.8, 0.2], [1 / 6, 2 / 30]]))
    assert (state["time_in_states"], state["time_in_state_n"]) == (44, 8)
    mt = 20 / 300
    assert (result.input, result.threshold) == (pytest.approx((mt + 8) / (mt + 44)), 0.2)


def test_empty_history_is_not_counted():
    mhod = build("overload", "mhod")
    result = mhod.evaluate([], None)
    assert (result.decision, result.ready, result.state["time_in_states"]) == (False, False, 0)


def test_a_state_can_be_reused_with_another_history():
    """The estimator in the state is a cache: results depend only on the history given."""
    mhod = build("overload", "mhod", REAL_DATA_PARAMS)
    state = mhod.evaluate(REAL_DATA[:40], None).state
    later = mhod.evaluate(REAL_DATA, state).state
    again = mhod.evaluate(REAL_DATA[:41], state).state  # the cache now holds all 44 values
    assert again["p"] == estimate([0.99], list(range(30, 101, 10)), REAL_DATA[:41])[0]
    assert later["p"] == estimate([0.99], list(range(30, 101, 10)), REAL_DATA)[0]
    assert again["time_in_states"] == later["time_in_states"] == 2  # calls, not values


calls = st.lists(
    st.tuples(
        st.sampled_from(["append", "slide", "repeat", "jump", "drop"]),
        st.lists(st.sampled_from([0.1, 0.5, 0.9]), min_size=1, max_size=3),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(calls=calls, sizes=st.sampled_from([(2, 3, 5), (5, 3), (2,), (4, 8, 9)]))
def test_estimator_matches_the_full_replay_for_any_call_pattern(calls, sizes):
    estimator = MultisizeEstimator(sizes, 2)
    history: list[float] = []
    for action, values in calls:
        if action == "append":
            history = history + values[:1]
        elif action == "slide":
            history = history[1:] + values[:1]
        elif action == "jump":
            history = history[len(values) :] + values
        elif action == "drop":
            history = history[1:] or values
        if not history:
            history = values
        estimator.update(utilization_to_states(np.array([0.5]), np.array(history)))
        p, selected = estimate([0.5], list(sizes), history)
        assert estimator.probabilities() == p
        assert estimator.selected_windows() == selected


def replay_against_oracle(trace, params, window):
    mhod = build("overload", "mhod", params, time_step=300, migration_time=20.0)
    oracle = OracleMhod(mhod.params, 300, 20.0)
    state, decisions, solved = None, 0, 0
    for k in range(1, len(trace) + 1):
        history = trace[:k] if window is None else trace[max(0, k - window) : k]
        result = mhod.evaluate(history, state)
        state = result.state
        decision, p, selected, policy = oracle(history)
        assert result.decision is decision, f"step {k}"
        assert state["p"] == p, f"step {k}"  # bit for bit
        assert state["selected_windows"] == selected, f"step {k}"
        assert state.get("policy") == policy or policy is None
        decisions += decision
        solved += policy is not None
    return decisions, solved


@pytest.mark.parametrize("window", [None, 12, 25])
def test_synthetic_trace_matches_the_oracle(window):
    rng = np.random.default_rng(7)
    trace = np.clip(0.8 + 0.1 * np.sin(np.arange(120) / 5) + rng.normal(0, 0.05, 120), 0, 1.3)
    trace = trace.tolist()
    params = {"window_sizes": [3, 5, 8], "otf": 0.3, "learning_steps": 5}
    _, solved = replay_against_oracle(trace, params, window)
    assert solved > 0
