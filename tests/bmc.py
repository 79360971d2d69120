"""Emulated BMCs for the power tests: the emulators OpenStack's own CI uses, from PyPI, driving
libvirt domains that stand in for compute hosts (bmc.md in the design notes).

- :class:`RedfishEmulator`: sushy-tools' ``sushy-emulator`` on a free loopback port, its
  ComputerSystems being the domains of one libvirt URI, with HTTP basic auth (bcrypt htpasswd).
- :class:`VirtualBMC`: ``vbmcd`` with a private configuration (its own config directory, PID
  file and control port) and one IPMI BMC per domain on UDP loopback ports, for ipmitool.

Both run as programs of their own, are waited for by polling and stopped by PID. The domains
live on a qemu libvirtd of libvirt_hosts.py; they must be persistent so that a BMC can power
them on again after an off.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import bcrypt
import requests
from services import Process, free_port, wait_until

BIN = Path(sys.executable).parent


class RedfishEmulator:
    """sushy-emulator serving the domains of ``libvirt_uri`` at :attr:`url`; with ``tls`` =
    (certificate file, key file, CA file) over HTTPS."""

    def __init__(
        self,
        workdir: Path,
        libvirt_uri: str,
        username: str,
        password: str,
        tls: tuple[str, str, str] | None = None,
    ):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.verify = tls[2] if tls else True
        auth_file = workdir / "htpasswd"
        digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        auth_file.write_text(f"{username}:{digest}\n")
        config = workdir / "emulator.conf"  # Python assignments, read by the emulator
        config.write_text(
            f"SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'\n"
            f"SUSHY_EMULATOR_LISTEN_PORT = {self.port}\n"
            f"SUSHY_EMULATOR_LIBVIRT_URI = {libvirt_uri!r}\n"
            f"SUSHY_EMULATOR_AUTH_FILE = {str(auth_file)!r}\n"
            f"SUSHY_EMULATOR_STATE_DIR = {str(workdir / 'state')!r}\n"
        )
        if tls:
            with config.open("a") as assignments:
                assignments.write(f"SUSHY_EMULATOR_SSL_CERT = {tls[0]!r}\n")
                assignments.write(f"SUSHY_EMULATOR_SSL_KEY = {tls[1]!r}\n")
        self.process = Process(
            [str(BIN / "sushy-emulator"), "--config", str(config)],
            workdir / "sushy-emulator.log",
            env={**os.environ, "TMPDIR": str(workdir)},
        )
        try:
            wait_until(self._answers, 30, "sushy-emulator", 0.1)
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        if not self.process.alive():
            raise RuntimeError(f"sushy-emulator exited: {self.process.log()[-2000:]}")
        return requests.get(f"{self.url}/redfish/v1", timeout=2, verify=self.verify).ok

    def stop(self) -> None:
        self.process.stop()


class VirtualBMC:
    """vbmcd with private configuration; :meth:`add` gives a domain its own IPMI BMC."""

    def __init__(self, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "bmcs").mkdir(exist_ok=True)
        self.control_port = free_port()
        self.config = workdir / "virtualbmc.conf"
        self.config.write_text(
            "[default]\n"
            f"config_dir = {workdir / 'bmcs'}\n"
            f"pid_file = {workdir / 'vbmcd.pid'}\n"
            f"server_port = {self.control_port}\n"
            "[log]\n"
            f"logfile = {workdir / 'vbmcd.log'}\n"
        )
        self.env = {**os.environ, "VIRTUALBMC_CONFIG": str(self.config)}
        self.process = Process(
            [str(BIN / "vbmcd"), "--foreground"], workdir / "vbmcd.out", env=self.env
        )
        try:
            wait_until(self._answers, 30, "vbmcd", 0.1)
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        if not self.process.alive():
            raise RuntimeError(f"vbmcd exited: {self.process.log()[-2000:]}")
        with socket.create_connection(("127.0.0.1", self.control_port), timeout=1):
            return True

    def _vbmc(self, *args: str) -> None:
        subprocess.run(
            [str(BIN / "vbmc"), "--no-daemon", *args],
            env=self.env,
            check=True,
            capture_output=True,
            timeout=30,
        )

    def add(self, domain: str, libvirt_uri: str, username: str, password: str) -> int:
        """Start a BMC for ``domain`` on a free UDP loopback port and return the port."""
        port = free_udp_port()
        self._vbmc(
            "add", domain, "--port", str(port), "--address", "127.0.0.1",
            "--libvirt-uri", libvirt_uri, "--username", username, "--password", password,
        )  # fmt: skip
        self._vbmc("start", domain)
        return port

    def stop(self) -> None:
        self.process.stop()  # SIGTERM ends vbmcd and its BMCs


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
