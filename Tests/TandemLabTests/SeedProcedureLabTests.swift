import Foundation
import TandemTestSupport
import Testing

/// The seed procedure in the lab: calico-node's environment variables (`--calico-env`) bring up a dual-stack and an
/// IPv6-only cluster, and turning IPv6 on in a running IPv4 cluster (`enable-ipv6`: IPv6 on the hosts, the agents
/// restarted one at a time) loses no packet of a running IPv4 flow; new pods are dual-stack.
@Suite(.serialized) struct SeedProcedureLabTests {
    @Test(arguments: ["dual-stack", "ipv6-only"])
    func calicoNodeVariablesBringUpTheCluster(mode: String) throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "3", "--calico-env"] + (mode == "ipv6-only" ? ["--ipv6-only"] : []))
        for node in ["n1", "n2", "n3"] {
            let added = try lab.run(["pod", "add", node])
            #expect(added.status == 0, "\(added.stdout)\(added.stderr)")
        }
        let check = try lab.run(["check"])
        #expect(check.status == 0 && check.stdout.contains("all reachable"), "\(check.stdout)")
        // The agents were configured by calico-node's variables alone: no identity or pool flag on their command
        // line, the pools and router ID as calico-node makes them.
        let commandLine = try String(
            contentsOfFile: "/proc/\(try agentPID(lab, "n1"))/cmdline", encoding: .utf8)
        #expect(!commandLine.contains("--nodename") && !commandLine.contains("pool-cidr"))
        let environment = try String(contentsOfFile: "/proc/\(try agentPID(lab, "n1"))/environ", encoding: .utf8)
            .split(separator: "\0")
        #expect(environment.contains("NODENAME=n1") && environment.contains("IP6=autodetect"))
        let pools = try TestProducts.run(
            "tandemctl", ["get", "ippool", "-o", "wide", "--datastore", "sqlite://\(lab.directory)/datastore.db"])
        #expect(pools.stdout.contains("fd00:244::/56"))
        #expect(pools.stdout.contains("10.244.0.0/16") == (mode == "dual-stack"), "\(pools.stdout)")
        let log = try String(contentsOfFile: "\(lab.directory)/n1/tandem-node.log", encoding: .utf8)
        if mode == "ipv6-only" {
            #expect(environment.contains("IP=none") && environment.contains("CALICO_ROUTER_ID=hash"))
            #expect(log.contains("IPv4 none, IPv6 fd99::1/64") && log.contains("hash of the node name"), "\(log)")
        } else {
            #expect(log.contains("IPv4 10.99.0.1/24, IPv6 fd99::1/64"), "\(log)")
        }
    }

    @Test func ipv6TurnedOnInARunningIPv4Cluster() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "3", "--ipv4-only", "--calico-env"])
        for node in ["n1", "n2"] {
            let added = try lab.run(["pod", "add", node])
            #expect(added.status == 0, "\(added.stdout)\(added.stderr)")
        }
        let target = try #require(podAddresses(try lab.run(["status"]).stdout)["pod-n2-1"]?.first)
        #expect(!target.contains(":"))
        // A flow between the IPv4 pods through every agent's restart.
        let flow = Flow("ip netns exec \(lab.name)-pod-n1-1 ping -n -q -i 0.02 -c 400 \(target)")
        usleep(300_000)
        let enabled = try lab.run(["enable-ipv6"])
        #expect(enabled.status == 0, "\(enabled.stdout)\(enabled.stderr)")
        let output = flow.wait()
        #expect(output.contains(" 0% packet loss"), "\(output)")
        // The existing pods keep IPv4 only; a new pod gets both families and reaches everything.
        let added = try lab.run(["pod", "add", "n3"])
        #expect(added.status == 0, "\(added.stdout)\(added.stderr)")
        // n3's new IPv6 block reaches n1 over the IPv6 session the restarts opened.
        #expect(try eventually(within: 10) { try lab.onNode("n1", "ip -6 route").stdout.contains("proto bird") })
        let pods = podAddresses(try lab.run(["status"]).stdout)
        #expect(pods["pod-n1-1"]?.count == 1 && pods["pod-n3-1"]?.count == 2, "\(pods)")
        let check = try lab.run(["check"])
        #expect(check.status == 0 && check.stdout.contains("all reachable"), "\(check.stdout)")
    }

    /// The PID of a node's agent from the lab's state.
    func agentPID(_ lab: TestLab, _ node: String) throws -> Int {
        let data = try Data(contentsOf: URL(fileURLWithPath: lab.directory + "/state.json"))
        let state = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let nodes = try #require(state["nodes"] as? [[String: Any]])
        return try #require(nodes.first { $0["name"] as? String == node }?["agentPID"] as? Int)
    }
}
