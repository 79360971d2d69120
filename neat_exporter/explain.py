"""Why a detector decided what it did, in words, for the landing page.

Each built-in detector's rule is written out with its effective parameters, and broken into the
conditions it needs, each marked as holding or not in the latest cycle. OTF, for instance,
decides overload only when its input (the overload time fraction) reaches ``otf`` *and* the
current utilization reaches its own ``threshold``: a page that showed only the input and ``otf``
would look like a wrong "no" whenever the second condition does not hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from neat_exporter.algorithms import build
from neat_exporter.snapshot import DetectorView
from neat_exporter.vocabulary import AlgorithmSet

DETECTOR_KINDS = ("underload", "overload")


@dataclass(frozen=True)
class Condition:
    text: str
    held: bool | None
    """None when the cycle did not get as far as checking it (or cannot tell)."""


@dataclass(frozen=True)
class Explanation:
    rule: str
    """What the detector decides, and when, with its parameters."""
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Rule:
    """A detector as configured: its registry name and effective parameters (defaults filled)."""

    kind: str
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def utilization_line(self, view: DetectorView | None) -> float | None:
        """The utilization the detector compares against, for the history chart; None when it
        compares something else (a plugin) or nothing."""
        p = self.params
        if self.name in ("threshold", "last_n_average_threshold", "otf", "loess", "loess_robust"):
            return p.get("threshold")
        if self.name == "mhod":
            return p["state_config"][-1] if p.get("state_config") else None
        if self.name in ("mad_threshold", "iqr_threshold"):
            return None if view is None else view.threshold  # adaptive: changes every cycle
        return None

    def explain(self, view: DetectorView | None, utilization: float | None) -> Explanation:
        """The rule and its conditions in the cycle that produced ``view``."""
        writer = _WRITERS.get((self.kind, self.name)) or _WRITERS.get(self.name)
        if writer is None:
            return _plugin(self, view)
        return writer(self.params, view or DetectorView(None, None, False), utilization)


def detector_rules(algorithms: AlgorithmSet, time_step: float) -> dict[str, Rule]:
    """The configured underload and overload detectors with their effective parameters."""
    rules = {}
    for kind in DETECTOR_KINDS:
        configured = getattr(algorithms, kind)
        algorithm = build(kind, configured.name, configured.params, time_step=time_step)
        name = getattr(algorithm, "name", configured.name)
        rules[kind] = Rule(kind, name, dict(getattr(algorithm, "params", configured.params)))
    return rules


def _n(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def _at_least(value: float | None, threshold: float | None) -> bool | None:
    return None if value is None or threshold is None else value >= threshold


def _at_most(value: float | None, threshold: float | None) -> bool | None:
    return None if value is None or threshold is None else value <= threshold


def _above(value: float | None, threshold: float | None) -> bool | None:
    return None if value is None or threshold is None else value > threshold


def _history(length: int, view: DetectorView) -> Condition:
    return Condition(f"the history holds at least {length} values", view.ready)


def _simple_threshold(kind: str, averaged: bool):
    """Neat's trivial detectors: the latest value (or the mean of the newest n) against a fixed
    threshold; underload at or below it, overload strictly above it."""
    words, symbol, check = (
        ("at or below", "≤", _at_most) if kind == "underload" else ("above", ">", _above)
    )

    def write(p: Mapping, view: DetectorView, u: float | None) -> Explanation:
        t = p["threshold"]
        if averaged and p["n"] > 1:
            measure = f"the mean of the newest {p['n']} utilization values"
        else:
            measure = "the latest utilization"
        return Explanation(
            f"{kind.capitalize()} when {measure} is {words} {_n(t)}.",
            (Condition(f"{measure}: {_n(view.input)} {symbol} {_n(t)}", check(view.input, t)),),
        )

    return write


def _otf(p: Mapping, view: DetectorView, u: float | None) -> Explanation:
    otf, t, limit = p["otf"], p["threshold"], p["limit"]
    return Explanation(
        f"OTF decides overload only when the current utilization reaches {_n(t)} and the "
        f"overload time fraction (the share of cycles at or above {_n(t)}, counting the "
        f"migration time as overloaded) reaches {_n(otf)}, once the history holds {limit} "
        "values. A high fraction alone is not an overload.",
        (
            Condition(f"current utilization {_n(u)} ≥ {_n(t)}", _at_least(u, t)),
            Condition(
                f"overload time fraction {_n(view.input)} ≥ {_n(otf)}", _at_least(view.input, otf)
            ),
            _history(limit, view),
        ),
    )


def _mhod(p: Mapping, view: DetectorView, u: float | None) -> Explanation:
    otf, learning = p["otf"], p["learning_steps"]
    boundary = p["state_config"][-1]
    in_overload_state = _at_least(u, boundary)
    checked = view.ready and in_overload_state
    return Explanation(
        f"MHOD decides overload only when the current utilization is in the overload state (at "
        f"or above {_n(boundary)}) and its Markov model of the utilization finds no way to keep "
        f"the overload time fraction within {_n(otf)}; it learns for {learning} values first.",
        (
            Condition(f"current utilization {_n(u)} ≥ {_n(boundary)}", in_overload_state),
            Condition(
                f"the model cannot keep the overload time fraction (now {_n(view.input)}) "
                f"within {_n(otf)}",
                view.fired if checked else None,
            ),
            _history(learning, view),
        ),
    )


def _adaptive(p: Mapping, view: DetectorView, u: float | None, spread: str) -> Explanation:
    k, limit = p["threshold"], p["limit"]
    return Explanation(
        f"Overload when the latest utilization reaches an adaptive threshold, 1 − {_n(k)} × the "
        f"{spread} of the history, once the history holds {limit} values.",
        (
            Condition(
                f"latest utilization {_n(view.input)} ≥ threshold {_n(view.threshold)}",
                _at_least(view.input, view.threshold),
            ),
            _history(limit, view),
        ),
    )


def _mad(p: Mapping, view: DetectorView, u: float | None) -> Explanation:
    return _adaptive(p, view, u, "median absolute deviation")


def _iqr(p: Mapping, view: DetectorView, u: float | None) -> Explanation:
    return _adaptive(p, view, u, "interquartile range")


def _loess(p: Mapping, view: DetectorView, u: float | None, robust: bool = False) -> Explanation:
    t, length, param = p["threshold"], p["length"], p["param"]
    kind = "robust local regression" if robust else "local regression"
    return Explanation(
        f"Overload when {_n(param)} × the utilization a {kind} over the newest {length} values "
        f"predicts for the end of a migration reaches {_n(t)}.",
        (
            Condition(f"prediction {_n(view.input)} ≥ {_n(t)}", _at_least(view.input, t)),
            _history(length, view),
        ),
    )


def _loess_robust(p: Mapping, view: DetectorView, u: float | None) -> Explanation:
    return _loess(p, view, u, robust=True)


def _always(p: Mapping, view: DetectorView, u: float | None) -> Explanation:
    return Explanation("Decides underload at every cycle.")


def _never(p: Mapping, view: DetectorView, u: float | None) -> Explanation:
    return Explanation("Never decides overload.")


def _plugin(rule: Rule, view: DetectorView | None) -> Explanation:
    if view is None or view.input is None or view.threshold is None:
        return Explanation(f"{rule.name} is a plugin; it reports no input to compare.")
    return Explanation(
        f"{rule.name} is a plugin: it compared {_n(view.input)} with {_n(view.threshold)}.",
        (Condition(f"{_n(view.input)} against {_n(view.threshold)}", view.fired),),
    )


_WRITERS = {
    ("underload", "threshold"): _simple_threshold("underload", averaged=False),
    ("underload", "last_n_average_threshold"): _simple_threshold("underload", averaged=True),
    ("overload", "threshold"): _simple_threshold("overload", averaged=False),
    ("overload", "last_n_average_threshold"): _simple_threshold("overload", averaged=True),
    "always_underloaded": _always,
    "never_overloaded": _never,
    "otf": _otf,
    "mhod": _mhod,
    "mad_threshold": _mad,
    "iqr_threshold": _iqr,
    "loess": _loess,
    "loess_robust": _loess_robust,
}
