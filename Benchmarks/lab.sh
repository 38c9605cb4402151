#!/usr/bin/env bash
# Cluster bring-up and pod reachability, measured with the lab:
#  1. `tandem-lab up --nodes N` + a pod per node through the CNI plugin + `tandem-lab check` passing, for N = 3
#     and 10, side by side with the floor for the same topology: a shell script that builds the namespaces and pods
#     with `ip` and runs BIRD with hand-written configurations (no datastore, no IPAM, no agent), timed to the same
#     all-pods-reachable point.
#  2. A pod's ADD to reachable from a pod on another node, IPv4 and IPv6, for 20 pods.
# Usage: Benchmarks/lab.sh [runs]    (run as root; needs bird2 and iputils-ping)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
for product in tandem tandem-cni tandem-node tandemctl tandem-lab; do
  swift build -c release --static-swift-stdlib --product $product >/dev/null
done
bin=$(pwd)/.build/release
state=$(mktemp -d /tmp/tandem-lab-bench-XXXXXX)
lab() { "$bin/tandem-lab" "$@" --name bench --state-dir "$state"; }
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
cleanup() { lab down >/dev/null 2>&1 || true; handmade_down; rm -rf "$state"; }
trap cleanup EXIT

# The floor: the same fabric, nodes, pods and BGP mesh, by hand.
handmade_up() { # N
  local n=$1 i j
  ip netns add hm-fab; ip -n hm-fab link set lo up
  ip -n hm-fab link add br0 type bridge; ip -n hm-fab addr add 10.99.0.254/24 dev br0
  ip -n hm-fab addr add fd99::fe/64 dev br0 nodad; ip -n hm-fab link set br0 up
  mkdir -p "$state/hm"
  for i in $(seq "$n"); do
    ip netns add "hm-n$i"; ip -n "hm-n$i" link set lo up
    ip -n hm-fab link add "to-n$i" type veth peer name eth0 netns "hm-n$i"
    ip -n hm-fab link set "to-n$i" master br0 up
    ip netns exec "hm-n$i" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
      net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    ip -n "hm-n$i" addr add "10.99.0.$i/24" dev eth0; ip -n "hm-n$i" addr add "fd99::$(printf %x "$i")/64" dev eth0 nodad
    ip -n "hm-n$i" link set eth0 up
    ip -n "hm-n$i" route add default via 10.99.0.254; ip -n "hm-n$i" -6 route add default via fd99::fe
    # A pod: veth, addresses, gateways, host routes, the node's blackholes come from BIRD below.
    ip netns add "hm-p$i"; ip -n "hm-p$i" link set lo up
    ip -n "hm-n$i" link add "calip$i" address ee:ee:ee:ee:ee:ee type veth peer name eth0 netns "hm-p$i"
    ip -n "hm-n$i" link set "calip$i" up
    ip netns exec "hm-n$i" sysctl -qw "net.ipv4.conf.calip$i.proxy_arp=1" "net.ipv4.neigh.calip$i.proxy_delay=0"
    ip -n "hm-p$i" addr add "10.244.$i.2/32" dev eth0; ip -n "hm-p$i" addr add "fd00:244:0:$i::2/128" dev eth0 nodad
    ip -n "hm-p$i" link set eth0 up
    ip -n "hm-p$i" route add 169.254.1.1 dev eth0 scope link; ip -n "hm-p$i" route add default via 169.254.1.1 dev eth0
    ip -n "hm-p$i" -6 route add default via fe80::ecee:eeff:feee:eeee dev eth0 onlink
    ip -n "hm-n$i" route add "10.244.$i.2/32" dev "calip$i" scope link
    ip -n "hm-n$i" -6 route add "fd00:244:0:$i::2/128" dev "calip$i"
    {
      echo "router id 10.99.0.$i;"
      echo "protocol device { scan time 2; }"
      echo "protocol direct { ipv4; ipv6; interface \"eth0\"; }"
      echo "protocol kernel { ipv4 { import none; export where source = RTS_BGP; }; }"
      echo "protocol kernel { ipv6 { import none; export where source = RTS_BGP; }; }"
      echo "protocol static { ipv4; route 10.244.$i.0/26 blackhole; }"
      echo "protocol static { ipv6; route fd00:244:0:$i::/122 blackhole; }"
      for j in $(seq "$n"); do
        [ "$i" = "$j" ] && continue
        echo "protocol bgp p4_$j { local 10.99.0.$i as 64512; neighbor 10.99.0.$j as 64512; multihop; connect delay time 1; connect retry time 2;"
        echo "  ipv4 { import all; export where source = RTS_STATIC; gateway recursive; }; }"
        echo "protocol bgp p6_$j { local fd99::$(printf %x "$i") as 64512; neighbor fd99::$(printf %x "$j") as 64512; multihop; connect delay time 1; connect retry time 2;"
        echo "  ipv6 { import all; export where source = RTS_STATIC; gateway recursive; }; }"
      done
    } >"$state/hm/n$i.conf"
    ip netns exec "hm-n$i" bird -c "$state/hm/n$i.conf" -s "$state/hm/n$i.ctl" -P "$state/hm/n$i.pid"
  done
}
handmade_reachable() { # N: every pod pings every other pod, both families
  local n=$1 i j
  for i in $(seq "$n"); do for j in $(seq "$n"); do
    [ "$i" = "$j" ] && continue
    ip netns exec "hm-p$i" ping -c1 -W0.2 -q "10.244.$j.2" >/dev/null 2>&1 || return 1
    ip netns exec "hm-p$i" ping -c1 -W0.2 -q "fd00:244:0:$j::2" >/dev/null 2>&1 || return 1
  done; done
}
handmade_down() {
  for pid in "$state"/hm/*.pid; do [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true; done
  for ns in $(ip netns list | awk '/^hm-/ {print $1}'); do ip netns del "$ns"; done
}

echo "machine: $(nproc) CPUs, $(uname -r); release build"
for n in 3 10; do
  for run in $(seq "$runs"); do
    t0=$(now)
    lab up --nodes "$n" >/dev/null
    t1=$(now)
    for i in $(seq "$n"); do lab pod add "n$i" >/dev/null; done
    t2=$(now)
    until lab check --timeout 0.2 >/dev/null; do :; done
    t3=$(now)
    lab down >/dev/null
    h0=$(now)
    handmade_up "$n"
    until handmade_reachable "$n"; do sleep 0.05; done
    h1=$(now)
    handmade_down
    tandem=$(ms "$t0" "$t3"); hand=$(ms "$h0" "$h1")
    echo "nodes $n run $run: tandem-lab up $(ms "$t0" "$t1") ms, $n pods $(ms "$t1" "$t2") ms, check passing $(ms "$t2" "$t3") ms, total $tandem ms | by hand (ip + BIRD) $hand ms | ratio $(awk "BEGIN {printf \"%.2f\", $tandem / $hand}")"
  done
done

# A pod's ADD to reachable from another node's pod, both families.
lab up --nodes 3 >/dev/null
lab pod add n1 probe >/dev/null
for i in $(seq 20); do
  t0=$(now)
  line=$(lab pod add n3 "p$i")
  t1=$(now)
  read -r v4 v6 < <(echo "$line" | sed -E 's/^pod [^ ]+ on [^:]+: ([^ ]+) ([^ ]+) .*/\1 \2/')
  until ip netns exec bench-probe ping -c1 -W0.2 -q "$v4" >/dev/null 2>&1 && \
        ip netns exec bench-probe ping -c1 -W0.2 -q "$v6" >/dev/null 2>&1; do :; done
  t2=$(now)
  echo "pod p$i on n3: ADD $(ms "$t0" "$t1") ms (tandem-lab pod add, whole command), reachable from n1 $(ms "$t1" "$t2") ms after, total $(ms "$t0" "$t2") ms"
done
