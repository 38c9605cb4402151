#!/usr/bin/env bash
# Pod ADD and DEL latency: the `tandem` plugin (with tandem-ipam) against Debian's reference `ptp` + `host-local`,
# side by side in one run, IPv4-only and dual-stack: N pods one after another (p50 / p99), then 20 ADDs at once.
# Tandem is measured as it is deployed (the `tandem` shim with `tandem-node` serving it on the node) and without
# an agent (the shim execs `tandem-cni`, one process per call, as Calico's plugin runs).
# The driver enters the node's network namespace itself and runs each plugin there directly, as a container
# runtime on the node does (no `ip netns exec` per call).
# Usage: Benchmarks/pod-add.sh [pods]     (run as root; installs containernetworking-plugins if missing)
set -euo pipefail
cd "$(dirname "$0")"
n=${1:-200}
[ -x /usr/lib/cni/ptp ] || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends containernetworking-plugins >/dev/null
}
# Built as they ship: the Swift runtime and Foundation linked statically (the shim is fully static anyway).
(cd .. && for product in tandem tandem-cni tandem-node tandemctl; do
  swift build -c release --static-swift-stdlib --product $product >/dev/null
done)
exec python3 - "$n" "$(cd .. && pwd)/.build/release" <<'PY'
import ctypes, json, os, shutil, statistics, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor

n, release = int(sys.argv[1]), sys.argv[2]
work = tempfile.mkdtemp(prefix="tandem-pod-bench-")
node = f"tbn-{os.getpid()}"
pods = [f"tbp-{os.getpid()}-{i}" for i in range(n)]
agent = None

def sh(command):
    subprocess.run(command, shell=True, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def cleanup():
    if agent:
        agent.terminate()
        agent.wait()
    for name in pods + [node]:
        subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)
    shutil.rmtree(work, ignore_errors=True)

try:
    sh(f"ip netns add {node} && ip -n {node} link set lo up && "
       f"ip -n {node} link add up0 type veth peer name up1 && ip -n {node} link set up0 up && ip -n {node} link set up1 up && "
       f"ip -n {node} addr add 198.51.100.1/24 dev up0 && ip -n {node} addr add 2001:db8:100::1/64 dev up0 nodad && "
       f"ip -n {node} route add default via 198.51.100.2 dev up0 onlink && "
       f"ip -n {node} -6 route add default via 2001:db8:100::2 dev up0 onlink")
    for pod in pods:
        sh(f"ip netns add {pod}")
    store = f"sqlite://{work}/tandem.db"
    subprocess.run([f"{release}/tandemctl", "apply", "--datastore", store, "-f", "-"], check=True, stdout=subprocess.DEVNULL,
                   input=b"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v4}\nspec: {cidr: 10.91.0.0/16}\n---\n"
                         b"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v6}\nspec: {cidr: 'fd00:91::/48'}\n")
    # From here on this process (and every thread and child it starts) is on the node.
    with open(f"/var/run/netns/{node}") as handle:
        if ctypes.CDLL(None, use_errno=True).setns(handle.fileno(), 0x40000000) != 0:
            raise SystemExit(f"setns into {node}: {os.strerror(ctypes.get_errno())}")
    log = open(f"{work}/tandem-node.log", "w+")
    agent = subprocess.Popen([f"{release}/tandem-node", "serve", "--nodename", "node-a", "--datastore", store, "--no-bgp"],
                             stdout=log, stderr=subprocess.STDOUT)
    for _ in range(500):
        log.seek(0)
        if "serving CNI" in log.read() or agent.poll() is not None:
            break
        time.sleep(0.01)
    log.seek(0)
    if "serving CNI" not in log.read():
        log.seek(0)
        raise SystemExit(f"tandem-node did not start: {log.read()}")

    def config(plugin, dual):
        if plugin.startswith("tandem"):
            return {"cniVersion": "1.0.0", "name": "bench", "type": "tandem", "nodename": "node-a", "mtu": 1450,
                    "datastore": store, "ipam": {"type": "tandem-ipam", "assign_ipv4": "true", "assign_ipv6": str(dual).lower()}}
        ranges = [[{"subnet": "10.90.0.0/16"}]] + ([[{"subnet": "fd00:90::/64"}]] if dual else [])
        routes = [{"dst": "0.0.0.0/0"}] + ([{"dst": "::/0"}] if dual else [])
        return {"cniVersion": "1.0.0", "name": "bench-ptp", "type": "ptp", "ipMasq": False, "mtu": 1450,
                "ipam": {"type": "host-local", "dataDir": f"{work}/host-local", "ranges": ranges, "routes": routes}}

    def call(plugin, command, pod, index, dual):
        binary = f"{release}/tandem" if plugin.startswith("tandem") else "/usr/lib/cni/ptp"
        env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=f"{plugin.split()[0].replace('+', '-')}-{index}",
                   CNI_NETNS=f"/var/run/netns/{pod}", CNI_IFNAME="eth0", CNI_PATH="/usr/lib/cni",
                   CNI_ARGS=f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=p{index}",
                   TANDEM_AGENT_SOCKET="none" if plugin == "tandem (no agent)" else "@tandem-cni")
        start = time.perf_counter()
        done = subprocess.run([binary], input=json.dumps(config(plugin, dual)).encode(), env=env, capture_output=True)
        elapsed = (time.perf_counter() - start) * 1000
        if done.returncode != 0:
            raise SystemExit(f"{plugin} {command} pod {index}: {done.stdout.decode()} {done.stderr.decode()}")
        return elapsed

    def pct(values, p):
        values = sorted(values)
        return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]

    print(f"{n} pods one after another, then 20 ADDs at once; latency in ms (each call is a process, run on the node)")
    print(f"{'':36} {'ADD p50':>9} {'ADD p99':>9} {'DEL p50':>9} {'DEL p99':>9} {'20 at once: p50':>16} {'wall':>8}")
    results = {}
    lives = {}
    plugins = ("tandem", "tandem (no agent)", "ptp+host-local")
    for dual in (False, True):
        for plugin in plugins:
            adds = [call(plugin, "ADD", pods[i], i, dual) for i in range(n)]
            dels = [call(plugin, "DEL", pods[i], i, dual) for i in range(n)]
            start = time.perf_counter()
            with ThreadPoolExecutor(20) as pool:
                burst = list(pool.map(lambda i: call(plugin, "ADD", pods[i], i, dual), range(20)))
            wall = (time.perf_counter() - start) * 1000
            for i in range(20):
                call(plugin, "DEL", pods[i], i, dual)
            label = f"{plugin}, {'dual-stack' if dual else 'IPv4'}"
            results[label] = statistics.median(adds)
            # A pod's whole life: its ADD and its DEL, per pod.
            lives[label] = [a + d for a, d in zip(adds, dels)]
            print(f"{label:36} {statistics.median(adds):9.1f} {pct(adds, 99):9.1f} {statistics.median(dels):9.1f} "
                  f"{pct(dels, 99):9.1f} {statistics.median(burst):16.1f} {wall:8.0f}", flush=True)
    print(f"{'ADD + DEL per pod':36} {'p50':>9} {'p99':>9}")
    for label, life in lives.items():
        print(f"{label:36} {statistics.median(life):9.1f} {pct(life, 99):9.1f}")
    reference = lives["ptp+host-local, IPv4"]
    for plugin in plugins[:2]:
        life = lives[f"{plugin}, dual-stack"]
        print(f"ADD + DEL ratio {plugin} dual-stack / ptp+host-local IPv4: "
              f"p50 {statistics.median(life) / statistics.median(reference):.2f}, "
              f"p99 {pct(life, 99) / pct(reference, 99):.2f}")
    for family in ("IPv4", "dual-stack"):
        for plugin in plugins[:2]:
            print(f"ADD p50 ratio {plugin} / ptp+host-local, {family}: "
                  f"{results[f'{plugin}, {family}'] / results[f'ptp+host-local, {family}']:.2f}")
finally:
    cleanup()
PY
