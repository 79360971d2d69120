"""Load on the two HTTP servers, each run as its real command on loopback.

scrape: `neat-exporter run` with N VMs (the replay source's synthetic VMs, or a private
  libvirtd's test driver with ``--source libvirt``) and S scrapers for D seconds, each asking
  like Prometheus does (OpenMetrics, gzip) every ``--scrape-interval`` seconds from a random
  phase (default 1 s: 15 to 60 times the usual rate), or back to back with 0 (a saturation
  test: then latency is S / throughput, whatever the server does). Printed: requests, errors,
  requests/s, latency median/p90/p99/max, response size. ``--tls`` serves through a web config
  with TLS and basic auth. Target at 1000 VMs and 32 scrapers: no errors, p99 < 100 ms.

bridge: `neat-exporter bridge` in front of a global manager stand-in (tests/global_manager.py)
  gets a burst of P webhook posts from S threads: H hosts' underload alerts, each alert sent
  P/H times as Alertmanager re-sends do. Printed: status counts, latency median/p99, and the
  requests the global manager received. Target: no 5xx other than 503 (queue full, which
  Alertmanager retries), exactly one global manager request per host.

Run: .venv/bin/python bench/bench_load.py [--vms 1000] [--scrapers 32] [--duration 30]
     [--source replay|libvirt] [--tls] [--posts 1000] [--hosts 100] [--only scrape|bridge]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import ssl
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import _harness  # noqa: F401  (the tests' helpers: see bench/_harness.py)
import bcrypt
import requests
import yaml
from global_manager import PASSWORD, USER, GlobalManager
from services import Libvirtd, Process, free_port, wait_until

EXPORTER = [sys.executable, "-m", "neat_exporter"]
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1"
)
BENCH_USER, BENCH_PASSWORD = "prometheus", "bench-password"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def latency_line(latencies: list[float]) -> str:
    if not latencies:
        return "no successful requests"
    ms = [value * 1000 for value in latencies]
    return (
        f"median {statistics.median(ms):.1f} ms, p90 {percentile(ms, 0.9):.1f} ms, "
        f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms"
    )


# --- scrape -----------------------------------------------------------------------------------


def make_tls_web_config(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and a web config using it with basic auth."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    hashed = bcrypt.hashpw(BENCH_PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    web_config = folder / "web.yml"
    web_config.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": "cert.pem", "key_file": "key.pem"},
                "basic_auth_users": {BENCH_USER: hashed},
            }
        )
    )
    return web_config, folder / "cert.pem"


def resident_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return -1


def scrape_forever(
    port: int,
    tls: ssl.SSLContext | None,
    every: float,
    stop: threading.Event,
    out: list,
    errors: Counter,
) -> None:
    """Scrape every ``every`` seconds from a random phase (as Prometheus spreads its targets),
    or back to back when ``every`` is 0."""
    due = time.perf_counter() + random.uniform(0, every)
    headers = {"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"}
    if tls:
        token = base64.b64encode(f"{BENCH_USER}:{BENCH_PASSWORD}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    while not stop.is_set():
        if every:
            if stop.wait(max(0.0, due - time.perf_counter())):
                break
            due = max(due + every, time.perf_counter())
        started = time.perf_counter()
        try:
            if tls:
                connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=tls)
            else:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/metrics", headers=headers)
            response = connection.getresponse()
            body = response.read()
            connection.close()
            if response.status != 200:
                errors[f"HTTP {response.status}"] += 1
                continue
            out.append((time.perf_counter() - started, len(body)))
        except (OSError, http.client.HTTPException) as error:
            errors[type(error).__name__] += 1


def bench_scrape(args: argparse.Namespace, workdir: Path) -> bool:
    port = free_port()
    config: dict = {
        "listen": f"127.0.0.1:{port}",
        "interval": args.interval,
        "log_level": "warning",
    }
    libvirtd = None
    if args.source == "libvirt":
        from libvirt_fixtures import write_node_xml

        libvirtd = Libvirtd(workdir / "libvirt")
        node = write_node_xml(workdir / "node.xml", args.vms, shut_off_every=0)
        config["source"] = {"type": "libvirt", "libvirt": {"uri": libvirtd.uri(str(node))}}
    else:
        config["source"] = {"type": "replay", "replay": {"vms": args.vms}}
    tls_context = None
    if args.tls:
        web_config, cert = make_tls_web_config(workdir)
        config["web_config_file"] = str(web_config)
        tls_context = ssl.create_default_context(cafile=str(cert))
    config_path = workdir / "exporter.yml"
    config_path.write_text(yaml.safe_dump(config))
    exporter = Process([*EXPORTER, "run", "--config", str(config_path)], workdir / "exporter.log")
    scheme = "https" if args.tls else "http"
    try:
        wait_until(
            lambda: (
                "neat_vm_cpu_usage_hertz"
                in requests.get(
                    f"{scheme}://127.0.0.1:{port}/metrics",
                    timeout=10,
                    verify=str(cert) if args.tls else True,
                    auth=(BENCH_USER, BENCH_PASSWORD) if args.tls else None,
                ).text
            ),
            60,
            "the exporter's first cycle",
            0.5,
        )
        stop = threading.Event()
        results: list[tuple[float, int]] = []
        errors: Counter = Counter()
        threads = [
            threading.Thread(
                target=scrape_forever,
                args=(port, tls_context, args.scrape_interval, stop, results, errors),
                daemon=True,
            )
            for _ in range(args.scrapers)
        ]
        for thread in threads:
            thread.start()
        time.sleep(args.duration)
        stop.set()
        for thread in threads:
            thread.join(15)
        rss_mib = resident_mib(exporter.pid)
    finally:
        exporter.stop()
        if libvirtd:
            libvirtd.stop()
    latencies = [latency for latency, _ in results]
    sizes = [size for _, size in results]
    p99 = percentile(latencies, 0.99) if latencies else float("inf")
    pace = f"every {args.scrape_interval:g} s" if args.scrape_interval else "back to back"
    print(
        f"scrape: {args.vms} VMs ({args.source}{', TLS + basic auth' if args.tls else ''}), "
        f"{args.scrapers} scrapers {pace} for {args.duration:g} s"
    )
    print(
        f"  requests {len(results)}, errors {sum(errors.values())} {dict(errors) or ''}, "
        f"{len(results) / args.duration:.0f}/s"
    )
    print(f"  latency {latency_line(latencies)}")
    if sizes:
        size = statistics.median(sizes) / 1024
        print(f"  response {size:.0f} KiB (gzip); exporter RSS {rss_mib} MiB")
    ok = not errors and p99 < 0.1
    print(f"  target (no errors, p99 < 100 ms): {'met' if ok else 'NOT met'}")
    return ok


# --- bridge -----------------------------------------------------------------------------------


def webhook(host: str, index: int) -> bytes:
    alert = {
        "status": "firing",
        "labels": {"alertname": "NeatHostUnderloaded", "neat_reason": "underload", "host": host},
        "annotations": {},
        "startsAt": "2026-01-01T00:00:00Z",
        "fingerprint": f"{index:016x}",
    }
    return json.dumps(
        {
            "version": "4",
            "status": "firing",
            "receiver": "neat",
            "groupKey": f'{{}}:{{host="{host}"}}',
            "alerts": [alert],
        }
    ).encode()


def bench_bridge(args: argparse.Namespace, workdir: Path) -> bool:
    port = free_port()
    token = "bench-token"
    with GlobalManager() as manager:
        config = {
            "log_level": "warning",
            "global_manager": {"mode": "on", "url": manager.url, "retries": 0, "cooldown": 600},
            "bridge": {"listen": f"127.0.0.1:{port}", "queue_size": 100},
        }
        config_path = workdir / "bridge.yml"
        config_path.write_text(yaml.safe_dump(config))
        env = {
            **os.environ,
            "NEAT_BRIDGE_TOKEN": token,
            "NEAT_GLOBAL_MANAGER_USERNAME": USER,
            "NEAT_GLOBAL_MANAGER_PASSWORD": PASSWORD,
        }
        bridge = Process(
            [*EXPORTER, "bridge", "--config", str(config_path)], workdir / "bridge.log", env=env
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: requests.get(f"{url}/healthz", timeout=2).ok, 30, "the bridge")
            hosts = [f"compute-{i}" for i in range(args.hosts)]
            posts = [webhook(hosts[i % args.hosts], i % args.hosts) for i in range(args.posts)]
            random.Random(0).shuffle(posts)
            statuses: Counter = Counter()
            latencies: list[float] = []
            lock = threading.Lock()

            def send(bodies: list[bytes]) -> None:
                for body in bodies:
                    started = time.perf_counter()
                    try:
                        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                        connection.request(
                            "POST",
                            "/webhook",
                            body=body,
                            headers={
                                "Content-Type": "application/json",
                                "Authorization": f"Bearer {token}",
                            },
                        )
                        status = connection.getresponse().status
                        connection.close()
                    except (OSError, http.client.HTTPException) as error:
                        status = type(error).__name__
                    with lock:
                        statuses[status] += 1
                        latencies.append(time.perf_counter() - started)

            chunks = [posts[i :: args.scrapers] for i in range(args.scrapers)]
            threads = [threading.Thread(target=send, args=(chunk,)) for chunk in chunks]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            burst = time.perf_counter() - started
            # Let the queue drain into the global manager.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(manager.accepted) < args.hosts:
                time.sleep(0.2)
            time.sleep(1)
        finally:
            bridge.stop()
        accepted = Counter(request.host for request in manager.accepted)
    duplicates = {host: n for host, n in accepted.items() if n > 1}
    print(f"bridge: {args.posts} webhook posts for {args.hosts} hosts from {args.scrapers} threads")
    print(f"  burst took {burst:.2f} s ({args.posts / burst:.0f}/s); statuses {dict(statuses)}")
    print(f"  latency {latency_line(latencies)}")
    print(
        f"  global manager: {len(manager.accepted)} requests for {len(accepted)} hosts, "
        f"statuses {dict(Counter(manager.statuses))}, duplicates {duplicates or 'none'}"
    )
    server_errors = {s: n for s, n in statuses.items() if not isinstance(s, int) or s >= 500}
    server_errors.pop(503, None)
    ok = not server_errors and not duplicates and len(accepted) == args.hosts
    print(f"  target (no 5xx but 503, one request per host): {'met' if ok else 'NOT met'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--scrapers", type=int, default=32)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument(
        "--scrape-interval",
        type=float,
        default=1.0,
        help="seconds between one scraper's scrapes (0: back to back, a saturation test)",
    )
    parser.add_argument("--interval", type=float, default=10, help="the exporter's cycle interval")
    parser.add_argument("--source", choices=("replay", "libvirt"), default="replay")
    parser.add_argument("--tls", action="store_true", help="TLS and basic auth on /metrics")
    parser.add_argument("--posts", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--only", choices=("scrape", "bridge"))
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="neat-bench-load-") as folder:
        if args.only in (None, "scrape"):
            ok &= bench_scrape(args, Path(folder))
        if args.only in (None, "bridge"):
            ok &= bench_bridge(args, Path(folder))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
