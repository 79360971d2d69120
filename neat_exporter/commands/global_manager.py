"""`neat-exporter global-manager`: Neat's global manager, fed by Prometheus, moving VMs."""

from __future__ import annotations

import argparse
import functools
import logging
import time

import yaml
from prometheus_client import CollectorRegistry

from neat_exporter.actions import Credentials
from neat_exporter.commands.run import wait_for_sigterm
from neat_exporter.config.loading import add_flags, flag_overrides
from neat_exporter.globalmanager.config import (
    GlobalManagerFile,
    GlobalManagerSettings,
    effective_settings,
    load_settings,
)
from neat_exporter.metrics import live_registry
from neat_exporter.web import load_web_config, serve_wsgi

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "global-manager",
        parents=[common],
        help="run Neat's global manager: PUT / requests become live migrations",
        description="Answers Neat's PUT / requests (from Neat's local managers, `run` with "
        "global_manager.mode on, or `bridge`): reads the fleet from Prometheus, places VMs with "
        "Neat's best fit decreasing, live-migrates them and switches emptied hosts off. The "
        "executor is dry_run unless told otherwise. Serves /metrics, /healthz and a landing "
        "page. Every flag overrides its configuration key.",
    )
    add = parser.add_argument
    add("--config", metavar="FILE", help="YAML configuration (see docs/global-manager.md)")
    add(
        "--check-config",
        action="store_true",
        help="validate the configuration, print it with secrets redacted, and exit",
    )
    add_flags(parser, GlobalManagerFile, "global-manager")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, flag_overrides(args, GlobalManagerFile, "global-manager"))
    if args.log_level is None:
        logging.getLogger().setLevel(settings["log_level"].upper())
    if args.check_config:
        if settings["web_config_file"]:
            load_web_config(settings["web_config_file"])
        print(f"# {settings.origin}: valid")
        print(yaml.safe_dump(effective_settings(settings), sort_keys=False), end="")
        return 0
    return serve(settings)


def build_app(settings: GlobalManagerSettings, registry: CollectorRegistry, clock=time.time):
    """The service and its WSGI app, from checked settings (the caller closes the service)."""
    from neat_exporter.globalmanager.app import GlobalManagerApp
    from neat_exporter.globalmanager.audit import AuditLog
    from neat_exporter.globalmanager.fleet import read_fleet
    from neat_exporter.globalmanager.metrics import GlobalManagerMetrics
    from neat_exporter.globalmanager.service import GlobalManagerService
    from neat_exporter.globalmanager.state import GlobalManagerState
    from neat_exporter.promql import PrometheusAPI

    metrics = GlobalManagerMetrics(registry)
    api = PrometheusAPI(settings["prometheus.url"], timeout=settings["prometheus.timeout"])
    policy = settings.file.policy
    placement = settings.placement()
    reader = functools.partial(
        read_fleet,
        api,
        cpu_window=settings["prometheus.cpu_window"],
        stale_after=settings["prometheus.stale_after"],
        host_lookback=settings["prometheus.host_lookback"],
        # A plug-in placement's history length is unknown: Neat's default.
        last_n=getattr(placement, "params", {}).get("last_n_vm_cpu", 2),
        vm_names=bool(policy.vm_opt_out),
    )
    state = GlobalManagerState(settings["state_file"], keep_migrations=max(3600, policy.cooldown))
    audit = AuditLog(settings["audit_log"], clock, on_error=metrics.audit_errors.inc)
    service = GlobalManagerService(
        read_fleet=reader,
        placement=placement,
        executor=_executor(settings, registry),
        power=_power(settings),
        state=state,
        audit=audit,
        metrics=metrics,
        policy=policy,
        clock=clock,
    )
    credentials = Credentials.from_plain(
        settings.username.get_secret_value(), settings.password.get_secret_value()
    )
    return service, GlobalManagerApp(service, credentials, registry, clock)


def _executor(settings: GlobalManagerSettings, registry: CollectorRegistry):
    from neat_exporter.errors import ConfigError
    from neat_exporter.globalmanager.executors.base import ExecutorError

    if settings["executor.type"] == "nova":
        from neat_exporter.globalmanager.executors.nova import NovaExecutor

        section = {k: v for k, v in settings["executor.nova"].items() if v is not None}
        try:
            return NovaExecutor.from_mapping(section, registry=registry)
        except ExecutorError as error:
            raise ConfigError("executor.nova", str(error)) from None
    if settings["executor.type"] == "libvirt":
        from neat_exporter.globalmanager.executors.libvirt import LibvirtExecutor

        section = settings["executor.libvirt"]
        try:
            return LibvirtExecutor(
                section["uri_template"],
                migration_uri_template=section["migration_uri_template"],
                unsafe=section["unsafe"],
                max_per_host=section["max_per_host"],
                max_total=section["max_total"],
            )
        except ExecutorError as error:
            raise ConfigError("executor.type", str(error)) from None
    from neat_exporter.globalmanager.executors.dry_run import DryRunExecutor

    return DryRunExecutor()


def _power(settings: GlobalManagerSettings):
    """The power backend; None = hosts are never switched off (backend ``none``)."""
    if settings["power.backend"] == "none":
        return None
    from neat_exporter.globalmanager.power import build_power_backend

    return build_power_backend(settings["power.backend"], settings["hosts"])


def serve(settings: GlobalManagerSettings) -> int:
    registry = live_registry()
    service, app = build_app(settings, registry)
    server = serve_wsgi(app, settings["listen"], settings["web_config_file"])
    host, port = server.address
    log.info(
        "global manager listening on %s://%s:%d/ (executor %s, Prometheus %s)",
        "https" if server.tls else "http",
        host,
        port,
        service.executor.name,
        settings["prometheus.url"],
    )
    if service.dry_run:
        log.warning("executor dry_run: plans are computed and shown, nothing moves")
    try:
        wait_for_sigterm()
    finally:
        server.shutdown()
        service.wait_idle(settings["policy.migration_timeout"])
        service.close()
    return 0
