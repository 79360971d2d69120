"""`neat-exporter bridge`: the Alertmanager webhook receiver that calls the global manager."""

from __future__ import annotations

import argparse
import logging

from neat_exporter.actions import MigrationRequester
from neat_exporter.bridge import WEBHOOK_PATH, Bridge
from neat_exporter.commands.run import apply_log_level, wait_for_sigterm
from neat_exporter.config import Config, load_config
from neat_exporter.config.loading import add_flags, flag_overrides
from neat_exporter.metrics import live_registry
from neat_exporter.watcher import WatcherTrigger
from neat_exporter.web import Limits, serve_wsgi

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "bridge",
        parents=[common],
        help="receive Alertmanager webhooks and ask Neat's global manager to migrate VMs",
        description="Receives Alertmanager webhooks on /webhook: firing alerts labelled "
        "neat_reason (underload/overload) and host (plus vm_uuid for overload) become Neat "
        "global manager requests, one per host and reason; alerts mapped in watcher.audits "
        "start OpenStack Watcher audits. Uses the config's global_manager, bridge and watcher "
        "sections.",
    )
    parser.add_argument("--config", metavar="FILE", help="YAML configuration (or neat.conf)")
    add_flags(parser, Config, "bridge")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config, overrides=flag_overrides(args, Config, "bridge"))
    if args.log_level is None:  # --log-level wins over the config's log_level
        apply_log_level(config)
    registry = live_registry()
    requester = MigrationRequester(
        config.global_manager,
        registry,
        queue_size=config.bridge.queue_size,
        metric_prefix="neat_bridge_migration_request",
    )
    watcher = None
    if config.watcher.mode == "on":
        watcher = WatcherTrigger(config.watcher, registry, queue_size=config.bridge.queue_size)
    app = Bridge(config.bridge, requester, registry, watcher=watcher)
    server = serve_wsgi(
        app,
        config.bridge.listen,
        config.web_config_file,
        listen_key="bridge.listen",
        limits=Limits(max_body_bytes=config.bridge.max_payload_bytes),
    )
    log.info(
        "listening on %s%s (global manager mode %s)",
        server.url,
        WEBHOOK_PATH.lstrip("/"),
        config.global_manager.mode,
    )
    if config.global_manager.mode == "off":
        log.warning("global_manager.mode is off: webhooks are accepted but nothing is sent")
    try:
        wait_for_sigterm()
    finally:
        server.shutdown()
        requester.close(timeout=config.global_manager.timeout)
        if watcher is not None:
            watcher.close(timeout=config.watcher.timeout)
    return 0
