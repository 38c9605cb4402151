import Foundation
import Glibc
import TandemBGP
import TandemCalculation
import TandemCore
import TandemLinux
import TandemModel
import TandemPolicy
import TandemStore

/// The agent's calculation layer at cluster scale, simulated from the datastore without namespaces: `nodes` nodes
/// (dual-stack addresses, a confirmed block per family each, full BGP mesh), `endpoints` dual-stack
/// WorkloadEndpoints spread over them (100 on this node), `policies` NetworkPolicies. Measured: the cache filled
/// from one list (time, resident memory), one remote endpoint change (CPU per change, what the agent computes: the
/// policy plan, the ruleset, the routes), one node change (BIRD's configuration rendered, the VXLAN plan, NAT),
/// and BIRD's configuration for the whole mesh checked by `bird -p`.
func scaleBenchmark(nodes: Int, endpoints: Int, policies: Int, changes: Int) throws {
    var cache = ClusterCache(nodeName: "node0")
    var revision: Int64 = 0
    func keyValue(_ key: String, _ text: String) -> KeyValue {
        revision += 1
        return KeyValue(key: key, value: Array(text.utf8), createRevision: revision, modRevision: revision, version: 1)
    }
    func encoded(_ resource: some AnyResource & Encodable) -> String {
        ValueEncoder.encode(resource).jsonText(pretty: false)
    }
    func node(_ index: Int, generation: Int = 0) -> Node {
        var spec = NodeSpec()
        var bgp = NodeBGPSpec()
        bgp.ipv4Address = "10.\(64 + index / 65536).\(index / 256 % 256).\(index % 256)/16"
        bgp.ipv6Address = "fd99::\(String(index, radix: 16)):\(generation)/64"
        spec.bgp = bgp
        return Node(metadata: ObjectMeta(name: "node\(index)"), spec: spec)
    }
    func endpoint(_ index: Int, role: Int) -> WorkloadEndpoint {
        var spec = WorkloadEndpointSpec()
        spec.node = index < 100 ? "node0" : "node\(index % nodes)"
        spec.interfaceName = "calibench\(index)"
        let v4 = IPAddress(family: .v4, integer: (try! IPAddress("10.128.0.0")).integer + UInt128(index))
        let v6 = IPAddress(family: .v6, integer: (try! IPAddress("fd00:128::")).integer + UInt128(index))
        spec.ipNetworks = ["\(v4)/32", "\(v6)/128"]
        return WorkloadEndpoint(
            metadata: ObjectMeta(
                name: "ep\(index)", namespace: "default",
                labels: ["app": "app\(index % 100)", "role": "role\(role)", "projectcalico.org/namespace": "default"]),
            spec: spec)
    }
    var items: [KeyValue] = []
    for (name, cidr) in [("v4", "10.128.0.0/12"), ("v6", "fd00:128::/64")] {
        var pool = IPPoolSpec()
        pool.cidr = cidr
        items.append(
            keyValue(ResourceKind.ipPool.key(name: name), encoded(IPPool(metadata: ObjectMeta(name: name), spec: pool)))
        )
    }
    for index in 0..<nodes {
        items.append(keyValue(ResourceKind.node.key(name: "node\(index)"), encoded(node(index))))
        let block4 = "10-\(128 + index / 1024 % 16)-\(index / 4 % 256)-\(index % 4 * 64)-26"
        let block6 = "fd00-128--\(String(index, radix: 16))-0-122"
        for (family, block) in [("ipv4", block4), ("ipv6", block6)] {
            items.append(
                keyValue("/calico/ipam/v2/host/node\(index)/\(family)/block/\(block)", "{\"state\":\"confirmed\"}"))
        }
    }
    for index in 0..<endpoints {
        items.append(
            keyValue(
                ResourceKind.workloadEndpoint.key(name: "ep\(index)", namespace: "default"),
                encoded(endpoint(index, role: index % 50))))
    }
    for index in 0..<policies {
        items.append(
            keyValue(
                ResourceKind.networkPolicy.key(name: "p\(index)", namespace: "default"),
                encoded(benchPolicy(index, port: 8000 + index % 1000))))
    }
    let memoryBefore = residentMegabytes()
    var started = ContinuousClock.now
    cache.replaceAll(items, revision: revision)
    var renderer = NftRenderer()
    _ = renderer.ruleset(cache.policy.plan())
    _ = cache.desiredRoutes
    let filled = milliseconds(ContinuousClock.now - started)
    items = []
    let memory = residentMegabytes() - memoryBefore
    print(
        String(
            format:
                "%d nodes, %d dual-stack endpoints, %d policies: cache filled and first plans computed in %.0f ms; resident memory +%.0f MiB",
            nodes, endpoints, policies, filled, memory))
    // One remote endpoint changes role: the policies whose selectors it leaves or joins.
    var endpointTimes: [Double] = []
    for change in 0..<changes {
        let index = 100 + (change * 7919) % (endpoints - 100)
        let event = WatchEvent(
            kind: .put,
            keyValue: keyValue(
                ResourceKind.workloadEndpoint.key(name: "ep\(index)", namespace: "default"),
                encoded(endpoint(index, role: (index + change + 1) % 50))))
        let before = processCPUTime()
        let changed = cache.apply(event)
        if changed.contains(.policy) { _ = renderer.ruleset(cache.policy.plan()) }
        if changed.contains(.routes) { _ = cache.desiredRoutes }
        endpointTimes.append(processCPUTime() - before)
    }
    print(
        String(
            format: "one remote endpoint change (CPU): p50 %.2f ms, p99 %.2f ms", percentile(endpointTimes, 0.5),
            percentile(endpointTimes, 0.99)))
    // One node's IPv6 address changes: BIRD's configuration, the overlay and NAT are computed again.
    var nodeTimes: [Double] = []
    var birdTimes: [Double] = []
    var config = ""
    for change in 0..<min(changes, 20) {
        let index = 1 + change % (nodes - 1)
        let event = WatchEvent(
            kind: .put,
            keyValue: keyValue(
                ResourceKind.node.key(name: "node\(index)"), encoded(node(index, generation: change + 1))))
        let before = processCPUTime()
        let changed = cache.apply(event)
        if changed.contains(.bgp) {
            let birdStart = processCPUTime()
            config = try renderBirdConfig(cache.birdInput(routerID: try IPv4Address("10.64.0.0"), logFile: nil))
            birdTimes.append(processCPUTime() - birdStart)
        }
        if changed.contains(.overlay) { _ = cache.vxlanPlan }
        if changed.contains(.nat) { _ = cache.natPlan }
        nodeTimes.append(processCPUTime() - before)
    }
    print(
        String(
            format:
                "one node change (CPU, BIRD's configuration, the VXLAN plan and NAT computed again): p50 %.1f ms, p99 %.1f ms; of which BIRD's configuration: p50 %.1f ms (%d bytes, %d BGP sessions)",
            percentile(nodeTimes, 0.5), percentile(nodeTimes, 0.99), percentile(birdTimes, 0.5), config.utf8.count,
            config.components(separatedBy: "\nprotocol bgp ").count - 1))
    let file = "/tmp/tandem-bench-bird-\(getpid()).conf"
    try config.write(toFile: file, atomically: true, encoding: .utf8)
    defer { unlink(file) }
    started = ContinuousClock.now
    let parsed = try ChildProcess.run("/usr/sbin/bird", ["-p", "-c", file])
    print(
        String(
            format: "bird -p of that configuration: %@ in %.0f ms", parsed.status == 0 ? "valid" : "INVALID",
            milliseconds(ContinuousClock.now - started)))
}

/// This process's resident memory (VmRSS), in MiB.
func residentMegabytes() -> Double {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") })
    else { return 0 }
    return (Double(line.split(separator: " ").dropFirst().first ?? "0") ?? 0) / 1024
}
