#!/usr/bin/env bash
# System packages the test suite needs (Debian 12): libvirt for the binding and a private
# libvirtd, qemu for real VMs, Prometheus/promtool and Alertmanager for the end-to-end tests,
# ipmitool for the power tests against an emulated BMC;
# podman, runc and mmdebstrap build and run the container image (`make image`), and
# systemd-analyze checks the systemd units; headless chromium renders the landing page;
# RabbitMQ and PostgreSQL for the OpenStack control plane (run privately, never as services).
# Runs only as root; otherwise it says what is missing and the tests that need it skip.
# It installs packages and changes no configuration: the tests' daemons bring their own
# (tests/libvirt_hosts.py gives each qemu libvirtd a private qemu.conf and libvirt-qemu user).
set -euo pipefail
packages=(libvirt-dev pkg-config gcc libvirt-daemon libvirt-clients qemu-system-x86
          prometheus prometheus-alertmanager ipmitool
          podman runc mmdebstrap systemd chromium)
# PostgreSQL: the OpenStack control plane's database and the test of one `tune` search shared
# by two workers (private servers, run as an unprivileged account); RabbitMQ: the control
# plane's message broker.
packages+=(rabbitmq-server postgresql)

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
