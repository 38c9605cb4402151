#!/usr/bin/env bash
# Growth with input size of `tandemctl apply`: thousands of IPPools in one multi-document manifest (fresh SQLite
# store each time), a NetworkPolicy of tens of thousands of rules (--dry-run: parse, validate, encode), and the
# length of the message that refuses a policy whose every rule is invalid. Linear work doubles its time when the
# input doubles; the old quadratic code quadrupled it.
# Usage: Benchmarks/large-inputs.sh [pool counts] [rule counts]   (defaults "1000 2000 4000 10000" "5000 10000 20000 50000")
# TANDEMCTL=/path/to/tandemctl measures another build (an older commit's, for the "before" figures); by default
# the debug build of this tree.
set -euo pipefail
cd "$(dirname "$0")/.."
pools=${1:-1000 2000 4000 10000}
rules=${2:-5000 10000 20000 50000}
if [ -z "${TANDEMCTL:-}" ]; then
  swift build --product tandemctl >/dev/null
  TANDEMCTL=$(pwd)/.build/debug/tandemctl
fi
work=$(mktemp -d /tmp/tandem-large-XXXXXX)
trap 'rm -rf "$work"' EXIT

# generate pools N | rules N | bad-rules N: a manifest on standard output.
generate() {
  python3 - "$1" "$2" <<'PY'
import sys
what, n = sys.argv[1], int(sys.argv[2])
if what == "pools":
    print("\n---\n".join(
        f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: pool-{i}}}\n"
        f"spec: {{cidr: {10 + (i >> 16)}.{i >> 8 & 255}.{i & 255}.0/24}}" for i in range(n)))
else:
    print("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: large, namespace: default}\n"
          "spec:\n  selector: app == 'web'\n  ingress:")
    for i in range(n):
        port = 70000 if what == "bad-rules" else 1 + i % 65535
        print(f"  - {{action: Allow, protocol: TCP, source: {{nets: [10.{i >> 8 & 255}.{i & 255}.0/24], "
              f"selector: \"role == 'r{i}'\"}}, destination: {{ports: [{port}]}}}}")
PY
}
now() { date +%s%N; }
seconds() { awk -v ns="$1" 'BEGIN { printf "%.2f", ns / 1e9 }'; }

echo "tandemctl: $TANDEMCTL"
for n in $pools; do
  generate pools "$n" >"$work/pools.yaml"
  rm -f "$work/pools.db"*
  start=$(now)
  "$TANDEMCTL" apply -f "$work/pools.yaml" --datastore "sqlite://$work/pools.db" >/dev/null
  printf 'apply %6d IPPools:                      %8s s\n' "$n" "$(seconds $(($(now) - start)))"
done
for n in $rules; do
  generate rules "$n" >"$work/policy.yaml"
  start=$(now)
  "$TANDEMCTL" apply --dry-run -f "$work/policy.yaml" --datastore "sqlite://$work/policy.db" >/dev/null
  printf 'apply --dry-run policy of %6d rules:   %8s s\n' "$n" "$(seconds $(($(now) - start)))"
done
n=${rules##* }
generate bad-rules "$n" >"$work/bad.yaml"
bytes=$("$TANDEMCTL" apply --dry-run -f "$work/bad.yaml" --datastore "sqlite://$work/policy.db" 2>&1 | wc -c || true)
printf 'message refusing %d bad rules:          %8d bytes\n' "$n" "$bytes"
