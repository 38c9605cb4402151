import Foundation
import TandemTestSupport
import Testing

/// `tandemctl node diagnose` on a lab node: clean when healthy, in both families and IPv6-only; each failure
/// `tandem-lab break` reproduces is named with its fix, and gone after `tandem-lab repair`.
@Suite(.serialized) struct DiagnoseLabTests {
    /// Runs diagnose on `node` as an operator would on that host; the findings' checks and the exit status.
    func diagnose(_ lab: TestLab, _ node: String) throws -> (status: Int32, checks: [String], output: String) {
        let output = try lab.onNode(
            node,
            "\(TestProducts.directory().path)/tandemctl node diagnose \(node) -o json --datastore "
                + "sqlite://\(lab.directory)/datastore.db --bird-socket \(lab.directory)/\(node)/bird.ctl")
        let document = (try? JSONSerialization.jsonObject(with: Data(output.stdout.utf8))) as? [String: Any]
        let findings = document?["findings"] as? [[String: Any]] ?? []
        let checks = findings.map { "\($0["check"] as? String ?? "?") \($0["family"] as? String ?? "-")" }
        return (output.status, checks, output.stdout + output.stderr)
    }

    /// `tandemctl ARGUMENTS` on the lab's datastore, from `node`.
    func ctl(_ lab: TestLab, _ node: String, _ arguments: String) throws -> TestProducts.Output {
        try lab.onNode(
            node,
            "\(TestProducts.directory().path)/tandemctl \(arguments) --datastore sqlite://\(lab.directory)/datastore.db"
        )
    }

    /// The lab's IPv6 pool (ULA, natOutgoing off by default, as Calico's) gets natOutgoing, so that a healthy lab
    /// has nothing to warn about: without it pods cannot reach IPv6 destinations outside the cluster, which
    /// diagnose reports (pool-no-nat-no-route).
    func masqueradeIPv6(_ lab: TestLab) throws {
        let patched = try ctl(lab, "n1", "patch ippool default-ipv6-ippool -p '{\"spec\":{\"natOutgoing\":true}}'")
        #expect(patched.status == 0, "\(patched.stdout)\(patched.stderr)")
    }

    /// A scenario: what `tandem-lab break` is given, the findings it must give, the findings that follow from it on
    /// a real kernel (a veth below 1280 loses its IPv6 routes; a node without its address loses its IPv6 sessions;
    /// a node whose socket is held has no agent), and the exit status (2 with an error, 1 with warnings only).
    typealias Scenario = (name: String, expected: Set<String>, consequences: Set<String>, status: Int32)

    static let scenarios: [Scenario] = [
        ("pod-route", ["pod-route-missing IPv6"], [], 2),
        ("forwarding-off", ["forwarding-off IPv6"], [], 2),
        ("no-default-route", ["no-default-route IPv6"], [], 2),
        ("mtu-low", ["ipv6-mtu-too-small IPv6"], ["pod-route-missing IPv6"], 2),
        (
            "link-local-only", ["no-usable-ipv6-address IPv6"],
            ["node-address-changed IPv6", "bgp-session-down IPv6", "no-default-route IPv6"], 2
        ),
        ("bird-stopped", ["bird-not-running -"], [], 2),
        ("agent-stopped", ["agent-not-running -"], [], 2),
        ("pod-mtu-low", ["ipv6-mtu-too-small IPv6"], ["pod-gateway-neighbour-missing IPv6"], 2),
        ("dad-on", ["dad-enabled IPv6"], [], 1),
        ("pod-gateway-neighbour", ["pod-gateway-neighbour-missing IPv6"], [], 2),
        ("router-id-collision", ["router-id-collision -"], [], 2),
        ("pool-no-nat", ["pool-no-nat-no-route IPv4"], [], 1),
        ("policy-one-family", ["policy-family-open IPv6"], [], 1),
        ("spoof", ["spoofed-packets-dropped IPv4", "spoofed-packets-dropped IPv6"], [], 1),
        ("socket-held", ["cni-socket-held -"], ["agent-not-running -"], 2),
    ]

    /// Breaks each scenario on `node`, expects exactly its findings, repairs, and expects a clean diagnosis.
    func breakAndRepair(_ lab: TestLab, _ node: String, _ scenarios: [Scenario]) throws {
        var last = (status: Int32(0), checks: [String](), output: "")
        for scenario in scenarios {
            let broken = try lab.run(["break", scenario.name, node])
            #expect(broken.status == 0, "\(scenario.name): \(broken.stdout)\(broken.stderr)")
            #expect(
                try eventually(within: 15) {
                    last = try diagnose(lab, node)
                    return scenario.expected.isSubset(of: last.checks)
                }, "\(scenario.name): \(last.output)")
            #expect(last.status == scenario.status, "\(scenario.name): \(last.output)")
            let unexpected = Set(last.checks).subtracting(scenario.expected).subtracting(scenario.consequences)
            #expect(unexpected.isEmpty, "\(scenario.name) also gave \(unexpected): \(last.output)")
            let repaired = try lab.run(["repair", node])
            #expect(repaired.status == 0, "\(scenario.name): \(repaired.stdout)\(repaired.stderr)")
            #expect(
                try eventually(within: 40) {
                    last = try diagnose(lab, node)
                    return last.status == 0
                }, "\(scenario.name) not repaired: \(last.output)")
        }
    }

    @Test func eachBrokenThingIsNamedAndRepairedInTheDualStackLab() throws {
        let lab = try TestLab()
        // A scenario left broken by a failure is repaired first (socket-held leaves a process behind).
        defer {
            _ = try? lab.run(["repair", "n1"])
            lab.down()
        }
        // A long resync: the agent does not put things right while diagnose looks.
        try lab.up(["--nodes", "2", "--resync-interval", "600"])
        for node in ["n1", "n2"] { #expect(try lab.run(["pod", "add", node]).status == 0) }
        try masqueradeIPv6(lab)
        var last = (status: Int32(0), checks: [String](), output: "")
        #expect(
            try eventually(within: 30) {
                last = try diagnose(lab, "n1")
                return last.status == 0
            }, "a healthy node diagnoses clean: \(last.output)")
        #expect(last.checks.isEmpty)
        try breakAndRepair(lab, "n1", Self.scenarios)
        // The text form names the problem, the evidence and the fix.
        _ = try lab.run(["break", "pod-route", "n1"])
        let text = try lab.onNode(
            "n1",
            "\(TestProducts.directory().path)/tandemctl node diagnose n1 --datastore sqlite://\(lab.directory)/datastore.db "
                + "--bird-socket \(lab.directory)/n1/bird.ctl")
        #expect(text.stdout.contains("[ERROR] IPv6: pod "), "\(text.stdout)")
        #expect(text.stdout.contains("fix:  the agent restores it") && text.stdout.contains("ip -6 route replace"))
        _ = try lab.run(["repair", "n1"])
    }

    /// The VXLAN overlay (no BIRD): every remote VTEP's FDB and neighbour entry, per family. With the iptables
    /// backend: its anti-spoofing and NAT counters per family.
    @Test func missingVXLANEntriesAreNamedAndRepaired() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up([
            "--nodes", "2", "--resync-interval", "600", "--encapsulation", "vxlan", "--backend", "vxlan",
            "--policy-backend", "iptables",
        ])
        for node in ["n1", "n2"] { #expect(try lab.run(["pod", "add", node]).status == 0) }
        try masqueradeIPv6(lab)
        var last = (status: Int32(0), checks: [String](), output: "")
        #expect(
            try eventually(within: 30) {
                last = try diagnose(lab, "n2")
                return last.status == 0
            }, "a healthy VXLAN node diagnoses clean: \(last.output)")
        try breakAndRepair(
            lab, "n2",
            [
                ("vxlan-fdb", ["vxlan-fdb-missing IPv6"], [], 2),
                ("vxlan-neighbour", ["vxlan-neighbour-missing IPv6"], [], 2),
                ("spoof", ["spoofed-packets-dropped IPv4", "spoofed-packets-dropped IPv6"], [], 1),
            ])
        // The pods reach the lab's gateway, outside the cluster, through natOutgoing: iptables counts it per family.
        let check = try lab.run(["check"])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        let output = try lab.onNode(
            "n2",
            "\(TestProducts.directory().path)/tandemctl node diagnose n2 -o json --datastore "
                + "sqlite://\(lab.directory)/datastore.db")
        let document = (try? JSONSerialization.jsonObject(with: Data(output.stdout.utf8))) as? [String: Any]
        let counters = document?["counters"] as? [String: [String: Int]]
        for family in ["IPv4", "IPv6"] {
            #expect((counters?["natPackets"]?[family] ?? 0) > 0, "\(family): \(output.stdout)")
            #expect(counters?["spoofDrops"]?[family] == 0, "\(family): \(output.stdout)")
        }
    }

    @Test func anIPv6OnlyLabDiagnosesClean() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "2", "--ipv6-only", "--resync-interval", "600"])
        for node in ["n1", "n2"] { #expect(try lab.run(["pod", "add", node]).status == 0) }
        try masqueradeIPv6(lab)
        var last = (status: Int32(0), checks: [String](), output: "")
        #expect(
            try eventually(within: 30) {
                last = try diagnose(lab, "n2")
                return last.status == 0
            }, "\(last.output)")
        #expect(last.output.contains("\"IPv6\"") && !last.output.contains("\"IPv4\""), "\(last.output)")
        // IPv6 only: the IPv6 pool without natOutgoing, and the pod's IPv6 gateway neighbour.
        try breakAndRepair(
            lab, "n2",
            [
                ("pool-no-nat", ["pool-no-nat-no-route IPv6"], [], 1),
                ("pod-gateway-neighbour", ["pod-gateway-neighbour-missing IPv6"], [], 2),
                ("spoof", ["spoofed-packets-dropped IPv6"], [], 1),
            ])
    }
}
