"""Domains for the libvirt tests and benchmark: test-driver node files with Nova metadata, and
boot-sector disk images whose CPU use is known."""

from __future__ import annotations

import time
import uuid as uuid_module
from collections.abc import Iterable
from pathlib import Path
from xml.sax.saxutils import quoteattr

NOVA_1_1 = "http://openstack.org/xmlns/libvirt/nova/1.1"
NOVA_1_0 = "http://openstack.org/xmlns/libvirt/nova/1.0"
SHUT_OFF = 5  # test driver <test:runstate>


def vm_uuid(index: int) -> str:
    return str(uuid_module.UUID(int=index + 1))


def nova_metadata(index: int, namespace: str = NOVA_1_1) -> str:
    """Nova's ``<instance>`` element as Nova writes it into the domain XML."""
    return (
        f'<nova:instance xmlns:nova="{namespace}">'
        '<nova:package version="27.1.0"/>'
        f"<nova:name>vm-{index}</nova:name>"
        f'<nova:flavor name="m1.small-{index % 3}">'
        "<nova:memory>2048</nova:memory><nova:vcpus>2</nova:vcpus></nova:flavor>"
        f'<nova:owner><nova:user uuid="user-{index}">user{index}</nova:user>'
        f'<nova:project uuid="project-{index % 7}">project{index % 7}</nova:project>'
        "</nova:owner></nova:instance>"
    )


def expected_info(index: int, name: str | None = None) -> dict[str, str]:
    """The ``neat_vm_info`` labels :func:`nova_metadata` should yield."""
    return {
        "domain": name or f"instance-{index:08x}",
        "instance_name": f"vm-{index}",
        "project_id": f"project-{index % 7}",
        "project_name": f"project{index % 7}",
        "flavor_name": f"m1.small-{index % 3}",
        "user_id": f"user-{index}",
    }


def domain_xml(
    index: int,
    memory_mib: int = 2048,
    metadata: str | None = NOVA_1_1,
    running: bool = True,
    name: str | None = None,
) -> str:
    """A test-driver domain; ``metadata`` is the Nova namespace to use, or None for none."""
    nova = f"<metadata>{nova_metadata(index, metadata)}</metadata>" if metadata else ""
    runstate = "" if running else f"<test:runstate>{SHUT_OFF}</test:runstate>"
    return (
        "<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>"
        f"<name>{name or f'instance-{index:08x}'}</name><uuid>{vm_uuid(index)}</uuid>{nova}"
        f"<memory unit='MiB'>{memory_mib}</memory><vcpu>2</vcpu>"
        "<os><type arch='x86_64'>hvm</type></os>"
        f"{runstate}</domain>"
    )


def write_node_xml(
    path: Path,
    domains: int,
    shut_off_every: int = 10,
    cpus: tuple[int, int, int, int] = (2, 2, 16, 2),
    mhz: int = 2400,
) -> Path:
    """A test-driver node file: ``domains`` domains with Nova metadata, every
    ``shut_off_every``-th one shut off; ``cpus`` = NUMA nodes, sockets, cores, threads."""
    nodes, sockets, cores, threads = cpus
    parts = [
        "<node><cpu>",
        f"<mhz>{mhz}</mhz><model>x86_64</model>",
        f"<active>{nodes * sockets * cores * threads}</active>",
        f"<nodes>{nodes}</nodes><sockets>{sockets}</sockets><cores>{cores}</cores>",
        f"<threads>{threads}</threads></cpu><memory>268435456</memory>",
    ]
    for index in range(domains):
        running = not (shut_off_every and index % shut_off_every == shut_off_every - 1)
        parts.append(domain_xml(index, memory_mib=512 + index % 4 * 512, running=running))
    parts.append("</node>")
    path.write_text("\n".join(parts))
    return path


# Boot sectors: SeaBIOS loads 512 bytes at 0000:7C00 and jumps there.
BUSY = bytes.fromhex("EBFE")  # jmp $
IDLE = bytes.fromhex("FAF4EBFD")  # cli; hlt; jmp back to hlt


# Halts, but switches itself off when the ACPI power button is pressed (bmc.md): it reads the
# PIIX4 power-management I/O base from PCI 0:1.3 register 0x40, clears and enables PWRBTN
# (PM1a_STS/PM1a_EN bit 8), idles in hlt, and on PWRBTN_STS writes SLP_EN with SLP_TYP 0 (soft
# off) to PM1a_CNT. Needs a domain with ACPI; it listens ~0.3 s after power-on.
# fmt: off
ACPI_OFF = bytes([
    0xFA, 0x31, 0xC0, 0x8E, 0xD8, 0x8E, 0xD0, 0xBC, 0x00, 0x7C,  # cli; ds=ss=0; sp=7C00
    0x66, 0xB8, 0x40, 0x0B, 0x00, 0x80, 0xBA, 0xF8, 0x0C, 0x66, 0xEF,  # out 0xCF8, 0x80000B40
    0xBA, 0xFC, 0x0C, 0x66, 0xED, 0x25, 0xC0, 0xFF, 0x89, 0xC3,  # bx = in(0xCFC) & 0xFFC0
    0x89, 0xDA, 0xB8, 0x00, 0x01, 0xEF,                          # PM1a_STS: clear PWRBTN_STS
    0x83, 0xC2, 0x02, 0xEF, 0xFB,                                # PM1a_EN: PWRBTN_EN; sti
    0xF4, 0x89, 0xDA, 0xED, 0xA9, 0x00, 0x01, 0x74, 0xF7,        # hlt until PWRBTN_STS
    0x83, 0xC2, 0x04, 0xB8, 0x00, 0x20, 0xEF, 0xEB, 0xFE,        # PM1a_CNT = SLP_EN: off
])
# fmt: on


def duty(busy_ticks: int, idle_ticks: int) -> bytes:
    """Busy for ``busy_ticks`` BIOS ticks (54.9 ms), then hlt for ``idle_ticks``, forever."""
    a, b = busy_ticks, idle_ticks
    # fmt: off
    return bytes([
        0xFA, 0x31, 0xC0, 0x8E, 0xD0, 0xBC, 0x00, 0x7C, 0x8E, 0xD8, 0xFB,  # cli; ss=ds=0; sp; sti
        0x8B, 0x1E, 0x6C, 0x04,                                      # top: mov bx,[046C]
        0xA1, 0x6C, 0x04, 0x29, 0xD8, 0x83, 0xF8, a, 0x72, 0xF6,     # busy until A ticks passed
        0x8B, 0x1E, 0x6C, 0x04,                                      # mov bx,[046C]
        0xF4, 0xA1, 0x6C, 0x04, 0x29, 0xD8, 0x83, 0xF8, b, 0x72, 0xF5,  # hlt until B ticks
        0xEB, 0xE1,                                                  # jmp top
    ])
    # fmt: on


def write_boot_image(path: Path, code: bytes) -> Path:
    path.write_bytes(code.ljust(510, b"\0") + b"\x55\xaa")
    return path


def qemu_domain_xml(
    name: str, uuid: str, image: Path, memory_mib: int = 32, index: int = 0, acpi: bool = False
) -> str:
    """A TCG domain booting ``image``, with Nova metadata so the info labels can be checked;
    ``acpi`` gives it ACPI (a power button, for :data:`ACPI_OFF`)."""
    return (
        "<domain type='qemu'>"
        f"<name>{name}</name><uuid>{uuid}</uuid>"
        f"<metadata>{nova_metadata(index)}</metadata>"
        f"<memory unit='MiB'>{memory_mib}</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>"
        + ("<features><acpi/></features>" if acpi else "")
        + "<devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file={quoteattr(str(image))}/><target dev='hda' bus='ide'/></disk>"
        "<serial type='null'/><memballoon model='virtio'/></devices></domain>"
    )


def cpu_times(conn) -> dict[str, int]:
    """Each running domain's cpu.time (ns) by UUID, from one bulk call."""
    import libvirt  # only the callers that run VMs need libvirt-python

    stats = conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_CPU_TOTAL, 0)
    return {domain.UUIDString(): values["cpu.time"] for domain, values in stats}


def wait_until_halted(conn, uuids: Iterable[str], timeout: float = 20.0) -> None:
    """Wait until every VM of ``uuids`` (booting a halting image) uses under 2 % of a core:
    SeaBIOS costs about 0.5 s of CPU per VM, which takes several seconds of wall time when
    other jobs crowd the host."""
    uuids = list(uuids)
    deadline = time.monotonic() + timeout
    before = cpu_times(conn)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        after = cpu_times(conn)
        if all((after[u] - before[u]) / 1e9 / 0.3 < 0.02 for u in uuids):
            return
        before = after
