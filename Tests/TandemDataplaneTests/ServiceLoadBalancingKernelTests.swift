import Foundation
import TandemCalculation
import TandemCore
import TandemDataplane
import TandemLinux
import TandemPolicy
import TandemTestSupport
import Testing

/// A node namespace with three pod namespaces and a client outside the cluster, each on a veth pair of its own,
/// both families; the pods run TCP servers on port 80 that answer with their name and the peer's address.
/// Everything is removed by `remove()`, servers included.
struct ServiceLab {
    let node: TestNamespace
    let pods: [TestNamespace]
    let client: TestNamespace
    var all: [TestNamespace] { [node, client] + pods }

    init(pods count: Int) throws {
        var made: [TestNamespace] = []
        do {
            node = try TestNamespace("svcnd")
            made.append(node)
            client = try TestNamespace("svccl")
            made.append(client)
            var pods: [TestNamespace] = []
            for _ in 0..<count {
                let pod = try TestNamespace("svcpd")
                made.append(pod)
                pods.append(pod)
            }
            self.pods = pods
            try Self.check(
                node.run("sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1"), "forwarding")
            for (index, pod) in pods.enumerated() {
                try Self.wire(
                    node: node, peer: pod, link: "pod\(index)", v4: "10.244.\(index)", v6: "fd00:244:\(index)::")
                for (listen, options) in [("TCP4-LISTEN", ""), ("TCP6-LISTEN", ",ipv6only=1")] {
                    try Self.check(
                        pod.run(
                            "setsid socat \(listen):80,fork,reuseaddr\(options) "
                                + "SYSTEM:'echo pod\(index) $SOCAT_PEERADDR' >/dev/null 2>&1 &"), "server")
                }
            }
            try Self.wire(node: node, peer: client, link: "client", v4: "10.99.0", v6: "fd99::")
            // The node's default route (its gateway): the node's own connections to a Service address need a
            // route before the output hook DNATs them, as on a real node.
            try Self.check(
                shell(
                    "ip -n \(node.name) route add default via 10.99.0.2 && "
                        + "ip -n \(node.name) -6 route add default via fd99::2"), "node routes")
        } catch {
            for namespace in made { Self.remove(namespace) }
            throw error
        }
    }

    /// A veth pair from the node (`.1`) to `peer` (`.2`, default routes through the node).
    static func wire(node: TestNamespace, peer: TestNamespace, link: String, v4: String, v6: String) throws {
        try check(
            shell(
                "ip -n \(node.name) link add \(link) type veth peer name eth0 netns \(peer.name) && "
                    + "ip -n \(node.name) addr add \(v4).1/24 dev \(link) && "
                    + "ip -n \(node.name) addr add \(v6)1/64 dev \(link) nodad && ip -n \(node.name) link set \(link) up && "
                    + "ip -n \(peer.name) addr add \(v4).2/24 dev eth0 && ip -n \(peer.name) addr add \(v6)2/64 dev eth0 nodad && "
                    + "ip -n \(peer.name) link set eth0 up && ip -n \(peer.name) route add default via \(v4).1 && "
                    + "ip -n \(peer.name) -6 route add default via \(v6)1"), "wire \(link)")
    }

    static func check(_ output: TestProducts.Output, _ what: String) throws {
        guard output.status == 0 else { throw TestSupportError("\(what): \(output.stderr)") }
    }

    static func remove(_ namespace: TestNamespace) {
        _ = try? shell("for p in $(ip netns pids \(namespace.name)); do kill $p; done")
        namespace.remove()
    }

    func remove() { for namespace in all { Self.remove(namespace) } }

    /// `count` connections from `from` to `address`:`port`; what answered each (`pod1 10.244.1.1`), or the error.
    func connect(from: TestNamespace, _ address: String, _ port: Int, count: Int) throws -> [String] {
        let target = address.contains(":") ? "TCP6:[\(address)]:\(port)" : "TCP4:\(address):\(port)"
        let output = try from.run(
            "for i in $(seq \(count)); do socat -T 2 - \(target),connect-timeout=2 </dev/null 2>&1 || echo failed; done"
        )
        return output.stdout.split(separator: "\n").map(String.init)
    }
}

/// The manager's table in a real kernel: connections to the ClusterIP of each family reach every backend, a backend
/// removed is not chosen after the update, NodePorts answer on the node's address of each family the Service has,
/// hairpin and outside traffic is masqueraded, a Service without endpoints refuses, and drift is repaired.
@Suite(.serialized) struct ServiceLoadBalancingKernelTests {
    @Test func loadBalancesInBothFamilies() throws {
        let lab = try ServiceLab(pods: 3)
        defer { lab.remove() }
        let scratch = try ScratchDirectory("svc")
        defer { scratch.remove() }
        // libnftables' context belongs to the namespace of the thread that makes it.
        let tools = try NetworkNamespace.run(in: lab.node.path) {
            SystemPolicyTools(stateDirectory: scratch.path)
        }
        let manager = ServiceManager(nodeName: "node", tools: tools)
        func apply(resync: Bool = false) throws -> ManagerReport {
            try NetworkNamespace.run(in: lab.node.path) { try manager.apply(resync: resync) }
        }
        manager.setDesired(try webPlans(pods: 3), clusterCIDRs: servicePods)
        #expect(try apply().changes.first?.hasPrefix("table inet tandem-services created") == true)
        // Read back as loaded: nothing to do (the printed table parses to what was loaded).
        #expect(try apply(resync: true) == ManagerReport())

        func names(_ answers: [String]) -> [String: Int] {
            answers.reduce(into: [:]) { $0[String($1.split(separator: " ").first ?? ""), default: 0] += 1 }
        }
        func peers(_ answers: [String]) -> Set<String> {
            Set(
                answers.compactMap { answer in
                    answer.split(separator: " ").dropFirst().first.flatMap {
                        try? IPAddress(String($0).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))).description
                    }
                })
        }
        // From outside the cluster to each ClusterIP: every backend answers, and sees the node (masqueraded).
        for (clusterIP, family) in [("10.96.0.10", IPFamily.v4), ("fd00:96::10", .v6)] {
            let answers = try lab.connect(from: lab.client, clusterIP, 8080, count: 45)
            #expect(names(answers).keys.sorted() == ["pod0", "pod1", "pod2"], "\(family): \(answers)")
            #expect(answers.count == 45 && !answers.contains("failed"), "\(answers)")
            let node = try (0..<3).map {
                try IPAddress(family == .v4 ? "10.244.\($0).1" : "fd00:244:\($0)::1").description
            }
            #expect(peers(answers).isSubset(of: Set(node)), "\(peers(answers))")
        }
        // From pod0: its own address seen by the others (inside the cluster), the node's when it reaches itself.
        for (clusterIP, family) in [("10.96.0.10", IPFamily.v4), ("fd00:96::10", .v6)] {
            let answers = try lab.connect(from: lab.pods[0], clusterIP, 8080, count: 30)
            let own = family == .v4 ? "10.244.0.2" : "fd00:244:0::2"
            let hairpin = answers.filter { $0.hasPrefix("pod0 ") }
            let others = answers.filter { !$0.hasPrefix("pod0 ") }
            #expect(!hairpin.isEmpty && !others.isEmpty, "\(answers)")
            #expect(peers(hairpin) == [try IPAddress(family == .v4 ? "10.244.0.1" : "fd00:244:0::1").description])
            #expect(peers(others) == [try IPAddress(own).description], "\(others)")
        }
        // NodePort on the node's address of each family; the SingleStack IPv4 Service's only in IPv4.
        for address in ["10.99.0.1", "fd99::1"] {
            let answers = try lab.connect(from: lab.client, address, 30080, count: 12)
            #expect(
                Set(names(answers).keys).isSubset(of: ["pod0", "pod1", "pod2"]) && answers.count == 12, "\(answers)")
        }
        #expect(names(try lab.connect(from: lab.client, "10.99.0.1", 30081, count: 3)) == ["pod0": 3])
        #expect(try lab.connect(from: lab.client, "fd99::1", 30081, count: 1).first?.contains("pod") == false)

        // pod2 removed: never chosen right after the update, which touches the web Service's chains only.
        manager.setDesired(try webPlans(pods: 2), clusterCIDRs: servicePods)
        _ = try apply()
        let update = try #require(manager.lastLoaded)
        #expect(!update.contains("v4only") && !update.contains("add table"), "\(update)")
        for clusterIP in ["10.96.0.10", "fd00:96::10"] {
            let answers = try lab.connect(from: lab.client, clusterIP, 8080, count: 30)
            #expect(names(answers).keys.sorted() == ["pod0", "pod1"], "\(answers)")
        }
        #expect(try apply(resync: true) == ManagerReport())

        // No endpoint: refused at once in both families (TCP reset), ClusterIP and NodePort.
        manager.setDesired(try webPlans(pods: 2, ready4: [], ready6: []), clusterCIDRs: servicePods)
        _ = try apply()
        for (address, port) in [("10.96.0.10", 8080), ("fd00:96::10", 8080), ("10.99.0.1", 30080), ("fd99::1", 30080)] {
            let answer = try lab.connect(from: lab.client, address, port, count: 1).joined()
            #expect(answer.contains("Connection refused"), "\(address) \(port): \(answer)")
        }

        // Drift: a flushed ruleset, a chain flushed by hand; each resync puts it back and traffic flows again.
        manager.setDesired(try webPlans(pods: 3), clusterCIDRs: servicePods)
        _ = try apply()
        try ServiceLab.check(lab.node.run("nft flush ruleset"), "flush")
        #expect(try apply(resync: true).changes.first?.hasPrefix("table inet tandem-services created") == true)
        let listing = try lab.node.run("nft list table inet tandem-services").stdout
        let serviceChain = try #require(
            listing.firstMatch(of: /chain (service-[A-Z2-7]{8}-v6-default\/web\/tcp\/8080) \{/)?.output.1)
        try ServiceLab.check(lab.node.run("nft flush chain inet tandem-services \(serviceChain)"), "flush chain")
        try ServiceLab.check(lab.node.run("nft delete chain inet tandem-services nat-output"), "delete chain")
        let repaired = try apply(resync: true)
        #expect(Set(repaired.changes) == ["chain \(serviceChain) replaced", "chain nat-output added"])
        #expect(names(try lab.connect(from: lab.client, "fd00:96::10", 8080, count: 20)).keys.count >= 2)
        // The node itself reaches the Service (nat-output, made again).
        for clusterIP in ["10.96.0.10", "fd00:96::10"] {
            let answers = try lab.connect(from: lab.node, clusterIP, 8080, count: 3)
            #expect(answers.allSatisfy { $0.hasPrefix("pod") }, "\(answers)")
        }
        #expect(try apply(resync: true) == ManagerReport())
    }
}
