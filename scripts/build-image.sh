#!/usr/bin/env bash
# Build the neat-exporter image into the local podman storage; print its reference last.
#
#   scripts/build-image.sh                  # localhost/neat-exporter:<version>
#   IMAGE=ghcr.io/org/neat-exporter:1.2.3 BASE=docker.io/library/debian:bookworm-slim \
#     scripts/build-image.sh                # what the release workflow runs
#
# Without BASE, the Debian base root filesystem is made here from Debian packages with
# mmdebstrap (no registry needed), from the apt sources this machine uses, and cached under
# ${NEAT_EXPORTER_CACHE:-~/.cache/neat-exporter}, keyed by a hash of the recipe and the sources:
# the first build takes a few minutes, later ones reuse it. To refresh it, delete the cache and
# the localhost/neat-exporter-base image.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' neat_exporter/__init__.py)
IMAGE=${IMAGE:-localhost/neat-exporter:$version}
# podman settings that work where its defaults do not (see the file); a caller's wins.
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/podman/containers.conf}
podman() { timeout "${PODMAN_TIMEOUT:-900}" podman "$@"; }

if [ -z "${BASE:-}" ]; then
  sources=(/etc/apt/sources.list.d/*.sources)
  [ -e "${sources[0]}" ] || sources=(/etc/apt/sources.list)
  recipe=(
    mmdebstrap --quiet --variant=apt --include=python3,ca-certificates
    --aptopt='APT::Install-Recommends "false"'
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --format=tar bookworm
  )
  key=$( { printf '%s\n' "${recipe[@]}"; cat "${sources[@]}"; } | sha256sum | cut -c1-16)
  BASE=localhost/neat-exporter-base:$key
  if ! podman image exists "$BASE"; then
    cache=${NEAT_EXPORTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/neat-exporter}
    tarball=$cache/base-$key.tar
    if [ ! -s "$tarball" ]; then
      mkdir -p "$cache"
      echo "build-image: making the Debian base root filesystem (once): $tarball" >&2
      timeout 900 "${recipe[@]}" "$tarball.part" "${sources[@]}" >&2
      mv "$tarball.part" "$tarball"  # never leave a half-written tarball under the real name
    fi
    podman import --quiet --change 'CMD ["/bin/bash"]' "$tarball" "$BASE" >/dev/null
  fi
fi

build_args=(
  --build-arg "BASE=$BASE"
  --build-arg "VERSION=$version"
  --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || true)"
)
[ -n "${EXTRAS:-}" ] && build_args+=(--build-arg "EXTRAS=$EXTRAS")
[ -n "${RUNTIME_PACKAGES:-}" ] && build_args+=(--build-arg "RUNTIME_PACKAGES=$RUNTIME_PACKAGES")
[ -n "${SOURCE:-}" ] && build_args+=(--build-arg "SOURCE=$SOURCE")
# A network that re-signs TLS: the host's CA bundle is mounted into the build for pip, never
# copied into the image.
ca=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if [ -r "$ca" ]; then
  build_args+=(--volume "$ca:/run/host-ca.crt:ro" --build-arg PIP_CERT=/run/host-ca.crt)
fi

previous=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
podman build --quiet --network host --file Containerfile --tag "$IMAGE" "${build_args[@]}" . >/dev/null
# The image this build replaced, untagged now, and its own layers go; the layers the new image
# shares with it stay, and so does an image a container still uses (rmi refuses).
current=$(podman image inspect --format '{{.Id}}' "$IMAGE")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  podman rmi "$previous" >/dev/null 2>&1 || true
fi
echo "$IMAGE"
