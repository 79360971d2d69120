"""Invariants of every detector, for any finite history (hypothesis)."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neat_exporter.algorithms import available, build
from neat_exporter.errors import InputError

PARAMS = {
    "mad_threshold": {"threshold": 1.6, "limit": 3},
    "iqr_threshold": {"threshold": 1.6, "limit": 3},
    "loess": {"threshold": 0.8, "param": 1.2, "length": 5},
    "loess_robust": {"threshold": 0.8, "param": 1.2, "length": 5},
    "mhod": {"window_sizes": [3, 5], "learning_steps": 3},
}
DETECTORS = [(kind, name) for kind in ("underload", "overload") for name in available(kind)[kind]]
values = st.one_of(
    st.floats(-2, 2, allow_nan=False), st.floats(allow_nan=False, allow_infinity=False)
)
histories = st.lists(values, max_size=40)


@settings(max_examples=60, deadline=None)
@given(history=histories, more=st.lists(histories, max_size=3))
@pytest.mark.parametrize(("kind", "name"), DETECTORS)
def test_any_finite_history_gives_a_decision(kind, name, history, more):
    detector = build(kind, name, PARAMS.get(name), time_step=300, migration_time=20.0)
    state = None
    for h in [history, *more]:
        result = detector.evaluate(h, state)
        assert type(result.decision) is bool and type(result.ready) is bool
        assert result.input is None or type(result.input) is float
        assert result.threshold is None or type(result.threshold) is float
        if not h:
            assert result.decision in (False, name == "always_underloaded")
        decision, state = detector(h, result.state)
        assert decision == result.decision or (kind == "overload" and name in ("otf", "mhod"))


@settings(max_examples=30, deadline=None)
@given(
    history=histories, bad=st.sampled_from([math.nan, math.inf, -math.inf]), at=st.integers(0, 40)
)
@pytest.mark.parametrize(("kind", "name"), DETECTORS)
def test_non_finite_values_are_rejected_clearly(kind, name, history, bad, at):
    detector = build(kind, name, PARAMS.get(name))
    history.insert(min(at, len(history)), bad)
    with pytest.raises(InputError, match=r"utilization: value .* at index \d+ is not finite"):
        detector.evaluate(history, None)
