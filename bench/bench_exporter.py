"""Cost of one exporter cycle and one /metrics render at 10, 100 and 1000 VMs.

A private libvirtd (test driver only) serves a node file with N running domains carrying Nova
metadata; the exporter's daemon reads it through the libvirt source. Printed, as medians:

- raw bulk: one ``getAllDomainStats`` call (state, cpu, balloon) on its own connection;
- raw work: the libvirt calls a cycle needs on this driver: the bulk call, the node CPU stats
  and, because the test driver's bulk stats have only the state group, one ``info()`` per VM;
- collect: ``LibvirtSource.collect()``; cycle: ``Daemon.run_cycle()`` (collect, history,
  detectors, snapshot); first: the first cycle, which also reads every VM's Nova metadata;
- own cost: cycle - raw work, what the exporter adds on top of libvirt; the CPU columns give
  the same in CPU time of this process (libvirt's client side included), steadier on a shared
  host than wall time;
- render: ``generate_latest`` of the daemon's registry (what a scrape of /metrics costs);
- RSS of this process after the run.

Targets at 1000 VMs: cycle <= 2 × raw + 20 ms (on drivers with cpu/balloon groups the raw work
is the bulk call alone, so the own cost must stay under raw bulk + 20 ms), render < 30 ms,
RSS < 100 MB.

Run: .venv/bin/python bench/bench_exporter.py [--sizes 10 100 1000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import libvirt
from prometheus_client import generate_latest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from libvirt_fixtures import write_node_xml  # noqa: E402
from services import Libvirtd  # noqa: E402

from neat_exporter.config import config_from_mapping  # noqa: E402
from neat_exporter.daemon import Daemon  # noqa: E402
from neat_exporter.sources.libvirt import LibvirtSource  # noqa: E402

BULK_GROUPS = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
)


def median_ms(function, repeat: int, clock=time.perf_counter) -> float:
    times = []
    for _ in range(repeat):
        started = clock()
        function()
        times.append(clock() - started)
    return statistics.median(times) * 1000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def raw_bulk(conn) -> None:
    conn.getAllDomainStats(BULK_GROUPS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_RUNNING)


def raw_work(conn) -> None:
    records = conn.getAllDomainStats(BULK_GROUPS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_RUNNING)
    conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS)
    for domain, _stats in records:
        domain.info()


def bench_size(daemon: Libvirtd, workdir: Path, vms: int, repeat: int) -> dict[str, float]:
    node = write_node_xml(workdir / f"node-{vms}.xml", vms, shut_off_every=0)
    uri = daemon.uri(str(node))
    conn = libvirt.openReadOnly(uri)
    cpu = time.process_time  # all threads of this process: steadier than wall time here
    figures = {
        "raw bulk": median_ms(lambda: raw_bulk(conn), repeat),
        "raw work": median_ms(lambda: raw_work(conn), repeat),
        "raw CPU": median_ms(lambda: raw_work(conn), repeat, cpu),
    }
    conn.close()
    config = config_from_mapping(
        {"source": {"type": "libvirt", "libvirt": {"uri": uri}}, "interval": 1}
    )
    source = LibvirtSource(uri, timeout=30)
    exporter = Daemon(config, source)
    started = time.perf_counter()
    assert exporter.run_cycle(), exporter.last_error
    figures["first"] = (time.perf_counter() - started) * 1000
    assert len(exporter.snapshot.vms) == vms, len(exporter.snapshot.vms)
    figures["collect"] = median_ms(source.collect, repeat)
    figures["cycle"] = median_ms(exporter.run_cycle, repeat)
    figures["cycle CPU"] = median_ms(exporter.run_cycle, repeat, cpu)
    figures["own cost"] = figures["cycle"] - figures["raw work"]
    figures["own CPU"] = figures["cycle CPU"] - figures["raw CPU"]
    body = generate_latest(exporter.registry)
    figures["render"] = median_ms(lambda: generate_latest(exporter.registry), repeat)
    figures["body KB"] = len(body) / 1024
    source.close()
    figures["RSS MB"] = rss_mb()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    libvirt.registerErrorHandler(lambda *_: None, None)
    columns = [
        "raw bulk",
        "raw work",
        "first",
        "collect",
        "cycle",
        "own cost",
        "raw CPU",
        "cycle CPU",
        "own CPU",
        "render",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        daemon = Libvirtd(Path(tmp) / "libvirtd")
        try:
            print(
                f"{'VMs':>5} " + " ".join(f"{c:>9}" for c in columns) + "  (ms)   body KB  RSS MB"
            )
            results = {}
            for vms in args.sizes:
                figures = bench_size(daemon, Path(tmp), vms, args.repeat)
                results[vms] = figures
                print(
                    f"{vms:>5} "
                    + " ".join(f"{figures[c]:>9.1f}" for c in columns)
                    + f"        {figures['body KB']:>7.0f}  {figures['RSS MB']:>6.0f}"
                )
        finally:
            daemon.stop()
    if 1000 in results:
        f = results[1000]
        print(
            "\n1000 VMs: cycle {:.1f} ms vs 2 × raw work + 20 = {:.1f} ms; own cost {:.1f} ms "
            "(CPU {:.1f} ms) vs raw bulk + 20 = {:.1f} ms; render {:.1f} ms (< 30); "
            "RSS {:.0f} MB (< 100)".format(
                f["cycle"],
                2 * f["raw work"] + 20,
                f["own cost"],
                f["own CPU"],
                f["raw bulk"] + 20,
                f["render"],
                f["RSS MB"],
            )
        )


if __name__ == "__main__":
    main()
