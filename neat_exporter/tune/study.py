"""The search itself: an Optuna study whose trials are fleet simulations.

Every trial draws a candidate (:mod:`neat_exporter.tune.space`), simulates it on the training
days and reports three objectives to minimise: median energy, median SLAV and median
migrations. The study lives in an Optuna storage (an SQLite file by default, or any database
URL Optuna's RDB storage takes, such as PostgreSQL), so a search can be stopped and resumed, and
any number of processes, on one machine or many, can work on it at once: Optuna hands each
trial to exactly one of them.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from neat_exporter.errors import InputError
from neat_exporter.simulate.accounting import DayResult
from neat_exporter.simulate.fleet import FleetSpec
from neat_exporter.simulate.policies import parse_policy
from neat_exporter.simulate.report import METRICS
from neat_exporter.simulate.runs import run_day
from neat_exporter.tune.space import Space, suggest

OBJECTIVES = ("energy_kwh", "slav", "migrations")
"""What every trial minimises, each as its median over the training days."""
SAMPLERS = ("nsga2", "tpe")
DEFAULT_STUDY = "neat-tune"
CONNECT_ATTEMPTS = 4


@dataclass(frozen=True)
class Workload:
    """The days a policy is judged on, and the fleet they run on."""

    days: Mapping[str, Path]
    vms: int | None = None
    hosts: int = 800

    def spec(self) -> FleetSpec:
        return FleetSpec(hosts=self.hosts)


def evaluate(policy: str, workload: Workload) -> list[DayResult]:
    """``policy`` (a ``simulate --policy`` text) on every day of ``workload``, in this process."""
    return [
        run_day(Path(path), parse_policy(policy), day, workload.spec(), workload.vms)
        for day, path in workload.days.items()
    ]


def summarize(results: Sequence[DayResult]) -> dict[str, float]:
    """The median of each metric over the days, each on its own as in P1's Table V."""
    return {metric: float(np.median([getattr(r, metric) for r in results])) for metric in METRICS}


def storage_url(text: str) -> str:
    """A database URL for Optuna: URLs as given (PostgreSQL through psycopg 3, the driver the
    ``tune`` extra installs), anything else a path to an SQLite file."""
    for scheme in ("postgresql://", "postgres://"):
        if text.startswith(scheme):
            return "postgresql+psycopg://" + text[len(scheme) :]
    if "://" in text:
        return text
    path = Path(text).expanduser().resolve()
    if not path.parent.is_dir():
        raise InputError(f"--storage {text}: folder {path.parent} does not exist")
    return f"sqlite:///{path}"


def open_storage(url: str) -> Any:
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several processes write one file: wait for each other's locks instead of failing.
        kwargs = {"connect_args": {"timeout": 60}}
    # Workers started together on a new database all create its tables; all but one fail
    # on the race and find them made when they try again.
    attempt = 0
    while True:
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except Exception as error:  # SQLAlchemy's and the drivers' errors share no base
            attempt += 1
            if attempt == CONNECT_ATTEMPTS:
                reason = (str(error).splitlines() or [type(error).__name__])[0]
                raise InputError(f"--storage: cannot open {_redacted(url)}: {reason}") from None
            time.sleep(0.5 * attempt)


def _redacted(url: str) -> str:
    """The URL without its password, for error messages."""
    scheme, sep, rest = url.partition("://")
    credentials, _, host = rest.rpartition("@")
    if ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


@dataclass(frozen=True)
class Search:
    """Everything a worker process needs to run its share of trials."""

    storage: str
    study: str
    space: Space
    workload: Workload
    sampler: str = "nsga2"
    seed: int | None = None
    trials: int | None = None
    seconds: float | None = None
    progress: bool = True

    def fingerprint(self) -> dict:
        """What must not change when a search is resumed (it would mix incomparable trials)."""
        return {
            "space": asdict(self.space),
            "days": sorted(self.workload.days),
            "vms": self.workload.vms,
            "hosts": self.workload.hosts,
        }


def create_study(search: Search) -> Any:
    """The study, created or loaded; refuses to resume one made for other days or space."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=search.study,
        storage=open_storage(search.storage),
        directions=["minimize"] * len(OBJECTIVES),
        load_if_exists=True,
    )
    fingerprint = _jsonable(search.fingerprint())
    stored = study.user_attrs.get("search")
    if stored is None:
        study.set_user_attr("search", fingerprint)
    elif stored != fingerprint:
        raise InputError(
            f"study {search.study!r} in this storage searched {_describe(stored)}, not "
            f"{_describe(fingerprint)}; use another --study or the same settings"
        )
    return study


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


def _describe(fingerprint: Mapping) -> str:
    return f"days {', '.join(fingerprint['days'])} (vms {fingerprint['vms']}, hosts " + (
        f"{fingerprint['hosts']}) over {fingerprint['space']}"
    )


def make_sampler(name: str, seed: int | None) -> Any:
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)


def objective_for(search: Search, stream: TextIO | None) -> Callable[[Any], tuple]:
    def objective(trial: Any) -> tuple[float, ...]:
        candidate = suggest(trial, search.space)
        started = time.monotonic()
        results = evaluate(candidate.policy, search.workload)
        figures = summarize(results)
        trial.set_user_attr("policy", candidate.policy)
        trial.set_user_attr("config", candidate.exporter_config())
        trial.set_user_attr("medians", figures)
        trial.set_user_attr("days", {r.day: {m: getattr(r, m) for m in METRICS} for r in results})
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        if stream:
            stream.write(
                f"trial {trial.number}: {figures['energy_kwh']:.2f} kWh, SLAV "
                f"{figures['slav']:.3g}, ESV {figures['esv']:.3g}, "
                f"{figures['migrations']:.0f} migrations ({time.monotonic() - started:.1f} s) "
                f"{candidate.policy}\n"
            )
            stream.flush()
        return tuple(figures[name] for name in OBJECTIVES)

    return objective


def run_worker(search: Search, index: int = 0) -> int:
    """One process's share of the search; returns how many trials it finished."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = None if search.seed is None else search.seed + index
    study = optuna.load_study(
        study_name=search.study,
        storage=open_storage(search.storage),
        sampler=make_sampler(search.sampler, seed),
    )
    before = len(study.get_trials(deepcopy=False))
    study.optimize(
        objective_for(search, sys.stderr if search.progress else None),
        n_trials=search.trials,
        timeout=search.seconds,
        catch=(),
    )
    mine = [
        t
        for t in study.get_trials(deepcopy=False)[before:]
        if t.user_attrs.get("worker") == f"{os.uname().nodename}:{os.getpid()}"
    ]
    return len(mine)


def shares(trials: int | None, jobs: int) -> list[int | None]:
    """Split a trial budget over processes (None: no limit, the time budget decides)."""
    if trials is None:
        return [None] * jobs
    base, extra = divmod(trials, jobs)
    return [base + (1 if index < extra else 0) for index in range(jobs) if base or index < extra]


def run(search: Search, jobs: int) -> int:
    """Run the search's budget in ``jobs`` processes (this one when 1); trials finished."""
    create_study(search)
    budgets = shares(search.trials, max(jobs, 1))
    if len(budgets) <= 1:
        return run_worker(search) if budgets else 0
    with ProcessPoolExecutor(len(budgets)) as pool:
        futures = [
            pool.submit(run_worker, _with_trials(search, budget), index)
            for index, budget in enumerate(budgets)
        ]
        return sum(future.result() for future in futures)


def _with_trials(search: Search, trials: int | None) -> Search:
    from dataclasses import replace

    return replace(search, trials=trials)


def finished_trials(study: Any) -> list[Any]:
    import optuna

    return [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.values is not None and all(math.isfinite(v) for v in t.values)
    ]
