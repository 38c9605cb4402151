#!/usr/bin/env bash
# The main job: a Tandem cluster on this machine. Builds N nodes (default 3) in network namespaces on a fabric
# bridge, runs tandem-node and BIRD on each, puts a pod on every node through the real CNI plugin, and checks that
# every pod reaches every pod and node over IPv4 and IPv6; then shows node n1's routes and BGP sessions. Removes
# everything at the end, also on failure, unless --keep is given (then: tandem-lab down).
# Usage: scripts/lab.sh [--nodes N] [--ipv6-only|--ipv4-only] [--keep]. Run as root after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(swift build --show-bin-path)
for product in tandem tandem-cni tandem-node tandemctl tandem-lab; do [ -x "$bin/$product" ] || swift build; done
keep=false
args=()
nodes=3
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=true ;;
    --nodes) nodes=$2; args+=(--nodes "$2"); shift ;;
    *) args+=("$1") ;;
  esac
  shift
done
lab="$bin/tandem-lab"
if ! $keep; then trap '"$lab" down' EXIT; fi
step() { printf '\n== %s\n' "$*"; }

step "tandem-lab up ${args[*]}"
"$lab" up "${args[@]}"
step "a pod on every node (CNI ADD through the tandem plugin and the node's agent)"
for i in $(seq "$nodes"); do "$lab" pod add "n$i"; done
step "tandem-lab check: every pod to every pod and node, per family"
"$lab" check
step "node n1: routes (other nodes' blocks from BIRD, its own block's blackhole and its pod's routes from tandem-node)"
ip -n lab-n1 route
ip -n lab-n1 -6 route
step "node n1: tandemctl node status"
ip netns exec lab-n1 "$bin/tandemctl" node status --bird-socket /run/tandem-lab/lab/n1/bird.ctl
step "tandemctl node list"
"$bin/tandemctl" node list --datastore sqlite:///run/tandem-lab/lab/datastore.db
if $keep; then printf '\nThe lab stays up: %s status | check | pod add NODE | down\n' "$lab"; fi
