#!/usr/bin/env python3
"""A small CRI client: the few RuntimeService calls the runtime tests make, over containerd's gRPC socket.

Usage: cri.py SOCKET < requests.json > results.json

The input is a JSON list of calls, run in order; the output a JSON list with one result per call, or
{"error": "..."} for a call that failed (later calls still run):
  {"call": "version"}
  {"call": "run", "name": N, "uid": U, "namespace": NS, "runtime_handler": R, "ports": [{"container_port": P,
   "host_port": H, "protocol": "TCP"|"UDP", "host_ip": ""}]}  -> {"id": ID}
  {"call": "status", "id": ID}                            -> {"state", "ip", "additional_ips", "info"}
  {"call": "stop", "id": ID} / {"call": "remove", "id": ID} -> {}
  {"call": "list"}                                        -> {"ids": [...]}

Messages are encoded and decoded by hand (grpcio carries the bytes): only the fields used here, numbered as in the
CRI API's runtime/v1/api.proto (package runtime.v1).
"""
import json
import sys

import grpc


# Protocol buffers wire format: a key is (field number << 3) | wire type; 0 varint, 2 length-delimited.
def varint(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field_varint(number, value):
    return varint(number << 3) + varint(value) if value else b""


def field_bytes(number, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def decode(data):
    """A message's fields: {number: [int or bytes, ...]} (fixed-width fields skipped)."""
    fields, i = {}, 0

    def read_varint():
        nonlocal i
        value, shift = 0, 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = read_varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = read_varint()
        elif wire == 2:
            length = read_varint()
            value, i = data[i:i + length], i + length
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
            continue
        else:
            raise ValueError(f"wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def text(fields, number):
    return fields.get(number, [b""])[0].decode()


PROTOCOLS = {"TCP": 0, "UDP": 1, "SCTP": 2}  # enum Protocol


def run_request(call):
    # PodSandboxMetadata: name 1, uid 2, namespace 3, attempt 4.
    metadata = (field_bytes(1, call["name"]) + field_bytes(2, call["uid"]) + field_bytes(3, call["namespace"])
                + field_varint(4, call.get("attempt", 0)))
    # PortMapping: protocol 1, container_port 2, host_port 3, host_ip 4.
    ports = b"".join(
        field_bytes(5, field_varint(1, PROTOCOLS[port.get("protocol", "TCP")])
                    + field_varint(2, port["container_port"]) + field_varint(3, port["host_port"])
                    + (field_bytes(4, port["host_ip"]) if port.get("host_ip") else b""))
        for port in call.get("ports", []))
    # PodSandboxConfig: metadata 1, hostname 2, port_mappings 5. No linux 8: the pod gets a network namespace of its
    # own (NamespaceOption.network POD, the default).
    config = field_bytes(1, metadata) + field_bytes(2, call["name"]) + ports
    # RunPodSandboxRequest: config 1, runtime_handler 2.
    return field_bytes(1, config) + (field_bytes(2, call["runtime_handler"]) if call.get("runtime_handler") else b"")


def status_result(data):
    response = decode(data)  # PodSandboxStatusResponse: status 1, info 2 (map<string, string>)
    status = decode(response.get(1, [b""])[0])  # PodSandboxStatus: id 1, state 3, network 5
    network = decode(status.get(5, [b""])[0])  # PodSandboxNetworkStatus: ip 1, additional_ips 2 (PodIP: ip 1)
    info = {}
    for entry in response.get(2, []):  # a map entry: key 1, value 2
        entry = decode(entry)
        value = text(entry, 2)
        try:
            info[text(entry, 1)] = json.loads(value)
        except ValueError:
            info[text(entry, 1)] = value
    return {
        "id": text(status, 1), "state": ["SANDBOX_READY", "SANDBOX_NOTREADY"][status.get(3, [0])[0]],
        "ip": text(network, 1), "additional_ips": [text(decode(ip), 1) for ip in network.get(2, [])], "info": info,
    }


def main(socket):
    channel = grpc.insecure_channel("unix://" + socket)

    def invoke(method, request):
        # No serializers: grpcio sends and returns the raw bytes.
        return channel.unary_unary("/runtime.v1.RuntimeService/" + method)(request, timeout=120)

    results = []
    for call in json.load(sys.stdin):
        try:
            kind = call["call"]
            if kind == "version":
                response = decode(invoke("Version", field_bytes(1, "v1")))  # VersionRequest: version 1
                # VersionResponse: version 1, runtime_name 2, runtime_version 3, runtime_api_version 4.
                results.append({"runtime_name": text(response, 2), "runtime_version": text(response, 3),
                                "runtime_api_version": text(response, 4)})
            elif kind == "run":
                response = decode(invoke("RunPodSandbox", run_request(call)))  # pod_sandbox_id 1
                results.append({"id": text(response, 1)})
            elif kind == "status":
                # PodSandboxStatusRequest: pod_sandbox_id 1, verbose 2.
                request = field_bytes(1, call["id"]) + field_varint(2, 1)
                results.append(status_result(invoke("PodSandboxStatus", request)))
            elif kind in ("stop", "remove"):
                # StopPodSandboxRequest / RemovePodSandboxRequest: pod_sandbox_id 1.
                invoke("StopPodSandbox" if kind == "stop" else "RemovePodSandbox", field_bytes(1, call["id"]))
                results.append({})
            elif kind == "list":
                # ListPodSandboxResponse: items 1 (PodSandbox: id 1).
                response = decode(invoke("ListPodSandbox", b""))
                results.append({"ids": [text(decode(item), 1) for item in response.get(1, [])]})
            else:
                results.append({"error": f"unknown call {kind}"})
        except grpc.RpcError as error:
            results.append({"error": f"{error.code().name}: {error.details()}"})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
