"""Consolidation policies of the fleet simulator: overload detectors and VM selection.

The CloudSim 3.0.3 policies (THR, IQR, MAD, LR, LRR with MMT, MC, RS, MU) follow the Java code
of ``org.cloudbus.cloudsim.power`` rule for rule, including its fallbacks and its arithmetic
(``SimpleRegression``'s running sums, commons-math's legacy percentile). Detectors work on many
hosts at once: each row is one host, its requested utilization now and its utilization history
(newest first, summed over its VMs as ``PowerHostUtilizationHistory`` does). Any detector or VM
selection of :mod:`neat_exporter.algorithms` can be plugged in through :class:`NeatDetector` and
:class:`NeatSelection`.
"""

from __future__ import annotations

import functools
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from neat_exporter.errors import ParameterError

if TYPE_CHECKING:
    from neat_exporter.algorithms.base import Detector

FALLBACK_THRESHOLD = 0.7
"""CloudSim's examples fall back to THR 0.7 while a statistical detector lacks history."""
MAD_IQR_MIN_HISTORY = 12
LR_WINDOW = 10


class FleetDetector(ABC):
    """An overload detector of the simulator: it decides for many hosts in one call.

    It is not :class:`neat_exporter.algorithms.base.Detector`, the exporter's and Neat's
    interface: one host, its utilization oldest first, a state from call to call. A round asks
    about every host at each tick, then about batches of candidate targets during placement,
    from histories summed over each host's VMs; CloudSim's detectors below answer for all rows
    in a few numpy operations. :class:`NeatDetector` runs one of Neat's detectors as a
    ``FleetDetector``, host by host.

    ``window`` and ``hosts_per_call`` tune placement's what-if checks for the detector; the
    defaults suit CloudSim's detectors.
    """

    name: str
    window: int | None = None
    """The history columns :meth:`overloaded` reads, newest first; None: all of them."""
    hosts_per_call: int = 32
    """How many candidate targets placement asks about in its first what-if call (twice as many
    in each later call, until one is not overloaded): few when the detector decides host by
    host, more when a call costs the same for many hosts."""

    @abstractmethod
    def overloaded(
        self, requested: np.ndarray, history: np.ndarray, length: np.ndarray, horizon: int
    ) -> np.ndarray:
        """Which hosts are overloaded (a what-if check: it keeps no state).

        ``requested``: (k,) requested MIPS / host MIPS now; ``history``: (k, window)
        utilization history, newest first, zero-padded; ``length``: (k,) valid history values
        per row; ``horizon``: migration time in scheduling intervals, rounded up (LR's
        look-ahead).
        """

    def decide_tick(
        self, requested: np.ndarray, history: np.ndarray, length: np.ndarray, horizon: int
    ) -> np.ndarray:
        """The tick's decision for every host, row i being host i: the decision a detector
        with state between ticks keeps its state from. As :meth:`overloaded` unless
        overridden."""
        return self.overloaded(requested, history, length, horizon)


@dataclass(frozen=True)
class StaticThreshold(FleetDetector):
    threshold: float
    name: str = "thr"

    def overloaded(self, requested, history, length, horizon):
        return requested > self.threshold


def legacy_percentile(sorted_rows: np.ndarray, n: int, p: float) -> np.ndarray:
    """commons-math3 ``Percentile`` (LEGACY estimation) of rows already sorted, n values each."""
    position = p * (n + 1) / 100
    if position < 1:
        return sorted_rows[:, 0]
    if position >= n:
        return sorted_rows[:, n - 1]
    whole = math.floor(position)
    lower = sorted_rows[:, whole - 1]
    upper = sorted_rows[:, whole]
    return lower + (position - whole) * (upper - lower)


def _java_round(value: float) -> int:
    return math.floor(value + 0.5)


def mad(rows: np.ndarray) -> np.ndarray:
    """``MathUtil.mad`` of each row (all rows the same length)."""
    n = rows.shape[1]
    median = legacy_percentile(np.sort(rows, axis=1), n, 50)
    deviations = np.abs(median[:, None] - rows)
    return legacy_percentile(np.sort(deviations, axis=1), n, 50)


def iqr(rows: np.ndarray) -> np.ndarray:
    """``MathUtil.iqr`` of each row (all rows the same length)."""
    n = rows.shape[1]
    ordered = np.sort(rows, axis=1)
    q1 = _java_round(0.25 * (n + 1)) - 1
    q3 = _java_round(0.75 * (n + 1)) - 1
    return ordered[:, q3] - ordered[:, q1]


@dataclass(frozen=True)
class SpreadThreshold(FleetDetector):
    """MAD or IQR: overloaded when requested utilization > 1 − s × spread(history)."""

    statistic: str
    safety: float
    name: str = ""

    def overloaded(self, requested, history, length, horizon):
        result = requested > FALLBACK_THRESHOLD
        spread = mad if self.statistic == "mad" else iqr
        shortest = int(length.min()) if length.size else 0
        if shortest >= MAD_IQR_MIN_HISTORY and shortest == length.max():
            return requested > 1 - self.safety * spread(history[:, :shortest])
        for n in np.unique(length[length >= MAD_IQR_MIN_HISTORY]):
            rows = np.flatnonzero(length == n)
            threshold = 1 - self.safety * spread(history[rows, :n])
            result[rows] = requested[rows] > threshold
        return result


def least_squares_prediction(window: np.ndarray, at: float) -> np.ndarray:
    """Value at x = ``at`` of the line fitted to each row of ``window`` at x = 1..n.

    CloudSim 3.0.3's loess helpers end up fitting plain least squares: they apply weights only
    when 40 % of them are ≤ 0, which tricube and bisquare weights never are. The arithmetic is
    commons-math ``SimpleRegression``'s (running means and sums, point by point), so decisions
    right at the threshold come out as CloudSim's.
    """
    rows, points = window.shape
    x_bar = np.ones(rows)
    y_bar = window[:, 0].copy()
    sum_x = np.ones(rows)
    sum_y = window[:, 0].copy()
    sum_xx = np.zeros(rows)
    sum_xy = np.zeros(rows)
    for n in range(1, points):
        x, y = float(n + 1), window[:, n]
        fact1 = 1.0 + n
        fact2 = n / (1.0 + n)
        dx = x - x_bar
        dy = y - y_bar
        sum_xx += dx * dx * fact2
        sum_xy += dx * dy * fact2
        x_bar += dx / fact1
        y_bar += dy / fact1
        sum_x += x
        sum_y += y
    slope = sum_xy / sum_xx
    intercept = (sum_y - slope * sum_x) / points
    return intercept + slope * at


@dataclass(frozen=True)
class LocalRegression(FleetDetector):
    """LR and LRR of CloudSim 3.0.3: overloaded when s × (line through the last 10 values,
    extended by the migration time) ≥ 1. Both fit plain least squares in 3.0.3."""

    safety: float
    name: str = "lr"
    window: int = LR_WINDOW

    def overloaded(self, requested, history, length, horizon):
        result = requested > FALLBACK_THRESHOLD
        ready = np.flatnonzero(length >= LR_WINDOW)
        if ready.size:
            window = history[ready, :LR_WINDOW]  # newest first
            at = float(LR_WINDOW + horizon)
            scaled = window @ least_squares_weights(LR_WINDOW, at) * self.safety
            decision = scaled >= 1
            # Near the threshold, redo the fit with CloudSim's own arithmetic.
            close = np.flatnonzero(np.abs(scaled - 1) < 1e-9)
            if close.size:
                exact = least_squares_prediction(window[close, ::-1], at) * self.safety
                decision[close] = exact >= 1
            result[ready] = decision
        return result


@functools.lru_cache(maxsize=16)
def least_squares_weights(points: int, at: float) -> np.ndarray:
    """w such that w · y (y newest first) is the least-squares line through
    (1, y_oldest) … (points, y_newest) at x = ``at``: the fast path of
    :func:`least_squares_prediction`, equal up to rounding."""
    x = np.arange(1, points + 1, dtype=np.float64)
    centred = x - x.mean()
    weights = 1 / points + (at - x.mean()) * centred / (centred @ centred)
    weights.setflags(write=False)
    return weights[::-1]


@dataclass
class NeatDetector(FleetDetector):
    """An overload detector of :mod:`neat_exporter.algorithms` deciding for every host.

    Each host keeps the detector's state between ticks; what-if checks during placement use
    no state and keep none.
    """

    detector: Detector
    name: str
    states: dict[int, Any] = field(default_factory=dict)
    hosts_per_call: ClassVar[int] = 1  # it decides host by host anyway

    def overloaded(self, requested, history, length, horizon):
        result = np.zeros(len(requested), dtype=bool)
        for row in range(len(requested)):
            series = history[row, : length[row]][::-1].tolist()
            result[row] = bool(self.detector(series, None)[0]) if series else False
        return result

    def decide_tick(self, requested, history, length, horizon):
        result = np.zeros(len(requested), dtype=bool)
        for host in range(len(requested)):
            series = history[host, : length[host]][::-1].tolist()
            if series:
                decision, self.states[host] = self.detector(series, self.states.get(host))
                result[host] = bool(decision)
        return result


# --- VM selection ---------------------------------------------------------------------------


class SelectionContext(Protocol):
    """What a VM selection policy may look at: the fleet as a round starts
    (:class:`neat_exporter.simulate.state.RoundState`)."""

    vm_ram: np.ndarray
    vm_mips: np.ndarray
    requested: np.ndarray  # current requested MIPS per VM
    history: np.ndarray  # (n, 30) newest first
    history_length: np.ndarray
    in_migration: np.ndarray


class Selection(Protocol):
    name: str

    def select(self, vms: Sequence[int], context: SelectionContext) -> int | None: ...


def _migratable(vms: Sequence[int], context: SelectionContext) -> list[int]:
    return [vm for vm in vms if not context.in_migration[vm]]


def _first_minimum(candidates: list[int], metric: np.ndarray) -> int | None:
    best, best_metric = None, math.inf
    for vm in candidates:
        if metric[vm] < best_metric:
            best, best_metric = vm, metric[vm]
    return best


@dataclass(frozen=True)
class MinimumMigrationTime:
    """MMT: the VM with the least RAM (first in the host's VM list on ties)."""

    name: str = "mmt"

    def select(self, vms, context):
        return _first_minimum(_migratable(vms, context), context.vm_ram)


@dataclass(frozen=True)
class MinimumUtilization:
    """MU: the VM with the lowest current CPU utilization."""

    name: str = "mu"

    def select(self, vms, context):
        return _first_minimum(_migratable(vms, context), context.requested / context.vm_mips)


@dataclass
class RandomSelection:
    """RS: a VM chosen uniformly at random (seeded; CloudSim's is not, so runs differ)."""

    seed: int = 0
    name: str = "rs"
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def select(self, vms, context):
        candidates = _migratable(vms, context)
        return candidates[int(self.rng.integers(len(candidates)))] if candidates else None


def r_squared_of_each_on_others(matrix: np.ndarray) -> np.ndarray | None:
    """R² of regressing each row on all other rows (with intercept); None when CloudSim's
    ``OLSMultipleLinearRegression`` would refuse (too few samples or a singular design)."""
    n, m = matrix.shape
    if m < n:
        return None
    result = np.empty(n)
    for i in range(n):
        y = matrix[i]
        design = np.column_stack([np.ones(m), np.delete(matrix, i, axis=0).T])
        if np.linalg.matrix_rank(design) < design.shape[1]:
            return None
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        residual = y - design @ coef
        total = ((y - y.mean()) ** 2).sum()
        result[i] = 1 - (residual @ residual) / total if total > 0 else math.nan
    return result


@dataclass(frozen=True)
class MaximumCorrelation:
    """MC: the VM whose utilization history is best explained by the others' (highest R²);
    MMT when the histories are too short for the regression."""

    fallback: MinimumMigrationTime = MinimumMigrationTime()
    name: str = "mc"

    def select(self, vms, context):
        candidates = _migratable(vms, context)
        if not candidates:
            return None
        shortest = int(min(context.history_length[vm] for vm in candidates))
        metrics = None
        if shortest > 0:
            metrics = r_squared_of_each_on_others(context.history[candidates, :shortest])
        if metrics is None:
            return self.fallback.select(candidates, context)
        best, best_metric = 0, 5e-324  # Java's Double.MIN_VALUE
        for index, metric in enumerate(metrics):
            if metric > best_metric:
                best, best_metric = index, metric
        return candidates[best]


@dataclass
class NeatSelection:
    """A VM selection of :mod:`neat_exporter.algorithms`; the first VM it returns moves."""

    selector: Any
    name: str
    state: Any = None

    def select(self, vms, context):
        candidates = _migratable(vms, context)
        if not candidates:
            return None
        cpu = {
            str(vm): (
                context.history[vm, : context.history_length[vm]][::-1] * context.vm_mips[vm]
            ).tolist()
            for vm in candidates
        }
        ram = {str(vm): float(context.vm_ram[vm]) for vm in candidates}
        chosen, self.state = self.selector(cpu, ram, self.state)
        return int(chosen[0]) if chosen else None


# --- policy names -----------------------------------------------------------------------------

DETECTORS = ("thr", "iqr", "mad", "lr", "lrr")
SELECTIONS = ("mmt", "mc", "rs", "mu")
BASELINES = ("npa", "dvfs")
POLICY_PATTERN = re.compile(r"^(?P<detector>[a-z]+)-(?P<selection>[a-z]+)-(?P<param>[0-9.]+)$")
PAPER_POLICIES = (
    "npa",
    "dvfs",
    "thr-mmt-1.0",
    "thr-mmt-0.8",
    "iqr-mmt-1.5",
    "mad-mmt-2.5",
    "lrr-mmt-1.2",
    "lr-mmt-1.2",
)
"""The policies of P1's Table V, in its order."""
PRESETS: dict[str, str] = {
    # Found by an Optuna search of the round's knobs on 20110303 and 20110412, confirmed on
    # all ten days: median ESV 0.064e-3 at 180.20 kWh against IQR-MMT-1.5's 5.94e-3 at
    # 183.01 kWh (docs/reproduction.md, "Beating IQR-MMT-1.5"). config.esv-best.example.yml
    # deploys it.
    "esv-best": "neat:threshold threshold=1 selection=mmt underload=0.2 placement=0.85",
}
"""Named policies beyond Table V, by the full text they stand for."""


@dataclass
class Policy:
    """What the simulator runs: a name, and for consolidating policies a detector and a VM
    selection; ``baseline`` is ``"npa"`` or ``"dvfs"`` for the two non-migrating benchmarks.

    Three knobs of the round go beyond CloudSim, and their defaults are CloudSim's rules:
    ``underload``, the utilization a host may have at most to be emptied, as the exporter's
    ``threshold`` underload detector decides (CloudSim: any host below 1); ``placement``, the
    utilization a target host that already runs VMs may reach after taking a VM (CloudSim: no
    limit besides the detector); ``history_length``, the utilization values kept per VM
    (CloudSim: 30, the fleet's default).
    """

    name: str
    detector: FleetDetector | None = None
    selection: Selection | None = None
    baseline: str | None = None
    underload: float | None = None
    placement: float | None = None
    history_length: int | None = None

    @property
    def migrates(self) -> bool:
        return self.baseline is None


def build_detector(kind: str, param: float) -> FleetDetector:
    if kind == "thr":
        return StaticThreshold(param)
    if kind in ("mad", "iqr"):
        return SpreadThreshold(kind, param, name=kind)
    return LocalRegression(param, name=kind)


def build_selection(kind: str, seed: int = 0) -> Selection:
    return {
        "mmt": MinimumMigrationTime,
        "mu": MinimumUtilization,
        "mc": MaximumCorrelation,
        "rs": lambda: RandomSelection(seed),
    }[kind]()


def parse_policy(
    text: str,
    *,
    seed: int = 0,
    neat_selection: str | None = None,
    migration_time: float = 27.84,
) -> Policy:
    """A policy from its name.

    ``npa``, ``dvfs``, ``<detector>-<selection>-<parameter>`` with CloudSim's detectors
    (thr, iqr, mad, lr, lrr) and selections (mmt, mc, rs, mu), or ``neat:<overload algorithm>
    [key=value ...]`` for any overload detector of :mod:`neat_exporter.algorithms` (VM
    selection MMT unless ``neat_selection`` names a CloudSim selection or one of Neat's).
    """
    head, round_options = split_round_options(text)
    name = head.lower()
    if name in PRESETS:
        if round_options:
            raise ParameterError("simulate", "policy", f"preset {name!r} takes no options")
        policy = parse_policy(PRESETS[name], seed=seed, migration_time=migration_time)
        policy.name = name
        return policy
    if name in BASELINES:
        if round_options:
            raise ParameterError("simulate", "policy", f"{name!r} does not migrate: no options")
        return Policy(name, baseline=name)
    if name.startswith("neat:"):
        selection = round_options.pop("selection", neat_selection)
        policy = _neat_policy(head[5:], selection, migration_time, seed)
    elif "selection" in round_options:
        raise ParameterError(
            "simulate", "policy", f"{text!r}: selection= is for neat: policies; name it instead"
        )
    else:
        policy = _cloudsim_policy(name, text, seed)
    return _with_round_options(policy, round_options)


def _cloudsim_policy(name: str, text: str, seed: int) -> Policy:
    match = POLICY_PATTERN.match(name)
    if not match:
        raise ParameterError(
            "simulate",
            "policy",
            f"{text!r} is not a policy: use npa, dvfs, <detector>-<selection>-<parameter> "
            f"(detectors {', '.join(DETECTORS)}; selections {', '.join(SELECTIONS)}) "
            "or neat:<overload algorithm>",
        )
    detector, selection = match["detector"], match["selection"]
    if detector not in DETECTORS:
        raise ParameterError("simulate", "policy", f"unknown detector {detector!r} in {text!r}")
    if selection not in SELECTIONS:
        raise ParameterError("simulate", "policy", f"unknown VM selection {selection!r}")
    try:
        param = float(match["param"])
    except ValueError:
        raise ParameterError("simulate", "policy", f"bad parameter in {text!r}") from None
    return Policy(name, build_detector(detector, param), build_selection(selection, seed))


ROUND_OPTIONS = ("underload", "placement", "history", "selection")
"""Options of the round itself, after a policy's name: ``iqr-mmt-1.5 underload=0.8``."""


def split_round_options(text: str) -> tuple[str, dict[str, str]]:
    """The policy text without the round's options, and those options."""
    head: list[str] = []
    options: dict[str, str] = {}
    for token in text.split():
        key, equals, value = token.partition("=")
        if equals and key.lower() in ROUND_OPTIONS:
            if key.lower() in options:
                raise ParameterError("simulate", "policy", f"{key} given twice in {text!r}")
            options[key.lower()] = value
        else:
            head.append(token)
    if not head:
        raise ParameterError("simulate", "policy", f"{text!r} names no policy")
    return " ".join(head), options


def _option_number(key: str, value: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not low < number <= high:
        raise ParameterError(
            "simulate", "policy", f"{key}={value!r}: need a number in ({low}, {high}]"
        )
    return number


def _with_round_options(policy: Policy, options: dict[str, str]) -> Policy:
    labels = []
    if "underload" in options:
        policy.underload = _option_number("underload", options["underload"], 0.0, 1.0)
        labels.append(f"underload={options['underload']}")
    if "placement" in options:
        policy.placement = _option_number("placement", options["placement"], 0.0, 1.0)
        labels.append(f"placement={options['placement']}")
    if "history" in options:
        length = _option_number("history", options["history"], 11, 10_000)
        if length != int(length):
            raise ParameterError(
                "simulate", "policy", f"history={options['history']!r}: need a whole number"
            )
        policy.history_length = int(length)
        labels.append(f"history={options['history']}")
    if labels:
        policy.name = " ".join([policy.name, *labels])
    return policy


def _neat_policy(text: str, selection: str | None, migration_time: float, seed: int) -> Policy:
    from neat_exporter.algorithms import build
    from neat_exporter.vocabulary import parse_spec

    spec = parse_spec("overload", text)
    detector = build(
        "overload", spec.name, dict(spec.params), time_step=300, migration_time=migration_time
    )
    label = f"neat:{spec.text}"
    chosen: Selection = MinimumMigrationTime()
    if selection:
        if selection in SELECTIONS:
            chosen = build_selection(selection, seed)
        else:
            selector = build(
                "vm_selection", selection, {}, time_step=300, migration_time=migration_time
            )
            chosen = NeatSelection(selector, selection)
        label += f" +{selection}"
    return Policy(label, NeatDetector(detector, spec.name), chosen)
