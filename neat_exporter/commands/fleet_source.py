"""Where `simulate` and `tune` get their days: PlanetLab traces, or the operator's own fleet
read from Prometheus (saved as one fleet file per day, in a folder they then read as days)."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from neat_exporter.errors import InputError


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--traces", metavar="FOLDER", help="folder of PlanetLab days (<day>.tar.gz or <day>/)"
    )
    group = parser.add_argument_group(
        "the operator's fleet, from the exporters' series in Prometheus (instead of --traces)"
    )
    group.add_argument("--prometheus-url", metavar="URL", help="Prometheus base URL")
    group.add_argument("--start", metavar="TIME", help="Unix seconds or 2026-12-01T00:00:00Z")
    group.add_argument("--end", metavar="TIME", help="default: now")
    group.add_argument("--range", dest="span", metavar="SPAN", help="before --end, e.g. 7d")
    group.add_argument("--step", type=float, default=300.0, help="seconds (default 300)")
    group.add_argument(
        "--power-linear",
        nargs=2,
        type=float,
        metavar=("IDLE", "MAX"),
        default=None,
        help="watts of hosts that are not HP ML110 G4/G5 (SPECpower); default 86 117",
    )
    group.add_argument(
        "--host-power",
        action="append",
        default=[],
        metavar="HOST=MODEL",
        help="one host's power model: g4, g5 (SPECpower) or IDLE:MAX watts (repeatable)",
    )
    group.add_argument(
        "--save-fleet", metavar="FOLDER", help="keep the fleet read (one <day>.npz per day)"
    )


@contextlib.contextmanager
def days_folder(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """The folder of days to read (--traces, or the fleet read from Prometheus), and the flags
    that name the same days again."""
    if bool(args.traces) == bool(args.prometheus_url):
        raise InputError("give either --traces or --prometheus-url")
    if args.traces:
        yield args.traces, f"--traces {args.traces}"
        return
    from neat_exporter.promql import PrometheusAPI
    from neat_exporter.simulate.inventory import parse_host_power
    from neat_exporter.simulate.prometheus import (
        DEFAULT_LINEAR_POWER,
        read_fleet,
        save_days,
        time_range,
    )

    start, end = time_range(args.start, args.end, args.span, time.time())
    api = PrometheusAPI(args.prometheus_url)
    try:
        days = read_fleet(
            api,
            start,
            end,
            args.step,
            linear_power=tuple(args.power_linear or DEFAULT_LINEAR_POWER),
            host_power=dict(parse_host_power(text) for text in args.host_power),
        )
    finally:
        api.close()
    again = f"--prometheus-url {args.prometheus_url} --start {start:.0f} --end {end:.0f}"
    if args.step != 300:
        again += f" --step {args.step:g}"
    if args.power_linear:
        again += " --power-linear {:g} {:g}".format(*args.power_linear)
    again += "".join(f" --host-power {text}" for text in args.host_power)
    if args.save_fleet:
        folder = Path(args.save_fleet)
        folder.mkdir(parents=True, exist_ok=True)
        save_days(days, folder)
        yield str(folder), f"--traces {folder}"
        return
    with tempfile.TemporaryDirectory(prefix="neat-fleet-") as folder:
        save_days(days, Path(folder))
        yield folder, again
