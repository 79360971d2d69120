"""What `neat-exporter tune` searches: the exporter's own algorithms and the round's knobs.

A candidate is drawn from an Optuna trial (``trial.suggest_*``), and stands for two things
that must mean the same: the ``simulate --policy`` text that evaluates it, and the
``algorithms:`` block (with ``history_length``) that deploys it in the exporter. Both come from
the same choices here, so they cannot drift apart. The detectors are the exporter's, run in the
simulator as ``neat:`` policies; VM selection is one of the simulator's CloudSim selections with
an exporter equivalent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from neat_exporter.errors import InputError

STEP = 0.05

DETECTOR_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "threshold": {"threshold": (0.6, 1.0)},
    "iqr_threshold": {"threshold": (0.0, 3.0)},
    "mad_threshold": {"threshold": (0.0, 3.5)},
    "loess": {"param": (0.9, 1.5)},
    "loess_robust": {"param": (0.9, 1.5)},
    "otf": {"otf": (0.05, 0.5), "threshold": (0.7, 1.0)},
    "mhod": {"otf": (0.05, 0.5)},
}
"""Each detector's searched parameters and their ranges (steps of 0.05)."""

FIXED_PARAMS: dict[str, dict[str, Any]] = {
    # CloudSim's MAD/IQR need 12 values; LR/LRR fit the last 10 and compare with 1.
    "iqr_threshold": {"limit": 12},
    "mad_threshold": {"limit": 12},
    "loess": {"threshold": 1.0, "length": 10},
    "loess_robust": {"threshold": 1.0, "length": 10},
}

SELECTIONS = {"mmt": "minimum_migration_time", "mu": "minimum_utilization", "rs": "random"}
"""The simulator's VM selections and the exporter's algorithm doing the same."""

DEFAULT_DETECTORS = ("threshold", "iqr_threshold", "mad_threshold", "loess", "otf")
"""Searched unless told otherwise: the fast ones (loess_robust and mhod take 3-5 times longer)."""


class TrialLike(Protocol):
    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...

    def suggest_float(self, name: str, low: float, high: float, *, step: float) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1) -> int: ...


@dataclass(frozen=True)
class Space:
    """The ranges searched. ``underload`` 1.0 stands for CloudSim's rule (any host below 100 %
    may be emptied); ``placement`` 1.0 for no limit on targets beyond the detector's."""

    detectors: tuple[str, ...] = DEFAULT_DETECTORS
    selections: tuple[str, ...] = tuple(SELECTIONS)
    underload: tuple[float, float] = (0.2, 1.0)
    placement: tuple[float, float] = (0.7, 1.0)
    history: tuple[int, int] = (12, 60)

    def __post_init__(self) -> None:
        unknown = [name for name in self.detectors if name not in DETECTOR_RANGES]
        if unknown or not self.detectors:
            raise InputError(
                f"detectors: unknown {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(DETECTOR_RANGES)}"
            )
        unknown = [name for name in self.selections if name not in SELECTIONS]
        if unknown or not self.selections:
            raise InputError(
                f"selections: unknown {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(SELECTIONS)}"
            )
        for name, (low, high) in (("underload", self.underload), ("placement", self.placement)):
            if not 0 < low <= high <= 1:
                raise InputError(f"{name} range {low}..{high}: need 0 < low <= high <= 1")
        if not 12 <= self.history[0] <= self.history[1]:
            raise InputError(f"history range {self.history}: need 12 <= low <= high")


@dataclass(frozen=True)
class Candidate:
    """One point of the space."""

    detector: str
    params: dict[str, Any]
    selection: str
    underload: float
    placement: float
    history: int
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def policy(self) -> str:
        """The ``simulate --policy`` text that evaluates this candidate."""
        words = [f"neat:{self.detector}"]
        words += [f"{key}={_text(value)}" for key, value in {**self.params, **self.fixed}.items()]
        words.append(f"selection={self.selection}")
        if self.underload < 1:
            words.append(f"underload={_text(self.underload)}")
        if self.placement < 1:
            words.append(f"placement={_text(self.placement)}")
        words.append(f"history={self.history}")
        return " ".join(words)

    def exporter_config(self) -> dict[str, Any]:
        """The exporter's ``history_length`` and ``algorithms:`` for this candidate. The
        placement limit is the global manager's (Neat's ``best_fit_decreasing``
        ``cpu_threshold``), not the exporter's: :func:`neat_exporter.tune.report.config_block`
        names it in a comment."""
        return {
            "history_length": self.history,
            "algorithms": {
                "underload": {"name": "threshold", "params": {"threshold": self.underload}},
                "overload": {"name": self.detector, "params": {**self.params, **self.fixed}},
                "vm_selection": {"name": SELECTIONS[self.selection], "params": {}},
            },
        }


def _text(value: float | int) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _grid(low: float, high: float) -> tuple[float, float]:
    """The range snapped onto the 0.05 grid Optuna steps on."""
    return round(round(low / STEP) * STEP, 2), round(round(high / STEP) * STEP, 2)


def suggest(trial: TrialLike, space: Space) -> Candidate:
    """Draw a candidate: the detector, its parameters, the selection and the round's knobs."""
    detector = trial.suggest_categorical("detector", list(space.detectors))
    params = {}
    for key, (low, high) in DETECTOR_RANGES[detector].items():
        params[key] = round(
            trial.suggest_float(f"{detector}.{key}", *_grid(low, high), step=STEP), 2
        )
    selection = trial.suggest_categorical("selection", list(space.selections))
    underload = round(trial.suggest_float("underload", *_grid(*space.underload), step=STEP), 2)
    placement = round(trial.suggest_float("placement", *_grid(*space.placement), step=STEP), 2)
    history = trial.suggest_int("history", space.history[0], space.history[1], step=1)
    return Candidate(
        detector,
        params,
        selection,
        underload,
        placement,
        history,
        dict(FIXED_PARAMS.get(detector, {})),
    )
