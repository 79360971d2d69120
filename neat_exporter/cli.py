"""The `neat-exporter` command. Each subcommand lives in `neat_exporter.commands.<name>`,
which defines `register(subparsers)` and `main(args) -> int`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from neat_exporter import __version__
from neat_exporter.config import LOG_LEVELS
from neat_exporter.errors import NeatExporterError

COMMANDS = ("run", "demo", "check_config", "replay", "simulate", "bridge", "global_manager", "tune")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neat-exporter",
        description="OpenStack Neat's local manager as a Prometheus exporter.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        "--log.level",
        dest="log_level",
        choices=LOG_LEVELS,
        default=None,
        help="logging verbosity (default: info, or the config's log_level)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"neat_exporter.commands.{name}")
        module.register(subparsers, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=(args.log_level or "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except NeatExporterError as error:
        for line in str(error).splitlines() or [""]:
            print(f"neat-exporter {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
