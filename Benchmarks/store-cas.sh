#!/usr/bin/env bash
# Compare-and-swap rate of Tandem's SQLite datastore against etcd (Calico's datastore), side by side in one run.
# Both do the same loop: read a counter key, write value+1 only if its revision is unchanged.
# Usage: Benchmarks/store-cas.sh [increments]   (run as root; installs etcd-server if missing)
set -euo pipefail
cd "$(dirname "$0")"
n=${1:-2000}
work=$(mktemp -d /tmp/tandem-cas-XXXXXX)
etcd_pid=""
cleanup() { [ -n "$etcd_pid" ] && kill "$etcd_pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

command -v etcd >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server >/dev/null; }
swift build -c release --product tandem-bench >/dev/null
(cd .. && swift build -c release --product tandemctl >/dev/null)

etcd --name bench --data-dir "$work/etcd" --listen-client-urls http://127.0.0.1:23791 \
  --advertise-client-urls http://127.0.0.1:23791 --listen-peer-urls http://127.0.0.1:23801 \
  --initial-advertise-peer-urls http://127.0.0.1:23801 --initial-cluster bench=http://127.0.0.1:23801 \
  >"$work/etcd.log" 2>&1 &
etcd_pid=$!
until curl -s http://127.0.0.1:23791/health | grep -q true; do sleep 0.1; done

echo "== one process, $n sequential CAS increments (data on $(df --output=fstype /tmp | tail -1))"
.build/release/tandem-bench store "$work/tandem.db" "$n"
python3 - "$n" <<'PY'
import base64, http.client, json, sys, time
n = int(sys.argv[1]); b = lambda s: base64.b64encode(s.encode()).decode()
c = http.client.HTTPConnection("127.0.0.1", 23791)
def call(path, body):
    c.request("POST", path, json.dumps(body)); return json.loads(c.getresponse().read())
key = b("/bench/counter"); call("/v3/kv/put", {"key": key, "value": b("0")})
start = time.monotonic()
for _ in range(n):
    while True:
        kv = call("/v3/kv/range", {"key": key})["kvs"][0]
        value = int(base64.b64decode(kv["value"])) + 1
        r = call("/v3/kv/txn", {"compare": [{"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": kv["mod_revision"]}],
                               "success": [{"request_put": {"key": key, "value": b(str(value))}}]})
        if r.get("succeeded"): break
elapsed = time.monotonic() - start
print(f"etcd 3.4 CAS increments, 1 process (python http.client keep-alive): {n} in {elapsed:.2f} s = {n/elapsed:.0f}/s")
PY

echo "== 8 processes x 500 CAS increments on one key through the tandemctl binary (process start included)"
start=$(date +%s.%N)
for i in $(seq 8); do ../.build/release/tandemctl debug cas-increment --key /counter --times 500 --datastore "sqlite://$work/multi.db" >/dev/null & done
wait $(jobs -p | grep -v "^$etcd_pid$") 2>/dev/null || true
end=$(date +%s.%N)
python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'SQLite, 8 processes: 4000 increments in {s:.2f} s = {4000/s:.0f}/s')" "$start" "$end"

echo "== Tandem's etcd backend (TandemStoreEtcd), through the tandemctl binary against the same etcd"
etcd_url=etcd://127.0.0.1:23791
start=$(date +%s.%N)
../.build/release/tandemctl debug cas-increment --key /tandem/one --times "$n" --datastore "$etcd_url" >/dev/null
end=$(date +%s.%N)
python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'Tandem etcd backend, 1 process: {sys.argv[3]} increments in {s:.2f} s = {int(sys.argv[3])/s:.0f}/s')" "$start" "$end" "$n"
start=$(date +%s.%N)
pids=()
for i in $(seq 8); do
  ../.build/release/tandemctl debug cas-increment --key /tandem/eight --times 500 --datastore "$etcd_url" >/dev/null &
  pids+=($!)
done
wait "${pids[@]}"
end=$(date +%s.%N)
python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'Tandem etcd backend, 8 processes: 4000 increments in {s:.2f} s = {4000/s:.0f}/s')" "$start" "$end"
