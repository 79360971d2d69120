#!/usr/bin/env bash
# System packages the test suite needs (Debian 12): libvirt for the binding and a private
# libvirtd, qemu for real VMs, Prometheus/promtool and Alertmanager for the end-to-end tests.
# Runs only as root; otherwise it says what is missing and the tests that need it skip.
set -euo pipefail
packages=(libvirt-dev pkg-config gcc libvirt-daemon libvirt-clients qemu-system-x86
          prometheus prometheus-alertmanager)
# PostgreSQL for the test of one `tune` search shared by two workers (a private server, run
# as the package's own postgres account).
packages+=(postgresql)

if [ "$(id -u)" != 0 ]; then
  echo "install-system-packages: not root, skipping apt; tests needing ${packages[*]} will skip if absent" >&2
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# libvirt's qemu driver refuses to start without this user, even when qemu.conf runs VMs as root.
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
getent passwd libvirt-qemu >/dev/null \
  || useradd -r -M -g libvirt-qemu -s /usr/sbin/nologin -d /var/lib/libvirt libvirt-qemu
# Test VMs run as root and log to files, so no virtlogd is needed.
conf=/etc/libvirt/qemu.conf
if ! grep -q '^stdio_handler = "file"' "$conf" 2>/dev/null; then
  mkdir -p /etc/libvirt
  printf 'user = "root"\ngroup = "root"\nstdio_handler = "file"\n' > "$conf"
fi
