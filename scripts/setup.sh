#!/usr/bin/env bash
# Installs what Tandem needs to build and test on Debian 12 (run as root), then builds it.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  libsqlite3-dev   # the embedded datastore (GRDB links the system SQLite)
  iproute2         # ip netns / link / route / tc: the tests check the kernel with it, the lab builds with it
  iputils-ping     # the pod connectivity tests
  containernetworking-plugins  # reference plugins: host-local, portmap, tuning, bandwidth (chaining tests, benchmarks)
  iptables         # portmap programs iptables/ip6tables
  bird2            # BGP between nodes: tandem-node renders its configuration and runs it
  etcd-server      # the distributed datastore backend: its tests start a real etcd
  libssl-dev       # TLS to etcd (etcd+https://): the client links OpenSSL
  openssl          # the etcd TLS tests make their certificates with it
  nftables         # network policy: tandem-node loads its rules with nft
  ipset            # natOutgoing with the iptables backend keeps the pools in ipsets
  socat            # the policy tests' TCP servers and clients inside pods
  python3          # a test's socket squatter; the benchmarks' JSON reading
  python3-prometheus-client  # the metrics test parses the agent's /metrics with Prometheus's own client library
  wireguard-go     # WireGuard where the kernel has no module (this machine's): tandem-node drives it over UAPI, tests too
  wireguard-tools  # wg: the WireGuard tests derive public keys (wg pubkey) and read devices back (wg show)
  tcpdump          # the WireGuard lab tests capture the fabric to show pod traffic leaves the node encrypted
  containerd       # the runtime tests run pods through containerd's CRI socket (brings runc and ctr)
  busybox-static   # the runtime tests' images: containerd's pause image and podman's busybox image (podman import), no registry
  podman           # the runtime tests run containers through podman 4.3's CNI backend (PodmanTests)
  runc             # podman's runtime there: crun 1.8 refuses every container on a hybrid cgroup host with a v2 controller
)
if ! dpkg -s "${packages[@]}" >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"
fi
# Kubernetes' schemas for the deploy/ manifests' test (Tests/TandemPluginTests/DeployManifestTests.swift runs the
# python3 on PATH, as here).
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore kubernetes-validate==1.37.0
# gRPC for the runtime tests' CRI client (Tests/TandemRuntimeTests/cri.py runs the python3 on PATH, as here).
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore grpcio==1.85.3
swift build
