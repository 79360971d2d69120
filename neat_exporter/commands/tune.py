"""`neat-exporter tune`: search the exporter's algorithms and the consolidation round's knobs
for the best trade-off of energy, SLA violations and migrations, by fleet simulation
(see docs/tuning.md)."""

from __future__ import annotations

import argparse
import os

from neat_exporter.commands import fleet_source
from neat_exporter.errors import InputError
from neat_exporter.files import write_atomically
from neat_exporter.simulate.fleet import FleetSpec
from neat_exporter.simulate.policies import parse_policy
from neat_exporter.simulate.runs import Job, find_days, run_all
from neat_exporter.tune import report
from neat_exporter.tune.space import DETECTOR_RANGES, SELECTIONS, Space
from neat_exporter.tune.study import (
    DEFAULT_STUDY,
    SAMPLERS,
    Search,
    Workload,
    create_study,
    finished_trials,
    run,
    storage_url,
    summarize,
)

EXAMPLES = """\
examples:
  neat-exporter tune --traces ../shared/data/planetlab --train 20110303 20110412 \\
      --test 20110306 20110322 --trials 200 --plot front.png --config-out tuned.yml
  neat-exporter tune --traces planetlab --train 20110303 --minutes 30   # resume, 30 min more
  neat-exporter tune --traces planetlab --train 20110303 --trials 0 --pick 17  # report only
  # one search shared by many machines: the same command on each, one PostgreSQL database
  neat-exporter tune --traces planetlab --train 20110303 --trials 100 \\
      --storage postgresql://tune@db.example/tune --study fleet-a
"""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "tune",
        parents=[common],
        help="search detectors, VM selection and thresholds by fleet simulation (Optuna)",
        description=(
            "Multi-objective search (Optuna) over the exporter's overload detectors and their "
            "parameters, VM selection, the underload threshold, the placement limit and the "
            "history length. Each trial simulates the training days under CloudSim 3.0.3's "
            "rules and minimises median energy, SLAV and migrations. Prints the Pareto front, "
            "the chosen point (lowest ESV unless --pick) on the training and the test days, "
            "its `simulate --policy` text and the exporter configuration that deploys it."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fleet_source.add_flags(parser)
    parser.add_argument(
        "--train", nargs="+", metavar="DAY", help="days to search on (default: all but --test)"
    )
    parser.add_argument(
        "--test", nargs="+", default=[], metavar="DAY", help="held-out days the choice is judged on"
    )
    budget = parser.add_argument_group("budget (the search stops at whichever comes first)")
    budget.add_argument("--trials", type=int, metavar="N", help="trials to add (0: report only)")
    budget.add_argument("--minutes", type=float, metavar="M", help="wall-clock minutes to search")
    parser.add_argument(
        "--jobs", type=int, metavar="N", help="trials in parallel processes (default: CPUs)"
    )
    parser.add_argument(
        "--storage",
        default="neat-tune.db",
        metavar="FILE|URL",
        help="where the study lives: an SQLite file (default neat-tune.db) or a database URL "
        "(postgresql://user@host/db) shared by many machines; reruns resume it",
    )
    parser.add_argument("--study", default=DEFAULT_STUDY, help=f"study name ({DEFAULT_STUDY})")
    parser.add_argument("--sampler", choices=SAMPLERS, default="nsga2", help="default nsga2")
    parser.add_argument("--seed", type=int, help="sampler seed (each process adds its index)")
    space = parser.add_argument_group("search space")
    space.add_argument(
        "--detectors",
        nargs="+",
        default=list(Space.detectors),
        metavar="NAME",
        help=f"overload detectors (default {' '.join(Space.detectors)}; all: "
        f"{' '.join(DETECTOR_RANGES)})",
    )
    space.add_argument(
        "--selections",
        nargs="+",
        default=list(SELECTIONS),
        metavar="NAME",
        help=f"VM selections (default {' '.join(SELECTIONS)})",
    )
    space.add_argument(
        "--underload", nargs=2, type=float, metavar=("LOW", "HIGH"),
        help="underload threshold: hosts at most this used are emptied (default 0.2 1.0; 1.0 "
        "is CloudSim's rule)",
    )  # fmt: skip
    space.add_argument(
        "--placement", nargs=2, type=float, metavar=("LOW", "HIGH"),
        help="how full a target host may get (default 0.7 1.0; 1.0: no limit)",
    )  # fmt: skip
    space.add_argument(
        "--history", nargs=2, type=int, metavar=("LOW", "HIGH"),
        help="values kept per VM (default 12 60)",
    )  # fmt: skip
    out = parser.add_argument_group("output")
    out.add_argument("--pick", type=int, metavar="TRIAL", help="report this trial, not best ESV")
    out.add_argument(
        "--baseline", action="append", default=[], metavar="POLICY", help="also run this policy "
        "on the training and test days for comparison (repeatable), e.g. iqr-mmt-1.5",
    )  # fmt: skip
    out.add_argument("--plot", metavar="FILE", help="draw the trials and the front (PNG, SVG)")
    out.add_argument("--config-out", metavar="FILE", help="write the exporter configuration")
    out.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    small = parser.add_argument_group("smaller fleets (tests, quick looks)")
    small.add_argument("--vms", type=int, metavar="N", help="only the first N traces of a day")
    small.add_argument("--hosts", type=int, default=800, metavar="N", help="hosts (default 800)")
    parser.set_defaults(handler=main)


def _space(args: argparse.Namespace) -> Space:
    defaults = Space()
    return Space(
        detectors=tuple(args.detectors),
        selections=tuple(args.selections),
        underload=tuple(args.underload or defaults.underload),
        placement=tuple(args.placement or defaults.placement),
        history=tuple(args.history or defaults.history),
    )


def _check(args: argparse.Namespace) -> None:
    for flag, value, low in (
        ("--trials", args.trials, 0),
        ("--jobs", args.jobs, 1),
        ("--vms", args.vms, 1),
        ("--hosts", args.hosts, 1),
    ):
        if value is not None and value < low:
            raise InputError(f"{flag} must be at least {low}, got {value}")
    if args.minutes is not None and not args.minutes > 0:
        raise InputError(f"--minutes must be positive, got {args.minutes}")


def main(args: argparse.Namespace) -> int:
    _check(args)
    with fleet_source.days_folder(args) as (folder, source):
        return _main(args, folder, source)


def _main(args: argparse.Namespace, folder: str, source: str) -> int:
    space = _space(args)
    every = find_days(folder, ["all"])
    test = find_days(folder, args.test) if args.test else {}
    train = (
        find_days(folder, args.train)
        if args.train
        else {day: path for day, path in every.items() if day not in test}
    )
    if not train:
        raise InputError("no training days left: name some with --train")
    if set(train) & set(test):
        both = ", ".join(sorted(set(train) & set(test)))
        raise InputError(f"days both trained and tested on: {both}")
    trials = args.trials if args.trials is not None or args.minutes else 50
    search = Search(
        storage=storage_url(args.storage),
        study=args.study,
        space=space,
        workload=Workload(train, args.vms, args.hosts),
        sampler=args.sampler,
        seed=args.seed,
        trials=trials,
        seconds=args.minutes * 60 if args.minutes else None,
        progress=not args.quiet,
    )
    study = create_study(search)
    if trials != 0:
        run(search, args.jobs or os.cpu_count() or 1)
    done = finished_trials(study)
    if not done:
        raise InputError(f"study {args.study!r} has no finished trial yet: give --trials")
    numbers = {t.number for t in done}
    front = [t for t in study.best_trials if t.number in numbers] or done
    chosen = report.choose(done, front, args.pick)
    print(
        f"Pareto front of study {args.study!r}: {len(front)} of {len(done)} trials; medians "
        f"over the training days {' '.join(train)}"
    )
    print(report.table(report.front_rows(front)))
    _judge(args, chosen, train, test, source)
    config = report.config_block(
        chosen.user_attrs["config"],
        chosen.user_attrs["policy"],
        chosen.params.get("placement", 1.0),
    )
    print(f"Exporter configuration (trial {chosen.number}):")
    print(config)
    if args.config_out:
        write_atomically(args.config_out, lambda file: file.write(config.encode()))
    if args.plot:
        report.plot(
            done, front, chosen, args.plot, f"{args.study}: {len(done)} trials, {len(train)} days"
        )
    return 0


def _judge(args: argparse.Namespace, chosen, train: dict, test: dict, source: str) -> None:
    """The chosen point (and any baselines) on the training and the test days."""
    policy = chosen.user_attrs["policy"]
    small = (f" --vms {args.vms}" if args.vms else "") + (
        f" --hosts {args.hosts}" if args.hosts != 800 else ""
    )
    print(f"Chosen: trial {chosen.number}. Reproduce it with")
    print(
        f"  neat-exporter simulate {source} --days {' '.join(train)}{small} --policy '{policy}'\n"
    )
    rows = [(f"{chosen.number} train", chosen.user_attrs["medians"], policy)]
    spec = FleetSpec(hosts=args.hosts)
    runs = [(f"{chosen.number} test", policy, test)] if test else []
    for baseline in args.baseline:
        runs += [("baseline train", baseline, train)]
        runs += [("baseline test", baseline, test)] if test else []
    jobs = [
        Job(day, path, parse_policy(text), args.vms, spec)
        for _, text, days in runs
        for day, path in days.items()
    ]
    results = run_all(jobs, args.jobs) if jobs else []
    start = 0
    for label, text, days in runs:
        rows.append((label, summarize(results[start : start + len(days)]), text))
        start += len(days)
    print(f"On the training days ({len(train)}) and the test days ({len(test) or 'none'}):")
    print(report.table(rows))
    if not test:
        print("No test days (--test): the figures above are those the search was fitted to.\n")
