#!/usr/bin/env bash
# What natOutgoing costs, per family and policy backend, measured with the lab:
#  1. iperf3 (TCP, one stream) from a pod to the destination outside the cluster (the fabric's gateway) through the
#     node's masquerade, alternated run by run with the same path without NAT: the pools' natOutgoing off and the
#     gateway routing the pools back to the node. The ratio is NAT over no NAT.
#  2. The NAT rules the node holds with the lab's pool per family, then with 100 more natOutgoing pools per family.
# Usage: Benchmarks/nat.sh [seconds per run] [runs]   (run as root; needs iperf3, bird2, nftables, ipset)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
runs=${2:-3}
command -v iperf3 >/dev/null || { echo "needs iperf3 (apt-get install iperf3)" >&2; exit 1; }
. Benchmarks/common.sh
build_lab_products
bin=$(pwd)/.build/release
state=$(mktemp -d /tmp/tandem-nat-bench-XXXXXX)
lab() { "$bin/tandem-lab" "$@" --name nbench --state-dir "$state"; }
ctl() { "$bin/tandemctl" "$@" --datastore "sqlite://$state/nbench/datastore.db"; }
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null
  lab down >/dev/null 2>&1 || true
  rm -rf "$state"
}
trap cleanup EXIT

# NAT rules for natOutgoing on the node, per family.
nat_rules() { # backend family
  if [ "$1" = nftables ]; then
    ip netns exec nbench-n1 nft list chain inet tandemnat postrouting \
      | grep -c "$([ "$2" = 4 ] && echo 'ip saddr @masq4' || echo 'ip6 saddr @masq6')" || true
  else
    ip netns exec nbench-n1 "$([ "$2" = 4 ] && echo iptables || echo ip6tables)-save" -t nat \
      | grep -c '^-A TDM-NAT-OUTGOING .*natOutgoing' || true
  fi
}
set_nat() { # true|false: both pools, then wait until the node's rules follow
  for pool in default-ipv4-ippool default-ipv6-ippool; do
    ctl patch ippool $pool -p "{\"spec\":{\"natOutgoing\":$1}}" >/dev/null
  done
  for _ in $(seq 100); do
    if { [ "$1" = true ] && [ "$(nat_rules "$backend" 4)" -gt 0 ] && [ "$(nat_rules "$backend" 6)" -gt 0 ]; } \
      || { [ "$1" = false ] && [ "$(nat_rules "$backend" 4)" = 0 ] && [ "$(nat_rules "$backend" 6)" = 0 ]; }; then
      return
    fi
    sleep 0.1
  done
  echo "the node's NAT rules did not follow natOutgoing=$1" >&2
  exit 1
}

echo "machine: $(nproc) cores, $(uname -r); iperf3 $(iperf3 --version | head -1 | cut -d' ' -f2), $seconds s runs"
for backend in nftables iptables; do
  lab up --nodes 1 --policy-backend "$backend" >/dev/null
  lab pod add n1 client >/dev/null
  # Without NAT the gateway needs a route back to the pools.
  ip -n nbench-fab route add 10.244.0.0/16 via 10.99.0.1
  ip -n nbench-fab -6 route add fd00:244::/56 via fd99::1
  ip netns exec nbench-fab iperf3 -s -D --pidfile "$state/iperf3.pid" >/dev/null
  sleep 0.5
  server=$(cat "$state/iperf3.pid")
  declare -A results=()
  for run in $(seq "$runs"); do
    for nat in true false; do
      set_nat $nat
      results[$nat-4]+="$(iperf3_gbits nbench-client 10.99.0.254 "$seconds") "
      results[$nat-6]+="$(iperf3_gbits nbench-client fd99::fe "$seconds") "
    done
  done
  for family in 4 6; do
    with=$(echo ${results[true-$family]} | tr ' ' '\n' | median)
    without=$(echo ${results[false-$family]} | tr ' ' '\n' | median)
    echo "$backend IPv$family: NAT ${with} Gbit/s, no NAT ${without} Gbit/s, ratio $(python3 -c "print('%.2f' % ($with / $without))") (medians of $runs; NAT runs: ${results[true-$family]}; no NAT: ${results[false-$family]})"
  done
  # Rule count: the lab's pool per family, then 100 more natOutgoing pools per family.
  set_nat true
  before4=$(nat_rules "$backend" 4)
  before6=$(nat_rules "$backend" 6)
  manifest="$state/pools.yaml"
  : >"$manifest"
  for i in $(seq 0 99); do
    printf 'apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: b4-%d}\nspec: {cidr: 10.%d.0.0/16, natOutgoing: true}\n---\n' "$i" $((100 + i)) >>"$manifest"
    printf 'apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: b6-%d}\nspec: {cidr: "fd10:%x::/48", natOutgoing: true}\n---\n' "$i" "$i" >>"$manifest"
  done
  ctl apply -f "$manifest" >/dev/null
  for _ in $(seq 100); do
    if [ "$backend" = nftables ]; then
      ip netns exec nbench-n1 nft list set inet tandemnat masq6 | grep -q 'fd10:63::/48' && break
    else
      ip netns exec nbench-n1 ipset list tdm6-masq-pools | grep -q 'fd10:63::/48' && break
    fi
    sleep 0.1
  done
  echo "$backend rules: IPv4 $before4 with 1 pool, $(nat_rules "$backend" 4) with 101; IPv6 $before6 with 1 pool, $(nat_rules "$backend" 6) with 101"
  kill "$server" 2>/dev/null || true
  server=
  lab down >/dev/null
done
