import Foundation
import TandemCalculation
import TandemCore
import TandemDataplane
import TandemLinux
import TandemModel
import TandemPolicy
import TandemStore

/// `services` dual-stack Services (RequireDualStack, one TCP port), each selecting `perService` dual-stack
/// WorkloadEndpoints on other nodes, fed to the agent's cluster cache as watch events and loaded by the
/// ServiceManager into a namespace of the run's own; then `changes` endpoint changes one after another (a pod of
/// some Service replaced by one with other addresses), each through what `tandem-node` runs: the cache, the Service
/// plans, the manager loading the difference. Side by side in the same namespace: the whole table rendered and
/// replaced, as a full reload would.
func serviceChangeBenchmark(services: Int, perService: Int, changes: Int) throws {
    var cache = ClusterCache(nodeName: "bench-node")
    var revision: Int64 = 1
    func feed(_ resource: any AnyResource) {
        revision += 1
        cache.apply(
            WatchEvent(
                kind: .put,
                keyValue: KeyValue(
                    key: resource.key, value: Array(resource.json.jsonText(pretty: false).utf8),
                    createRevision: revision, modRevision: revision, version: 1)))
    }
    func endpoint(service: Int, index: Int, generation: Int) throws -> WorkloadEndpoint {
        let ordinal = UInt128(service * perService + index) + UInt128(generation) * 1_000_000
        var spec = WorkloadEndpointSpec()
        spec.orchestrator = "k8s"
        spec.node = "node\(index % 50)"
        spec.pod = "svc\(service)-pod\(index)"
        spec.endpoint = "eth0"
        spec.interfaceName = "cali\(service)x\(index)"
        spec.ipNetworks = [
            "\(IPAddress(family: .v4, integer: try IPAddress("10.128.0.0").integer + ordinal))/32",
            "\(IPAddress(family: .v6, integer: try IPAddress("fd00:128::").integer + ordinal))/128",
        ]
        return WorkloadEndpoint(
            metadata: ObjectMeta(
                name: "node-k8s-svc\(service)--pod\(index)-eth0", namespace: "default",
                labels: ["app": "svc\(service)", "projectcalico.org/namespace": "default"]),
            spec: spec)
    }
    var started = ContinuousClock.now
    for service in 0..<services {
        var spec = ServiceSpec()
        spec.ipFamilyPolicy = "RequireDualStack"
        spec.ipFamilies = ["IPv4", "IPv6"]
        let v4 = IPAddress(family: .v4, integer: try IPAddress("10.96.0.0").integer + UInt128(service + 10))
        let v6 = IPAddress(family: .v6, integer: try IPAddress("fd00:96::").integer + UInt128(service + 10))
        spec.clusterIP = "\(v4)"
        spec.clusterIPs = ["\(v4)", "\(v6)"]
        spec.selector = ["app": "svc\(service)"]
        spec.ports = [ServicePort(name: "http", protocol: "TCP", port: 80, targetPort: .int(8080))]
        feed(KubernetesService(metadata: ObjectMeta(name: "svc\(service)", namespace: "default"), spec: spec))
        for index in 0..<perService { feed(try endpoint(service: service, index: index, generation: 0)) }
    }
    let fed = milliseconds(ContinuousClock.now - started)
    let namespace = "tbs-\(getpid())"
    try? NetworkNamespace.delete(named: namespace)
    let path = try NetworkNamespace.create(named: namespace)
    defer { try? NetworkNamespace.delete(named: namespace) }
    try NetworkNamespace.run(in: path) {
        let system = SystemPolicyTools(stateDirectory: "/tmp", library: true)
        print("nftables through \(system.library == nil ? "the nft program" : "libnftables, in process")")
        let tools = TimedPolicyTools(system)
        let manager = ServiceManager(nodeName: "bench-node", tools: tools)
        let pools: [IPFamily: [CIDR]] = [.v4: ["10.128.0.0/12"], .v6: ["fd00:128::/64"]]
        started = ContinuousClock.now
        manager.setDesired(cache.servicePlans, clusterCIDRs: pools)
        _ = try manager.apply(resync: true)
        let figures = manager.figures()
        if let dump = ProcessInfo.processInfo.environment["TANDEM_BENCH_DUMP"] {
            try (manager.lastLoaded ?? "").write(toFile: dump, atomically: true, encoding: .utf8)
        }
        print(
            String(
                format:
                    "%d Services x %d endpoints, dual-stack: decoded into the cache in %.0f ms; first load %.0f ms (%d chains, %d map elements)",
                services, perService, fed, milliseconds(ContinuousClock.now - started), figures.chains,
                figures.elements))
        var compute: [Double] = []
        var load: [Double] = []
        var total: [Double] = []
        tools.nftMilliseconds = []
        for change in 0..<changes {
            let service = (change * 37) % services
            let index = change % perService
            let replaced = try endpoint(service: service, index: index, generation: change + 1)
            started = ContinuousClock.now
            feed(replaced)
            let plans = cache.servicePlans
            let computed = ContinuousClock.now
            manager.setDesired(plans, clusterCIDRs: pools)
            let report = try manager.apply(resync: false)
            let done = ContinuousClock.now
            precondition(!report.changes.isEmpty, "the change reached the kernel")
            compute.append(milliseconds(computed - started))
            load.append(milliseconds(done - computed))
            total.append(milliseconds(done - started))
        }
        print(
            String(
                format: "of the load, nftables' own transaction: p50 %.1f p99 %.1f ms",
                percentile(tools.nftMilliseconds, 0.5), percentile(tools.nftMilliseconds, 0.99)))
        started = ContinuousClock.now
        let resync = try manager.apply(resync: true)
        let resyncTime = milliseconds(ContinuousClock.now - started)
        precondition(resync.changes.isEmpty, "converged after the changes: \(resync.changes.prefix(5))")
        print(
            String(
                format:
                    "one endpoint change, %d changes: compute p50 %.1f p99 %.1f ms; load p50 %.1f p99 %.1f ms; total p50 %.1f p99 %.1f ms",
                changes, percentile(compute, 0.5), percentile(compute, 0.99), percentile(load, 0.5),
                percentile(load, 0.99), percentile(total, 0.5), percentile(total, 0.99)))
        print(String(format: "resync of the converged table (nft list + compare): %.1f ms", resyncTime))
        // A full reload, in the same namespace: the whole table rendered and loaded by a fresh manager.
        var whole: [Double] = []
        for _ in 0..<3 {
            let fresh = ServiceManager(nodeName: "bench-node", tools: tools, table: "tandem-services-whole")
            started = ContinuousClock.now
            fresh.setDesired(cache.servicePlans, clusterCIDRs: pools)
            _ = try fresh.apply(resync: true)
            whole.append(milliseconds(ContinuousClock.now - started))
            _ = try ChildProcess.run("/usr/sbin/nft", ["delete", "table", "inet", "tandem-services-whole"])
        }
        print(String(format: "whole table computed and loaded (a full reload): p50 %.0f ms", percentile(whole, 0.5)))
    }
}

/// Policy tools that time every nftables load, so a change's cost splits into Tandem's work and nft's.
final class TimedPolicyTools: PolicyTools, @unchecked Sendable {
    let inner: SystemPolicyTools
    var nftMilliseconds: [Double] = []
    init(_ inner: SystemPolicyTools) { self.inner = inner }
    func listNftTable(_ table: String) throws -> String? { try inner.listNftTable(table) }
    func loadNft(_ text: String) throws {
        let started = ContinuousClock.now
        try inner.loadNft(text)
        nftMilliseconds.append(milliseconds(ContinuousClock.now - started))
    }
    func saveIptables(_ family: IPFamily, table: String) throws -> String {
        try inner.saveIptables(family, table: table)
    }
    func restoreIptables(_ family: IPFamily, _ text: String) throws { try inner.restoreIptables(family, text) }
    var hasIpset: Bool { inner.hasIpset }
    func saveIpsets() throws -> String { try inner.saveIpsets() }
    func restoreIpsets(_ text: String) throws { try inner.restoreIpsets(text) }
}
