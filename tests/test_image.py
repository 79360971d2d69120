"""The container image, built by ``make image`` and run with podman for real.

Run alone with ``make test PYTEST_ARGS='-m image'``. The first build makes the Debian base root
filesystem with mmdebstrap and caches it (see scripts/build-image.sh); later builds reuse it and
podman's layer cache.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from libvirt_fixtures import vm_uuid, write_node_xml
from services import Libvirtd, free_port, require_program, scrape, wait_until

from neat_exporter import __version__

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parent.parent
#: What the exporter promises after SIGTERM (neat_exporter.daemon), plus podman's own overhead.
SHUTDOWN_SECONDS = 5 + 2
#: The chart's pod: nobody, read-only root, no capabilities, no privilege escalation.
AS_THE_CHART_RUNS_IT = [
    "--network", "host", "--read-only", "--cap-drop", "all",
    "--security-opt", "no-new-privileges",
]  # fmt: skip


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(ROOT / "deploy/podman/containers.conf"))
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=env, check=check
    )


@pytest.fixture(scope="module")
def image() -> str:
    for program in ("podman", "runc", "mmdebstrap"):
        require_program(program)
    if os.geteuid() != 0:
        pytest.skip("building the image needs root here (rootful podman, mmdebstrap)")
    result = subprocess.run(
        ["make", "--no-print-directory", "image"],
        cwd=ROOT, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reference = result.stdout.strip().splitlines()[-1]
    assert reference == f"localhost/neat-exporter:{__version__}"
    return reference


@pytest.fixture
def container_name():
    """A unique name; whatever the test leaves running is removed by that name."""
    name = f"shp-image-{uuid.uuid4().hex[:10]}"
    yield name
    podman("rm", "--force", "--time", "0", name, check=False)


def test_image_labels_user_and_contents(image):
    config = yaml.safe_load(podman("image", "inspect", image).stdout)[0]["Config"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert config["User"] == "65534:65534"
    probe = podman(
        "run", "--rm", "--entrypoint", "python3", image, "-c",
        "import libvirt, os, shutil; print(libvirt.getVersion() > 0, os.getuid(),"
        " shutil.which('gcc'), bool(shutil.which('ipmitool')), os.path.exists('/run/host-ca.crt')"
        " and os.path.getsize('/run/host-ca.crt'))",
    )  # fmt: skip
    # libvirt-python works, as nobody, with ipmitool for the global manager, no compiler and no
    # build-time CA left behind (the build mounts it, which leaves an empty mount point at most).
    assert probe.stdout.split()[:4] == ["True", "65534", "None", "True"]
    assert probe.stdout.split()[4] in ("False", "0")


def test_demo_serves_metrics_and_stops_on_sigterm(image, container_name):
    port = free_port()
    container = podman(
        "run", "--detach", "--name", container_name, *AS_THE_CHART_RUNS_IT,
        image, "demo", "--listen", f"127.0.0.1:{port}",
    ).stdout.strip()  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    samples = wait_until(
        lambda: (s := scrape(url)) and any(k[0] == "neat_host_overloaded" for k in s) and s,
        30,
        "the demo's first decision on /metrics",
    )
    assert any(key[0] == "neat_vm_cpu_usage_hertz" for key in samples)
    started = time.monotonic()
    podman("stop", "--time", "30", container, timeout=60)
    stopped_in = time.monotonic() - started
    print(f"podman stop returned after {stopped_in:.2f}s")
    state = yaml.safe_load(podman("inspect", container).stdout)[0]["State"]
    # Exit 0 is the exporter's own SIGTERM handler; a kill after podman's timeout would be 137.
    assert state["ExitCode"] == 0, podman("logs", container).stderr
    assert stopped_in < SHUTDOWN_SECONDS, f"podman stop took {stopped_in:.1f}s"


def test_exporter_reads_libvirt_through_the_read_only_socket_directory(
    image, container_name, tmp_path
):
    """As the chart runs it: the socket directory mounted read-only, the history directory
    handed to nobody by the init container's chown, the configuration file mounted read-only."""
    require_program("libvirtd")
    daemon = Libvirtd(tmp_path / "libvirtd")
    try:
        socket_dir = daemon.socket.parent
        socket_dir.chmod(0o755)  # a temporary directory is root-only; /run/libvirt is not
        node = write_node_xml(tmp_path / "node.xml", domains=3, shut_off_every=0)
        history = tmp_path / "history"
        history.mkdir()  # root-owned, as a hostPath directory is created
        chown = podman(
            "run", "--rm", "--user", "0", "--cap-drop", "all", "--cap-add", "CHOWN",
            "--read-only", "--volume", f"{history}:/var/lib/neat-exporter",
            "--entrypoint", "chown", image, "65534:65534", "/var/lib/neat-exporter",
        )  # fmt: skip
        assert chown.returncode == 0 and history.stat().st_uid == 65534
        port = free_port()
        config = tmp_path / "config.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "listen": f"127.0.0.1:{port}",
                    "interval": 1,
                    "history_dir": "/var/lib/neat-exporter",
                    "source": {
                        "type": "libvirt",
                        "libvirt": {
                            "uri": f"test+unix://{node}?socket=/run/libvirt/libvirt-sock-ro"
                        },
                    },
                }
            )
        )
        config.chmod(0o644)
        podman(
            "run", "--detach", "--name", container_name, *AS_THE_CHART_RUNS_IT,
            "--volume", f"{socket_dir}:/run/libvirt:ro",
            "--volume", f"{history}:/var/lib/neat-exporter",
            "--volume", f"{config}:/etc/neat-exporter/config.yml:ro",
            image,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"

        def second_cycle() -> dict:
            samples = scrape(url)
            vms = {dict(k[1:])["vm_uuid"] for k in samples if k[0] == "neat_vm_cpu_usage_hertz"}
            return samples if vms == {vm_uuid(i) for i in range(3)} else {}

        samples = wait_until(second_cycle, 30, "three VMs' CPU on /metrics")
        info = [dict(key[1:]) for key in samples if key[0] == "neat_host_info"]
        assert [labels["source"] for labels in info] == ["libvirt"]
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        wait_until(lambda: any(history.iterdir()), 10, "history files written as nobody")
        assert all(path.stat().st_uid == 65534 for path in history.rglob("*"))
        podman("stop", "--time", "30", container_name, timeout=60)
        state = yaml.safe_load(podman("inspect", container_name).stdout)[0]["State"]
        assert state["ExitCode"] == 0, podman("logs", container_name).stderr
    finally:
        daemon.stop()
