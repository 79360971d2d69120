"""`neat-exporter simulate`: fleet-wide consolidation on PlanetLab days, CloudSim 3.0.3's rules
(see docs/reproduction.md)."""

from __future__ import annotations

import argparse
import sys

from neat_exporter.commands import fleet_source
from neat_exporter.errors import InputError
from neat_exporter.files import write_atomically
from neat_exporter.simulate import report
from neat_exporter.simulate.fleet import FleetSpec
from neat_exporter.simulate.policies import PAPER_POLICIES, parse_policy
from neat_exporter.simulate.runs import Job, Progress, find_days, run_all

EXAMPLES = """\
examples:
  neat-exporter simulate --traces ../shared/data/planetlab --days 20110303 \\
      --policy lr-mmt-1.2 --format json
  neat-exporter simulate --traces planetlab --days all --policy paper --plot table5.png
  neat-exporter simulate --traces planetlab --days 20110303 20110306 \\
      --policy thr-mmt-0.8 --policy 'neat:mhod otf=0.2' --format csv -o runs.csv

policies: npa, dvfs, <detector>-<selection>-<parameter> with detectors thr, iqr, mad, lr, lrr
and selections mmt, mc, rs, mu (e.g. mad-mmt-2.5), 'neat:<overload algorithm> [key=value ...]'
for the exporter's own detectors (VM selection MMT, or --neat-selection), and 'paper' for the
eight policies of P1's Table V. 'esv-best' is a tuned policy that beats them all
(docs/reproduction.md). After the name, the round's options: underload=U (empty only
hosts at most U utilized), placement=P (fill targets up to P), history=N (values kept per VM),
and for neat: policies selection=mmt|mu|rs|mc.
"""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "simulate",
        parents=[common],
        help="fleet simulation of consolidation policies on PlanetLab days (CloudSim rules)",
        description=(
            "Simulate a data centre of 800 hosts running one PlanetLab day per run under "
            "CloudSim 3.0.3's rules, and report energy, SLATAH, PDM, SLAV, ESV and migrations "
            "per day (and their medians)."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fleet_source.add_flags(parser)
    parser.add_argument(
        "--days", nargs="+", default=["all"], metavar="DAY", help="day names, or all (default)"
    )
    parser.add_argument(
        "--policy",
        action="append",
        metavar="NAME",
        help="a policy (repeatable; default lr-mmt-1.2); 'paper' adds Table V's eight",
    )
    parser.add_argument(
        "--neat-selection",
        metavar="NAME",
        help="VM selection for neat: policies (mmt, mc, rs, mu or one of the exporter's)",
    )
    parser.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="default table"
    )
    parser.add_argument("-o", "--output", metavar="FILE", help="write there instead of stdout")
    parser.add_argument("--plot", metavar="FILE", help="also draw the results (PNG, SVG, PDF)")
    parser.add_argument(
        "--jobs", type=int, metavar="N", help="parallel processes (default: one per CPU)"
    )
    parser.add_argument(
        "--progress", action="store_true", help="progress on stderr even when not a terminal"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of random VM selection (rs)")
    parser.add_argument(
        "--history-length",
        type=int,
        default=30,
        metavar="N",
        help="utilization values kept per VM (default 30, CloudSim's; longer suits neat: MHOD)",
    )
    small = parser.add_argument_group("smaller fleets (tests, quick looks)")
    small.add_argument("--vms", type=int, metavar="N", help="only the first N traces of a day")
    small.add_argument("--hosts", type=int, default=800, metavar="N", help="hosts (default 800)")
    parser.set_defaults(handler=main)


def _policies(args: argparse.Namespace) -> list:
    names: list[str] = []
    for name in args.policy or ["lr-mmt-1.2"]:
        names += list(PAPER_POLICIES) if name.strip().lower() == "paper" else [name]
    return [
        parse_policy(name, seed=args.seed, neat_selection=args.neat_selection)
        for name in dict.fromkeys(names)
    ]


def main(args: argparse.Namespace) -> int:
    with fleet_source.days_folder(args) as (folder, _):
        return _main(args, folder)


def _main(args: argparse.Namespace, folder: str) -> int:
    if args.hosts < 1:
        raise InputError(f"--hosts must be at least 1, got {args.hosts}")
    if args.vms is not None and args.vms < 1:
        raise InputError(f"--vms must be at least 1, got {args.vms}")
    if args.history_length < 12:
        raise InputError(
            f"--history-length must be at least 12 (MAD and IQR need 12), got {args.history_length}"
        )
    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    policies = _policies(args)
    days = find_days(folder, args.days)
    spec = FleetSpec(hosts=args.hosts, history_length=args.history_length)
    jobs = [
        Job(day, path, policy, args.vms, spec) for policy in policies for day, path in days.items()
    ]
    progress = Progress(len(jobs)) if args.progress or sys.stderr.isatty() else None
    results = run_all(jobs, args.jobs, progress)
    text = {"table": report.to_table, "csv": report.to_csv, "json": report.to_json}[args.format](
        results
    )
    if args.output:
        write_atomically(args.output, lambda file: file.write(text.encode()))
    else:
        sys.stdout.write(text)
    if args.plot:
        report.plot(results, args.plot)
    return 0
