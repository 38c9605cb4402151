import Foundation
import TandemCalculation
import TandemCore
import TandemDataplane
import TandemLinux
import TandemPolicy
import TandemTestSupport
import Testing

/// Plans of one dual-stack Service (`web`, port 8080 to 80, NodePort 30080) over `count` pods `10.244.N.2` /
/// `fd00:244:N::2`, and of a SingleStack IPv4 one (`v4only`, NodePort 30081) over the first pod.
func webPlans(
    pods count: Int, ready4: Set<Int>? = nil, ready6: Set<Int>? = nil
) throws -> [ServiceID: [ServicePortPlan]] {
    let web = ServiceID(namespace: "default", name: "web")
    var plans: [ServicePortPlan] = []
    for family in [IPFamily.v6, .v4] {
        let backends = try (0..<count).map { index in
            ServiceBackend(
                address: try IPAddress(family == .v4 ? "10.244.\(index).2" : "fd00:244:\(index)::2"), port: 80,
                node: "node", ready: (family == .v4 ? ready4 : ready6)?.contains(index) ?? true)
        }
        plans.append(
            ServicePortPlan(
                service: web, portName: "", transport: "tcp", family: family, port: 8080, nodePort: 30080,
                clusterIP: try IPAddress(family == .v4 ? "10.96.0.10" : "fd00:96::10"), backends: backends.sorted()))
    }
    let v4only = ServiceID(namespace: "default", name: "v4only")
    let single = ServicePortPlan(
        service: v4only, portName: "", transport: "tcp", family: .v4, port: 8081, nodePort: 30081,
        clusterIP: try IPAddress("10.96.0.11"),
        backends: [ServiceBackend(address: try IPAddress("10.244.0.2"), port: 80, node: "node")])
    return [web: plans, v4only: [single]]
}

let servicePods: [IPFamily: [CIDR]] = [.v4: [CIDR("10.244.0.0/16")], .v6: [CIDR("fd00:244::/48")]]

@Suite struct ServiceManagerTests {
    @Test func loadsOnceThenOnlyWhatChanged() throws {
        let tools = FakePolicyTools()
        let manager = ServiceManager(nodeName: "node", tools: tools)
        #expect(try manager.apply(resync: true) == ManagerReport())
        manager.setDesired(try webPlans(pods: 3), clusterCIDRs: servicePods)
        let created = try manager.apply(resync: false)
        #expect(created.changes.count == 1 && created.changes[0].hasPrefix("table inet tandem-services created"))
        let first = try #require(tools.state.withLock { $0.loads.last })
        #expect(first.hasPrefix("add table inet tandem-services\n"))
        #expect(first.contains("add element inet tandem-services service-ips-v6 { fd00:96::10 . tcp . 8080 : goto"))
        #expect(first.contains("add element inet tandem-services service-nodeports-v4 { tcp . 30080 : goto"))
        // 24 of the Services and the skeleton, and a chain per family marking sources outside the pools.
        #expect(manager.figures() == ServiceManager.Figures(services: 2, chains: 26, elements: 6))
        // Converged: neither read-back nor load.
        #expect(try manager.apply(resync: false) == ManagerReport())
        #expect(tools.state.withLock { ($0.loads.count, $0.lists) } == (1, 1))
        // One IPv6 backend no longer ready: that Service's IPv6 chains only.
        manager.setDesired(try webPlans(pods: 3, ready6: [0, 1]), clusterCIDRs: servicePods)
        let changed = try manager.apply(resync: false)
        let text = try #require(manager.lastLoaded)
        #expect(tools.state.withLock { $0.loads.count } == 2)
        for line in text.split(separator: "\n") {
            #expect(line.contains("-v6-default/web/tcp/8080"), "\(line)")
        }
        #expect(text.contains("delete chain inet tandem-services endpoint-") && text.contains("fd00.244.2..2/80"))
        #expect(changed.changes.count == 2, "\(changed.changes)")
        // Every backend gone: the ClusterIPs and the NodePort move to the rejecting maps.
        manager.setDesired(try webPlans(pods: 3, ready4: [], ready6: []), clusterCIDRs: servicePods)
        _ = try manager.apply(resync: false)
        let emptied = try #require(manager.lastLoaded)
        #expect(
            emptied.contains(
                "add element inet tandem-services no-endpoint-services-v4 { 10.96.0.10 . tcp . 8080 : goto reject-chain }"
            ))
        #expect(
            emptied.contains(
                "add element inet tandem-services no-endpoint-nodeports-v6 { tcp . 30080 : goto reject-chain }"))
        #expect(emptied.contains("delete element inet tandem-services service-ips-v6 { fd00:96::10 . tcp . 8080 }"))
        #expect(!emptied.contains("v4only"))
    }

    @Test func aFlushedTableIsMadeAgainAndAFailureReadsBack() throws {
        let tools = FakePolicyTools()
        let manager = ServiceManager(nodeName: "node", tools: tools)
        manager.setDesired(try webPlans(pods: 2), clusterCIDRs: servicePods)
        _ = try manager.apply(resync: false)
        let loaded = try #require(tools.state.withLock { $0.loads.last })
        // `nft flush ruleset`: the resync finds no table and makes it whole again.
        tools.state.withLock { $0.listing = nil }
        let repaired = try manager.apply(resync: true)
        #expect(repaired.changes.first?.hasPrefix("table inet tandem-services created") == true)
        #expect(tools.state.withLock { $0.loads.last } == loaded)
        // A refused load: the error reaches the runner, and the next apply reads the kernel back first.
        tools.state.withLock { $0.failLoads = 1 }
        manager.setDesired(try webPlans(pods: 1), clusterCIDRs: servicePods)
        #expect(throws: PolicyToolFailure.self) { try manager.apply(resync: false) }
        let lists = tools.state.withLock { $0.lists }
        _ = try manager.apply(resync: false)
        #expect(tools.state.withLock { $0.lists } == lists + 1)
        // The fake still lists no table: the whole table is loaded, with one backend per family.
        let last = try #require(tools.state.withLock { $0.loads.last })
        #expect(last.hasPrefix("add table inet tandem-services\n"))
        #expect(last.contains("goto endpoint-") && !last.contains("numgen random mod 2"))
        #expect(!last.contains("10.244.1.2"))
    }

    /// Drift the fake shows: the kernel's table lacks a chain and a map element and has a chain flushed; the resync
    /// puts those back and nothing else.
    @Test func driftIsRepairedAndNothingElse() throws {
        let tools = FakePolicyTools()
        let manager = ServiceManager(nodeName: "node", tools: tools)
        let plans = try webPlans(pods: 2)
        manager.setDesired(plans, clusterCIDRs: servicePods)
        _ = try manager.apply(resync: false)
        var renderer = ServiceRenderer(nodeName: "node", clusterCIDRs: servicePods)
        var ruleset = renderer.ruleset(plans)
        let v4 = ServicePortNames(plans[ServiceID(namespace: "default", name: "web")]!.first { $0.family == .v4 }!)
        ruleset.chains["nat-output"] = nil
        ruleset.maps["service-nodeports-v6"] = [:]
        ruleset.chains[v4.service]!.rules = []
        tools.state.withLock { $0.listing = printedListing(ruleset) }
        let report = try manager.apply(resync: true)
        #expect(report.changes.count == 3, "\(report.changes)")
        #expect(report.changes.contains("chain nat-output added"))
        #expect(report.changes.contains("chain \(v4.service) replaced"))
        #expect(report.changes.contains("map service-nodeports-v6: +tcp . 30080"))
        let text = try #require(manager.lastLoaded)
        #expect(
            text.contains(
                "add chain inet tandem-services nat-output { type nat hook output priority -100; policy accept; }"))
        #expect(text.contains("flush chain inet tandem-services \(v4.service)"))
        #expect(text.contains("add element inet tandem-services service-nodeports-v6 { tcp . 30080 : goto external-"))
        #expect(!text.contains("chain inet tandem-services endpoint-"))
    }
}

/// A ruleset as `nft list table` prints it (elements wrapped over lines).
func printedListing(_ ruleset: ServiceRuleset) -> String {
    var listing = "table inet tandem-services {\n"
    for (name, elements) in ruleset.maps.sorted(by: { $0.key < $1.key }) {
        listing += "\tmap \(name) {\n\t\ttype \(ServiceRuleset.mapTypes[name]!)\n"
        if !elements.isEmpty {
            listing +=
                "\t\telements = { "
                + elements.sorted(by: { $0.key < $1.key }).map { "\($0.key) : \($0.value)" }
                .joined(separator: ",\n\t\t\t     ") + " }\n"
        }
        listing += "\t}\n\n"
    }
    for (name, chain) in ruleset.chains.sorted(by: { $0.key < $1.key }) {
        listing += "\tchain \(name) {\n"
        if let header = chain.header { listing += "\t\t\(header)\n" }
        for rule in chain.rules { listing += "\t\t\(rule)\n" }
        listing += "\t}\n"
    }
    return listing + "}\n"
}
