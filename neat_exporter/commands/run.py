"""`neat-exporter run`: the exporter daemon, from a config file, flags, or both (flags win)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from neat_exporter.config import Config, load_config
from neat_exporter.config.loading import add_flags, flag_overrides


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of `run` (and `check-config`): each sets one configuration key."""
    parser.add_argument(
        "--config", metavar="FILE", help="YAML configuration or an existing Neat neat.conf"
    )
    add_flags(parser, Config, "run")


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = flag_overrides(args, Config, "run")
    # The common --log-level flag of every command sets the key too.
    overrides["log_level"] = getattr(args, "log_level", None)
    return load_config(args.config, overrides=overrides)


def apply_log_level(config: Config) -> None:
    logging.getLogger().setLevel(config.log_level.upper())


def wait_for_sigterm() -> None:
    """Block until SIGTERM, the way servers are stopped (Ctrl-C still ends a foreground run)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "run",
        parents=[common],
        help="run the exporter",
        description="Run the exporter: a decision cycle every interval, /metrics, /healthz and "
        "a landing page at /. Every flag overrides its configuration key; without --config the "
        "defaults apply (libvirt at qemu:///system, :9840, every 300 s).",
    )
    add_config_flags(parser)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from neat_exporter.daemon import serve

    config = config_from_args(args)
    apply_log_level(config)
    return serve(config)
