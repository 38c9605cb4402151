#!/usr/bin/env bash
# What a Service costs a connection (issue 21): TCP connections per second from a pod on n1 to a server pod on n2,
# through the Service's ClusterIP (DNAT by n1's nftables load balancer) and to the pod's own address, per family,
# alternated in the same run on one dual-stack lab. Each connection is a full TCP handshake, a one-line reply and a
# close (`tandem-lab connect`, one connection after another), so the figure is connection set-up, the path a Service
# adds work to (the conntrack entry and the NAT lookup happen on the first packet).
# Usage: Benchmarks/services.sh [connections per run] [runs]   (run as root; needs bird2 and nftables)
# TANDEM_BIN=.build/debug uses those builds instead of the release products (the data plane is the kernel's).
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-2000}
runs=${2:-5}
. Benchmarks/common.sh
if [ -n "${TANDEM_BIN:-}" ]; then
  bin=$(cd "$TANDEM_BIN" && pwd)
else
  build_lab_products
  bin=$(pwd)/.build/release
fi
state=$(mktemp -d /tmp/tandem-services-bench-XXXXXX)
lab() { "$bin/tandem-lab" "$@" --name svcbench --state-dir "$state"; }
trap 'lab down >/dev/null 2>&1 || true; rm -rf "$state"' EXIT

lab up --nodes 2 >/dev/null
lab pod add n1 client >/dev/null
lab pod add n2 server --label app=server >/dev/null
lab pod serve server --port 80 >/dev/null
lab service add server --selector app=server --port 80 --ip-family-policy RequireDualStack >/dev/null
store="sqlite://$state/svcbench/datastore.db"
read -r service6 service4 < <("$bin/tandemctl" get service server -o json --datastore "$store" \
  | python3 -c 'import json,sys; ips=json.load(sys.stdin)["spec"]["clusterIPs"]; print(*sorted(ips, key=lambda a: ":" not in a))')
pod4=$(ip -n svcbench-server -4 addr show eth0 | grep -o '10\.[0-9.]*' | head -1)
pod6=$(ip -n svcbench-server -6 addr show eth0 scope global | grep -o 'fd00[0-9a-f:]*' | head -1)
rate() { # connections per second, or fail if any connection failed
  lab connect client "$1" 80 --count "$count" --json | python3 -c '
import json,sys
r=json.load(sys.stdin)
if r["failures"]: sys.exit("%d connections failed: %s" % (r["failures"], r["errors"]))
print("%.0f" % (sum(r["replies"].values()) / r["seconds"]))'
}
for target in "$service4" "$service6"; do # the agent programs the Service within a moment
  for _ in $(seq 50); do lab connect client "$target" 80 >/dev/null 2>&1 && break; sleep 0.1; done
done
echo "machine: $(nproc) cores, $(uname -r); binaries $bin; $count connections per run, $runs runs, alternated"
declare -A results=()
for run in $(seq "$runs"); do
  results[pod4]+="$(rate "$pod4") "
  results[svc4]+="$(rate "$service4") "
  results[pod6]+="$(rate "$pod6") "
  results[svc6]+="$(rate "$service6") "
done
for family in 4 6; do
  pod=$(echo ${results[pod$family]} | tr ' ' '\n' | median)
  svc=$(echo ${results[svc$family]} | tr ' ' '\n' | median)
  echo "IPv$family: to the pod ${pod}/s, through the ClusterIP ${svc}/s, ratio $(python3 -c "print('%.2f' % ($svc / $pod))") (medians of $runs; pod: ${results[pod$family]}; service: ${results[svc$family]})"
done
