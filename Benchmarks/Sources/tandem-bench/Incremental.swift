import Foundation
import Glibc
import TandemCalculation
import TandemCore
import TandemDataplane
import TandemLinux
import TandemModel
import TandemPolicy
import TandemStore

/// The benchmark cluster of `policyBenchmark`: `endpoints` dual-stack endpoints (`local` of them on this node), each
/// with one of 100 apps and 50 roles; `policies` NetworkPolicies, each selecting one app and allowing TCP to one port
/// from one role and everything from a pair of nets.
func benchCluster(policies: Int, endpoints: Int, local: Int) throws -> ([PolicyEndpoint], [NetworkPolicy]) {
    var all: [PolicyEndpoint] = []
    for index in 0..<endpoints {
        let v4 = IPAddress(family: .v4, integer: try IPAddress("10.200.0.0").integer + UInt128(index))
        let v6 = IPAddress(family: .v6, integer: try IPAddress("fd00:200::").integer + UInt128(index))
        all.append(
            PolicyEndpoint(
                name: "ep\(index)", namespace: "default",
                labels: ["app": "app\(index % 100)", "role": "role\(index % 50)"],
                interfaceName: index < local ? "calibench\(index)" : nil, addresses: [v4, v6]))
    }
    return (all, (0..<policies).map { benchPolicy($0, port: 8000 + $0 % 1000) })
}

func benchPolicy(_ index: Int, port: Int) -> NetworkPolicy {
    var allowRole = Rule()
    allowRole.action = "Allow"
    allowRole.protocol = .name("TCP")
    allowRole.source = EntityRule()
    allowRole.source?.selector = "role == 'role\(index % 50)'"
    allowRole.destination = EntityRule()
    allowRole.destination?.ports = [.number(port)]
    var allowNets = Rule()
    allowNets.action = "Allow"
    allowNets.source = EntityRule()
    allowNets.source?.nets = ["192.0.\(index % 256).0/24", "2001:db8:\(String(index, radix: 16))::/48"]
    var spec = NetworkPolicySpec()
    spec.selector = "app == 'app\(index % 100)'"
    spec.order = Double(index)
    spec.ingress = [allowRole, allowNets]
    spec.types = ["Ingress"]
    return NetworkPolicy(metadata: ObjectMeta(name: "p\(index)", namespace: "default"), spec: spec)
}

func milliseconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}

func percentile(_ values: [Double], _ fraction: Double) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return 0 }
    return sorted[min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.up)) - 1)]
}

/// One policy changed at a time on a node enforcing `policies` policies over `endpoints` endpoints (`local` on the
/// node), through the agent's path: the incremental calculator, the nftables manager computing the difference
/// against what it loaded, one `nft -f` of that difference into a namespace of its own. Side by side in the same
/// run, the way before: the whole computation, the whole table rendered and replaced (`delete table` + the table).
func policyChangeBenchmark(policies: Int, endpoints: Int, local: Int, changes: Int) throws {
    let (all, networkPolicies) = try benchCluster(policies: policies, endpoints: endpoints, local: local)
    let namespace = "tbc-\(getpid())"
    try? NetworkNamespace.delete(named: namespace)
    let path = try NetworkNamespace.create(named: namespace)
    defer { try? NetworkNamespace.delete(named: namespace) }
    try NetworkNamespace.run(in: path) {
        var calculator = PolicyCalculator()
        for (index, endpoint) in all.enumerated() { calculator.updateEndpoint(key: "ep\(index)", endpoint) }
        for (index, policy) in networkPolicies.enumerated() { calculator.updateNetworkPolicy(key: "p\(index)", policy) }
        // TANDEM_BENCH_NFT_PROGRAM=1: the `nft` program (a process per transaction) instead of libnftables.
        let program = ProcessInfo.processInfo.environment["TANDEM_BENCH_NFT_PROGRAM"] == "1"
        let tools = SystemPolicyTools(stateDirectory: "/tmp", library: !program)
        print("nftables through \(tools.library == nil ? "the nft program" : "libnftables, in process")")
        let manager = PolicyManager(backend: .nftables, tools: tools)
        var started = ContinuousClock.now
        manager.setDesired(calculator.plan())
        _ = try manager.apply(resync: true)
        print(
            "\(policies) policies, \(endpoints) endpoints (\(local) on this node): first load "
                + String(format: "%.0f ms", milliseconds(ContinuousClock.now - started)))
        var compute: [Double] = []
        var load: [Double] = []
        var total: [Double] = []
        for change in 0..<changes {
            // Policy k gets another port: its chain alone changes.
            let index = (change * 37) % policies
            started = ContinuousClock.now
            calculator.updateNetworkPolicy(key: "p\(index)", benchPolicy(index, port: 20000 + change))
            let plan = calculator.plan()
            let computed = ContinuousClock.now
            manager.setDesired(plan)
            let report = try manager.apply(resync: false)
            let done = ContinuousClock.now
            precondition(!report.changes.isEmpty, "the change reached the kernel")
            compute.append(milliseconds(computed - started))
            load.append(milliseconds(done - computed))
            total.append(milliseconds(done - started))
        }
        if let dump = ProcessInfo.processInfo.environment["TANDEM_BENCH_DUMP"] {
            let listing = try ChildProcess.run("/usr/sbin/nft", ["list", "table", "inet", "tandem"])
            try listing.stdoutText.write(toFile: dump + ".table", atomically: true, encoding: .utf8)
            try (manager.lastLoaded ?? "").write(toFile: dump + ".change", atomically: true, encoding: .utf8)
        }
        // Converged: a resync reads the table back and finds nothing to do.
        started = ContinuousClock.now
        let resync = try manager.apply(resync: true)
        let resyncTime = milliseconds(ContinuousClock.now - started)
        precondition(resync.changes.isEmpty, "converged after the changes: \(resync.changes.prefix(5))")

        // The way before, in the same namespace and run: everything computed, the whole table replaced.
        var wholeCompute: [Double] = []
        var wholeLoad: [Double] = []
        let localEndpoints = all.filter { $0.interfaceName != nil }
        var current = networkPolicies
        for change in 0..<min(changes, 10) {
            let index = (change * 37) % policies
            current[index] = benchPolicy(index, port: 30000 + change)
            started = ContinuousClock.now
            let plan = computePolicy(
                PolicyInput(networkPolicies: current, endpoints: all), local: localEndpoints)
            let text =
                "table inet tandemwhole\ndelete table inet tandemwhole\n" + renderNftables(plan, table: "tandemwhole")
            let computed = ContinuousClock.now
            let result = try ChildProcess.run("/usr/sbin/nft", ["-f", "-"], stdin: Array(text.utf8))
            precondition(result.status == 0, result.stderrText)
            wholeCompute.append(milliseconds(computed - started))
            wholeLoad.append(milliseconds(ContinuousClock.now - computed))
        }
        print(
            String(
                format:
                    "incremental, %d changes: compute p50 %.1f p99 %.1f ms; load p50 %.1f p99 %.1f ms; total p50 %.1f p99 %.1f ms",
                changes, percentile(compute, 0.5), percentile(compute, 0.99), percentile(load, 0.5),
                percentile(load, 0.99), percentile(total, 0.5), percentile(total, 0.99)))
        print(String(format: "resync of the converged table (nft list + compare): %.1f ms", resyncTime))
        print(
            String(
                format: "whole table, %d changes: compute p50 %.1f ms, load p50 %.1f ms, total p50 %.1f ms",
                wholeCompute.count, percentile(wholeCompute, 0.5), percentile(wholeLoad, 0.5),
                percentile(zip(wholeCompute, wholeLoad).map(+), 0.5)))
    }
}

/// The agent's calculation work for one endpoint change, with `endpoints` endpoints in the cluster (100 on this
/// node) and `policies` policies: a remote endpoint's labels change (it joins another role's selector), decoded by
/// the cluster cache, policy recomputed, desired routes and the nftables ruleset rendered. Process CPU time per
/// change (CLOCK_PROCESS_CPUTIME_ID), median of `changes`.
func endpointChangeBenchmark(endpointCounts: [Int], policies: Int, changes: Int) throws {
    var results: [(Int, Double, Double)] = []
    for endpoints in endpointCounts {
        var cache = ClusterCache(nodeName: "bench")
        var revision: Int64 = 0
        func keyValue(_ resource: some AnyResource & Encodable, key: String) -> KeyValue {
            revision += 1
            return KeyValue(
                key: key, value: Array(ValueEncoder.encode(resource).jsonText(pretty: false).utf8),
                createRevision: revision, modRevision: revision, version: 1)
        }
        func endpoint(_ index: Int, role: Int) -> WorkloadEndpoint {
            var spec = WorkloadEndpointSpec()
            spec.node = index < 100 ? "bench" : "other\(index % 50)"
            spec.interfaceName = "calibench\(index)"
            let v4 = IPAddress(family: .v4, integer: (try! IPAddress("10.200.0.0")).integer + UInt128(index))
            let v6 = IPAddress(family: .v6, integer: (try! IPAddress("fd00:200::")).integer + UInt128(index))
            spec.ipNetworks = ["\(v4)/32", "\(v6)/128"]
            return WorkloadEndpoint(
                metadata: ObjectMeta(
                    name: "ep\(index)", namespace: "default",
                    labels: [
                        "app": "app\(index % 100)", "role": "role\(role)", "projectcalico.org/namespace": "default",
                    ]),
                spec: spec)
        }
        var items: [KeyValue] = []
        for index in 0..<endpoints {
            items.append(
                keyValue(
                    endpoint(index, role: index % 50),
                    key: ResourceKind.workloadEndpoint.key(name: "ep\(index)", namespace: "default")))
        }
        for index in 0..<policies {
            items.append(
                keyValue(
                    benchPolicy(index, port: 8000 + index % 1000),
                    key: ResourceKind.networkPolicy.key(name: "p\(index)", namespace: "default")))
        }
        cache.replaceAll(items, revision: revision)
        var renderer = NftRenderer()
        _ = renderer.ruleset(cache.policy.plan())
        _ = cache.desiredRoutes
        var times: [Double] = []
        var compiled: [Int] = []
        for change in 0..<changes {
            let index = 100 + (change * 7919) % (endpoints - 100)
            let event = WatchEvent(
                kind: .put,
                keyValue: keyValue(
                    endpoint(index, role: (index + change + 1) % 50),
                    key: ResourceKind.workloadEndpoint.key(name: "ep\(index)", namespace: "default")))
            let before = processCPUTime()
            let changed = cache.apply(event)
            if changed.contains(.policy) { _ = renderer.ruleset(cache.policy.plan()) }
            if changed.contains(.routes) { _ = cache.desiredRoutes }
            times.append(processCPUTime() - before)
            compiled.append(cache.policy.lastCompiled)
        }
        let median = percentile(times, 0.5)
        results.append((endpoints, median, percentile(compiled.map(Double.init), 0.5)))
        print(
            String(
                format:
                    "%6d endpoints, %d policies: CPU per remote endpoint change p50 %.2f ms, p99 %.2f ms (policies compiled p50 %.0f)",
                endpoints, policies, median, percentile(times, 0.99), percentile(compiled.map(Double.init), 0.5)))
    }
    if results.count == 2 {
        print(String(format: "ratio %d / %d endpoints: %.2f", results[1].0, results[0].0, results[1].1 / results[0].1))
    }
}

func processCPUTime() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now)
    return Double(now.tv_sec) * 1000 + Double(now.tv_nsec) / 1e6
}
