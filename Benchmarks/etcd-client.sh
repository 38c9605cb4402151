#!/usr/bin/env bash
# The etcd client (key-value calls over gRPC, watches through the JSON gateway on AsyncHTTPClient) against the
# hand-written HTTP/1.1 + OpenSSL client it replaced (kept in this package as LegacyEtcd), side by side in one run
# against one real etcd: a get's round trip, a get + compare-and-swap
# loop (alone and 8 tasks on 8 keys), the latency of a watch event after its put, and a get over TLS with client
# certificates. etcd listens on a plain and a TLS (client certificates required) port on loopback, in a network
# namespace of its own, with its data on tmpfs.
# Usage: Benchmarks/etcd-client.sh [gets] [swaps] [puts]   (run as root; needs etcd-server and openssl)
set -euo pipefail
cd "$(dirname "$0")"
gets=${1:-2000}
swaps=${2:-1000}
puts=${3:-500}
bench=$(pwd)/.build/release/tandem-bench

if [ -z "${TANDEM_BENCH_NAMESPACE:-}" ]; then
  swift build -c release --product tandem-bench >/dev/null
  namespace=tbe-$$
  ip netns add "$namespace"
  trap 'ip netns del "$namespace"' EXIT
  ip -n "$namespace" link set lo up
  TANDEM_BENCH_NAMESPACE=$namespace ip netns exec "$namespace" bash "$(pwd)/$(basename "$0")" "$gets" "$swaps" "$puts"
  exit
fi

work=$(mktemp -d /dev/shm/tandem-etcd-client-bench-XXXXXX)
cleanup() {
  if [ -n "${etcd_pid:-}" ]; then kill "$etcd_pid" 2>/dev/null; wait "$etcd_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# A CA, a server certificate for 127.0.0.1 and a client certificate, as the TLS tests make them.
(
  cd "$work"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=tandem-bench-ca \
    -keyout ca-key.pem -out ca.pem 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=etcd \
    -keyout server-key.pem -out server.csr 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -extfile server.ext \
    -out server.pem 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=tandem \
    -keyout client-key.pem -out client.csr 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >client.ext
  openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -extfile client.ext \
    -out client.pem 2>/dev/null
)

# etcd on free loopback ports (the kernel's choice): plain HTTP on one, TLS with client certificates on another.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
client=$(port)
secure=$(port)
peer=$(port)
etcd --name bench --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$client,https://127.0.0.1:$secure" \
  --advertise-client-urls "http://127.0.0.1:$client" --listen-peer-urls "http://127.0.0.1:$peer" \
  --initial-advertise-peer-urls "http://127.0.0.1:$peer" --initial-cluster "bench=http://127.0.0.1:$peer" \
  --cert-file "$work/server.pem" --key-file "$work/server-key.pem" --trusted-ca-file "$work/ca.pem" \
  --client-cert-auth >"$work/etcd.log" 2>&1 &
etcd_pid=$!
for _ in $(seq 200); do grep -q "ready to serve client requests" "$work/etcd.log" && break; sleep 0.05; done
grep -q "ready to serve client requests" "$work/etcd.log" || { tail -20 "$work/etcd.log" >&2; exit 1; }

echo "etcd $(etcd --version | head -1 | awk '{print $3}'), $(nproc) cores, data on tmpfs"
"$bench" etcd-client "etcd://127.0.0.1:$client" \
  "etcd+https://127.0.0.1:$secure?ca-cert=$work/ca.pem&cert=$work/client.pem&key=$work/client-key.pem" \
  "$gets" "$swaps" "$puts"
