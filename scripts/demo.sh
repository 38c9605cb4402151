#!/usr/bin/env bash
# Tandem on one node, for real: a node network namespace with an uplink, dual-stack pools in the embedded datastore,
# the node agent `tandem-node` serving the `tandem` CNI plugin there, two pods wired by the plugin (addresses from
# tandem-ipam), then pod-to-pod and pod-to-node pings over IPv4 and IPv6, CHECK, and DEL. Everything it makes is removed at the end, also on failure. Run as root after
# scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(swift build --show-bin-path)
for product in tandem tandem-cni tandem-node tandemctl; do [ -x "$bin/$product" ] || swift build; done
tag=demo$$
node=tdm-$tag-node
work=$(mktemp -d /tmp/tandem-demo-XXXXXX)
export TANDEM_DATASTORE=sqlite://$work/tandem.db
agent=
cleanup() {
  if [ -n "$agent" ]; then kill "$agent" 2>/dev/null && wait "$agent" 2>/dev/null || true; fi
  for ns in "$node" "tdm-$tag-a" "tdm-$tag-b"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "pools: $bin/tandemctl apply -f examples/dual-stack.yaml"
"$bin/tandemctl" apply -f examples/dual-stack.yaml
"$bin/tandemctl" get ippool -o wide

step "node $node: uplink with 198.51.100.1/24 and 2001:db8:100::1/64, a default route per family"
ip netns add "$node"
ip -n "$node" link set lo up
ip -n "$node" link add up0 type veth peer name up1
ip -n "$node" link set up0 up && ip -n "$node" link set up1 up
ip -n "$node" addr add 198.51.100.1/24 dev up0
ip -n "$node" addr add 2001:db8:100::1/64 dev up0 nodad
ip -n "$node" route add default via 198.51.100.2 dev up0 onlink
ip -n "$node" -6 route add default via 2001:db8:100::2 dev up0 onlink
# A node routes between its pods: IPv6 forwarding is one global switch (IPv4's is per interface, and the plugin
# turns it on for each pod's veth). Kubernetes nodes have both on; a fresh namespace has neither.
ip netns exec "$node" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

step "tandem-node on the node: the tandem plugin hands it every CNI call (without it, the plugin works alone)"
ip netns exec "$node" "$bin/tandem-node" serve --nodename node-a --no-bgp >"$work/tandem-node.log" 2>&1 &
agent=$!
for _ in $(seq 100); do grep -q "serving CNI" "$work/tandem-node.log" && break; sleep 0.1; done
cat "$work/tandem-node.log"

config='{"cniVersion":"1.1.0","name":"k8s-pod-network","type":"tandem","nodename":"node-a","mtu":1450,
 "ipam":{"type":"tandem-ipam","assign_ipv4":"true","assign_ipv6":"true"}}'
cni() { # COMMAND POD [CONFIG]
  CNI_COMMAND=$1 CNI_CONTAINERID=ctr-$2 CNI_NETNS=/var/run/netns/tdm-$tag-$2 CNI_IFNAME=eth0 CNI_PATH="$bin" \
    CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-$2" \
    ip netns exec "$node" "$bin/tandem" <<<"${3:-$config}"
}
declare -A results
for pod in a b; do
  step "CNI ADD pod-$pod"
  ip netns add "tdm-$tag-$pod"
  results[$pod]=$(cni ADD "$pod")
  echo "${results[$pod]}"
done
addresses() { python3 -c 'import json,sys; print(" ".join(i["address"].split("/")[0] for i in json.load(sys.stdin)["ips"]))' <<<"$1"; }
read -r a4 a6 <<<"$(addresses "${results[a]}")"
read -r b4 b6 <<<"$(addresses "${results[b]}")"

step "pod-a: ip addr, ip route, ip -6 route"
ip -n "tdm-$tag-a" -br addr show eth0
ip -n "tdm-$tag-a" route
ip -n "tdm-$tag-a" -6 route
failed=0
for target in "$b4" "$b6" 198.51.100.1 2001:db8:100::1; do
  if ip netns exec "tdm-$tag-a" ping -c 1 -W 2 "$target" >/dev/null; then echo "pod-a -> $target: ok"; else echo "pod-a -> $target: FAILED"; failed=1; fi
done
for target in "$a4" "$a6"; do
  if ip netns exec "$node" ping -c 1 -W 2 "$target" >/dev/null; then echo "node -> $target: ok"; else echo "node -> $target: FAILED"; failed=1; fi
done

step "CNI CHECK and DEL"
for pod in a b; do
  prev=$(python3 -c 'import json,sys; c=json.loads(sys.argv[1]); c["prevResult"]=json.loads(sys.argv[2]); print(json.dumps(c))' "$config" "${results[$pod]}")
  cni CHECK "$pod" "$prev" && echo "CHECK pod-$pod: ok"
  cni DEL "$pod" && echo "DEL pod-$pod: ok"
done
"$bin/tandemctl" ipam show

step "what tandem-node served"
tail -n +2 "$work/tandem-node.log"
exit $failed
