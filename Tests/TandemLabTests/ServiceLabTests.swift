import Foundation
import TandemTestSupport
import Testing

/// Kubernetes Services in a lab, end to end: allocated by tandemctl as the API server would, load-balanced by every
/// node's agent in nftables, reached from pods, nodes and outside the cluster in each family.
@Suite(.serialized) struct ServiceLabTests {
    /// The lab's pods as its state file records them: name to (node, IPv4, IPv6).
    static func pods(_ lab: TestLab) throws -> [String: (node: String, ipv4: String?, ipv6: String?)] {
        let data = try Data(contentsOf: URL(fileURLWithPath: lab.directory + "/state.json"))
        let state = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
        var pods: [String: (node: String, ipv4: String?, ipv6: String?)] = [:]
        for pod in state["pods"] as? [[String: Any]] ?? [] {
            pods[pod["name"] as? String ?? ""] = (
                pod["node"] as? String ?? "", pod["ipv4"] as? String, pod["ipv6"] as? String
            )
        }
        return pods
    }

    /// A node's underlay addresses, from the lab's state file.
    static func nodeAddresses(_ lab: TestLab, _ node: String) throws -> (ipv4: String?, ipv6: String?) {
        let data = try Data(contentsOf: URL(fileURLWithPath: lab.directory + "/state.json"))
        let state = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
        let entry = (state["nodes"] as? [[String: Any]] ?? []).first { $0["name"] as? String == node }
        func bare(_ text: String?) -> String? { text.map { String($0.split(separator: "/")[0]) } }
        return (bare(entry?["ipv4"] as? String), bare(entry?["ipv6"] as? String))
    }

    /// The Service `name` as tandemctl stores it (JSON).
    static func service(_ lab: TestLab, _ name: String) throws -> [String: Any] {
        let output = try TestProducts.run(
            "tandemctl",
            ["get", "service", name, "-o", "json", "--datastore", "sqlite://\(lab.directory)/datastore.db"])
        guard output.status == 0 else { throw TestSupportError("get service \(name): \(output.stderr)") }
        return try JSONSerialization.jsonObject(with: Data(output.stdout.utf8)) as? [String: Any] ?? [:]
    }

    struct Tally {
        var replies: [String: Int]
        var failures: Int
        /// How many replies came from each pod (the first word of a reply).
        var byPod: [String: Int] {
            replies.reduce(into: [:]) { $0[String($1.key.split(separator: " ")[0]), default: 0] += $1.value }
        }
        /// The client addresses the servers saw (the second word).
        var clients: Set<String> {
            Set(replies.keys.compactMap { $0.split(separator: " ").dropFirst().first.map(String.init) })
        }
    }

    /// `tandem-lab connect FROM ADDRESS PORT --count N --json`.
    static func connect(
        _ lab: TestLab, from: String, _ address: String, _ port: Int, count: Int, udp: Bool = false
    ) throws -> Tally {
        let output = try lab.run(
            ["connect", from, address, "\(port)", "--count", "\(count)", "--json", "--timeout", "1"]
                + (udp ? ["--udp"] : []))
        let line = output.stdout.split(separator: "\n").last.map(String.init) ?? ""
        guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw TestSupportError("connect \(from) -> \(address):\(port): \(output.stdout)\(output.stderr)")
        }
        return Tally(replies: object["replies"] as? [String: Int] ?? [:], failures: object["failures"] as? Int ?? -1)
    }

    func expectSuccess(_ output: TestProducts.Output, _ what: String) {
        #expect(output.status == 0, "\(what): \(output.stdout)\(output.stderr)")
    }

    /// The seed's Service: PreferDualStack with IPv6 first, port 8080 to 80, a backend on each of 3 nodes. Both
    /// ClusterIPs answer from a pod on every node and every backend is chosen; a removed backend is no longer chosen
    /// a second later; a pod reaching itself through its Service is answered (hairpin).
    @Test func seedServiceAnswersInBothFamiliesFromEveryNode() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "3"])
        for node in ["n1", "n2", "n3"] {
            expectSuccess(try lab.run(["pod", "add", node, "web-\(node)", "--label", "app=web"]), "pod add")
            expectSuccess(try lab.run(["pod", "serve", "web-\(node)", "--port", "80"]), "pod serve")
            expectSuccess(try lab.run(["pod", "add", node, "client-\(node)"]), "pod add")
        }
        let added = try lab.run([
            "service", "add", "web", "--selector", "app=web", "--port", "8080", "--target-port", "80",
            "--ip-family-policy", "PreferDualStack", "--ip-families", "IPv6,IPv4",
        ])
        expectSuccess(added, "service add")
        let spec = try Self.service(lab, "web")["spec"] as? [String: Any] ?? [:]
        let clusterIPs = spec["clusterIPs"] as? [String] ?? []
        #expect(spec["ipFamilies"] as? [String] == ["IPv6", "IPv4"])
        try #require(clusterIPs.count == 2, "\(spec)")
        #expect(clusterIPs[0].contains(":") && !clusterIPs[1].contains(":"), "IPv6 first: \(clusterIPs)")
        // The table shows both, IPv6 first.
        let table = try TestProducts.run(
            "tandemctl", ["get", "service", "--datastore", "sqlite://\(lab.directory)/datastore.db"])
        #expect(table.stdout.contains("\(clusterIPs[0]),\(clusterIPs[1])"), "\(table.stdout)")

        for client in ["client-n1", "client-n2", "client-n3"] {
            for address in clusterIPs {
                var tally = Tally(replies: [:], failures: 0)
                // The agents program the Service within a moment of its creation.
                _ = try eventually(within: 10) {
                    tally = try Self.connect(lab, from: client, address, 8080, count: 1)
                    return tally.failures == 0
                }
                tally = try Self.connect(lab, from: client, address, 8080, count: 300)
                #expect(tally.failures == 0, "\(client) -> \(address): \(tally)")
                #expect(
                    Set(tally.byPod.keys) == ["web-n1", "web-n2", "web-n3"], "\(client) -> \(address): \(tally.byPod)")
            }
        }
        // Hairpin: a backend reaching itself through its Service.
        for address in clusterIPs {
            let tally = try Self.connect(lab, from: "web-n1", address, 8080, count: 60)
            #expect(tally.failures == 0 && tally.byPod["web-n1", default: 0] > 0, "hairpin \(address): \(tally)")
        }
        // sessionAffinity ClientIP: each client stays with one backend, in each family.
        expectSuccess(
            try lab.run([
                "service", "add", "sticky", "--selector", "app=web", "--port", "8081", "--target-port", "80",
                "--ip-family-policy", "RequireDualStack", "--session-affinity", "ClientIP",
            ]), "service add sticky")
        let stickyIPs = (try Self.service(lab, "sticky")["spec"] as? [String: Any])?["clusterIPs"] as? [String] ?? []
        #expect(stickyIPs.count == 2)
        for address in stickyIPs {
            _ = try eventually(within: 10) {
                try Self.connect(lab, from: "client-n2", address, 8081, count: 1).failures == 0
            }
            for client in ["client-n1", "client-n2"] {
                let tally = try Self.connect(lab, from: client, address, 8081, count: 30)
                #expect(
                    tally.failures == 0 && tally.byPod.count == 1, "\(client) -> \(address) affinity: \(tally.byPod)")
            }
        }
        // A backend removed is no longer chosen a second later.
        expectSuccess(try lab.run(["pod", "del", "web-n3"]), "pod del")
        usleep(1_000_000)
        for address in clusterIPs {
            let tally = try Self.connect(lab, from: "client-n1", address, 8080, count: 100)
            #expect(tally.failures == 0, "\(address) after removal: \(tally)")
            #expect(tally.byPod["web-n3"] == nil, "\(address): web-n3 still chosen: \(tally.byPod)")
        }
    }

    /// ipFamilyPolicy as the API server applies it on single-family clusters: PreferDualStack degrades to the one
    /// family (and works), RequireDualStack is refused; SingleStack IPv6 on a dual-stack cluster gets one IPv6 IP.
    @Test(arguments: ["ipv4-only", "ipv6-only", "dual-stack"])
    func familyPoliciesFollowTheCluster(mode: String) throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "2"] + (mode == "dual-stack" ? [] : ["--\(mode)"]))
        expectSuccess(try lab.run(["pod", "add", "n1", "web", "--label", "app=web"]), "pod add")
        expectSuccess(try lab.run(["pod", "serve", "web", "--port", "80"]), "pod serve")
        expectSuccess(try lab.run(["pod", "add", "n2", "client"]), "pod add")
        // UDP: a datagram to each ClusterIP of a PreferDualStack Service is answered by the pod.
        expectSuccess(try lab.run(["pod", "serve", "web", "--port", "53", "--udp"]), "pod serve --udp")
        expectSuccess(
            try lab.run([
                "service", "add", "dns", "--selector", "app=web", "--port", "53", "--protocol", "UDP",
                "--ip-family-policy", "PreferDualStack",
            ]), "service add dns")
        let udpIPs = try Self.service(lab, "dns")["spec"] as? [String: Any] ?? [:]
        #expect((udpIPs["clusterIPs"] as? [String] ?? []).count == (mode == "dual-stack" ? 2 : 1), "\(udpIPs)")
        for address in udpIPs["clusterIPs"] as? [String] ?? [] {
            #expect(
                try eventually(within: 10) {
                    try Self.connect(lab, from: "client", address, 53, count: 1, udp: true).failures == 0
                }, "UDP \(address):53 never answered")
            let tally = try Self.connect(lab, from: "client", address, 53, count: 20, udp: true)
            #expect(tally.failures == 0 && tally.byPod == ["web": 20], "UDP \(address): \(tally)")
        }
        if mode == "dual-stack" {
            let added = try lab.run([
                "service", "add", "six", "--selector", "app=web", "--port", "80", "--ip-family-policy", "SingleStack",
                "--ip-families", "IPv6",
            ])
            expectSuccess(added, "service add")
            let spec = try Self.service(lab, "six")["spec"] as? [String: Any] ?? [:]
            let ips = spec["clusterIPs"] as? [String] ?? []
            #expect(ips.count == 1 && ips[0].contains(":"), "\(spec)")
            if let address = ips.first {
                #expect(
                    try eventually(within: 10) {
                        try Self.connect(lab, from: "client", address, 80, count: 1).failures == 0
                    })
            }
            return
        }
        let required = try lab.run([
            "service", "add", "both", "--selector", "app=web", "--port", "80", "--ip-family-policy", "RequireDualStack",
        ])
        #expect(required.status != 0)
        #expect(
            (required.stdout + required.stderr).contains("this cluster is not configured for dual-stack services"),
            "\(required.stdout)\(required.stderr)")
        let preferred = try lab.run([
            "service", "add", "web", "--selector", "app=web", "--port", "80", "--ip-family-policy", "PreferDualStack",
        ])
        expectSuccess(preferred, "service add")
        let spec = try Self.service(lab, "web")["spec"] as? [String: Any] ?? [:]
        let ips = spec["clusterIPs"] as? [String] ?? []
        #expect(spec["ipFamilies"] as? [String] == [mode == "ipv4-only" ? "IPv4" : "IPv6"], "\(spec)")
        try #require(ips.count == 1, "\(spec)")
        #expect(
            try eventually(within: 10) { try Self.connect(lab, from: "client", ips[0], 80, count: 1).failures == 0 },
            "\(ips[0]) never answered")
        let tally = try Self.connect(lab, from: "client", ips[0], 80, count: 50)
        #expect(tally.failures == 0 && tally.byPod == ["web": 50], "\(tally)")
    }

    /// NodePort from outside the cluster (the lab's fabric) over both families; with externalTrafficPolicy Local,
    /// only the node's own backend answers, it sees the client's own address, and a node without a backend does
    /// not answer.
    @Test func nodePortFromOutsideInBothFamilies() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "2"])
        expectSuccess(try lab.run(["pod", "add", "n1", "web", "--label", "app=web"]), "pod add")
        expectSuccess(try lab.run(["pod", "serve", "web", "--port", "80"]), "pod serve")
        for (name, policy, nodePort) in [("cluster", "Cluster", 30080), ("local", "Local", 30081)] {
            expectSuccess(
                try lab.run([
                    "service", "add", name, "--selector", "app=web", "--port", "80", "--type", "NodePort",
                    "--node-port", "\(nodePort)", "--ip-family-policy", "RequireDualStack",
                    "--external-traffic-policy", policy,
                ]), "service add \(name)")
        }
        let n1 = try Self.nodeAddresses(lab, "n1")
        let n2 = try Self.nodeAddresses(lab, "n2")
        let outside = ["10.99.0.254", "fd99::fe"]
        for (family, address1, address2) in [(0, n1.ipv4!, n2.ipv4!), (1, n1.ipv6!, n2.ipv6!)] {
            // Cluster: every node answers; the backend sees the node's address, not the client's.
            for address in [address1, address2] {
                #expect(
                    try eventually(within: 10) {
                        try Self.connect(lab, from: "outside", address, 30080, count: 1).failures == 0
                    }, "NodePort \(address):30080 never answered")
                let tally = try Self.connect(lab, from: "outside", address, 30080, count: 20)
                #expect(tally.failures == 0 && tally.byPod == ["web": 20], "\(address):30080 \(tally)")
                if address == address2 {
                    #expect(!tally.clients.contains(outside[family]), "masqueraded via n2: \(tally.clients)")
                }
            }
            // Local: n1 (which has the backend) answers with the client's own address; n2 drops.
            #expect(
                try eventually(within: 10) {
                    try Self.connect(lab, from: "outside", address1, 30081, count: 1).failures == 0
                }, "NodePort \(address1):30081 never answered")
            let local = try Self.connect(lab, from: "outside", address1, 30081, count: 20)
            #expect(local.failures == 0 && local.clients == [outside[family]], "\(address1):30081 \(local)")
            let none = try Self.connect(lab, from: "outside", address2, 30081, count: 2)
            #expect(none.failures == 2, "n2 has no local endpoint: \(none)")
        }
    }

    /// LoadBalancer Services reached from outside the cluster over BGP, in both families: the load-balancer ranges
    /// announced by every node to the external peer (Cluster: any node, the client masqueraded), and with
    /// externalTrafficPolicy Local the /32 and /128 from the backend's node only, the client's address kept.
    @Test func loadBalancerIPsFromOutsideThroughTheExternalPeer() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "2", "--external-peer"])
        expectSuccess(try lab.run(["pod", "add", "n1", "web", "--label", "app=web"]), "pod add")
        expectSuccess(try lab.run(["pod", "serve", "web", "--port", "80"]), "pod serve")
        let file = try lab.state.write(
            "bgp.yaml",
            """
            apiVersion: projectcalico.org/v3
            kind: BGPConfiguration
            metadata: {name: default}
            spec:
              serviceLoadBalancerIPs: [{cidr: 192.0.2.0/24}, {cidr: "2001:db8:5::/64"}]
            """)
        expectSuccess(
            try TestProducts.run(
                "tandemctl", ["apply", "-f", file, "--datastore", "sqlite://\(lab.directory)/datastore.db"]), "apply")
        for (name, policy, suffix) in [("cluster", "Cluster", "10"), ("local", "Local", "11")] {
            expectSuccess(
                try lab.run([
                    "service", "add", name, "--selector", "app=web", "--port", "80", "--type", "LoadBalancer",
                    "--ip-family-policy", "RequireDualStack", "--external-traffic-policy", policy,
                    "--load-balancer-ip", "192.0.2.\(suffix)", "--load-balancer-ip", "2001:db8:5::\(suffix)",
                ]), "service add \(name)")
        }
        for (address, outside) in [("192.0.2.10", "10.99.0.254"), ("2001:db8:5::10", "fd99::fe")] {
            #expect(
                try eventually(within: 20) {
                    try Self.connect(lab, from: "outside", address, 80, count: 1).failures == 0
                }, "\(address) never answered from outside")
            let tally = try Self.connect(lab, from: "outside", address, 80, count: 20)
            #expect(tally.failures == 0 && tally.byPod == ["web": 20], "\(address): \(tally)")
            #expect(!tally.clients.contains(outside), "Cluster: masqueraded, \(tally.clients)")
        }
        for (address, outside) in [("192.0.2.11", "10.99.0.254"), ("2001:db8:5::11", "fd99::fe")] {
            // The /32 or /128 from n1 alone: the peer routes it there, and n1 keeps the client's address.
            var tally = Tally(replies: [:], failures: 1)
            let answered = try eventually(within: 20) {
                tally = try Self.connect(lab, from: "outside", address, 80, count: 5)
                return tally.failures == 0 && tally.clients == [outside]
            }
            #expect(answered, "\(address) Local: \(tally)")
        }
    }

    /// A Service without a selector, its endpoints given as EndpointSlices of each family (as a Kubernetes
    /// controller or an operator writes them): only ready endpoints are chosen, in each family.
    @Test func endpointSlicesGiveTheEndpointsOfASelectorlessService() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "2"])
        expectSuccess(try lab.run(["pod", "add", "n1", "web"]), "pod add")
        expectSuccess(try lab.run(["pod", "serve", "web", "--port", "80"]), "pod serve")
        expectSuccess(try lab.run(["pod", "add", "n2", "client"]), "pod add")
        let web = try #require(try Self.pods(lab)["web"])
        let manifest = """
            apiVersion: v1
            kind: Service
            metadata: {name: manual, namespace: default}
            spec:
              ipFamilyPolicy: RequireDualStack
              ipFamilies: [IPv6, IPv4]
              ports: [{name: http, port: 8080, targetPort: 80}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: manual-v4, namespace: default, labels: {kubernetes.io/service-name: manual}}
            addressType: IPv4
            endpoints:
            - {addresses: ["\(web.ipv4!)"], nodeName: n1}
            - {addresses: ["10.244.200.200"], nodeName: n2, conditions: {ready: false}}
            ports: [{name: http, port: 80, protocol: TCP}]
            ---
            apiVersion: discovery.k8s.io/v1
            kind: EndpointSlice
            metadata: {name: manual-v6, namespace: default, labels: {kubernetes.io/service-name: manual}}
            addressType: IPv6
            endpoints:
            - {addresses: ["\(web.ipv6!)"], nodeName: n1}
            - {addresses: ["fd00:244::200:200"], nodeName: n2, conditions: {ready: false}}
            ports: [{name: http, port: 80, protocol: TCP}]
            """
        let file = try lab.state.write("manual.yaml", manifest)
        expectSuccess(
            try TestProducts.run(
                "tandemctl", ["apply", "-f", file, "--datastore", "sqlite://\(lab.directory)/datastore.db"]), "apply")
        let ips = (try Self.service(lab, "manual")["spec"] as? [String: Any])?["clusterIPs"] as? [String] ?? []
        #expect(ips.count == 2 && ips[0].contains(":"), "\(ips)")
        for address in ips {
            #expect(
                try eventually(within: 10) {
                    try Self.connect(lab, from: "client", address, 8080, count: 1).failures == 0
                },
                "\(address) never answered")
            let tally = try Self.connect(lab, from: "client", address, 8080, count: 40)
            #expect(
                tally.failures == 0 && tally.byPod == ["web": 40], "not-ready endpoint chosen? \(address): \(tally)")
        }
    }
}
