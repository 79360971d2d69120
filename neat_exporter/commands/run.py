"""`neat-exporter run`: the exporter daemon, from a config file, flags, or both (flags win)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from neat_exporter.config import GLOBAL_MANAGER_MODES, SOURCE_TYPES, Config, load_config

# flag destination -> configuration key
FLAG_KEYS = {
    "listen": "listen",
    "web_config_file": "web_config_file",
    "log_level": "log_level",
    "interval": "interval",
    "time_step": "time_step",
    "history_length": "history_length",
    "history_dir": "history_dir",
    "host": "host",
    "source": "source.type",
    "libvirt_uri": "source.libvirt.uri",
    "data_dir": "source.directory.path",
    "traces": "source.replay.traces",
    "global_manager_mode": "global_manager.mode",
    "global_manager_url": "global_manager.url",
}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of `run` (and `check-config`): each sets one configuration key."""
    add = parser.add_argument
    add("--config", metavar="FILE", help="YAML configuration or an existing Neat neat.conf")
    add(
        "--listen",
        "--web.listen-address",
        dest="listen",
        metavar="ADDR",
        help="HTTP address, HOST:PORT or :PORT (key listen, default :9840)",
    )
    add(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        help="exporter-toolkit web config: TLS and basic auth (key web_config_file)",
    )
    add(
        "--interval",
        type=float,
        metavar="SECONDS",
        help="seconds between decision cycles (key interval, default 300)",
    )
    add(
        "--time-step",
        type=float,
        metavar="SECONDS",
        help="seconds between samples as the algorithms see them (key time_step)",
    )
    add(
        "--history-length",
        type=int,
        metavar="N",
        help="samples kept per VM (key history_length, default 100)",
    )
    add(
        "--history-dir",
        metavar="DIR",
        help="where the history is persisted, in Neat's format (key history_dir)",
    )
    add("--host", help="host name the global manager knows (key host)")
    add("--source", choices=SOURCE_TYPES, help="where samples come from (key source.type)")
    add(
        "--libvirt-uri",
        metavar="URI",
        help="libvirt URI, opened read-only (key source.libvirt.uri, default qemu:///system)",
    )
    add(
        "--data-dir",
        metavar="DIR",
        help="Neat's local_data_directory for --source directory (key source.directory.path)",
    )
    add(
        "--traces",
        metavar="PATH",
        help="PlanetLab traces for --source replay (key source.replay.traces)",
    )
    add(
        "--global-manager-mode",
        choices=GLOBAL_MANAGER_MODES,
        help="send migration requests: off, dry_run or on (key global_manager.mode)",
    )
    add("--global-manager-url", metavar="URL", help="key global_manager.url")


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {key: getattr(args, dest, None) for dest, key in FLAG_KEYS.items()}
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
