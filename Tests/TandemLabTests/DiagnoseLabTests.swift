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

    /// The scenario, the finding it must give, and the findings that follow from it on a real kernel (a veth below
    /// 1280 loses its IPv6 routes; a node without its address loses its IPv6 sessions).
    static let scenarios: [(String, String, Set<String>)] = [
        ("pod-route", "pod-route-missing IPv6", []),
        ("forwarding-off", "forwarding-off IPv6", []),
        ("no-default-route", "no-default-route IPv6", []),
        ("mtu-low", "ipv6-mtu-too-small IPv6", ["pod-route-missing IPv6"]),
        (
            "link-local-only", "no-usable-ipv6-address IPv6",
            ["node-address-changed IPv6", "bgp-session-down IPv6", "no-default-route IPv6"]
        ),
        ("bird-stopped", "bird-not-running -", []),
        ("agent-stopped", "agent-not-running -", []),
    ]

    @Test func eachBrokenThingIsNamedAndRepairedInTheDualStackLab() throws {
        let lab = try TestLab()
        defer { lab.down() }
        // A long resync: the agent does not put things right while diagnose looks.
        try lab.up(["--nodes", "2", "--resync-interval", "600"])
        for node in ["n1", "n2"] { #expect(try lab.run(["pod", "add", node]).status == 0) }
        var last = (status: Int32(0), checks: [String](), output: "")
        #expect(
            try eventually(within: 30) {
                last = try diagnose(lab, "n1")
                return last.status == 0
            }, "a healthy node diagnoses clean: \(last.output)")
        #expect(last.checks.isEmpty)
        for (scenario, expected, consequences) in Self.scenarios {
            let broken = try lab.run(["break", scenario, "n1"])
            #expect(broken.status == 0, "\(scenario): \(broken.stdout)\(broken.stderr)")
            #expect(
                try eventually(within: 15) {
                    last = try diagnose(lab, "n1")
                    return last.checks.contains(expected)
                }, "\(scenario): \(last.output)")
            #expect(last.status == 2, "\(scenario): \(last.output)")
            let unexpected = Set(last.checks).subtracting([expected]).subtracting(consequences)
            #expect(unexpected.isEmpty, "\(scenario) also gave \(unexpected): \(last.output)")
            let repaired = try lab.run(["repair", "n1"])
            #expect(repaired.status == 0, "\(scenario): \(repaired.stdout)\(repaired.stderr)")
            #expect(
                try eventually(within: 40) {
                    last = try diagnose(lab, "n1")
                    return last.status == 0
                }, "\(scenario) not repaired: \(last.output)")
        }
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

    @Test func anIPv6OnlyLabDiagnosesClean() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "2", "--ipv6-only"])
        for node in ["n1", "n2"] { #expect(try lab.run(["pod", "add", node]).status == 0) }
        var last = (status: Int32(0), checks: [String](), output: "")
        #expect(
            try eventually(within: 30) {
                last = try diagnose(lab, "n2")
                return last.status == 0
            }, "\(last.output)")
        #expect(last.output.contains("\"IPv6\"") && !last.output.contains("\"IPv4\""), "\(last.output)")
    }
}
