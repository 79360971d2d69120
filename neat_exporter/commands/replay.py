"""`neat-exporter replay`: one host's decisions over a recorded workload, for one or several
algorithm configurations (see docs/replay.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neat_exporter import backtest, workloads
from neat_exporter.errors import InputError
from neat_exporter.files import write_atomically
from neat_exporter.parsing import parse_duration
from neat_exporter.vocabulary import SPEC_FLAGS, parse_spec

EXAMPLES = """\
examples:
  neat-exporter replay --traces 20110303.tar.gz --count 6 --seed 1 \\
      --overload 'mhod otf=0.1' --overload 'mhod otf=0.3' --overload 'loess_robust param=1.2' \\
      --plot replay.png
  neat-exporter replay --csv host.csv --config /etc/neat-exporter/config.yml --format json
  neat-exporter replay --prometheus http://prometheus:9090 --host compute1 \\
      --start now-1d --end now --step 5m --overload 'otf otf=0.2'
"""


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "replay",
        parents=[common],
        help="one host's decisions over a recorded workload, configurations compared",
        description=(
            "Run the exporter's decision logic over a recorded workload of one host, once per\n"
            "configuration, and report the OTF, the time until the first overload decision,\n"
            "every overload and underload decision and the VMs selected."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_argument_group("workload (one of)")
    choice = source.add_mutually_exclusive_group(required=True)
    choice.add_argument(
        "--traces", metavar="PATH", help="PlanetLab traces: a day folder or .tar.gz (percent)"
    )
    choice.add_argument(
        "--csv", metavar="FILE", help="CSV: header time,<vm>,<vm>,... then one row per step"
    )
    choice.add_argument(
        "--prometheus", metavar="URL", help="Prometheus holding the exporter's metrics"
    )
    traces = parser.add_argument_group("PlanetLab traces")
    traces.add_argument(
        "--vm", action="append", metavar="NAME", help="a trace by file name (repeatable)"
    )
    traces.add_argument(
        "--count", type=int, metavar="N", help="take N traces (first in name order)"
    )
    traces.add_argument("--seed", type=int, metavar="S", help="with --count: a seeded random pick")
    csv = parser.add_argument_group("CSV")
    csv.add_argument(
        "--unit",
        choices=("mhz", "percent"),
        default="mhz",
        help="what the CSV cells hold (percent: of the VM's size, see --vm-mhz; default mhz)",
    )
    prometheus = parser.add_argument_group("Prometheus")
    where = prometheus.add_mutually_exclusive_group()
    where.add_argument("--host", help="the host label of neat_host_info")
    where.add_argument("--instance", help="the instance label of the host's exporter")
    prometheus.add_argument("--start", default="now-1d", help="RFC 3339, Unix seconds or now-1d")
    prometheus.add_argument("--end", default="now", help="as --start (default now)")
    prometheus.add_argument(
        "--step", default="300s", help="seconds between steps, e.g. 300s or 5m (default 300s)"
    )
    model = parser.add_argument_group("host model")
    model.add_argument(
        "--host-cpu-mhz",
        type=float,
        metavar="MHZ",
        help=(
            "host CPU, cores x MHz (default 12000 for traces and CSV; from "
            "neat_host_cpu_capacity_hertz with Prometheus)"
        ),
    )
    model.add_argument(
        "--vm-mhz",
        default=",".join(f"{mhz:g}" for mhz in workloads.DEFAULT_VM_MHZ),
        metavar="LIST",
        help="MHz of a VM at 100 %%, dealt round-robin over the VMs in name order "
        "(default %(default)s)",
    )
    model.add_argument(
        "--vm-ram-mb",
        type=float,
        default=workloads.DEFAULT_VM_RAM_MB,
        metavar="MB",
        help="RAM of each VM, for the migration time (default %(default)g)",
    )
    configs = parser.add_argument_group(
        "configurations (every --config with every combination of the algorithm specs)"
    )
    configs.add_argument(
        "--config",
        action="append",
        metavar="FILE",
        help="an exporter configuration (YAML or neat.conf); default: built-in defaults",
    )
    for kind, flag in SPEC_FLAGS.items():
        configs.add_argument(
            flag,
            action="append",
            default=[],
            dest=f"spec_{kind}",
            metavar="SPEC",
            help=f"{kind.replace('_', ' ')} algorithm: NAME [key=value ...] or NAME:JSON",
        )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--otf-threshold",
        type=float,
        default=backtest.DEFAULT_OTF_THRESHOLD,
        metavar="U",
        help="utilization counted as overloaded in the OTF (default %(default)g)",
    )
    output.add_argument(
        "--stop-at-first-overload",
        action="store_true",
        help="end each run at its first overload decision (the migration would change the host)",
    )
    output.add_argument("--format", choices=("table", "json", "csv"), default="table")
    output.add_argument("--output", "-o", metavar="FILE", help="write the report here, not stdout")
    output.add_argument("--plot", metavar="PNG", help="draw the decisions into this PNG file")
    parser.set_defaults(handler=main)


def _parse_vm_mhz(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(
            f"--vm-mhz: expected MHz values separated by commas, got {text!r}"
        ) from None


def load_workload(args: argparse.Namespace) -> workloads.Workload:
    sizes = {"vm_mhz": _parse_vm_mhz(args.vm_mhz), "vm_ram_mb": args.vm_ram_mb}
    host_cpu = args.host_cpu_mhz
    if args.traces is not None:
        return workloads.from_planetlab(
            args.traces,
            names=args.vm,
            count=args.count,
            seed=args.seed,
            host_cpu_mhz=host_cpu or workloads.DEFAULT_HOST_CPU_MHZ,
            **sizes,
        )
    if args.vm or args.count is not None or args.seed is not None:
        raise InputError("--vm, --count and --seed choose PlanetLab traces; use them with --traces")
    if args.csv is not None:
        return workloads.from_csv(
            args.csv,
            unit=args.unit,
            host_cpu_mhz=host_cpu or workloads.DEFAULT_HOST_CPU_MHZ,
            **sizes,
        )
    query = workloads.PrometheusQuery(
        args.prometheus,
        start=workloads.parse_timestamp(args.start),
        end=workloads.parse_timestamp(args.end),
        step=parse_duration(args.step, "--step", positive=True),
        host=args.host,
        instance=args.instance,
    )
    return workloads.from_prometheus(query, host_cpu_mhz=host_cpu, vm_ram_mb=args.vm_ram_mb)


def load_configurations(args: argparse.Namespace) -> list[backtest.ReplayConfig]:
    from neat_exporter.config import config_from_mapping, load_config

    # Replay sends nothing: the global manager section must not stop a configuration loading.
    quiet = {"global_manager.mode": "off"}
    if args.config:
        stems = [Path(path).stem for path in args.config]
        labels = [
            stem if stems.count(stem) == 1 else str(path)
            for stem, path in zip(stems, args.config, strict=True)
        ]
        bases = [
            backtest.ReplayConfig.from_config(load_config(path, overrides=quiet), label)
            for path, label in zip(args.config, labels, strict=True)
        ]
    else:
        defaults = config_from_mapping({}, origin="<defaults>", overrides=quiet)
        bases = [backtest.ReplayConfig.from_config(defaults, "defaults")]
    specs = {
        kind: [parse_spec(kind, text) for text in getattr(args, f"spec_{kind}")]
        for kind in SPEC_FLAGS
    }
    return backtest.combine(bases, specs)


def main(args: argparse.Namespace) -> int:
    configs = load_configurations(args)
    workload = load_workload(args)
    for config in configs:
        backtest.validate(config, workload.time_step)
    if workload.steps == 0:
        raise InputError(f"{workload.source}: no samples")
    results = [
        backtest.replay(workload, config, args.otf_threshold, args.stop_at_first_overload)
        for config in configs
    ]
    if args.format == "json":
        report = backtest.to_json(results, workload)
    elif args.format == "csv":
        report = backtest.to_csv(results)
    else:
        report = backtest.to_table(results, workload)
    if args.plot:
        from neat_exporter.plots import plot_replay

        plot_replay(results, args.plot)
    if args.output:
        write_atomically(args.output, lambda file: file.write(report.encode()))
    else:
        sys.stdout.write(report)
    return 0
