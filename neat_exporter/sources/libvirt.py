"""VM and host CPU use read from libvirt, as Neat's data collector (neat/locals/collector.py) does.

Each collection makes one bulk ``getAllDomainStats`` call (state, cpu and balloon groups, running
domains only) and one node CPU stats call on a read-only connection, then turns cumulative
counters into MHz over the interval since the previous collection:

- VM MHz is Neat's ``calculate_cpu_mhz``: ``core_mhz × Δcpu.time_ns / (Δt_s × 1e9)``, so a VM
  using k full cores reports k × core MHz. Unlike Neat the value is not truncated to an integer
  (an idle VM at 11.7 MHz stays 11.7; Neat's history files hold integers, so writers of that
  format truncate). A cpu.time that went backwards (the VM restarted or moved) reuses the VM's
  previous MHz, as in Neat. A VM seen for the first time has no baseline yet, hence no MHz.
- Host busy MHz is Neat's ``get_host_cpu_mhz`` over libvirt's node CPU stats, so it also works
  for a remote URI: ``cores × MHz × Δbusy / Δtotal``. libvirt sums /proc/stat's seven fields into
  user (user + nice), kernel (system + irq + softirq), idle and iowait, so the total is Neat's;
  busy is user + kernel, which counts interrupt time as busy where Neat left it out.
- Host cores and MHz come from ``getInfo()`` once per connection (Neat reads them once at start;
  libvirt reports the current clock, which may drift with frequency scaling).
- Only running domains count, as in Neat: a paused VM drops out and starts again without a
  baseline when resumed.

Drivers whose bulk stats lack the cpu or balloon group (the test driver has only ``state``) are
read per domain instead, with ``info()`` (or ``maxMemory()``); this costs one round trip per VM.

Nova's metadata (namespaces nova/1.1, then nova/1.0) is read once per new domain and cached by
UUID, because a per-domain call is expensive at a thousand domains. One collection spends at most
``metadata_budget`` seconds on it (default: half the timeout, and always at least one domain), so
a host with many new domains cannot push every collection past the timeout; the domains left over
are reported with only their ``domain`` label and get their metadata in the next collections.

libvirt-python calls block in C and a hung libvirtd would block them forever, so all libvirt work
of one collection runs in a worker thread and ``collect()`` waits at most ``timeout`` seconds for
it. A thread that did not return is abandoned; while it is still stuck the connection counts as
down and no further call is started, so hung threads never pile up. A VM that errors or vanishes
during a collection is left out and counted in ``Reading.skipped_vms``. When libvirt cannot be
reached, ``collect()`` raises SourceError, and later collections reconnect with exponential
backoff (capped) rather than hammering a dead socket every cycle.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from neat_exporter.errors import ConfigError
from neat_exporter.identifiers import MAX_INFO_LABEL_LENGTH, bounded_label_value, shown
from neat_exporter.neat_files import NeatFiles
from neat_exporter.sources.base import VM_INFO_LABELS, Reading, SourceError, VmReading

log = logging.getLogger(__name__)

NOVA_NAMESPACES = (
    "http://openstack.org/xmlns/libvirt/nova/1.1",
    "http://openstack.org/xmlns/libvirt/nova/1.0",
)

T = TypeVar("T")


def _import_libvirt() -> Any:
    try:
        import libvirt
    except ImportError as error:
        raise ConfigError(
            "source",
            "the libvirt source needs libvirt-python: pip install 'neat-exporter[libvirt]' "
            f"({error})",
        ) from None
    _silence_libvirt_stderr(libvirt)
    return libvirt


_error_handler_installed = False


def _silence_libvirt_stderr(libvirt: Any) -> None:
    """libvirt prints every error to stderr unless a handler is set; log them instead.

    The errors still raise libvirtError in the calling code, which decides what they mean."""
    global _error_handler_installed
    if not _error_handler_installed:
        libvirt.registerErrorHandler(lambda _ctx, error: log.debug("libvirt: %s", error[2]), None)
        _error_handler_installed = True


def cpu_mhz(core_mhz: float, cpu_time_delta_ns: float, seconds: float) -> float:
    """Neat's ``calculate_cpu_mhz``: average MHz of ``cpu_time_delta_ns`` spent over ``seconds``."""
    return core_mhz * cpu_time_delta_ns / (seconds * 1e9)


def parse_nova_metadata(element_xml: str) -> dict[str, str]:
    """The ``neat_vm_info`` labels found in Nova's ``<instance>`` metadata element.

    libvirt returns the element without its namespace; namespaced tags are accepted too."""
    root = ElementTree.fromstring(element_xml)
    for node in root.iter():
        node.tag = node.tag.rpartition("}")[2]

    def text(path: str) -> str:
        node = root.find(path)
        return (node.text or "").strip() if node is not None else ""

    def attribute(path: str, name: str) -> str:
        node = root.find(path)
        return node.get(name, "") if node is not None else ""

    return {
        "instance_name": text("name"),
        "project_id": attribute("owner/project", "uuid"),
        "project_name": text("owner/project"),
        "flavor_name": attribute("flavor", "name"),
        "user_id": attribute("owner/user", "uuid"),
    }


class _BoundedCaller:
    """Runs a function in a daemon thread and waits for it at most ``timeout`` seconds.

    At most one call is outstanding: while an abandoned call is still stuck, new calls are
    refused at once."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._stuck: threading.Thread | None = None

    @property
    def stuck(self) -> bool:
        if self._stuck is not None and not self._stuck.is_alive():
            self._stuck = None
        return self._stuck is not None

    def __call__(self, function: Callable[[], T], what: str) -> T:
        if self.stuck:
            raise SourceError(f"libvirt has still not answered an earlier call; skipping {what}")
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["result"] = function()
            except BaseException as error:  # handed to the waiting thread below
                outcome["error"] = error

        thread = threading.Thread(target=run, name="neat-libvirt-call", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            self._stuck = thread
            raise SourceError(f"libvirt did not answer {what} within {self.timeout:g}s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["result"]


@dataclass(frozen=True, slots=True)
class _HostInfo:
    hostname: str
    cpu_cores: int
    core_mhz: float
    ram_mb: float


class _DomainSample(NamedTuple):  # tuples: built a thousand times per cycle, cheaply
    uuid: str
    name: str
    cpu_time_ns: int
    max_memory_kib: int
    at: float
    """time.monotonic() when the counter was read."""
    used_memory_kib: int | None = None
    """Memory in use as Ceilometer counts it (see _used_memory_kib)."""


@dataclass(slots=True)
class _Fetched:
    """Raw counters of one collection, as read in the worker thread."""

    samples: list[_DomainSample] = field(default_factory=list)
    skipped: set[str] = field(default_factory=set)
    info: dict[str, dict[str, str]] = field(default_factory=dict)
    """Nova metadata of domains not seen before."""
    node_busy_ns: int | None = None
    node_total_ns: int | None = None


class _Baseline(NamedTuple):
    cpu_time_ns: int
    at: float
    mhz: float | None


class LibvirtSource:
    """Running VMs and host CPU from libvirt at ``uri``; see the module docstring."""

    name = "libvirt"
    keeps_history = False

    def __init__(
        self,
        uri: str,
        timeout: float = 5.0,
        host: str | None = None,
        *,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 60.0,
        metadata_budget: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self._libvirt = _import_libvirt()
        self._monotonic = monotonic
        self.uri = uri
        self.host = host
        self._call = _BoundedCaller(timeout)
        self._reconnect_delay = reconnect_delay
        self._max_reconnect_delay = max_reconnect_delay
        self._metadata_budget = timeout / 2 if metadata_budget is None else metadata_budget
        self._next_delay = reconnect_delay
        self._retry_at = 0.0
        self._last_error = ""
        self._conn: Any = None
        self._host_info: _HostInfo | None = None
        self._baselines: dict[str, _Baseline] = {}
        self._info: dict[str, dict[str, str]] = {}
        self._node: tuple[int, int] | None = None

    # -- connection -------------------------------------------------------------------------

    def _connect(self) -> Any:
        if self._conn is not None:
            return self._conn
        now = self._monotonic()
        if now < self._retry_at:
            raise SourceError(
                f"libvirt at {self.uri} is unreachable ({self._last_error}); "
                f"next attempt in {self._retry_at - now:.1f}s"
            )
        libvirt = self._libvirt

        def open_and_describe() -> tuple[Any, _HostInfo]:
            conn = libvirt.openReadOnly(self.uri)
            _model, memory_mb, cpus, mhz, *_ = conn.getInfo()
            return conn, _HostInfo(conn.getHostname(), int(cpus), float(mhz), float(memory_mb))

        try:
            self._conn, self._host_info = self._call(open_and_describe, "the connection")
        except (SourceError, libvirt.libvirtError) as error:
            self._last_error = str(error)
            self._retry_at = self._monotonic() + self._next_delay
            self._next_delay = min(self._next_delay * 2, self._max_reconnect_delay)
            raise SourceError(f"cannot connect to libvirt at {self.uri}: {error}") from None
        self._next_delay = self._reconnect_delay
        log.info("connected to libvirt at %s", self.uri)
        return self._conn

    def _disconnect(self, reason: str) -> None:
        """Forget the connection; the next collection reconnects at once, then backs off."""
        log.warning("lost libvirt at %s: %s", self.uri, reason)
        self._last_error = reason
        self.close()

    def read_history(self) -> NeatFiles:
        return NeatFiles()  # the daemon keeps the history of what this source reads

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not self._call.stuck:  # a stuck call still uses it
            with contextlib.suppress(self._libvirt.libvirtError):  # already gone
                conn.close()

    # -- collection -------------------------------------------------------------------------

    def collect(self) -> Reading:
        conn = self._connect()
        known = set(self._info)
        budget = self._metadata_budget
        try:
            fetched = self._call(
                lambda: _fetch(self._libvirt, conn, known, budget), "the domain stats"
            )
        except SourceError as error:
            self._disconnect(str(error))
            raise
        except self._libvirt.libvirtError as error:
            self._disconnect(str(error))
            raise SourceError(f"libvirt at {self.uri}: {error}") from None
        return self._reading(fetched)

    def _reading(self, fetched: _Fetched) -> Reading:
        host = self._host_info
        self._info.update(fetched.info)
        vms: dict[str, VmReading] = {}
        for sample in fetched.samples:
            mhz = self._vm_mhz(sample, host.core_mhz)
            vms[sample.uuid] = VmReading(
                uuid=sample.uuid,
                cpu_mhz=mhz,
                ram_max_mb=sample.max_memory_kib / 1024,
                info=self._info.get(sample.uuid) or _unknown_info(sample.name),
                cpu_time_ns=sample.cpu_time_ns,
                memory_used_mb=(
                    None if sample.used_memory_kib is None else sample.used_memory_kib / 1024
                ),
            )
        # A VM skipped this time keeps its baseline and metadata: it may be back next cycle.
        present = vms.keys() | fetched.skipped
        for stale in self._baselines.keys() - present:
            del self._baselines[stale]
        for stale in self._info.keys() - present:
            del self._info[stale]
        return Reading(
            time=time.time(),
            host=self.host or host.hostname,
            cpu_cores=host.cpu_cores,
            core_mhz=host.core_mhz,
            host_busy_mhz=self._host_busy_mhz(fetched, host),
            vms=vms,
            skipped_vms=len(fetched.skipped),
            ram_total_mb=host.ram_mb,
        )

    def _vm_mhz(self, sample: _DomainSample, core_mhz: float) -> float | None:
        previous = self._baselines.get(sample.uuid)
        mhz = None
        if previous is not None:
            if sample.cpu_time_ns < previous.cpu_time_ns or sample.at <= previous.at:
                mhz = previous.mhz  # restarted or moved: Neat keeps the last value
            else:
                mhz = cpu_mhz(
                    core_mhz, sample.cpu_time_ns - previous.cpu_time_ns, sample.at - previous.at
                )
        self._baselines[sample.uuid] = _Baseline(sample.cpu_time_ns, sample.at, mhz)
        return mhz

    def _host_busy_mhz(self, fetched: _Fetched, host: _HostInfo) -> float | None:
        if fetched.node_total_ns is None:
            return None
        previous, self._node = self._node, (fetched.node_busy_ns, fetched.node_total_ns)
        if previous is None:
            return None
        busy = fetched.node_busy_ns - previous[0]
        total = fetched.node_total_ns - previous[1]
        if total <= 0 or busy < 0:  # counters did not move (test driver) or were reset
            return None
        return host.cpu_cores * host.core_mhz * busy / total


def _fetch(libvirt: Any, conn: Any, known: Container[str], metadata_budget: float) -> _Fetched:
    """All libvirt reads of one collection (runs in the worker thread; touches no source state).

    Nova metadata is read for domains not in ``known`` until ``metadata_budget`` seconds have
    passed (at least one domain per collection, so every domain gets its turn)."""
    fetched = _Fetched()
    started = time.monotonic()
    metadata_deadline = started + metadata_budget
    records = conn.getAllDomainStats(
        libvirt.VIR_DOMAIN_STATS_STATE
        | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
        | libvirt.VIR_DOMAIN_STATS_BALLOON,
        libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_RUNNING,
    )
    at = (started + time.monotonic()) / 2
    fetched.node_busy_ns, fetched.node_total_ns = _node_cpu_ns(libvirt, conn)
    for domain, stats in records:
        if stats.get("state.state") != libvirt.VIR_DOMAIN_RUNNING:
            continue
        uuid = domain.UUIDString()
        try:
            sample = _domain_sample(libvirt, domain, uuid, stats, at)
            if (
                sample is not None
                and uuid not in known
                and (not fetched.info or time.monotonic() < metadata_deadline)
            ):
                fetched.info[uuid] = _domain_info(libvirt, domain)
        except libvirt.libvirtError as error:
            if not conn.isAlive():
                raise
            log.debug("skipping domain %s this cycle: %s", uuid, error)
            fetched.skipped.add(uuid)
            continue
        if sample is not None:
            fetched.samples.append(sample)
    return fetched


def _domain_sample(
    libvirt: Any, domain: Any, uuid: str, stats: dict[str, Any], at: float
) -> _DomainSample | None:
    """The domain's counters from the bulk stats, or per domain where the driver lacks a group."""
    cpu_time = stats.get("cpu.time")
    max_memory = stats.get("balloon.maximum")
    used_memory = _used_memory_kib(stats)
    if cpu_time is None:
        started = time.monotonic()
        state, info_max_memory, memory, _vcpus, cpu_time = domain.info()
        at = (started + time.monotonic()) / 2
        if state != libvirt.VIR_DOMAIN_RUNNING:
            return None  # stopped since the bulk call
        if max_memory is None:
            max_memory = info_max_memory
        if used_memory is None:
            used_memory = memory
    elif max_memory is None:
        max_memory = domain.maxMemory()
    return _DomainSample(uuid, domain.name(), int(cpu_time), int(max_memory), at, used_memory)


def _used_memory_kib(stats: dict[str, Any]) -> int | None:
    """Memory in use as Ceilometer's libvirt inspector computes ``memory.usage``: what the guest
    reports available minus unused (virtio balloon statistics); without guest statistics, the
    memory the balloon leaves the guest (``balloon.current``), which is an upper bound."""
    available, unused = stats.get("balloon.available"), stats.get("balloon.unused")
    if available is not None and unused is not None:
        return int(available) - int(unused)
    current = stats.get("balloon.current")
    return None if current is None else int(current)


def _unknown_info(domain_name: str) -> dict[str, str]:
    return {**dict.fromkeys(VM_INFO_LABELS, ""), "domain": domain_name}


def _domain_info(libvirt: Any, domain: Any) -> dict[str, str]:
    """``neat_vm_info`` labels: the domain name and Nova's metadata when the domain has it."""
    info = _unknown_info(domain.name())
    for namespace in NOVA_NAMESPACES:
        try:
            element = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, namespace)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                continue
            if error.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
                break  # the driver has no metadata at all
            raise
        try:
            info.update(parse_nova_metadata(element))
        except ElementTree.ParseError as error:
            log.warning("unreadable Nova metadata on domain %s: %s", shown(info["domain"]), error)
        break
    return _bounded(info)


def _bounded(info: dict[str, str]) -> dict[str, str]:
    """``info`` with every value cut to MAX_INFO_LABEL_LENGTH characters, saying which were (once
    per domain: its metadata is read once and cached)."""
    cut = {name: len(value) for name, value in info.items() if len(value) > MAX_INFO_LABEL_LENGTH}
    if cut:
        log.warning(
            "domain %s: %s longer than %d characters, cut",
            shown(info["domain"]),
            ", ".join(f"{name} ({length} characters)" for name, length in cut.items()),
            MAX_INFO_LABEL_LENGTH,
        )
    return {name: bounded_label_value(value) for name, value in info.items()}


def _node_cpu_ns(libvirt: Any, conn: Any) -> tuple[int | None, int | None]:
    """(busy, total) host CPU time in ns summed over all CPUs; (None, None) if unsupported."""
    try:
        stats = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS)
    except libvirt.libvirtError as error:
        if error.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
        return None, None
    busy = stats.get("user", 0) + stats.get("kernel", 0)
    return busy, busy + stats.get("idle", 0) + stats.get("iowait", 0)
