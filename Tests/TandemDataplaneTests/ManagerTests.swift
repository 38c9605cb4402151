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
        // IPv4's anti-spoofing chain (raw table) failed; IPv6 loaded its anti-spoofing chain and its filter chains.
        let restores = tools.state.withLock { $0.restores }
        #expect(restores.count == 2)
        #expect(restores.first?.hasPrefix("v6\n*raw\n:TDM-PREROUTING") == true)
        #expect(restores.last?.hasPrefix("v6\n*filter") == true)
        _ = try manager.apply(resync: false)
        #expect(tools.state.withLock { $0.restores.count } == 4)
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
                "ip saddr @masq4 ip daddr != @pools4 ip daddr != @hosts4 counter masquerade fully-random "
                    + "comment \"natOutgoing\""
            ))
        #expect(
            text.contains("ip6 saddr @masq6 ip6 daddr != @pools6 ip6 daddr != @hosts6 counter masquerade fully-random"))
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

/// natPortRange and the ipsets of the iptables NAT: the rules stay one per family whatever the number of pools,
/// the sets hold the pools, and the tools accept it all.
@Suite struct NatPortRangeAndIpsetTests {
    /// `count` natOutgoing pools per family.
    func plan(pools count: Int, ports: ClosedRange<Int>? = nil) -> NatPlan {
        var plan = NatPlan(portRange: ports)
        for index in 0..<count {
            let v4 = try! CIDR("10.\(100 + index / 256).\(index % 256).0/24")
            let v6 = try! CIDR("fd00:\(String(index, radix: 16))::/64")
            plan.masqueradeSources[.v4, default: []].append(v4)
            plan.pools[.v4, default: []].append(v4)
            plan.masqueradeSources[.v6, default: []].append(v6)
            plan.pools[.v6, default: []].append(v6)
        }
        plan.hostAddresses = [.v4: [CIDR("192.168.0.1/32")], .v6: [CIDR("fd99::1/128")]]
        return plan
    }

    @Test func portRangeComesFirstForTCPAndUDPInEveryForm() throws {
        var plan = plan(pools: 1, ports: 32768...40000)
        let nft = renderNatNftables(plan)
        #expect(nft.contains("meta l4proto { tcp, udp } counter masquerade to :32768-40000 fully-random"))
        #expect(nft.contains("ip daddr != @hosts4 counter masquerade fully-random comment \"natOutgoing\""))
        let chain = natIptablesChain(plan, family: .v6, ipsets: true)
        #expect(chain.rules.count == 3)
        #expect(
            chain.rules[0].contains("-p tcp")
                && chain.rules[0].hasSuffix("-j MASQUERADE --to-ports 32768-40000 --random-fully"))
        #expect(chain.rules[1].contains("-p udp"))
        plan.sourceAddresses = [.v4: try IPAddress("10.99.0.101"), .v6: try IPAddress("fd99::101")]
        #expect(renderNatNftables(plan).contains("snat ip6 to [fd99::101]:32768-40000 fully-random"))
        #expect(
            natIptablesChain(plan, family: .v6, ipsets: false).rules.contains {
                $0.hasSuffix("-j SNAT --to-source [fd99::101]:32768-40000 --random-fully")
            })
        #expect(plan.digest != self.plan(pools: 1, ports: 32768...40000).digest)
    }

    /// With ipsets, one rule per family for 1 pool or 100; without, a rule per pool. Loaded by the real tools in a
    /// namespace, and read back as the manager reads it.
    @Test func ipsetsKeepTheRuleCountFlat() throws {
        let ns = try TestNamespace("natset")
        defer { ns.remove() }
        let scratch = try ScratchDirectory("natset")
        defer { scratch.remove() }
        for count in [1, 100] {
            let plan = plan(pools: count, ports: 1024...65535)
            for family in IPFamily.allCases {
                let tool = family == .v4 ? "iptables" : "ip6tables"
                let sets = try scratch.write("sets\(count)\(family)", renderNatIpsets(plan, family: family))
                let loaded = try ns.run("ipset restore < \(sets)")
                try #require(loaded.status == 0, "\(loaded.stderr)")
                #expect(
                    natIpsetMembers(save: try ns.run("ipset save").stdout, family: family)
                        == expectedNatIpsetMembers(plan, family: family))
                let chain = natIptablesChain(plan, family: family, ipsets: true)
                let save = try ns.run("\(tool)-save -t nat").stdout
                let file = try scratch.write(
                    "chain\(count)\(family)", chain.restoreInput(hooked: chain.readBack(save).hooked))
                let restored = try ns.run("\(tool)-restore --noflush < \(file)")
                try #require(restored.status == 0, "\(restored.stderr)")
                let (printed, hooked) = chain.readBack(try ns.run("\(tool)-save -t nat").stdout)
                #expect(hooked && chain.holds(printed))
                // tcp, udp, the rest, and the digest comment: four lines, for 1 pool as for 100.
                #expect(printed.split(separator: "\n").count == 4, "\(printed)")
                #expect(natIptablesChain(plan, family: family, ipsets: false).rules.count == 3 * count + count + 1)
            }
        }
        #expect(try ns.run("iptables-save -t nat").stdout.components(separatedBy: "-j TDM-NAT-OUTGOING").count == 2)
    }

    /// The manager with ipsets: sets loaded before the chain, nothing reloaded once converged, a set emptied by
    /// someone refilled on resync.
    @Test func theManagerKeepsTheSetsAndTheChain() throws {
        let tools = FakeIpsetTools()
        let manager = NatManager(backend: .iptables, tools: tools)
        manager.setDesired(plan(pools: 2))
        let first = try manager.apply(resync: false)
        #expect(first.changes.filter { $0.hasPrefix("ipsets") }.count == 2)
        #expect(first.changes.filter { $0.contains("TDM-NAT-OUTGOING loaded") }.count == 2)
        #expect(try manager.apply(resync: true) == ManagerReport())
        tools.state.withLock { $0.ipsets = "" }
        #expect(try manager.apply(resync: true).changes.filter { $0.hasPrefix("ipsets") }.count == 2)
    }
}

/// Policy tools whose iptables and ipset state is text kept in memory, applied the way the tools apply it.
final class FakeIpsetTools: PolicyTools {
    struct State {
        var tables: [String: String] = [:]
        var ipsets = ""
    }
    let state = Mutex(State())

    func listNftTable(_ table: String) throws -> String? { nil }
    func loadNft(_ text: String) throws {}
    func saveIptables(_ family: IPFamily, table: String) throws -> String {
        state.withLock { $0.tables["\(family)|\(table)"] ?? "" }
    }
    func restoreIptables(_ family: IPFamily, _ text: String) throws {
        // Keep the rules as iptables-save prints them (one chain per input here).
        let lines = text.split(separator: "\n")
        let table = String(lines.first?.dropFirst() ?? "")
        let rules = lines.filter { $0.hasPrefix("-A ") }.joined(separator: "\n")
        let hook = lines.first { $0.hasPrefix("-I ") }.map { "-A" + $0.dropFirst(2).replacing(" 1 -j", with: " -j") }
        state.withLock {
            let key = "\(family)|\(table)"
            let kept = ($0.tables[key] ?? "").split(separator: "\n").filter { !$0.hasPrefix("-A TDM-") }
            $0.tables[key] = (kept.map(String.init) + [rules] + (hook.map { [$0] } ?? [])).joined(separator: "\n")
        }
    }
    var hasIpset: Bool { true }
    func saveIpsets() throws -> String { state.withLock { $0.ipsets } }
    func restoreIpsets(_ text: String) throws {
        // What `ipset save` prints afterwards: the swapped-in sets with their members.
        var printed: [String] = []
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ")
            if words[0] == "create", !words[1].hasSuffix("-new") { printed.append("create \(words[1]) hash:net") }
            if words[0] == "add" { printed.append("add \(words[1].dropLast(4)) \(words[2])") }
        }
        state.withLock { current in
            let names = Set(printed.compactMap { $0.split(separator: " ").dropFirst().first })
            let kept = current.ipsets.split(separator: "\n").filter { line in
                !names.contains(line.split(separator: " ").dropFirst().first ?? "")
            }
            current.ipsets = (kept.map(String.init) + printed).joined(separator: "\n")
        }
    }
}

/// The MTU manager against the fake kernel: decides from the links, writes the file once, rewrites it when someone
/// changed it, follows a link's MTU and the pattern, and warns when IPv6 cannot be carried.
@Suite struct MTUManagerTests {
    @Test func decidesWritesAndFollowsTheKernel() throws {
        let kernel = FakeKernel()
        let eth0 = kernel.addLink(name: "eth0", kind: nil)
        let scratch = try ScratchDirectory("mtu")
        defer { scratch.remove() }
        let path = scratch.file("state/mtu")
        let manager = MTUManager(kernel: kernel, path: path)
        #expect(try manager.apply(resync: false) == ManagerReport())  // no pattern yet: nothing decided
        manager.setDesired(pattern: defaultMTUInterfacePattern)
        let first = try manager.apply(resync: false)
        #expect(first.changes == ["pod MTU 1500: host MTU 1500 (eth0)", "\(path): 1500"])
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "1500\n")
        #expect(manager.podMTU == 1500)
        #expect(try manager.apply(resync: true) == ManagerReport())
        // Someone overwrites the file: put back.
        try "9000\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try manager.apply(resync: true).changes == ["\(path): 1500"])
        // The link's MTU changes: followed.
        try kernel.setLink(eth0, LinkChange(mtu: 1450))
        #expect(try manager.apply(resync: true).changes.first == "pod MTU 1450: host MTU 1450 (eth0)")
        // Below IPv6's minimum: said, for a node whose pods carry IPv6 only.
        try kernel.setLink(eth0, LinkChange(mtu: 1200))
        let low = try manager.apply(resync: true)
        #expect(low.warnings.count == 1 && low.warnings[0].contains("below IPv6's minimum of 1280"))
        manager.setDesired(pattern: "^nothing$")
        #expect(
            try manager.apply(resync: false).changes.first
                == "pod MTU 1460: no interface matches mtuIfacePattern, 1460 assumed")
        manager.setDesired(pattern: "(")
        #expect(throws: DataplaneError.self) { _ = try manager.apply(resync: false) }
    }
}

/// The VXLAN manager against the fake kernel: device, address, neighbours and FDB entries made once, nothing done
/// when converged, a remote node's entries removed with it, the device recreated when its identity differs and
/// removed when the family has no tunnel any more.
@Suite struct VXLANManagerTests {
    func plan(remotes: [String]) throws -> VXLANPlan {
        var plan = VXLANPlan()
        plan.tunnels[.v4] = VXLANTunnel(
            family: .v4, deviceName: "vxlan.calico", mac: vtepMAC(node: "n1", family: .v4),
            nodeAddress: try IPAddress("10.99.0.1"), tunnelAddress: try IPAddress("10.244.0.1"), vni: 4096, port: 4789,
            explicitMTU: nil)
        plan.tunnels[.v6] = VXLANTunnel(
            family: .v6, deviceName: "vxlan-v6.calico", mac: vtepMAC(node: "n1", family: .v6),
            nodeAddress: try IPAddress("fd99::1"), tunnelAddress: try IPAddress("fd00:244::1"), vni: 4096, port: 4789,
            explicitMTU: 1400)
        for (index, name) in remotes.enumerated() {
            plan.remotes.append(
                RemoteVTEP(
                    node: name, family: .v4, nodeAddress: try IPAddress("10.99.0.\(index + 2)"),
                    tunnelAddress: try IPAddress("10.244.\(index + 1).1"), mac: vtepMAC(node: name, family: .v4)))
            plan.remotes.append(
                RemoteVTEP(
                    node: name, family: .v6, nodeAddress: try IPAddress("fd99::\(index + 2)"),
                    tunnelAddress: try IPAddress("fd00:244:0:\(index + 1)::1"), mac: vtepMAC(node: name, family: .v6)))
        }
        return plan
    }

    @Test func convergesAndFollowsThePlan() throws {
        let kernel = FakeKernel()
        let eth0 = kernel.addLink(name: "eth0", kind: nil)
        try kernel.addAddress(CIDR("10.99.0.1/24"), to: eth0, noDAD: false)
        try kernel.addAddress(CIDR("fd99::1/64"), to: eth0, noDAD: true)
        let manager = VXLANManager(kernel: kernel)
        #expect(try manager.apply(resync: false) == ManagerReport())  // no plan yet
        manager.setDesired(try plan(remotes: ["n2", "n3"]), mtuPattern: defaultMTUInterfacePattern)
        let first = try manager.apply(resync: false)
        #expect(first.changes.contains { $0.hasPrefix("ip link add vxlan.calico address ") && $0.contains("mtu 1450") })
        #expect(first.changes.contains { $0.hasPrefix("ip link add vxlan-v6.calico") && $0.contains("mtu 1400") })
        let v4 = try #require(try kernel.link(named: "vxlan.calico"))
        #expect(v4.vxlan?.local == (try IPAddress("10.99.0.1")) && v4.vxlan?.parentIndex == eth0.index && v4.isUp)
        #expect(try kernel.addresses(family: .v4, index: v4.index).map(\.cidr) == [CIDR("10.244.0.1/32")])
        #expect(try kernel.neighbours(family: .v4, proxies: false).filter { $0.index == v4.index }.count == 2)
        #expect(try kernel.fdbEntries().count == 4)
        #expect(try manager.apply(resync: true) == ManagerReport())
        // n3 leaves: its neighbour and FDB entries go, in both families.
        manager.setDesired(try plan(remotes: ["n2"]), mtuPattern: defaultMTUInterfacePattern)
        let left = try manager.apply(resync: false)
        #expect(left.changes.filter { $0.hasPrefix("ip neigh del") }.count == 2)
        #expect(left.changes.filter { $0.hasPrefix("bridge fdb del") }.count == 2)
        #expect(try kernel.fdbEntries().count == 2)
        // Someone deletes the IPv4 device: back, with its entries.
        try kernel.deleteLink(try #require(try kernel.link(named: "vxlan.calico")))
        let repaired = try manager.apply(resync: true)
        #expect(repaired.changes.contains { $0.hasPrefix("ip link add vxlan.calico") })
        #expect(try kernel.fdbEntries().count == 2)
        // The VNI changes: recreated.
        var changed = try plan(remotes: ["n2"])
        changed.tunnels[.v4]?.vni = 5000
        manager.setDesired(changed, mtuPattern: defaultMTUInterfacePattern)
        let recreated = try manager.apply(resync: false)
        #expect(recreated.changes.first == "ip link del vxlan.calico (configuration differed)")
        #expect(try kernel.link(named: "vxlan.calico")?.vxlan?.vni == 5000)
        // No IPv6 tunnel any more: the IPv6 device goes.
        changed.tunnels[.v6] = nil
        changed.remotes.removeAll { $0.family == .v6 }
        manager.setDesired(changed, mtuPattern: defaultMTUInterfacePattern)
        #expect(
            try manager.apply(resync: false).changes == ["ip link del vxlan-v6.calico (no VXLAN pool of the family)"])
        #expect(try kernel.link(named: "vxlan-v6.calico") == nil)
    }

    /// A host MTU that would put the IPv6 device under 1280: not configured, said why; IPv4's device is.
    @Test func neverConfiguresIPv6Below1280() throws {
        let kernel = FakeKernel()
        let eth0 = kernel.addLink(name: "eth0", kind: nil)
        try kernel.setLink(eth0, LinkChange(mtu: 1340))
        try kernel.addAddress(CIDR("10.99.0.1/24"), to: eth0, noDAD: false)
        try kernel.addAddress(CIDR("fd99::1/64"), to: eth0, noDAD: true)
        let manager = VXLANManager(kernel: kernel)
        var plan = try plan(remotes: ["n2"])
        plan.tunnels[.v6]?.explicitMTU = nil
        manager.setDesired(plan, mtuPattern: defaultMTUInterfacePattern)
        let report = try manager.apply(resync: false)
        #expect(
            report.warnings.count == 1 && report.warnings[0].contains("its MTU would be 1270, below IPv6's minimum"))
        #expect(try kernel.link(named: "vxlan-v6.calico") == nil)
        #expect(try kernel.link(named: "vxlan.calico")?.mtu == 1290)
    }

    @Test func waitsForTheNodeAddress() throws {
        let kernel = FakeKernel()
        let manager = VXLANManager(kernel: kernel)
        manager.setDesired(try plan(remotes: []), mtuPattern: defaultMTUInterfacePattern)
        let report = try manager.apply(resync: false)
        #expect(report.waiting.count == 2 && report.changes.isEmpty)
    }
}

/// IPIP pools: probed, said clearly, once; against the fake kernel (with and without the link type) and the real one
/// (whose answer `ip link add` gives too).
@Suite struct IPIPManagerTests {
    @Test func saysWhatTheKernelLacksOnce() throws {
        for lacking in [true, false] {
            let kernel = FakeKernel()
            if lacking { kernel.lackLinkKinds(["ipip"]) }
            let manager = IPIPManager(kernel: kernel)
            #expect(try manager.apply(resync: false) == ManagerReport())  // no IPIP pool: no probe
            #expect(manager.kernelHasIPIP == nil)
            manager.setDesired(pools: ["ipip-pool"])
            let report = try manager.apply(resync: false)
            #expect(manager.kernelHasIPIP == !lacking)
            #expect(report.warnings.count == 1 && report.warnings[0].contains("IPIP pool(s) ipip-pool"))
            #expect(report.warnings[0].contains("no ipip link type") == lacking, "\(report.warnings)")
            #expect(try kernel.link(named: "tdm-ipipprobe") == nil)  // the probe link is gone
            #expect(try manager.apply(resync: true) == ManagerReport())  // said once
        }
    }

    @Test func probesTheRealKernel() throws {
        let ns = try TestNamespace("ipip")
        defer { ns.remove() }
        let shellSays = try ns.run("ip link add probe0 type ipip && ip link del probe0").status == 0
        let manager = IPIPManager(kernel: try Netlink(namespace: ns.path))
        manager.setDesired(pools: ["p"])
        _ = try manager.apply(resync: false)
        #expect(manager.kernelHasIPIP == shellSays)
        if !shellSays { print("this kernel has no ipip link type (as ip link add says): the warning names it") }
    }
}
