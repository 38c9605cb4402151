#!/usr/bin/env bash
# What WireGuard between nodes costs (issue 17), measured with the lab: iperf3 (TCP, one stream) from a pod on n1 to a
# pod on n2, per family, on a two-node dual-stack lab without WireGuard and on one with `--wireguard both`, alternated
# run by run. WireGuard here is wireguard-go (userspace; this kernel has no wireguard module), so the ratio is
# wireguard-go's, not the kernel implementation's.
# Usage: Benchmarks/wireguard.sh [seconds per run] [runs]   (run as root; needs iperf3, bird2, wireguard-go)
# TANDEM_BIN=.build/debug uses those builds instead of building the release products: the figures are the data
# plane's (the kernel and wireguard-go), which no Tandem binary is on the path of.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-4}
runs=${2:-3}
command -v iperf3 >/dev/null || { echo "needs iperf3 (apt-get install iperf3)" >&2; exit 1; }
command -v wireguard-go >/dev/null || { echo "needs wireguard-go (apt-get install wireguard-go)" >&2; exit 1; }
. Benchmarks/common.sh
if [ -n "${TANDEM_BIN:-}" ]; then
  bin=$(cd "$TANDEM_BIN" && pwd)
else
  build_lab_products
  bin=$(pwd)/.build/release
fi
state=$(mktemp -d /tmp/tandem-wireguard-bench-XXXXXX)
lab() { "$bin/tandem-lab" "$@" --name wgbench --state-dir "$state"; }
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null
  lab down >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(uname -r); binaries $bin; iperf3 $(iperf3 --version | head -1 | cut -d' ' -f2), $seconds s runs"
echo "WireGuard: wireguard-go $(wireguard-go --version 2>&1 | grep -o 'v[0-9.]*' | head -1) in userspace (no kernel module)"
declare -A results=()
for run in $(seq "$runs"); do
  for mode in plain wireguard; do
    if [ $mode = wireguard ]; then lab up --nodes 2 --wireguard both >/dev/null; else lab up --nodes 2 >/dev/null; fi
    lab pod add n1 client >/dev/null
    lab pod add n2 server >/dev/null
    lab check --timeout 4 >/dev/null || { echo "lab $mode: pods do not reach each other" >&2; exit 1; }
    server4=$(ip -n wgbench-server -4 addr show eth0 | grep -o '10\.[0-9.]*' | head -1)
    server6=$(ip -n wgbench-server -6 addr show eth0 scope global | grep -o 'fd00[0-9a-f:]*' | head -1)
    if [ $mode = wireguard ]; then # the pods' traffic goes through the devices
      ip -n wgbench-n1 route get "$server4" | grep -q 'dev wireguard.cali'
      ip -n wgbench-n1 -6 route get "$server6" | grep -q 'dev wg-v6.cali'
    fi
    ip netns exec wgbench-server iperf3 -s -D --pidfile "$state/iperf3.pid" >/dev/null
    sleep 0.5
    server=$(cat "$state/iperf3.pid")
    results[$mode-4]+="$(iperf3_gbits wgbench-client "$server4" "$seconds") "
    results[$mode-6]+="$(iperf3_gbits wgbench-client "$server6" "$seconds") "
    results[$mode-mtu]="$(cat "$state/wgbench/n1/mtu")"
    kill "$server" 2>/dev/null || true
    server=
    lab down >/dev/null
  done
done
for family in 4 6; do
  plain=$(echo ${results[plain-$family]} | tr ' ' '\n' | median)
  wireguard=$(echo ${results[wireguard-$family]} | tr ' ' '\n' | median)
  echo "pod to pod IPv$family: plain ${plain} Gbit/s, WireGuard (wireguard-go) ${wireguard} Gbit/s, ratio $(python3 -c "print('%.2f' % ($wireguard / $plain))") (medians of $runs; plain: ${results[plain-$family]}; WireGuard: ${results[wireguard-$family]})"
done
echo "pod MTU: plain ${results[plain-mtu]}, WireGuard in both families ${results[wireguard-mtu]}"
