"""Real external programs for the tests: neat-exporter, libvirtd, Prometheus, Alertmanager.

Each is started on loopback or a unix socket inside a temporary directory, waited for by
polling, and stopped by its PID. A missing program skips the test with the reason printed.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

EXPORTER = [sys.executable, "-m", "neat_exporter"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_program(name: str) -> str | None:
    """Path of ``name`` on PATH or in the sbin/bin directories root's PATH would have."""
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )


def require_program(name: str) -> str:
    """Path of ``name``, or skip the test saying what is missing."""
    path = find_program(name)
    if path is None:
        pytest.skip(f"{name} is not installed on this machine (make test installs it as root)")
    return path


def wait_until(check: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll ``check`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as error:  # the service may not be up yet
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def in_private_mounts(
    argv: Sequence[str],
    binds: Mapping[str, Path],
    scratch: Path,
    namespaces: Sequence[str] = (),
    then: Sequence[Sequence[str]] = (),
) -> list[str]:
    """``argv`` in a new mount namespace (plus ``namespaces``, e.g. ``--cgroup``) in which each
    path of ``binds`` shows the given private directory or file. A path missing on the machine
    is made inside a private overlay of its nearest existing parent, the overlay's layers in a
    fresh directory under ``scratch``: nothing outside the temporary directories is written.
    ``then`` runs after the mounts. ``exec`` all the way: the PID started is ``argv``'s, and
    the mounts vanish with the last process in the namespace. Needs root."""
    script: list[list[str]] = [["set", "-e"]]
    layers = Path(tempfile.mkdtemp(prefix="overlay-", dir=scratch))
    overlaid: set[Path] = set()
    for target, source in binds.items():
        parent = Path(target)
        while not parent.exists():
            parent = parent.parent
        if parent != Path(target) and parent not in overlaid:
            overlaid.add(parent)
            layer = layers / str(len(overlaid))
            (layer / "upper").mkdir(parents=True)
            (layer / "work").mkdir()
            options = f"lowerdir={parent},upperdir={layer}/upper,workdir={layer}/work"
            script.append(["mount", "-t", "overlay", "overlay", "-o", options, str(parent)])
            script.append(["mkdir", "-p", target])
        script.append(["mount", "--bind", str(source), target])
    script.extend(list(command) for command in then)
    script.append(["exec", *argv])
    return [
        find_program("unshare"), "--mount", *namespaces, "--propagation", "private",
        "sh", "-c", "\n".join(map(shlex.join, script)),
    ]  # fmt: skip


class Process:
    """A started program with its log file; stop() ends it by PID."""

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self.popen = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
                os.kill(self.pid, signal.SIGTERM)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(timeout)
            except ProcessLookupError:
                pass
        self._log.close()
        return self.popen.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def scrape(url: str, timeout: float = 5) -> dict[tuple, float]:
    """Every sample on ``url``/metrics as {(name, (label, value), ...): value}."""
    response = requests.get(f"{url}/metrics", timeout=timeout)
    response.raise_for_status()
    return {
        (sample.name, *sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample_value(samples: dict[tuple, float], name: str, **labels: str) -> float:
    """The sample ``name{labels}`` of a :func:`scrape`, 0 when it is absent."""
    return samples.get((name, *sorted(labels.items())), 0.0)


class Exporter:
    """`neat-exporter run --config` with ``config`` and a free loopback port, its files in
    ``workdir``; ready once its first cycle shows on /metrics. ``wrap`` prefixes the command and
    ``env`` is added to the environment."""

    def __init__(
        self, workdir: Path, config: dict, wrap: list[str] = (), env: dict[str, str] | None = None
    ):
        workdir.mkdir(parents=True, exist_ok=True)
        self.address = f"127.0.0.1:{free_port()}"
        self.url = f"http://{self.address}"
        config_path = workdir / "exporter.yml"
        config_path.write_text(yaml.safe_dump({**config, "listen": self.address}))
        self.process = Process(
            [*wrap, *EXPORTER, "run", "--config", str(config_path)],
            workdir / "exporter.log",
            env={**os.environ, **(env or {})},
        )
        try:
            self.wait_for(
                lambda: self.value("neat_cycles_total") >= 1, "the exporter's first cycle", 30
            )
        except BaseException:
            self.stop()
            raise

    def metrics(self, timeout: float = 5) -> dict[tuple, float]:
        return scrape(self.url, timeout)

    def value(self, name: str, **labels: str) -> float:
        return sample_value(self.metrics(), name, **labels)

    def wait_for(self, check: Callable[[], object], what: str, timeout: float = 20):
        """:func:`wait_until` ``check``, reporting the exporter's log should it exit."""

        def guarded():
            if not self.process.alive():
                raise RuntimeError(f"the exporter exited: {self.log()[-3000:]}")
            return check()

        return wait_until(guarded, timeout, what, 0.1)

    def stop(self) -> int | None:
        return self.process.stop()

    def log(self) -> str:
        return self.process.log()


class Prometheus:
    """A real Prometheus scraping ``targets`` every second."""

    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        rule_files: list[Path] = (),
        alertmanager: str | None = None,
        scrape_scheme: str = "http",
        target_labels: dict[str, str] | None = None,
    ):
        binary = require_program("prometheus")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {
                    "job_name": "neat",
                    "scheme": scrape_scheme,
                    "static_configs": [
                        {"targets": list(targets), "labels": dict(target_labels or {})}
                    ],
                }
            ],
        }
        if alertmanager:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]
            }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.process = Process(
            [
                binary,
                f"--config.file={config_path}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--storage.tsdb.path={workdir / 'data'}",
            ],
            workdir / "prometheus.log",
        )
        wait_until(
            lambda: requests.get(f"{self.url}/-/ready", timeout=1).ok, 20, "Prometheus ready"
        )

    def query(self, expr: str) -> list[dict]:
        response = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5)
        response.raise_for_status()
        return response.json()["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict]:
        """Poll until ``expr`` returns a non-empty result (the first scrape takes about 6 s)."""
        return wait_until(lambda: self.query(expr), timeout, f"Prometheus query {expr!r}", 0.5)

    def stop(self) -> None:
        self.process.stop()


class Alertmanager:
    """A real Alertmanager sending every alert to one webhook URL."""

    def __init__(self, workdir: Path, webhook_url: str, http_config: dict | None = None):
        binary = require_program("prometheus-alertmanager")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        webhook = {"url": webhook_url, "send_resolved": True}
        if http_config:
            webhook["http_config"] = http_config
        config = {
            "route": {
                "receiver": "hook",
                "group_by": ["alertname", "host"],
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": "1m",
            },
            "receivers": [{"name": "hook", "webhook_configs": [webhook]}],
        }
        config_path = workdir / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.process = Process(
            [
                binary,
                f"--config.file={config_path}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                f"--storage.path={workdir / 'data'}",
            ],
            workdir / "alertmanager.log",
        )
        wait_until(
            lambda: requests.get(f"{self.url}/-/ready", timeout=1).ok, 20, "Alertmanager ready"
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.stop()


# Where a privileged libvirtd keeps its state whatever its configuration says (and, for the
# qemu driver, /etc/libvirt: libvirt_hosts.py).
LIBVIRT_STATE_PATHS = ("/run/libvirt", "/var/lib/libvirt", "/var/cache/libvirt", "/var/log/libvirt")


class Libvirtd:
    """A private libvirtd with only the test driver (starts in ~0.03 s) on a unix socket in
    ``workdir``. Real VMs need the qemu driver: libvirt_hosts.py starts those daemons."""

    def __init__(self, workdir: Path):
        self.binary = require_program("libvirtd")
        self.workdir = workdir
        (workdir / "run").mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "run" / "libvirt-sock"
        self.config = workdir / "libvirtd.conf"
        self.config.write_text(
            f'unix_sock_dir = "{workdir}/run"\n'
            'auth_unix_ro = "none"\nauth_unix_rw = "none"\nunix_sock_rw_perms = "0777"\n'
            f'log_outputs = "3:file:{workdir}/libvirtd.log"\n'
        )
        self.process: Process | None = None
        self.start()

    def uri(self, path: str = "/default") -> str:
        return f"test+unix://{path}?socket={self.socket}"

    def start(self) -> None:
        empty = self.workdir / "no-drivers"
        empty.mkdir(exist_ok=True)
        if self.socket.exists():
            self.socket.unlink()  # left behind by SIGKILL
        argv = [self.binary, "-f", str(self.config), "--pid-file", str(self.workdir / "pid")]
        if os.geteuid() == 0:
            # A privileged daemon writes under /run/libvirt and /var/*/libvirt: give it its own.
            binds = {path: self.workdir / "state" / path.strip("/").replace("/", "-")
                     for path in LIBVIRT_STATE_PATHS}  # fmt: skip
            for private in binds.values():
                private.mkdir(parents=True, exist_ok=True)
            argv = in_private_mounts(argv, binds, self.workdir)
        self.process = Process(
            argv,
            self.workdir / "libvirtd.out",
            env={**os.environ, "LIBVIRT_DRIVER_DIR": str(empty)},
        )
        wait_until(self._answers, 15, "libvirtd socket")

    def _answers(self) -> bool:
        if not self.process.alive():
            raise RuntimeError(f"libvirtd exited: {self.process.log()[-2000:]}")
        if not self.socket.exists():
            return False
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.socket))
        return True

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.process.signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.process.popen.wait(10)

    def stop(self) -> None:
        if self.process:
            self.process.stop()
