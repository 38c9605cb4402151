#!/usr/bin/env python3
"""etcd's CPU per IPAM-shaped transaction through its v3 JSON gateway and through gRPC, side by side in one run.

Each transaction is what a dual-stack ADD through the agent sends: two compares on mod_revision and two puts of a
block-sized value (SIZE bytes), plus a small put (the handle). For each transport it runs N sequential transactions
against a fresh single-member etcd with its data under /tmp, with no watch open, with a watch on every key, and with
a watch on a range that leaves the written keys out (the agent's watch), and reports transactions per second and
etcd's CPU time per transaction (from /proc/<pid>/stat).

Usage: Benchmarks/etcd-gateway.py [SIZE] [N]     (needs etcd-server and Python's grpcio: pip install grpcio)
gRPC messages are encoded by hand below (etcd's rpc.proto field numbers), so no generated code is needed.
"""
import base64, http.client, json, os, socket, subprocess, sys, tempfile, threading, time

import grpc


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(number, wire_type, payload):
    key = varint((number << 3) | wire_type)
    return key + varint(payload) if wire_type == 0 else key + varint(len(payload)) + payload


def parse_varint(data, i):
    n = shift = 0
    while True:
        c = data[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def fields(data):
    i = 0
    while i < len(data):
        key, i = parse_varint(data, i)
        if key & 7 == 0:
            value, i = parse_varint(data, i)
        else:
            length, i = parse_varint(data, i)
            value, i = data[i : i + length], i + length
        yield key >> 3, value


def compare_mod_revision(key, revision):  # Compare{target=MOD(2), key, mod_revision}
    return field(2, 0, 2) + field(3, 2, key) + field(6, 0, revision)


def put(key, value):  # PutRequest{key, value}
    return field(1, 2, key) + field(2, 2, value)


def txn(compares, puts):  # TxnRequest{compare, success=[RequestOp{request_put}]}
    return b"".join(field(1, 2, c) for c in compares) + b"".join(field(2, 2, field(2, 2, p)) for p in puts)


def grpc_txn_revision(reply):  # TxnResponse.header.revision, and whether it succeeded
    revision, succeeded = None, False
    for number, value in fields(reply):
        if number == 1:
            revision = dict(fields(value)).get(3)
        if number == 2:
            succeeded = bool(value)
    return revision, succeeded


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    stat = open(f"/proc/{pid}/stat").read().split(")")[1].split()
    return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


def b64(data):
    return base64.b64encode(data).decode()


def run(transport, watch, size, n):
    work = tempfile.mkdtemp(prefix="tandem-gw-bench-", dir="/tmp")
    client, peer = free_port(), free_port()
    etcd = subprocess.Popen(
        ["etcd", "--name", "b", "--data-dir", work + "/data",
         "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"b=http://127.0.0.1:{peer}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    channel = None
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", client), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.5)
        channel = grpc.insecure_channel(f"127.0.0.1:{client}")
        call = channel.unary_unary("/etcdserverpb.KV/Txn")
        keys = [b"/calico/ipam/v2/assignment/ipv4/block/a", b"/calico/ipam/v2/assignment/ipv6/block/b"]
        # The watched range: everything, or from the affinities to the resources (the agent's), which the
        # written keys (assignment/, handle/) sort before.
        start, end = (b"/calico/", b"/calico0") if watch == "all" else (b"/calico/ipam/v2/host/", b"/calico/resources0")
        if watch != "none" and transport == "grpc":
            stream = channel.stream_stream("/etcdserverpb.Watch/Watch")

            def requests():
                yield field(1, 2, field(1, 2, start) + field(2, 2, end))  # WatchRequest{create_request}
                while True:
                    time.sleep(3600)

            def consume():
                try:
                    for _ in stream(requests()):
                        pass
                except Exception:
                    pass

            threading.Thread(target=consume, daemon=True).start()
        if watch != "none" and transport == "gateway":

            def consume():
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", client)
                    conn.request("POST", "/v3/watch", json.dumps({"create_request": {"key": b64(start), "range_end": b64(end)}}))
                    reply = conn.getresponse()
                    while reply.read(65536):
                        pass
                except Exception:
                    pass

            threading.Thread(target=consume, daemon=True).start()
        time.sleep(0.3)
        value = b'{"blob":"' + b"x" * size + b'"}'
        revision, _ = grpc_txn_revision(call(txn([], [put(k, value) for k in keys])))
        conn = http.client.HTTPConnection("127.0.0.1", client)
        before, started = cpu_seconds(etcd.pid), time.time()
        for i in range(n):
            handle = b"/calico/ipam/v2/handle/h%d" % i
            puts = [put(k, value) for k in keys] + [put(handle, b'{"block":{}}')]
            if transport == "grpc":
                revision, succeeded = grpc_txn_revision(call(txn([compare_mod_revision(k, revision) for k in keys], puts)))
            else:
                body = {
                    "compare": [{"target": "MOD", "key": b64(k), "mod_revision": str(revision)} for k in keys],
                    "success": [{"request_put": {"key": b64(k), "value": b64(value)}} for k in keys]
                    + [{"request_put": {"key": b64(handle), "value": b64(b'{"block":{}}')}}],
                }
                conn.request("POST", "/v3/kv/txn", json.dumps(body))
                reply = json.loads(conn.getresponse().read())
                succeeded, revision = reply.get("succeeded", False), int(reply["header"]["revision"])
            assert succeeded
        elapsed, used = time.time() - started, cpu_seconds(etcd.pid) - before
        return n / elapsed, used * 1000 / n
    finally:
        if channel:
            channel.close()
        etcd.kill()
        etcd.wait()
        subprocess.run(["rm", "-rf", work])


def main():
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    print(f"{n} sequential transactions, 2 compares + 2 puts of {size} bytes + 1 small put each")
    print(f"{'transport':10} {'watch':28} {'txn/s':>8} {'etcd CPU ms/txn':>16}")
    for watch, label in [("none", "none"), ("all", "every key"), ("range", "range without the written keys")]:
        for transport in ["gateway", "grpc"]:
            rate, cpu = run(transport, watch, size, n)
            print(f"{transport:10} {label:28} {rate:8.0f} {cpu:16.2f}")


if __name__ == "__main__":
    main()
