import Glibc
import Logging
import Synchronization
import TandemCalculation
import TandemCore
import TandemDataplane
import TandemNetlink
import TandemNetlinkCodec
import TandemPolicy
import TandemTestSupport
import Testing

/// The fake kernel keeps the rules the managers rely on, so their unit tests mean something.
@Suite struct FakeKernelTests {
    @Test func routeSlotsReplaceAndErrorsAreTheKernels() throws {
        let kernel = FakeKernel()
        let veth = kernel.addLink(name: "cali1")
        let route = Route(destination: CIDR("10.0.0.1/32"), outputInterface: veth.index, routeProtocol: 80)
        try kernel.addRoute(route, interfaceName: "cali1", replace: false)
        #expect(throws: NetlinkError.self) { try kernel.addRoute(route, interfaceName: "cali1", replace: false) }
        do {
            try kernel.addRoute(route, interfaceName: "cali1", replace: false)
        } catch {
            #expect(error.errno == EEXIST)
        }
        var replaced = route
        replaced.routeProtocol = 4
        try kernel.addRoute(replaced, interfaceName: "cali1", replace: true)
        #expect(kernel.allRoutes.map(\.routeProtocol) == [4])
        // Another table is another slot.
        var other = route
        other.table = 100
        try kernel.addRoute(other, interfaceName: "cali1", replace: false)
        #expect(try kernel.routes(family: .v4, table: RouteTable.main).count == 1)
        #expect(try kernel.routes(family: .v4, table: nil).count == 2)
        // No such interface, and an IPv4 route through a link that is down.
        let missing = Route(destination: CIDR("10.0.0.2/32"), outputInterface: 99)
        do {
            try kernel.addRoute(missing, interfaceName: nil, replace: true)
            Issue.record("a route through a missing interface was accepted")
        } catch { #expect(error.errno == ENODEV) }
        let down = kernel.addLink(name: "cali2", up: false)
        do {
            try kernel.addRoute(
                Route(destination: CIDR("10.0.0.3/32"), outputInterface: down.index), interfaceName: "cali2",
                replace: true)
            Issue.record("an IPv4 route through a down link was accepted")
        } catch { #expect(error.errno == ENETDOWN) }
        try kernel.addRoute(
            Route(destination: CIDR("fd00::3/128"), outputInterface: down.index), interfaceName: "cali2",
            replace: true)
        // Deleting what is not there.
        do {
            try kernel.deleteRoute(Route(destination: CIDR("10.9.9.9/32")), interfaceName: nil)
            Issue.record("deleting a missing route succeeded")
        } catch { #expect(error.errno == ESRCH && error.isNotFound) }
        // A link going down or away takes its routes.
        try kernel.setLink(veth, LinkChange(up: false))
        #expect(kernel.allRoutes.allSatisfy { $0.outputInterface != veth.index })
        try kernel.deleteLink(down)
        #expect(kernel.allRoutes.isEmpty)
    }

    @Test func injectedFailuresHitTheNamedOperationOnly() throws {
        let kernel = FakeKernel()
        kernel.failNext(.listRoutes, errno: EBUSY, times: 2)
        #expect(throws: NetlinkError.self) { _ = try kernel.routes(family: .v4, table: nil) }
        #expect(throws: NetlinkError.self) { _ = try kernel.routes(family: .v6, table: nil) }
        #expect(try kernel.routes(family: .v4, table: nil).isEmpty)
        #expect(try kernel.links().count == 1)
        #expect(kernel.calls(.listRoutes) == 3)
    }
}

/// A pod route and a block blackhole per family, on node n1.
func podRoutes() throws -> [DesiredRoute] {
    [
        DesiredRoute(destination: CIDR("10.244.0.1/32"), interfaceName: "calia"),
        DesiredRoute(destination: CIDR("fd00:244::1/128"), interfaceName: "calia"),
        DesiredRoute(destination: CIDR("10.244.0.0/26"), interfaceName: nil),
        DesiredRoute(destination: CIDR("fd00:244::/122"), interfaceName: nil),
    ]
}

@Suite struct RouteManagerTests {
    @Test func fromEmptyThenConvergedWithoutWrites() throws {
        let kernel = FakeKernel()
        kernel.addLink(name: "calia")
        let manager = RouteManager(kernel: kernel)
        // No desired state yet: nothing is touched (a starting agent must not delete routes it has not read).
        kernel.injectRoute(Route(destination: CIDR("10.244.9.0/26"), routeProtocol: 80, type: RouteType.blackhole))
        #expect(try manager.apply(resync: true) == ManagerReport())
        #expect(kernel.allRoutes.count == 1)
        manager.setDesired(try podRoutes())
        let first = try manager.apply(resync: false)
        #expect(first.changes.count == 5, "\(first.changes)")
        #expect(first.changes.contains("ip route del blackhole 10.244.9.0/26 proto 80"))
        #expect(
            Set(kernel.allRoutes.map(\.destination.description)) == Set(try podRoutes().map(\.destination.description)))
        #expect(kernel.allRoutes.allSatisfy { $0.routeProtocol == 80 })
        kernel.resetCalls()
        #expect(try manager.apply(resync: true) == ManagerReport())
        #expect(kernel.calls(.addRoute) == 0 && kernel.calls(.deleteRoute) == 0)
    }

    @Test func foreignRoutesAreNeverTouched() throws {
        let kernel = FakeKernel()
        let link = kernel.addLink(name: "calia")
        let foreign = [
            Route(destination: CIDR("192.0.2.0/24"), outputInterface: link.index, routeProtocol: 4),
            Route(destination: CIDR("2001:db8::/64"), outputInterface: link.index, routeProtocol: 12),
            // Tandem's protocol in another table is not the workload routes' either.
            Route(destination: CIDR("10.244.9.0/26"), table: 200, routeProtocol: 80, type: RouteType.blackhole),
        ]
        for route in foreign { kernel.injectRoute(route) }
        let manager = RouteManager(kernel: kernel)
        manager.setDesired(try podRoutes())
        _ = try manager.apply(resync: false)
        for route in foreign { #expect(kernel.allRoutes.contains(route)) }
        #expect(kernel.allRoutes.count == foreign.count + 4)
    }

    @Test func driftIsRepairedOnTheNextApply() throws {
        let kernel = FakeKernel()
        kernel.addLink(name: "calia")
        let manager = RouteManager(kernel: kernel)
        manager.setDesired(try podRoutes())
        _ = try manager.apply(resync: false)
        // `ip route del` by hand, and a stray route of Tandem's protocol.
        kernel.removeRoutes { $0.destination.description == "fd00:244::1/128" }
        kernel.injectRoute(Route(destination: CIDR("10.244.7.7/32"), routeProtocol: 80, type: RouteType.blackhole))
        let repair = try manager.apply(resync: true)
        #expect(repair.changes.count == 2, "\(repair.changes)")
        #expect(kernel.allRoutes.contains { $0.destination.description == "fd00:244::1/128" })
        #expect(!kernel.allRoutes.contains { $0.destination.description == "10.244.7.7/32" })
    }

    @Test func oneRefusedRouteDoesNotHoldUpTheOthers() throws {
        let kernel = FakeKernel()
        kernel.addLink(name: "calia")
        let manager = RouteManager(kernel: kernel)
        manager.setDesired(try podRoutes())
        kernel.failNext(.addRoute, errno: EEXIST)
        #expect(throws: DataplaneError.self) { _ = try manager.apply(resync: false) }
        #expect(kernel.allRoutes.count == 3)
        // The retry completes the set.
        let retry = try manager.apply(resync: true)
        #expect(retry.changes.count == 1)
        #expect(kernel.allRoutes.count == 4)
        // A route already gone when deleted (ENOENT, its pod's veth went) is not a failure.
        manager.setDesired([])
        kernel.failNext(.deleteRoute, errno: ENOENT)
        let removed = try manager.apply(resync: false)
        #expect(removed.changes.count == 3)
    }

    @Test func anEndpointWaitsForItsInterface() throws {
        let kernel = FakeKernel()
        let manager = RouteManager(kernel: kernel)
        manager.setDesired(try podRoutes())
        let report = try manager.apply(resync: false)
        #expect(report.waiting.count == 2)
        #expect(report.changes.count == 2)  // the blackholes
        kernel.addLink(name: "calia")
        #expect(try manager.apply(resync: false).changes.count == 2)
    }

    @Test func aFailingListIsAnErrorNotADeletion() throws {
        let kernel = FakeKernel()
        kernel.addLink(name: "calia")
        let manager = RouteManager(kernel: kernel)
        manager.setDesired(try podRoutes())
        _ = try manager.apply(resync: false)
        kernel.failNext(.listRoutes, errno: EBUSY)
        #expect(throws: NetlinkError.self) { _ = try manager.apply(resync: true) }
        #expect(kernel.allRoutes.count == 4)
    }
}

/// Policy tools in memory: what was loaded, a listing the test controls, failures on demand.
final class FakePolicyTools: PolicyTools {
    struct State {
        var listing: String?
        var loads: [String] = []
        var lists = 0
        var failLoads = 0
        var saves: [IPFamily: String] = [:]
        var restores: [String] = []
    }
    let state = Mutex(State())

    func listNftTable(_ table: String) throws -> String? {
        state.withLock {
            $0.lists += 1
            return $0.listing
        }
    }

    func loadNft(_ text: String) throws {
        try state.withLock {
            if $0.failLoads > 0 {
                $0.failLoads -= 1
                throw PolicyToolFailure()
            }
            $0.loads.append(text)
        }
    }

    func saveIptables(_ family: IPFamily, table: String) throws -> String {
        state.withLock { $0.saves[family] ?? "" }
    }

    func restoreIptables(_ family: IPFamily, _ text: String) throws {
        try state.withLock {
            if $0.failLoads > 0 {
                $0.failLoads -= 1
                throw PolicyToolFailure()
            }
            $0.restores.append((family == .v4 ? "v4\n" : "v6\n") + text)
        }
    }
}

struct PolicyToolFailure: Error {}

/// A plan with `count` local endpoints, none under policy.
func openPlan(_ count: Int) -> PolicyPlan {
    var endpoints: [EndpointPolicy] = []
    for index in 0..<count {
        for direction in PolicyDirection.allCases {
            endpoints.append(
                EndpointPolicy(
                    endpoint: "pod\(index)", interfaceName: "cali\(index)", direction: direction, policies: [],
                    profileRules: nil))
        }
    }
    return PolicyPlan(endpoints: endpoints, warnings: [])
}

@Suite struct PolicyManagerTests {
    @Test func loadsTheTableOnceThenOnlyWhatChanged() throws {
        let tools = FakePolicyTools()
        let manager = PolicyManager(backend: .nftables, tools: tools)
        #expect(try manager.apply(resync: false) == ManagerReport())  // no plan yet: nothing read, nothing loaded
        manager.setDesired(openPlan(2))
        _ = try manager.apply(resync: false)
        let first = try #require(tools.state.withLock { $0.loads.last })
        #expect(first.contains("table inet tandem {") && first.contains("chain from-cali1 {"))
        // Converged: nothing loaded, nothing listed.
        #expect(try manager.apply(resync: false) == ManagerReport())
        #expect(tools.state.withLock { ($0.loads.count, $0.lists) } == (1, 1))
        // One more pod: its chains and map elements only.
        manager.setDesired(openPlan(3))
        let report = try manager.apply(resync: false)
        let second = try #require(tools.state.withLock { $0.loads.last })
        #expect(!second.contains("table inet tandem {\n\tmap"))
        #expect(
            second.contains("add chain inet tandem from-cali2") && second.contains("add chain inet tandem to-cali2"))
        #expect(second.contains("add element inet tandem from-endpoint { \"cali2\" : jump from-cali2 }"))
        #expect(!second.contains("cali1"))
        #expect(report.changes.contains("chain from-cali2 added"))
    }

    @Test func aFlushedTableIsRecreatedOnResync() throws {
        let tools = FakePolicyTools()
        let manager = PolicyManager(backend: .nftables, tools: tools)
        manager.setDesired(openPlan(1))
        _ = try manager.apply(resync: false)
        // `nft flush ruleset`: the listing finds no table.
        tools.state.withLock { $0.listing = nil }
        let report = try manager.apply(resync: true)
        #expect(report.changes == ["table inet tandem created"])
        #expect(tools.state.withLock { $0.loads.count } == 2)
    }

    @Test func aRefusedLoadIsRetriedFromTheKernelsState() throws {
        let tools = FakePolicyTools()
        let manager = PolicyManager(backend: .nftables, tools: tools)
        manager.setDesired(openPlan(1))
        tools.state.withLock { $0.failLoads = 1 }
        #expect(throws: PolicyToolFailure.self) { _ = try manager.apply(resync: false) }
        // The next apply reads the kernel back before deciding (it does not trust its belief).
        let lists = tools.state.withLock { $0.lists }
        _ = try manager.apply(resync: false)
        #expect(tools.state.withLock { $0.lists } == lists + 1)
        #expect(tools.state.withLock { $0.loads.count } == 1)
    }

    @Test func iptablesLoadsEachFamilyAndAFailureOfOneKeepsTheOther() throws {
        let tools = FakePolicyTools()
        let manager = PolicyManager(backend: .iptables, tools: tools)
        manager.setDesired(openPlan(1))
        tools.state.withLock { $0.failLoads = 1 }
        #expect(throws: PolicyToolFailure.self) { _ = try manager.apply(resync: false) }
        let restores = tools.state.withLock { $0.restores }
        #expect(restores.count == 1 && restores[0].hasPrefix("v6\n*filter"))
        _ = try manager.apply(resync: false)
        #expect(tools.state.withLock { $0.restores.count } == 2)
        #expect(try manager.apply(resync: false) == ManagerReport())
    }
}

/// A manager whose applies fail until told otherwise.
final class FlakyManager: DataplaneManager {
    let name: String
    let failing: Mutex<Bool>
    let applies = Mutex(0)
    init(name: String, failing: Bool) {
        self.name = name
        self.failing = Mutex(failing)
    }
    func apply(resync: Bool) throws -> ManagerReport {
        applies.withLock { $0 += 1 }
        if failing.withLock({ $0 }) { throw DataplaneError("\(name) refused") }
        return ManagerReport(changes: ["applied"])
    }
}

@Suite struct ManagerRunnerTests {
    /// A failing manager is retried with backoff and reported; the others converge meanwhile; it recovers.
    @Test func aFailingManagerDoesNotHoldUpTheOthers() async throws {
        let bad = FlakyManager(name: "bad", failing: true)
        let good = FlakyManager(name: "good", failing: false)
        let runner = ManagerRunner(managers: [bad, good], logger: Logger(label: "test"))
        let task = Task { await runner.run() }
        defer { task.cancel() }
        runner.kick(["bad", "good"])
        var statuses = runner.statuses()
        for _ in 0..<200 {
            statuses = runner.statuses()
            if (statuses["bad"]?.failures ?? 0) >= 3 && statuses["good"]?.converged == true { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(statuses["good"]?.converged == true)
        #expect((statuses["bad"]?.failures ?? 0) >= 3, "retried with backoff: \(statuses)")
        #expect(statuses["bad"]?.lastError == "bad refused")
        bad.failing.withLock { $0 = false }
        for _ in 0..<200 {
            if runner.statuses()["bad"]?.converged == true { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(runner.statuses()["bad"]?.converged == true)
        #expect(runner.statuses()["bad"]?.consecutiveFailures == 0)
    }
}

@Suite struct FakeKernelFDBAndRuleTests {
    @Test func fdbEntriesAndRulesKeepTheKernelsRules() throws {
        let kernel = FakeKernel()
        let vxlan = kernel.addLink(name: "vxlan.calico", kind: "vxlan")
        let entry = FDBEntry(
            index: vxlan.index, mac: try MACAddress("66:e9:a1:00:00:02"), destination: try IPAddress("10.99.0.2"))
        try kernel.replaceFDBEntry(entry, interfaceName: vxlan.name)
        var moved = entry
        moved.destination = try IPAddress("10.99.0.9")
        try kernel.replaceFDBEntry(moved, interfaceName: vxlan.name)
        #expect(try kernel.fdbEntries() == [moved])
        #expect(throws: NetlinkError.self) {
            try kernel.replaceFDBEntry(FDBEntry(index: 99, mac: entry.mac, destination: nil), interfaceName: "x")
        }
        // The kernel's default rules are there; an identical rule is EEXIST; a missing one ENOENT.
        #expect(try kernel.rules(family: .v6).map(\.table) == [255, 254])
        let rule = RoutingRule(family: .v4, priority: 99, table: 1, mark: 0x10_0000, mask: 0x10_0000, invert: true)
        try kernel.addRule(rule)
        do {
            try kernel.addRule(rule)
            Issue.record("duplicate rule accepted")
        } catch { #expect(error.errno == EEXIST) }
        try kernel.deleteRule(rule)
        do {
            try kernel.deleteRule(rule)
            Issue.record("missing rule deleted")
        } catch { #expect(error.errno == ENOENT) }
        // The VXLAN device going away takes its FDB entries.
        try kernel.deleteLink(vxlan)
        #expect(try kernel.fdbEntries().isEmpty)
    }
}

/// natOutgoing: the plan from pools and the exclusions, rendered for both tools, loaded once, reloaded on drift.
@Suite struct NatManagerTests {
    func plan() -> NatPlan {
        NatPlan(
            masqueradeSources: [.v4: [CIDR("10.244.0.0/16")], .v6: [CIDR("fd00:244::/56")]],
            pools: [.v4: [CIDR("10.244.0.0/16"), CIDR("10.245.0.0/16")], .v6: [CIDR("fd00:244::/56")]],
            hostAddresses: [.v4: [CIDR("10.99.0.1/32")]])
    }

    @Test func rendersOneRulePerFamilyWithSetsOfPools() {
        let text = renderNatNftables(plan())
        #expect(text.hasPrefix("table inet tandemnat\ndelete table inet tandemnat\n"))
        #expect(text.contains("elements = { 10.244.0.0/16, 10.245.0.0/16 }"))
        #expect(
            text.contains(
                "ip saddr @masq4 ip daddr != @pools4 ip daddr != @hosts4 masquerade fully-random comment \"natOutgoing\""
            ))
        #expect(text.contains("ip6 saddr @masq6 ip6 daddr != @pools6 ip6 daddr != @hosts6 masquerade fully-random"))
        #expect(text.contains("tandem:\(plan().digest)"))
        // No natOutgoing pool in a family: no rule for it.
        var v4Only = plan()
        v4Only.masqueradeSources[.v6] = []
        #expect(!renderNatNftables(v4Only).contains("ip6 saddr @masq6"))
        let v6 = renderNatIptables(plan(), family: .v6, hooked: false)
        #expect(v6.contains("-A TDM-NAT-OUTGOING -d fd00:244::/56 -j RETURN"))
        #expect(v6.contains("-A TDM-NAT-OUTGOING -s fd00:244::/56 -m comment --comment \"natOutgoing\" -j MASQUERADE"))
        #expect(v6.contains("-I POSTROUTING 1 -j TDM-NAT-OUTGOING"))
        #expect(!renderNatIptables(plan(), family: .v4, hooked: true).contains("-I POSTROUTING"))
    }

    @Test func loadsOnceAndReloadsWhatChangedOrVanished() throws {
        let tools = FakePolicyTools()
        let manager = NatManager(backend: .nftables, tools: tools)
        #expect(try manager.apply(resync: true) == ManagerReport())
        manager.setDesired(plan())
        #expect(try manager.apply(resync: false).changes.count == 1)
        #expect(tools.state.withLock { $0.loads.count } == 1)
        // Converged: no read-back, no load.
        #expect(try manager.apply(resync: false) == ManagerReport())
        // The kernel holds it: a resync reads it back and loads nothing.
        let loaded = try #require(tools.state.withLock { $0.loads.last })
        tools.state.withLock { $0.listing = loaded }
        #expect(try manager.apply(resync: true) == ManagerReport())
        // Someone edits the table: the next resync reloads it.
        tools.state.withLock { $0.listing = loaded + "\n# edited" }
        #expect(try manager.apply(resync: true).changes.count == 1)
        // Flushed away: reloaded.
        tools.state.withLock { $0.listing = nil }
        #expect(try manager.apply(resync: true).changes.count == 1)
        // A pool changes: the new plan is loaded without waiting for a resync.
        var changed = plan()
        changed.masqueradeSources[.v6] = []
        manager.setDesired(changed)
        #expect(try manager.apply(resync: false).changes.count == 1)
        #expect(tools.state.withLock { $0.loads.count } == 4)
    }

    /// The tools accept the text: `nft -c -f` and `iptables-restore --test` in a namespace made for the test.
    @Test func theToolsAcceptIt() throws {
        let ns = try TestNamespace("nat")
        defer { ns.remove() }
        let scratch = try ScratchDirectory("nat")
        defer { scratch.remove() }
        let nft = try scratch.write("nat.nft", renderNatNftables(plan()))
        let checked = try ns.run("nft -f \(nft) && nft -f \(nft)")
        #expect(checked.status == 0, "\(checked.stderr)")
        for (family, tool) in [(IPFamily.v4, "iptables-restore"), (.v6, "ip6tables-restore")] {
            let file = try scratch.write("nat.\(tool)", renderNatIptables(plan(), family: family, hooked: false))
            let restored = try ns.run("\(tool) --noflush < \(file)")
            #expect(restored.status == 0, "\(restored.stderr)")
        }
        #expect(try ns.run("iptables-save -t nat").stdout.contains("-A POSTROUTING -j TDM-NAT-OUTGOING"))
    }
}

/// A SNAT address per family replaces masquerade, and the tools accept it.
@Suite struct NatSourceAddressTests {
    @Test func snatToTheConfiguredAddressInBothFamilies() throws {
        var plan = NatPlan(
            masqueradeSources: [.v4: [CIDR("10.244.0.0/16")], .v6: [CIDR("fd00:244::/56")]],
            pools: [.v4: [CIDR("10.244.0.0/16")], .v6: [CIDR("fd00:244::/56")]])
        let before = plan.digest
        plan.sourceAddresses = [.v4: try IPAddress("10.99.0.101"), .v6: try IPAddress("fd99::101")]
        #expect(plan.digest != before)
        let text = renderNatNftables(plan)
        #expect(text.contains("snat ip to 10.99.0.101 fully-random"))
        #expect(text.contains("snat ip6 to fd99::101 fully-random"))
        #expect(renderNatIptables(plan, family: .v6, hooked: true).contains("-j SNAT --to-source fd99::101"))
        let ns = try TestNamespace("snat")
        defer { ns.remove() }
        let scratch = try ScratchDirectory("snat")
        defer { scratch.remove() }
        let file = try scratch.write("nat.nft", text)
        let loaded = try ns.run("nft -f \(file)")
        #expect(loaded.status == 0, "\(loaded.stderr)")
        for (family, tool) in [(IPFamily.v4, "iptables-restore"), (.v6, "ip6tables-restore")] {
            let rules = try scratch.write("nat.\(tool)", renderNatIptables(plan, family: family, hooked: false))
            let restored = try ns.run("\(tool) --noflush < \(rules)")
            #expect(restored.status == 0, "\(restored.stderr)")
        }
    }
}
