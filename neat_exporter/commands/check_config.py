"""`neat-exporter check-config`: validate a configuration and print it, secrets redacted."""

from __future__ import annotations

import argparse

import yaml

from neat_exporter.commands.run import add_config_flags, config_from_args
from neat_exporter.config import effective_config
from neat_exporter.errors import ConfigError
from neat_exporter.web import load_web_config


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "check-config",
        parents=[common],
        help="validate a configuration and print the effective one",
        description="Validate FILE (YAML or neat.conf) with the given flags applied and print "
        "every key's effective value, secrets redacted. Exit 0 when valid; otherwise print the "
        "key and the reason and exit 2.",
    )
    parser.add_argument("file", nargs="?", metavar="FILE", help="the configuration file")
    add_config_flags(parser)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    if args.file is not None:
        if args.config is not None and args.config != args.file:
            raise ConfigError("config", "give FILE or --config, not both")
        args.config = args.file
    config = config_from_args(args)
    if config.web_config_file:
        load_web_config(config.web_config_file)  # TLS files and bcrypt hashes checked, not shown
    print(f"# {config.origin}: valid")
    print(yaml.safe_dump(effective_config(config), sort_keys=False), end="")
    return 0
