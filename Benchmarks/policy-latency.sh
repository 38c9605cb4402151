#!/usr/bin/env bash
# From one policy change in the datastore to its effect in the kernel, on a lab node: `tandemctl apply` of a
# NetworkPolicy that selects the node's pod, then polling the node's ruleset (every 2 ms) until the policy's rule is
# there; then its deletion until it is gone. Both backends in one run, nftables then iptables, on a fresh lab each.
# Usage: Benchmarks/policy-latency.sh [changes]   (run as root)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}
swift build -c release --static-swift-stdlib >/dev/null
bin=$(pwd)/.build/release
state=$(mktemp -d /tmp/tandem-policy-bench-XXXXXX)
lab=pbench$$
lab=${lab:0:8}
trap '"$bin/tandem-lab" down --name "$lab" --state-dir "$state" >/dev/null 2>&1 || true; rm -rf "$state"' EXIT

now() { date +%s%N; }
for backend in nftables iptables; do
  "$bin/tandem-lab" up --name "$lab" --state-dir "$state" --nodes 2 --policy-backend "$backend" >/dev/null
  "$bin/tandem-lab" pod add n1 server --label app=server --name "$lab" --state-dir "$state" >/dev/null
  store="sqlite://$state/$lab/datastore.db"
  if [ "$backend" = nftables ]; then show="nft list table inet tandem"; else show="iptables-save -t filter"; fi
  times=()
  for ((i = 0; i < n; i++)); do
    cat >"$state/policy.yaml" <<YAML
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: bench-$i, namespace: default}
spec:
  selector: app == 'server'
  ingress: [{action: Allow, protocol: TCP, destination: {ports: [$((8000 + i))]}}]
YAML
    start=$(now)
    "$bin/tandemctl" apply -f "$state/policy.yaml" --datastore "$store" >/dev/null
    until ip netns exec "$lab-n1" $show | grep -q "bench-$i"; do sleep 0.002; done
    added=$(now)
    "$bin/tandemctl" delete networkpolicy "bench-$i" -n default --datastore "$store" >/dev/null
    while ip netns exec "$lab-n1" $show | grep -q "bench-$i"; do sleep 0.002; done
    removed=$(now)
    times+=("$(((added - start) / 1000000)) $(((removed - added) / 1000000))")
  done
  stats() { sort -n | awk '{ v[NR] = $1 } END { printf "p50 %d ms, max %d ms", v[int((NR + 1) / 2)], v[NR] }'; }
  add=$(printf '%s\n' "${times[@]}" | cut -d' ' -f1 | stats)
  del=$(printf '%s\n' "${times[@]}" | cut -d' ' -f2 | stats)
  printf '%-9s %d changes: apply to kernel %s; delete to kernel %s\n' "$backend" "$n" "$add" "$del"
  "$bin/tandem-lab" down --name "$lab" --state-dir "$state" >/dev/null
done
