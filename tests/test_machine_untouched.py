"""The test suite leaves the machine's configuration alone: its qemu libvirtd daemons bring a
private qemu.conf and a private libvirt-qemu user (libvirt_hosts.py), and the install script
only installs packages."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import pytest
from libvirt_hosts import DEFAULT_PREFIX, Host, LibvirtHosts, skip_unless_hosts_can_run
from services import Libvirtd

ROOT = Path(__file__).resolve().parent.parent
WATCHED = [Path("/etc/passwd"), Path("/etc/group"), Path("/etc/libvirt/qemu.conf")]
# Shell that would change the machine's users or files under /etc.
EDITS_OF_ETC = re.compile(
    r"\b(useradd|groupadd|usermod|groupmod|adduser|addgroup|chpasswd)\b"
    r"|>>?\s*\S*/etc/|\btee\b[^\n|]*\s/etc/|\bsed\b[^\n|]*\s-i[^\n|]*\s/etc/"
    r"|\b(cp|mv|install|ln|rm|mkdir|chmod|chown|touch)\b[^\n|;&]*\s/etc/"
    r"|\b\w+=[\"']?/etc/"  # a variable naming a file under /etc, to be written through it
)

libvirt = pytest.importorskip("libvirt", reason="libvirt-python is not installed")

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def requirements() -> None:
    skip_unless_hosts_can_run()


def contents(paths: list[Path]) -> dict[Path, bytes | None]:
    return {path: path.read_bytes() if path.exists() else None for path in paths}


def test_a_host_with_a_vm_leaves_users_and_libvirt_configuration_byte_identical(
    requirements, tmp_path
):
    before = contents(WATCHED)
    with LibvirtHosts(tmp_path, ["untouched"]) as hosts:
        vm = hosts.start_vm("untouched", "untouched-vm", "idle", persistent=True)
        assert hosts.running_on(vm) == ["untouched"]
        daemon = hosts.hosts["untouched"]
        # What the daemon sees through its mount namespace is the private configuration.
        seen = Path(f"/proc/{daemon.process.pid}/root")
        passwd = (seen / "etc/passwd").read_text()
        assert passwd == (daemon.root / "ns" / "passwd").read_text()
        assert [line.split(":")[0] for line in passwd.splitlines()] == ["root", "libvirt-qemu"]
        qemu_conf = (seen / "etc/libvirt/qemu.conf").read_text()
        assert 'stdio_handler = "file"' in qemu_conf and 'security_driver = "none"' in qemu_conf
        assert contents(WATCHED) == before  # not even while it runs
    assert contents(WATCHED) == before


def test_a_test_driver_daemon_keeps_its_runtime_state_private(tmp_path):
    """A privileged libvirtd writes /run/libvirt/common/system.token whatever its configuration;
    the tests' daemons write it into their own directory."""
    if os.geteuid() != 0:
        pytest.skip("only a privileged daemon writes under /run/libvirt")
    daemon = Libvirtd(tmp_path)
    try:
        with contextlib.closing(libvirt.open(daemon.uri())) as conn:
            assert conn.listAllDomains()
        seen = Path(f"/proc/{daemon.process.pid}/root/run/libvirt")
        private = tmp_path / "state" / "run-libvirt"
        assert (private / "common" / "system.token").exists()
        assert seen.stat().st_ino == private.stat().st_ino
    finally:
        daemon.stop()


def test_the_daemon_looks_users_up_in_its_private_passwd_only(requirements, tmp_path):
    """The machine may have a libvirt-qemu user; the daemon must not depend on it. Without the
    user in the private passwd the qemu driver refuses to start, whatever /etc/passwd says."""
    cgroup = f"{DEFAULT_PREFIX}-{os.getpid()}-nouser"
    host = Host("nouser", tmp_path / "nouser", cgroup, ["nouser"])
    (host.root / "ns" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    try:
        host.start()
        with pytest.raises(RuntimeError, match="Failed to parse user 'libvirt-qemu'"):
            host.wait_ready(timeout=30)
    finally:
        host.stop()


def test_setup_scripts_do_not_edit_etc_or_add_users():
    scripts = [*sorted((ROOT / "scripts").glob("*.sh")), ROOT / "Makefile"]
    for script in scripts:
        for number, line in enumerate(script.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            assert not EDITS_OF_ETC.search(code), f"{script.name}:{number}: {line}"
