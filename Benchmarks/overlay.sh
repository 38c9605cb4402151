#!/usr/bin/env bash
# What the VXLAN overlay costs and saves, measured with the lab:
#  1. iperf3 (TCP, one stream) between pods on two nodes, per family, native (the pools' vxlanMode Never, routes by
#     BGP) alternated run by run with VXLAN (vxlanMode Always), switched live on one lab. The ratio is VXLAN over
#     native.
#  2. `tandem-lab up` + a pod per node + `tandem-lab check` passing, for 3 and 10 nodes, with `--backend vxlan` (no
#     BIRD: every route from the datastore) against `--backend bird` (BGP mesh), alternated.
# Usage: Benchmarks/overlay.sh [seconds per iperf3 run] [runs]   (run as root; needs iperf3 and bird2)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
runs=${2:-3}
command -v iperf3 >/dev/null || { echo "needs iperf3 (apt-get install iperf3)" >&2; exit 1; }
. Benchmarks/common.sh
build_lab_products
bin=$(pwd)/.build/release
state=$(mktemp -d /tmp/tandem-overlay-bench-XXXXXX)
lab() { "$bin/tandem-lab" "$@" --name obench --state-dir "$state"; }
ctl() { "$bin/tandemctl" "$@" --datastore "sqlite://$state/obench/datastore.db"; }
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null
  lab down >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT
now() { date +%s%N; }

echo "machine: $(nproc) cores, $(uname -r); iperf3 $(iperf3 --version | head -1 | cut -d' ' -f2)"

# 1. Throughput, native vs VXLAN, per family, on one lab.
lab up --nodes 2 >/dev/null
lab pod add n1 client >/dev/null
lab pod add n2 server >/dev/null
server4=$(ip -n obench-server -4 addr show eth0 | grep -o '10\.[0-9.]*' | head -1)
server6=$(ip -n obench-server -6 addr show eth0 scope global | grep -o 'fd00[0-9a-f:]*' | head -1)
ip netns exec obench-server iperf3 -s -D --pidfile "$state/iperf3.pid" >/dev/null
sleep 0.5
server=$(cat "$state/iperf3.pid")
set_mode() { # Never|Always, both pools; then wait until n1 routes n2's blocks that way
  for pool in default-ipv4-ippool default-ipv6-ippool; do
    ctl patch ippool $pool -p "{\"spec\":{\"vxlanMode\":\"$1\"}}" >/dev/null
  done
  for _ in $(seq 200); do
    local routes
    routes=$(ip -n obench-n1 route; ip -n obench-n1 -6 route)
    if [ "$1" = Always ] && [ "$(echo "$routes" | grep -c 'dev vxlan')" -ge 2 ]; then return; fi
    if [ "$1" = Never ] && [ "$(echo "$routes" | grep -c 'proto bird')" -ge 2 ] \
      && ! echo "$routes" | grep -q 'dev vxlan'; then return; fi
    sleep 0.1
  done
  echo "n1's routes did not follow vxlanMode $1" >&2
  exit 1
}
declare -A results=()
for run in $(seq "$runs"); do
  for mode in Never Always; do
    set_mode $mode
    results[$mode-4]+="$(iperf3_gbits obench-client "$server4" "$seconds") "
    results[$mode-6]+="$(iperf3_gbits obench-client "$server6" "$seconds") "
  done
done
for family in 4 6; do
  native=$(echo ${results[Never-$family]} | tr ' ' '\n' | median)
  vxlan=$(echo ${results[Always-$family]} | tr ' ' '\n' | median)
  echo "pod to pod IPv$family: native ${native} Gbit/s, VXLAN ${vxlan} Gbit/s, ratio $(python3 -c "print('%.2f' % ($vxlan / $native))") (medians of $runs; native: ${results[Never-$family]}; VXLAN: ${results[Always-$family]})"
done
echo "pod MTU with VXLAN in both families: $(cat "$state/obench/n1/mtu")"
kill "$server" 2>/dev/null || true
server=
lab down >/dev/null

# 2. Bring-up to all reachable, vxlan backend vs bird.
for nodes in 3 10; do
  declare -A upTimes=()
  for run in $(seq "$runs"); do
    for backend in bird vxlan; do
      start=$(now)
      lab up --nodes "$nodes" --encapsulation vxlan --backend "$backend" >/dev/null
      for i in $(seq "$nodes"); do lab pod add "n$i" >/dev/null; done
      until lab check --timeout 1 >/dev/null 2>&1; do sleep 0.1; done
      upTimes[$backend]+="$(( ($(now) - start) / 1000000 )) "
      lab down >/dev/null
    done
  done
  bird=$(echo ${upTimes[bird]} | tr ' ' '\n' | median)
  vxlan=$(echo ${upTimes[vxlan]} | tr ' ' '\n' | median)
  echo "$nodes nodes, up + a pod each + check passing: bird ${bird} ms, vxlan ${vxlan} ms, ratio $(python3 -c "print('%.2f' % ($vxlan / $bird))") (medians of $runs; bird: ${upTimes[bird]}; vxlan: ${upTimes[vxlan]})"
  unset upTimes
done
