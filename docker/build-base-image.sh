#!/usr/bin/env bash
# Make a Debian bookworm base image without pulling from a registry (air-gapped builders, CI
# without registry access): debootstrap a minimal root file system and `docker import` it.
#
#   docker/build-base-image.sh [IMAGE_NAME]        (default: textrec-base:bookworm)
#   BASE_IMAGE=textrec-base:bookworm make images
#
# Needs root, debootstrap and a Debian mirror (MIRROR, default http://deb.debian.org/debian).
set -euo pipefail

name=${1:-textrec-base:bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
DOCKER=${DOCKER:-docker}
for tool in debootstrap "$DOCKER"; do
  command -v "$tool" >/dev/null || { echo "build-base-image: '$tool' not found (apt-get install debootstrap docker.io)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "build-base-image: debootstrap needs root" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | "$DOCKER" import - "$name"
echo "imported $name"
