#!/usr/bin/env bash
# IPAM plugin throughput: the `tandem-ipam` binary against Debian's reference `host-local` plugin, side by side in one
# run, the same number of dual-stack (or IPv4-only) ADDs and DELs, each a fresh process as a container runtime calls it.
# Usage: Benchmarks/ipam.sh [pods]     (run as root; installs containernetworking-plugins if missing)
set -euo pipefail
cd "$(dirname "$0")"
n=${1:-500}
work=$(mktemp -d /tmp/tandem-ipam-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT

[ -x /usr/lib/cni/host-local ] || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends containernetworking-plugins >/dev/null
}
# Built as it ships: the Swift runtime and Foundation linked statically (half the start-up of a dynamic build).
(cd .. && for product in tandem tandem-cni tandem-node tandemctl; do
  swift build -c release --static-swift-stdlib --product $product >/dev/null
done)
# Two ways for tandem-ipam: served by a node agent (on a socket of this run's own), and without one (the `tandem` shim
# execs `tandem-cni`, a process per call).
# The agent runs in a namespace of its own (its route reconcile must not touch this host) and listens on a socket
# file, which the shim reaches from here.
agent_socket=$work/agent.sock
agent_ns=tbi-$$
ip netns add "$agent_ns"
ip netns exec "$agent_ns" "$(cd .. && pwd)/.build/release/tandem-node" serve --nodename node-a --no-bgp \
  --datastore "sqlite://$work/tandem.db" --ip 192.0.2.1 --ip6 none --cni-socket "$agent_socket" \
  >"$work/tandem-node.log" 2>&1 &
agent=$!
trap 'kill $agent 2>/dev/null; wait $agent 2>/dev/null; ip netns del "$agent_ns"; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q "serving CNI" "$work/tandem-node.log" && break; sleep 0.1; done
ln -s "$(cd .. && pwd)/.build/release/tandem" "$work/tandem-ipam"
tandemctl=$(cd .. && pwd)/.build/release/tandemctl
store="sqlite://$work/tandem.db"
"$tandemctl" apply --datastore "$store" -f - >/dev/null <<'YAML'
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v4}
spec: {cidr: 10.244.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: v6}
spec: {cidr: "fd00:10:244::/48"}
YAML

tandem_conf() { # $1 = assign_ipv6
  printf '{"cniVersion":"1.0.0","name":"bench","nodename":"node-a","ipam":{"type":"tandem-ipam","assign_ipv4":true,"assign_ipv6":%s,"datastore":"%s"}}' "$1" "$store"
}
host_local_conf() { # $1 = dual|v4
  local ranges='[[{"subnet":"10.244.0.0/16"}]]'
  [ "$1" = dual ] && ranges='[[{"subnet":"10.244.0.0/16"}],[{"subnet":"fd00:10:244::/48"}]]'
  printf '{"cniVersion":"1.0.0","name":"bench","ipam":{"type":"host-local","dataDir":"%s/host-local","ranges":%s}}' "$work" "$ranges"
}

# run PLUGIN COMMAND CONFIG PREFIX: n sequential calls; prints the rate. Any failing call aborts the run.
run() {
  local plugin=$1 command=$2 conf=$3 prefix=$4 start end
  start=$(date +%s.%N)
  for ((i = 0; i < n; i++)); do
    CNI_COMMAND=$command CNI_CONTAINERID=$prefix$i CNI_NETNS=/var/run/netns/bench CNI_IFNAME=eth0 \
      CNI_PATH=/usr/lib/cni "$plugin" <<<"$conf" >/dev/null
  done
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { print b - a }'
}

printf '%-22s %14s %14s %12s %8s %8s\n' "$n pods, sequential" "tandem-ipam" "(no agent)" "host-local" "ratio" "(no agent)"
for family in v4 dual; do
  v6=false
  [ $family = dual ] && v6=true
  for command in ADD DEL; do
    a=$(TANDEM_AGENT_SOCKET=$agent_socket run "$work/tandem-ipam" $command "$(tandem_conf $v6)" "a$family")
    t=$(TANDEM_AGENT_SOCKET=none run "$work/tandem-ipam" $command "$(tandem_conf $v6)" "t$family")
    h=$(run /usr/lib/cni/host-local $command "$(host_local_conf $family)" "h$family")
    awk -v n="$n" -v a="$a" -v t="$t" -v h="$h" -v label="$command $family" \
      'BEGIN { printf "%-22s %12.0f/s %12.0f/s %10.0f/s %8.2f %8.2f\n", label, n / a, n / t, n / h, h / a, h / t }'
  done
done
grep -q "tandem-ipam ADD av4" "$work/tandem-node.log" || { echo "the agent served nothing" >&2; exit 1; }
# After all DELs nothing may be left: a benchmark that leaks addresses measures the wrong thing.
"$tandemctl" ipam check --datastore "$store" >/dev/null
echo "(ratio = host-local time / tandem-ipam time; above 1 means tandem-ipam is faster)"
