"""Benchmark: scrapes while hostile clients hold connections, and memory under a header flood.

Starts the real exporter (replay source, --vms VMs, a cycle every 10 s), or attacks a server
already running (--url, with --pid for its memory), and runs three phases, each --duration s:

- slow loris: --slow connections each send a request head one header line every
  --slow-interval s and never finish it (reconnecting when the server closes them), plus, with
  --tls, as many connections that never start their TLS handshake;
- header flood: --flood connections each send 98 header lines of 60 KB as fast as the server
  reads them and hold them, never ending the head (reconnecting when closed);
- both at once.

Meanwhile one client scrapes /metrics and /healthz alternately every 0.25 s, each on a new
connection, timeout 10 s. Printed per phase: scrape and /healthz latency median, p99 and max,
failed scrapes, the attackers' connections made, and the server's resident memory (VmRSS
sampled every 0.2 s, and its peak VmHWM). Target: no failed scrape, every /metrics and
/healthz within 2 s, peak RSS under 192 MiB (three quarters of the Helm chart's 256 MiB limit).

Run: .venv/bin/python bench/bench_attack.py [--slow 500] [--flood 50] [--duration 20] [--tls]
     [--url http://127.0.0.1:PORT --pid PID]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import _harness  # noqa: F401  (the tests' helpers: see bench/_harness.py)
import requests
import yaml
from bench_load import (
    BENCH_PASSWORD,
    BENCH_USER,
    make_tls_web_config,
    percentile,
)
from services import Process, free_port, wait_until

EXPORTER = [sys.executable, "-m", "neat_exporter"]
FILLER = b"X-Filler: " + b"a" * 60000 + b"\r\n"  # header lines just under 64 KiB


def memory_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


class Attack:
    """Hostile connections in an event loop of their own thread."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None):
        self.host, self.port, self.tls = host, port, tls
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.tasks: list[asyncio.Future] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def start(self, count: int, attacker, *args) -> None:
        for _ in range(count):
            future = asyncio.run_coroutine_threadsafe(self._forever(attacker, *args), self.loop)
            self.tasks.append(future)

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.tasks.clear()

    async def _forever(self, attacker, *args) -> None:
        while True:
            try:
                # Silent clients stay plain: on a TLS port they never start the handshake.
                tls = None if attacker is silent else self.tls
                reader, writer = await asyncio.open_connection(self.host, self.port, ssl=tls)
            except OSError:
                await asyncio.sleep(0.5)
                continue
            self.connections += 1
            try:
                await attacker(reader, writer, *args)
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.transport.abort()
            await asyncio.sleep(0.05)


async def slow_loris(reader, writer, interval: float) -> None:
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n")
    while not reader.at_eof():
        await asyncio.sleep(interval)
        writer.write(b"X-Slow: 1\r\n")
        await writer.drain()


async def silent(reader, writer) -> None:
    """Connect and say nothing (to a TLS port: never start the handshake)."""
    await reader.read()


async def header_flood(reader, writer) -> None:
    """As many header bytes as a line-by-line reader with Python's limits (100 lines of 64 KiB)
    takes, then hold them: never end the head."""
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n")
    for _ in range(98):
        writer.write(FILLER)
        await writer.drain()
    await reader.read()


def scrape_during(url: str, tls: ssl.SSLContext | None, duration: float, pid: int | None):
    """(latencies by path, failures, peak RSS sampled) while the attack goes on."""
    parts = urlsplit(url)
    latencies: dict[str, list[float]] = {"/metrics": [], "/healthz": []}
    failures: dict[str, int] = {}
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.2):
            if pid:
                peak[0] = max(peak[0], memory_kib(pid)["VmRSS"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    headers = {"Accept-Encoding": "gzip"}
    if tls:
        import base64

        token = base64.b64encode(f"{BENCH_USER}:{BENCH_PASSWORD}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    end = time.monotonic() + duration
    index = 0
    while time.monotonic() < end:
        path = ("/metrics", "/healthz")[index % 2]
        index += 1
        started = time.perf_counter()
        try:
            if tls:
                connection = http.client.HTTPSConnection(
                    parts.hostname, parts.port, timeout=10, context=tls
                )
            else:
                connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            connection.close()
            if response.status != 200:
                raise http.client.HTTPException(f"HTTP {response.status}")
            latencies[path].append(time.perf_counter() - started)
        except (OSError, http.client.HTTPException) as error:
            key = f"{path} {type(error).__name__}: {str(error)[:40]}"
            failures[key] = failures.get(key, 0) + 1
        time.sleep(max(0.0, 0.25 - (time.perf_counter() - started)))
    stop.set()
    sampler.join()
    return latencies, failures, peak[0]


def line(values: list[float]) -> str:
    if not values:
        return "none answered"
    ms = [v * 1000 for v in values]
    return (
        f"median {statistics.median(ms):.1f} ms, p99 {percentile(ms, 0.99):.1f} ms, "
        f"max {max(ms):.1f} ms ({len(ms)})"
    )


def run_phases(args, url: str, tls: ssl.SSLContext | None, pid: int | None) -> bool:
    parts = urlsplit(url)
    attack = Attack(parts.hostname, parts.port, tls)
    phases = {
        "slow loris": [(args.slow, slow_loris, args.slow_interval)]
        + ([(args.slow, silent)] if args.tls else []),
        "header flood": [(args.flood, header_flood)],
        "both": [(args.slow, slow_loris, args.slow_interval), (args.flood, header_flood)],
    }
    ok = True
    for name, attackers in phases.items():
        before = attack.connections
        for count, attacker, *extra in attackers:
            attack.start(count, attacker, *extra)
        time.sleep(1)  # let the connections open
        latencies, failures, peak = scrape_during(url, tls, args.duration, pid)
        attack.stop()
        memory = memory_kib(pid) if pid else {}
        described = ", ".join(f"{c} {a.__name__.replace('_', ' ')}" for c, a, *_ in attackers)
        print(f"{name} ({described}), {args.duration:g} s:")
        print(f"  /metrics {line(latencies['/metrics'])}")
        print(f"  /healthz {line(latencies['/healthz'])}")
        print(f"  failed {sum(failures.values())} {failures or ''}")
        print(f"  attacker connections made {attack.connections - before}")
        if pid:
            print(
                f"  RSS max sampled {peak // 1024} MiB, peak so far {memory['VmHWM'] // 1024} MiB"
            )
        slowest = max((v for values in latencies.values() for v in values), default=99)
        phase_ok = not failures and slowest < 2 and (not pid or peak < 192 * 1024)
        print(
            f"  target (no failure, all < 2 s, RSS < 192 MiB): {'met' if phase_ok else 'NOT met'}"
        )
        ok &= phase_ok
        time.sleep(2)  # let the server close what is left
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--slow-interval", type=float, default=2.0)
    parser.add_argument("--flood", type=int, default=50)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--tls", action="store_true", help="TLS and basic auth on the exporter")
    parser.add_argument("--url", help="attack this server instead of starting the exporter")
    parser.add_argument("--pid", type=int, help="the process of --url, for its memory")
    args = parser.parse_args()
    if args.url:
        return 0 if run_phases(args, args.url, None, args.pid) else 1
    with tempfile.TemporaryDirectory(prefix="neat-bench-attack-") as folder:
        workdir = Path(folder)
        port = free_port()
        config = {
            "listen": f"127.0.0.1:{port}",
            "interval": 10,
            "log_level": "warning",
            "source": {"type": "replay", "replay": {"vms": args.vms}},
        }
        tls = None
        if args.tls:
            web_config, cert = make_tls_web_config(workdir)
            config["web_config_file"] = str(web_config)
            tls = ssl.create_default_context(cafile=str(cert))
        (workdir / "exporter.yml").write_text(yaml.safe_dump(config))
        exporter = Process(
            [*EXPORTER, "run", "--config", str(workdir / "exporter.yml")],
            workdir / "exporter.log",
        )
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/"
        try:
            wait_until(
                lambda: (
                    "neat_vm_cpu_usage_hertz"
                    in requests.get(
                        f"{url}metrics",
                        timeout=10,
                        verify=str(cert) if tls else True,
                        auth=(BENCH_USER, BENCH_PASSWORD) if tls else None,
                    ).text
                ),
                60,
                "the exporter's first cycle",
                0.5,
            )
            rss = memory_kib(exporter.pid)["VmRSS"] // 1024
            print(f"exporter: {args.vms} VMs, RSS at start {rss} MiB")
            ok = run_phases(args, url, tls, exporter.pid)
        finally:
            exporter.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
