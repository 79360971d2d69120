"""`neat-exporter demo`: the exporter on the built-in synthetic workload, accelerated.

One cycle per second replays one 5-minute step (the algorithms still see ``time_step`` 300), so
the synthetic host passes through underload, normal load and overload within a minute. The
detectors are chosen to react at that pace: last-2 average under 50 % is underload, and OTF
(utilization at or above 90 % for more than 10 % of the time) is overload.
"""

from __future__ import annotations

import argparse

from neat_exporter.commands.run import apply_log_level
from neat_exporter.config import config_from_mapping

DEMO_CONFIG = {
    "host": "demo-host",
    "listen": "127.0.0.1:9840",
    "interval": 1,
    "time_step": 300,
    "history_length": 30,
    "source": {"type": "replay", "replay": {"vms": 8, "cpus": 4, "host_cpu_mhz": 12000}},
    "algorithms": {
        "underload": {"name": "last_n_average_threshold", "params": {"threshold": 0.5, "n": 2}},
        "overload": {"name": "otf", "params": {"otf": 0.1, "threshold": 0.9, "limit": 5}},
        "vm_selection": {"name": "minimum_migration_time_max_cpu", "params": {"last_n": 2}},
    },
}


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=[common],
        help="run the exporter on a built-in synthetic workload (no libvirt needed)",
        description="Run the exporter on a seeded synthetic workload, one cycle per second, so "
        "underload, overload and VM selection show on /metrics within a minute.",
    )
    parser.add_argument(
        "--listen",
        "--web.listen-address",
        dest="listen",
        metavar="ADDR",
        help="HTTP address (default 127.0.0.1:9840)",
    )
    parser.add_argument(
        "--interval", type=float, metavar="SECONDS", help="seconds between cycles (default 1)"
    )
    parser.add_argument("--seed", type=int, help="seed of the synthetic workload (default 0)")
    parser.add_argument(
        "--traces", metavar="PATH", help="replay PlanetLab traces (folder or .tar.gz) instead"
    )
    parser.add_argument("--history-dir", metavar="DIR", help="persist the history there")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from neat_exporter.daemon import serve

    overrides = {
        "listen": args.listen,
        "interval": args.interval,
        "log_level": args.log_level,
        "history_dir": args.history_dir,
        "source.replay.seed": args.seed,
        "source.replay.traces": args.traces,
    }
    config = config_from_mapping(DEMO_CONFIG, origin="<demo>", overrides=overrides)
    apply_log_level(config)

    def announce(url: str) -> None:
        print(
            f"neat-exporter demo: serving on {url} (metrics at {url}metrics); Ctrl-C stops",
            flush=True,
        )

    return serve(config, announce=announce)
