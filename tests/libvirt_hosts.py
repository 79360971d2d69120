"""Several libvirt "compute hosts" on one machine, each a privileged qemu-driver libvirtd with
private configuration, between which real VMs live-migrate with libvirt's own API.

A privileged libvirtd keeps its state at fixed paths (/run/libvirt, /var/lib/libvirt,
/var/cache/libvirt, /var/log/libvirt, /etc/libvirt) and, without systemd, puts every VM in the
cgroup ``/machine/qemu-<id>-<name>`` at the root of each hierarchy. Each host therefore runs in
its own mount, cgroup and UTS namespaces (see two-hosts.md in the design notes):

- its own directory under the fixture's temporary directory, bind-mounted over those paths (a
  path missing on the machine is created inside a private overlay of its parent, so nothing
  outside the temporary directory is ever written);
- its own ``libvirtd.conf`` (unix sockets in that directory, a distinct ``host_uuid``) and
  ``qemu.conf`` (VMs run as root, logs to files, no security driver, cpu/cpuacct cgroups);
- private copies of /etc/passwd and /etc/group built from scratch that name the
  ``libvirt-qemu`` user the qemu driver insists on, so the machine needs no such user and no
  edit of /etc/libvirt/qemu.conf;
- a hostname equal to the host's name and a private /etc/hosts resolving every host of the
  fixture to 127.0.0.1, so migrations address each other by name over loopback;
- a cgroup subtree ``<prefix>-<pid>-<random>-<name>`` in the cpu, cpuacct and unified
  hierarchies, seen by the daemon as its root, so VMs of different hosts never share a cgroup
  (the prefix defaults to $NEAT_TEST_PREFIX, else ``neat-test``).

VMs are the 512-byte boot sectors of busy-vms.md (``"busy"`` spins one core, ``"idle"`` halts,
``"graceful"`` halts and obeys the ACPI power button), 32 MiB, one vCPU, TCG; each VM's image
lies in the fixture's ``images`` directory, outside every bind mount, where every host sees it
at the same path (shared storage semantics: migrations need ``VIR_MIGRATE_UNSAFE`` because
libvirt does not recognise the directory as shared).

Starting N hosts takes ~0.5 s once qemu's capabilities are cached (.pytest_cache), else ~5 s
(one daemon probes qemu, the others reuse its cache); stopping destroys the domains, sends
SIGTERM to each daemon by PID, kills by PID whatever its cgroup subtree still holds (VMs of a
daemon killed earlier) and removes the subtrees.

Use in a test module (needs root, qemu, libvirtd, unshare and the cgroup v1/hybrid layout;
otherwise the tests skip saying what is missing)::

    from libvirt_hosts import libvirt_hosts_fixture

    hosts = libvirt_hosts_fixture("host-a", "host-b", scope="module")

    def test_something(hosts):
        uuid = hosts.start_vm("host-a", "vm1", load="busy")
        conn = libvirt.open(hosts.uri("host-a"))          # each host's client URI
        template = hosts.uri_template                       # "...{host}..." for a manager
        assert hosts.running_on(uuid) == ["host-a"]
        hosts.kill_libvirtd("host-b")                       # SIGKILL by PID (VMs keep running)
        hosts.restart_libvirtd("host-b")                    # same state, reconnects to its VMs

or inside a fixture of your own (after ``skip_unless_hosts_can_run()``), or outside pytest:
``with LibvirtHosts(workdir, ["a", "b"]) as hosts: ...``. Migrations between the hosts work
peer to peer with no migration URI (each host's name resolves to 127.0.0.1 in every host's
namespace) and need ``VIR_MIGRATE_UNSAFE``. tests/bmc.py puts emulated BMCs in front of a
host's domains.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import threading
import time
import uuid as uuid_module
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import pytest
from libvirt_fixtures import ACPI_OFF, BUSY, IDLE, qemu_domain_xml, write_boot_image
from services import LIBVIRT_STATE_PATHS, Process, find_program, in_private_mounts, wait_until

CGROUP_ROOT = Path("/sys/fs/cgroup")
# Only these hierarchies are moved into a namespace; memory and the rest stay untouched.
HIERARCHIES = ("cpu", "cpuacct", "unified")
LOADS = {"busy": BUSY, "idle": IDLE, "graceful": ACPI_OFF}
# The fixed paths of a privileged libvirtd, by the name of the host directory that replaces them.
STATE_PATHS = {
    **dict(zip(("run", "lib", "cache", "log"), LIBVIRT_STATE_PATHS, strict=True)),
    "etc": "/etc/libvirt",
}
HOST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# Any UID/GID works: the daemon only resolves the name, VMs run as root (qemu.conf).
QEMU_USER_ID = 64055
START_TIMEOUT_S = 60.0  # a busy 2-core machine stretches qemu's probe from ~4 s to tens
VIR_ERR_NO_DOMAIN = 42
# Names the cgroup subtrees, so that runs sharing a machine can tell theirs apart.
DEFAULT_PREFIX = os.environ.get("NEAT_TEST_PREFIX", "neat-test")


def missing_requirements() -> str | None:
    """Why libvirt hosts cannot run on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "libvirt hosts need root (privileged libvirtd, mount and cgroup namespaces)"
    for program in ("unshare", "libvirtd", "qemu-system-x86_64", "hostname"):
        if find_program(program) is None:
            return f"{program} is not installed (make test installs it as root)"
    for hierarchy in HIERARCHIES:
        if not os.path.ismount(CGROUP_ROOT / hierarchy):
            return (
                f"{CGROUP_ROOT / hierarchy} is not mounted (hosts need the cgroup v1/hybrid layout)"
            )
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay filesystem"
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "libvirt-python is not installed"
    return None


def skip_unless_hosts_can_run() -> None:
    """Skip the calling test, saying why, where this machine cannot run libvirt hosts."""
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)


class Host:
    """One libvirtd "compute host": its directory, cgroup subtree and daemon process."""

    def __init__(self, name: str, root: Path, cgroup: str, all_names: Sequence[str]):
        self.name = name
        self.root = root
        self.cgroup = cgroup
        self.process: Process | None = None
        self.socket = root / "sock" / "libvirt-sock"
        for directory in (*STATE_PATHS, "sock", "ns"):
            (root / directory).mkdir(parents=True, exist_ok=True)
        self._write_configuration(all_names)
        for hierarchy in HIERARCHIES:
            (CGROUP_ROOT / hierarchy / cgroup).mkdir(exist_ok=True)

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.socket}"

    def _write_configuration(self, all_names: Sequence[str]) -> None:
        root = self.root
        (root / "etc" / "libvirtd.conf").write_text(
            f'unix_sock_dir = "{root}/sock"\n'
            'auth_unix_ro = "none"\nauth_unix_rw = "none"\n'
            'unix_sock_rw_perms = "0777"\n'  # tests only: any local user may drive it
            # libvirt refuses to migrate between hosts with the same UUID.
            f'host_uuid = "{uuid_module.uuid4()}"\n'
            f'log_outputs = "3:file:{root}/libvirtd.log"\n'
        )
        (root / "etc" / "qemu.conf").write_text(
            'user = "root"\ngroup = "root"\n'
            'stdio_handler = "file"\n'  # no virtlogd; no lock manager either, so no virtlockd
            'security_driver = "none"\nnamespaces = [ ]\n'
            'cgroup_controllers = [ "cpu", "cpuacct" ]\n'
            "dynamic_ownership = 0\nremember_owner = 0\n"
        )
        (root / "ns" / "passwd").write_text(
            "root:x:0:0:root:/root:/bin/sh\n"
            f"libvirt-qemu:x:{QEMU_USER_ID}:{QEMU_USER_ID}:Libvirt Qemu:/var/lib/libvirt:"
            "/usr/sbin/nologin\n"
        )
        (root / "ns" / "group").write_text(f"root:x:0:\nlibvirt-qemu:x:{QEMU_USER_ID}:\n")
        (root / "ns" / "hosts").write_text(
            "127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {n}\n" for n in all_names)
        )

    def _launch_argv(self) -> list[str]:
        """A shell that joins the cgroup subtree, then (exec) unshare, then (exec) a shell that
        mounts the private paths, then (exec) libvirtd: the PID started is the daemon's."""
        root, ns = self.root, self.root / "ns"
        binds = {str(CGROUP_ROOT / h): CGROUP_ROOT / h / self.cgroup for h in HIERARCHIES}
        binds.update({target: root / directory for directory, target in STATE_PATHS.items()})
        binds.update({f"/etc/{name}": ns / name for name in ("passwd", "group", "hosts")})
        libvirtd = [find_program("libvirtd"), "-f", "/etc/libvirt/libvirtd.conf",
                    "--pid-file", str(root / "libvirtd.pid")]  # fmt: skip
        # A fresh overlay per start: the VMs of a killed daemon keep the old namespace alive.
        launch = in_private_mounts(
            libvirtd, binds, root, ["--cgroup", "--uts"], then=[["hostname", self.name]]
        )
        join = (
            f"echo $$ > {shlex.quote(str(CGROUP_ROOT / h / self.cgroup / 'cgroup.procs'))}"
            for h in HIERARCHIES
        )
        return ["sh", "-ec", "\n".join([*join, shlex.join(["exec", *launch])])]

    @property
    def capabilities_cache(self) -> Path:
        return self.root / "cache" / "qemu" / "capabilities"

    def seed_cache(self, probed: Path) -> None:
        """Start with qemu capabilities another daemon probed: libvirt checks them against the
        binaries' timestamps and probes again only what changed."""
        self.capabilities_cache.mkdir(parents=True, exist_ok=True)
        for cached in probed.glob("*.xml"):
            shutil.copyfile(cached, self.capabilities_cache / cached.name)

    def start(self) -> None:
        """Start the daemon (returns at once; :meth:`wait_ready` waits for it)."""
        for stale in self.socket.parent.glob("*"):
            stale.unlink()  # left behind by SIGKILL
        self.process = Process(self._launch_argv(), self.root / "libvirtd.out")

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until the daemon answers, then make it probe qemu now rather than at the first
        VM start or incoming migration (~4 s without a cache)."""
        import libvirt

        deadline = time.monotonic() + timeout
        while not self.socket.exists():
            if not self.alive():
                raise RuntimeError(f"libvirtd of {self.name} exited: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"libvirtd of {self.name} made no socket in {timeout} s")
            time.sleep(0.05)
        try:
            with contextlib.closing(libvirt.open(self.uri)) as conn:
                conn.getCapabilities()  # probes every installed qemu binary unless cached
        except libvirt.libvirtError as error:
            raise RuntimeError(f"libvirtd of {self.name}: {error}: {self.log_tail()}") from error

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the daemon by PID; for SIGKILL/SIGTERM wait until it has exited. Its VMs keep
        running (qemu is not the daemon's child) and a restart reconnects to them."""
        self.process.signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.process.popen.wait(30)

    def log_tail(self, chars: int = 3000) -> str:
        logs = [self.root / "libvirtd.out", self.root / "libvirtd.log"]
        return "\n".join(p.read_text(errors="replace")[-chars:] for p in logs if p.exists())

    def stop(self) -> None:
        """Destroy the domains, stop the daemon, end what its cgroups still hold, remove them."""
        import libvirt

        if self.alive():
            with (
                contextlib.suppress(libvirt.libvirtError),
                contextlib.closing(libvirt.open(self.uri)) as conn,
            ):
                _in_parallel(_destroy, conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))
            self.process.stop(timeout=15)
        elif self.process is not None:
            self.process.stop()  # closes its log
        self._end_leftovers()
        for hierarchy in HIERARCHIES:
            _remove_tree(CGROUP_ROOT / hierarchy / self.cgroup)

    def _pids_in_subtree(self) -> set[int]:
        pids: set[int] = set()
        for hierarchy in HIERARCHIES:
            for procs in (CGROUP_ROOT / hierarchy / self.cgroup).rglob("cgroup.procs"):
                with contextlib.suppress(FileNotFoundError):
                    pids.update(int(line) for line in procs.read_text().split())
        return pids

    def _end_leftovers(self) -> None:
        """VMs of a daemon that was killed, or that did not destroy them: every process in the
        subtree was started by this host's daemon."""
        for pid in self._pids_in_subtree():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not self._pids_in_subtree(), 30, f"the processes of {self.name} to end")


# qemu's capabilities as a daemon probed them (~4-13 s of a busy machine), kept between runs in
# pytest's cache directory; libvirt checks them against the binaries and probes what changed.
KEPT_CAPABILITIES = Path(__file__).resolve().parent.parent / ".pytest_cache" / "qemu-capabilities"


def _keep_capabilities(cache: Path) -> None:
    """Copy a daemon's capabilities into KEPT_CAPABILITIES, each file replaced atomically so
    that concurrent runs read whole files."""
    KEPT_CAPABILITIES.mkdir(parents=True, exist_ok=True)
    for probed in cache.glob("*.xml"):
        partial = KEPT_CAPABILITIES / f".{probed.name}.{os.getpid()}.{threading.get_ident()}"
        shutil.copyfile(probed, partial)
        os.replace(partial, KEPT_CAPABILITIES / probed.name)


def _destroy(domain) -> None:
    import libvirt

    with contextlib.suppress(libvirt.libvirtError):  # already gone
        domain.destroy()


def _in_parallel(function: Callable, items: Iterable) -> None:
    """``function`` over ``items`` in threads: a destroy or a daemon's probe takes seconds."""
    errors: list[BaseException] = []

    def run(item) -> None:
        try:
            function(item)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _remove_tree(path: Path) -> None:
    """Remove an empty cgroup directory tree (cgroup directories are removed with rmdir)."""
    if not path.exists():
        return
    for directory, _subdirs, _files in sorted(os.walk(path), key=lambda w: -len(w[0])):
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(directory)


class LibvirtHosts:
    """N libvirt hosts named ``names`` under ``workdir`` (started on construction; use as a
    context manager or call :meth:`stop`)."""

    def __init__(self, workdir: Path, names: Sequence[str], prefix: str = DEFAULT_PREFIX):
        reason = missing_requirements()
        if reason:
            raise RuntimeError(reason)
        bad = [n for n in names if not HOST_NAME.match(n)]
        if bad or len(set(names)) != len(names):
            raise ValueError(f"host names must be distinct [a-z][a-z0-9-]*: {list(names)}")
        self.workdir = workdir
        self.images = workdir / "images"
        self.images.mkdir(parents=True, exist_ok=True)
        tag = f"{prefix}-{os.getpid()}-{uuid_module.uuid4().hex[:6]}"
        self.hosts = {name: Host(name, workdir / name, f"{tag}-{name}", names) for name in names}
        first, *others = self.hosts.values()
        try:
            if any(KEPT_CAPABILITIES.glob("*.xml")):
                others.insert(0, first)
            else:  # the others start from its cache: ~0.3 s instead of ~4-13 s
                first.start()
                first.wait_ready()
                _keep_capabilities(first.capabilities_cache)
            for host in others:
                host.seed_cache(KEPT_CAPABILITIES)
                host.start()
            _in_parallel(lambda host: host.wait_ready(), others)
            _keep_capabilities(first.capabilities_cache)
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> LibvirtHosts:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def names(self) -> list[str]:
        return list(self.hosts)

    def uri(self, host: str) -> str:
        return self.hosts[host].uri

    @property
    def uri_template(self) -> str:
        """The client URI with ``{host}`` where the host's name goes."""
        return f"qemu+unix:///system?socket={self.workdir}/{{host}}/sock/libvirt-sock"

    @contextlib.contextmanager
    def connect(self, host: str) -> Iterator:
        import libvirt

        conn = libvirt.open(self.uri(host))
        try:
            yield conn
        finally:
            conn.close()

    def start_vm(
        self,
        host: str,
        name: str,
        load: str | bytes = "busy",
        memory_mib: int = 32,
        persistent: bool = True,
        index: int = 0,
    ) -> str:
        """Boot a VM on ``host`` and return its UUID. ``load`` is ``"busy"`` (one core),
        ``"idle"`` (halts, ignores the ACPI power button), ``"graceful"`` (halts, switches off
        on the power button: a graceful shutdown works) or boot-sector code of your own (e.g.
        libvirt_fixtures.duty(1, 3));
        ``persistent`` defines it first (as Nova does), else it is transient; ``index`` picks
        the Nova metadata (libvirt_fixtures.nova_metadata)."""
        code = LOADS[load] if isinstance(load, str) else load
        image = write_boot_image(self.images / f"{name}.img", code)  # qemu locks its disk
        vm_uuid = str(uuid_module.uuid4())
        xml = qemu_domain_xml(
            name, vm_uuid, image, memory_mib=memory_mib, index=index, acpi=load == "graceful"
        )
        with self.connect(host) as conn:
            if persistent:
                conn.defineXML(xml).create()
            else:
                conn.createXML(xml, 0)
        return vm_uuid

    def running_on(self, vm_uuid: str) -> list[str]:
        """The hosts on which the VM ``vm_uuid`` runs (an honest answer needs every daemon up:
        a host whose daemon does not answer raises)."""
        import libvirt

        found = []
        for name in self.hosts:
            with self.connect(name) as conn:
                try:
                    if conn.lookupByUUIDString(vm_uuid).isActive():
                        found.append(name)
                except libvirt.libvirtError as error:
                    if error.get_error_code() != VIR_ERR_NO_DOMAIN:
                        raise
        return found

    def kill_libvirtd(self, host: str, sig: int = signal.SIGKILL) -> None:
        self.hosts[host].kill(sig)

    def restart_libvirtd(self, host: str) -> None:
        """Start ``host``'s daemon again (after :meth:`kill_libvirtd`) on the same state."""
        target = self.hosts[host]
        if target.alive():
            target.kill(signal.SIGTERM)
        target.start()
        target.wait_ready()

    def stop(self) -> None:
        _in_parallel(lambda host: host.stop(), self.hosts.values())


def libvirt_hosts_fixture(*names: str, scope: str = "module", prefix: str = DEFAULT_PREFIX):
    """A pytest fixture yielding :class:`LibvirtHosts` named ``names``; it skips the test, with
    the reason, where the machine cannot run them."""

    @pytest.fixture(scope=scope)
    def hosts(tmp_path_factory) -> Iterator[LibvirtHosts]:
        skip_unless_hosts_can_run()
        with LibvirtHosts(tmp_path_factory.mktemp("hosts"), names, prefix) as started:
            yield started

    return hosts
