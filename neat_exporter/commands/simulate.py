"""`neat-exporter simulate`."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser("simulate", parents=[common], help="(not built yet)")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    print("neat-exporter simulate: not built yet", file=sys.stderr)
    return 1
