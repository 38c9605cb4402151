#!/usr/bin/env bash
# IPAM assignments per second on the two datastore backends, side by side in one run: the embedded SQLite file and a
# real single-member etcd, both with their data in the same directory (so both pay the same disk's fsync). Each ADD
# and DEL is a dual-stack `tandem-ipam` call made as a container runtime makes it: a fresh process, served by the node
# agent following that datastore, or in-process with no agent; sequential, then 8 processes at once on 8 nodes.
# Usage: Benchmarks/datastore.sh [pods per process] [data directory]   (run as root; needs etcd-server)
set -euo pipefail
cd "$(dirname "$0")"
n=${1:-300}
base=${2:-/tmp}
bin=$(cd .. && pwd)/.build/release

# Everything runs in a network namespace of its own: the agent's route reconcile then leaves this host alone, and the
# agent, etcd and the callers share that namespace's loopback.
if [ -z "${TANDEM_BENCH_NAMESPACE:-}" ]; then
  (cd .. && for product in tandem tandem-cni tandem-node tandemctl; do
    swift build -c release --static-swift-stdlib --product $product >/dev/null
  done)
  namespace=tbd-$$
  ip netns add "$namespace"
  trap 'ip netns del "$namespace"' EXIT
  ip -n "$namespace" link set lo up
  TANDEM_BENCH_NAMESPACE=$namespace ip netns exec "$namespace" bash "$(pwd)/$(basename "$0")" "$n" "$base"
  exit
fi

work=$(mktemp -d "$base/tandem-ds-bench-XXXXXX")
cleanup() {
  if [ -n "${agent:-}" ]; then kill "$agent" 2>/dev/null; wait "$agent" 2>/dev/null || true; fi
  if [ -n "${etcd_pid:-}" ]; then kill "$etcd_pid" 2>/dev/null; wait "$etcd_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# etcd on free loopback ports (the kernel's choice).
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client=$(port)
peer=$(port)
etcd --name bench --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$client" \
  --advertise-client-urls "http://127.0.0.1:$client" --listen-peer-urls "http://127.0.0.1:$peer" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer" --initial-cluster "bench=http://127.0.0.1:$peer" \
  >"$work/etcd.log" 2>&1 &
etcd_pid=$!
for _ in $(seq 200); do grep -q "ready to serve client requests" "$work/etcd.log" && break; sleep 0.05; done
sqlite="sqlite://$work/tandem.db"
etcd="etcd://127.0.0.1:$client"

# The agent of each store's phase: it follows that datastore, so its cache serves the calls' assignments (one
# transaction per ADD and per DEL once it has seen the node's blocks), as on a node.
agent_socket=$work/agent.sock
start_agent() { # $1 = datastore URL, $2 = which start of the run this is (its "serving CNI" line)
  # A full list every second, compared with the cache the watch keeps: the watch leaves the blocks and handles
  # these calls write out, and the comparison must still find nothing (checked at the end).
  "$bin/tandem-node" serve --nodename bench-agent --no-bgp --datastore "$1" --datastore-resync-interval 1 \
    --ip 192.0.2.1 --ip6 none --cni-socket "$agent_socket" >>"$work/tandem-node.log" 2>&1 &
  agent=$!
  for _ in $(seq 100); do [ "$(grep -c "serving CNI" "$work/tandem-node.log")" -ge "$2" ] && break; sleep 0.1; done
}
stop_agent() {
  kill "$agent"
  wait "$agent" 2>/dev/null || true
  agent=
}
ln -s "$bin/tandem" "$work/tandem-ipam"
for store in "$sqlite" "$etcd"; do
  "$bin/tandemctl" apply --datastore "$store" -f - >/dev/null <<'YAML'
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
done

conf() { # $1 = datastore URL, $2 = node
  printf '{"cniVersion":"1.0.0","name":"bench","nodename":"%s","ipam":{"type":"tandem-ipam","assign_ipv4":"true","assign_ipv6":"true","datastore":"%s"}}' "$2" "$1"
}

# calls COMMAND STORE PREFIX NODE: n sequential calls; any failure aborts the run.
calls() {
  local command=$1 store=$2 prefix=$3 node=$4 config
  config=$(conf "$store" "$node")
  for ((i = 0; i < n; i++)); do
    CNI_COMMAND=$command CNI_CONTAINERID=$prefix$i CNI_NETNS=/var/run/netns/bench CNI_IFNAME=eth0 \
      CNI_PATH=/usr/lib/cni "$work/tandem-ipam" <<<"$config" >/dev/null || return 1
  done
}

# rate COMMAND STORE PREFIX PROCESSES: calls per second over PROCESSES processes of n calls each, one node each.
rate() {
  local command=$1 store=$2 prefix=$3 processes=$4 start end pids=()
  start=$(date +%s.%N)
  for ((p = 0; p < processes; p++)); do
    calls "$command" "$store" "$prefix-p$p-" "node-$p" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do
    wait "$pid" || { echo "a $command against $store failed" >&2; exit 1; }
  done
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" -v c=$((n * processes)) 'BEGIN { print c / (b - a) }'
}

declare -A rates
started=0
for store in sqlite etcd; do
  url=$([ $store = sqlite ] && echo "$sqlite" || echo "$etcd")
  started=$((started + 1))
  start_agent "$url" $started
  for mode in agent none; do
    for processes in 1 8; do
      for command in ADD DEL; do
        rates[$store,$mode,$processes,$command]=$(
          TANDEM_AGENT_SOCKET=$([ $mode = agent ] && echo "$agent_socket" || echo none) \
            rate $command "$url" "$store$mode$processes" $processes)
      done
    done
  done
  stop_agent
done
printf '%-34s %12s %12s %8s\n' "dual-stack, $n per process" "SQLite" "etcd" "etcd/SQLite"
for mode in agent none; do
  for processes in 1 8; do
    for command in ADD DEL; do
      label="$command, $processes proc, $([ $mode = agent ] && echo "agent" || echo "no agent")"
      awk -v s="${rates[sqlite,$mode,$processes,$command]}" -v e="${rates[etcd,$mode,$processes,$command]}" \
        -v label="$label" 'BEGIN { printf "%-34s %10.0f/s %10.0f/s %8.2f\n", label, s, e, e / s }'
    done
  done
done
grep -q "tandem-ipam ADD" "$work/tandem-node.log" || { echo "the agent served nothing" >&2; exit 1; }
if grep "cache diverged" "$work/tandem-node.log" >&2; then echo "the agent's cache diverged from the datastore" >&2; exit 1; fi
# Nothing may be left allocated in either store.
for store in "$sqlite" "$etcd"; do
  "$bin/tandemctl" ipam check --datastore "$store" >/dev/null || { echo "IPAM check failed on $store" >&2; exit 1; }
done
