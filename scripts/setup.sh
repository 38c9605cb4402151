#!/usr/bin/env bash
# Installs what Tandem needs to build and test on Debian 12 (run as root), then builds it.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  libsqlite3-dev   # the embedded datastore (GRDB links the system SQLite)
  iproute2         # ip netns / link / route, for the integration tests and the lab
)
if ! dpkg -s "${packages[@]}" >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"
fi
swift build
