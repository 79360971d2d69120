"""The exporter's decision loop and process life: cycles on a timer, HTTP, signals, persistence.

One cycle: collect from the source, add the samples to the history, run Neat's local manager
step, swap in a new snapshot (encoded for /metrics), hand a decision to the migration requester,
start persisting the history (in the background; the next cycle's snapshot waits for it).
Cycles run in a worker thread every ``interval`` seconds, measured from the start of one cycle to
the start of the next (a cycle's own time is not added to the wait; a cycle longer than the
interval makes the next one start at the next whole interval). A failed cycle counts the failure
and leaves the last good snapshot in place, so scrapes keep seeing it with its timestamp.

SIGTERM and SIGINT stop the loop: a cycle in progress gets a few seconds to finish and is
otherwise abandoned; the history is persisted and the process exits 0 within 5 seconds.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from neat_exporter.config import Config
from neat_exporter.errors import ConfigError, InputError
from neat_exporter.exposition import Exposition
from neat_exporter.files import check_private
from neat_exporter.history import History
from neat_exporter.metrics import LoopMetrics, live_registry, snapshot_families
from neat_exporter.pipeline import HostPipeline
from neat_exporter.snapshot import Snapshot, build_snapshot
from neat_exporter.sources import Source, SourceError, open_source

if TYPE_CHECKING:
    from neat_exporter.actions import MigrationRequester

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 3.0
"""Seconds a cycle in progress may take to finish after a stop signal."""


def make_requester(config: Config, registry: CollectorRegistry) -> MigrationRequester:
    """The global manager client of ``neat_exporter.actions`` for ``config.global_manager``.

    Built even when the mode is off, so its request metrics exist (at 0) on /metrics.
    """
    from neat_exporter.actions import MigrationRequester

    return MigrationRequester(config.global_manager, registry)


class Daemon:
    """The decision loop over one source; ``snapshot`` is what the pages show, ``exposition``
    its metric families, encoded for /metrics, which serves them beside the live metrics of
    ``registry`` (the loop's counters, the global manager client's)."""

    def __init__(
        self,
        config: Config,
        source: Source,
        *,
        registry: CollectorRegistry | None = None,
        requester: MigrationRequester | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float], bool] = threading.Event.wait,
    ):
        """``clock`` stamps snapshots; ``monotonic`` and ``wait`` (until an event is set or a
        timeout passes) pace the loop, so tests can run it on a clock of their own."""
        self.config = config
        self.source = source
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = LoopMetrics(self.registry)
        self.exposition = Exposition(snapshot_families(None))
        self.requester = requester
        self._clock = clock
        self._monotonic = monotonic
        self._wait = wait
        self.snapshot: Snapshot | None = None
        self.last_error: str | None = None
        self.pipeline = HostPipeline(
            config.algorithms,
            time_step=config.time_step,
            bandwidth_mb_s=config.network_migration_bandwidth,
            history=History(config.history_length),
        )
        # Loaded by the first cycle, which knows the host's capacity: values beyond it are
        # dropped. Until then nothing is persisted, so the files on disk are not lost.
        self._history_loaded = not config.history_dir
        if config.history_dir:
            _check_history_dir(config.history_dir)
        self._history_lock = threading.Lock()
        self._writer_lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._stop = threading.Event()
        self._logged_decision: str | None = None

    # --- one cycle ------------------------------------------------------------------------------

    def _fail(self, stage: str, error: BaseException) -> bool:
        self.metrics.errors.labels(stage).inc()
        self.last_error = f"{stage}: {error}"
        if isinstance(error, SourceError):
            log.warning("cycle failed at %s: %s", stage, error)
        else:
            log.error("cycle failed at %s", stage, exc_info=error)
        return False

    def run_cycle(self) -> bool:
        """One decision cycle; False when it failed (the previous snapshot stays)."""
        started = self._monotonic()
        try:
            return self._cycle()
        finally:
            # Counted once over, so that a count of one means the first snapshot is on /metrics
            # (or the first cycle failed), never that it is still being built.
            self.metrics.cycles.inc()
            self.metrics.duration.observe(self._monotonic() - started)

    def _cycle(self) -> bool:
        try:
            reading = self.source.collect()
        except Exception as error:
            self.metrics.source_up.set(0)
            return self._fail("collect", error)
        self.metrics.source_up.set(1)
        self.metrics.vms_skipped.inc(reading.skipped_vms)
        self.metrics.vms_rejected.inc(reading.rejected_vms)
        capacity_mhz = reading.cpu_mhz_total * self.config.host_cpu_usable_by_vms
        vms_ram_mb = {uuid: vm.ram_max_mb for uuid, vm in reading.vms.items()}
        # Under the lock the persisting thread takes to copy the history.
        with self._history_lock:
            if not self._history_loaded:
                self._load_history(reading.cpu_mhz_total)
            if self.source.keeps_history:
                files = self.source.read_history()
                self.pipeline.history.replace(files.vms, files.host)
                self.metrics.history_dropped_lines.inc(files.dropped_lines)
            else:
                self.pipeline.history.record(reading)
            try:
                decision = self.pipeline.decide(capacity_mhz, vms_ram_mb)
            except Exception as error:
                return self._fail(self.pipeline.stage, error)
        host = self.config.host or reading.host
        snapshot = build_snapshot(
            now=self._clock(),
            host=host,
            source=self.source.name,
            reading=reading,
            capacity_mhz=capacity_mhz,
            decision=decision,
            algorithms=self.config.algorithms,
            previous=self.snapshot,
        )
        # Shown only once the previous cycle's history is on disk, so that a crash loses no
        # history older than the latest cycle shown.
        self.wait_for_persist()
        # Encoded for /metrics before it is shown: scrapes see the old or the new, whole.
        try:
            self.exposition.publish(snapshot_families(snapshot, self.config.ceilometer_series))
        except InputError as error:  # a label that cannot be shown: the last snapshot stays
            return self._fail("publish", error)
        self.snapshot = snapshot
        self.metrics.decisions.labels(snapshot.decision).inc()
        self.last_error = None
        self._log_decision(snapshot)
        ok = True
        if decision is not None and decision.reason is not None and self.requester is not None:
            try:
                self.requester.submit(host, decision.reason, list(decision.selected))
            except Exception as error:
                ok = self._fail("act", error)
        self.persist()
        return ok

    def _load_history(self, capacity_mhz: float) -> None:
        history = History.load(
            self.config.history_dir, self.config.history_length, ceiling_mhz=capacity_mhz
        )
        self.metrics.history_dropped_lines.inc(history.dropped_lines)
        self.pipeline.history = history
        self._history_loaded = True

    def _log_decision(self, snapshot: Snapshot) -> None:
        """At info level when the decision changes, at debug level every cycle."""
        level = logging.INFO if snapshot.decision != self._logged_decision else logging.DEBUG
        self._logged_decision = snapshot.decision
        if snapshot.decision == "overload":
            detail = f"; selected {', '.join(snapshot.selected)}"
        elif snapshot.decision == "underload":
            detail = f"; all {len(snapshot.selected)} VMs may leave"
        else:
            detail = ""
        utilization = "n/a" if snapshot.utilization is None else f"{snapshot.utilization:.3f}"
        log.log(
            level,
            "%s: %s (utilization %s)%s",
            snapshot.host,
            snapshot.decision,
            utilization,
            detail,
        )

    def persist(self) -> None:
        """Start writing the history to ``history_dir`` (if set) in a background thread, once the
        write in progress has finished. At a thousand VMs a write takes a few hundred ms, mostly
        the file system's renames; writes never overlap, so each file on disk is of the latest
        write or the one before. A failure is logged and counted, not fatal."""
        if not self.config.history_dir or self.source.keeps_history:
            return
        if not self._history_loaded:  # no cycle yet: the files on disk are all there is
            return
        with self._writer_lock:
            self.wait_for_persist()
            # Bounded: at shutdown an abandoned cycle might, in theory, hold the lock.
            if not self._history_lock.acquire(timeout=1.0):
                log.error("history not persisted: it is busy")
                return
            try:
                history = self.pipeline.history.copy()  # the cycles go on recording meanwhile
            finally:
                self._history_lock.release()
            self._writer = threading.Thread(
                target=self._save, args=(history,), name="history", daemon=True
            )
            self._writer.start()

    def wait_for_persist(self, timeout: float | None = None) -> bool:
        """Wait for the history write in progress, if any; False if it is still going."""
        writer = self._writer
        if writer is not None:
            writer.join(timeout)
            return not writer.is_alive()
        return True

    def _save(self, history: History) -> None:
        try:
            history.save(self.config.history_dir)
        except (OSError, InputError) as error:  # InputError: a folder others can write
            self.metrics.history_persist_errors.inc()
            log.error("cannot persist the history to %s: %s", self.config.history_dir, error)

    # --- the loop -------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def loop(self) -> None:
        """Run cycles every ``interval`` seconds until :meth:`stop`."""
        interval = self.config.interval
        due = self._monotonic()
        while not self._stop.is_set():
            try:
                self.run_cycle()
            except Exception:  # a bug in one cycle must not end the loop
                log.exception("unexpected error in a cycle")
            due += interval
            now = self._monotonic()
            if due < now:  # the cycle overran: skip to the next whole interval
                due += (now - due) // interval * interval + interval
            self._wait(self._stop, due - now)


def _check_history_dir(path: str) -> None:
    """ConfigError at start when others can write ``history_dir`` (each save checks again)."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return  # created, private, by the first save
    except OSError as error:
        raise ConfigError("history_dir", f"{path}: {error.strerror or error}") from None
    try:
        check_private(status, path)
    except InputError as error:
        raise ConfigError("history_dir", str(error)) from None


def serve(config: Config, *, announce: Callable[[str], None] | None = None) -> int:
    """Run the exporter until SIGTERM/SIGINT: HTTP server, decision loop, persistence."""
    from neat_exporter.server import make_app
    from neat_exporter.web import format_address, serve_wsgi

    source = open_source(config)
    registry = live_registry()
    daemon = Daemon(config, source, registry=registry, requester=make_requester(config, registry))
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    server = serve_wsgi(make_app(registry, daemon), config.listen, config.web_config_file)
    host, port = server.address
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    url = f"{'https' if server.tls else 'http'}://{format_address(shown, port)}/"
    log.info("listening on %s (source %s, interval %gs)", url, source.name, config.interval)
    if announce:
        announce(url)
    worker = threading.Thread(target=daemon.loop, name="cycle", daemon=True)
    worker.start()
    try:
        while not stopped.wait(0.5):
            if not worker.is_alive():  # pragma: no cover - loop() catches everything
                break
    finally:
        daemon.stop()
        worker.join(SHUTDOWN_GRACE)
        if worker.is_alive():
            log.warning("abandoning a cycle still running after %.0fs", SHUTDOWN_GRACE)
        daemon.persist()
        daemon.wait_for_persist()
        if daemon.requester is not None:
            daemon.requester.close(timeout=0.5)
        server.shutdown()
        source.close()
        log.info("stopped")
    return 0
