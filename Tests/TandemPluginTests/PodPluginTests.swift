import Foundation
import TandemCNI
import TandemCore
import TandemTestSupport
import Testing

enum Stack: String, CaseIterable, Sendable {
    case ipv4Only, dualStack, ipv6Only
    var v4: Bool { self != .ipv6Only }
    var v6: Bool { self != .ipv4Only }
}

@Suite struct HostInterfaceNameTests {
    /// Calico's rule: `cali` + the first 11 hex digits of SHA-1("<namespace>.<pod>"); expected values from
    /// Python's hashlib; without Kubernetes names, the container ID's first 11 characters.
    @Test func followsCalicosRule() {
        #expect(hostVethName(namespace: "default", pod: "web", containerID: "x") == "cali68caf03a5f4")
        #expect(hostVethName(namespace: "kube-system", pod: "coredns-abc", containerID: "x") == "cali3d5d6ab04b5")
        #expect(hostVethName(namespace: nil, pod: nil, containerID: "0123456789abcdef") == "cali0123456789a")
        #expect(hostVethName(namespace: "default", pod: "web", containerID: "x").count <= 15)
    }
}

@Suite struct PodPluginTests {
    /// The whole life of a pod, for every spec version and every family mix: ADD, traffic both ways over every
    /// family, CHECK passing and then failing precisely once a route is gone, DEL twice, nothing left.
    @Test(arguments: ["0.3.1", "0.4.0", "1.0.0", "1.1.0"], Stack.allCases)
    func podLifecycle(version: String, stack: Stack) async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        try await Self.lifecycle(lab: &lab, version: version, stack: stack)
    }

    /// The checks of `podLifecycle`, also run with the node agent serving the plugin.
    static func lifecycle(lab: inout PodLab, version: String, stack: Stack) async throws {
        let pod = try lab.newPod()
        let config = lab.config(version: version, v4: stack.v4, v6: stack.v6)
        let add = try lab.run("ADD", pod: pod, container: "ctr-1", config: config)
        #expect(add.status == 0, "\(add.output)")
        let json = add.json
        #expect(json["cniVersion"] as? String == version)
        let interfaces = try #require(json["interfaces"] as? [[String: Any]])
        let hostVeth = hostVethName(namespace: "default", pod: "web", containerID: "ctr-1")
        #expect(interfaces.first?["name"] as? String == hostVeth)
        #expect(interfaces.first?["mac"] as? String == "ee:ee:ee:ee:ee:ee")
        #expect(interfaces.last?["name"] as? String == "eth0")
        #expect(interfaces.last?["sandbox"] as? String == pod.path)
        let ips = try #require(json["ips"] as? [[String: Any]])
        #expect(ips.count == (stack == .dualStack ? 2 : 1))
        #expect(ips.allSatisfy { $0["interface"] as? Int == 1 })
        #expect(ips.allSatisfy { ($0["version"] != nil) == version.hasPrefix("0.") })
        let addresses = resultAddresses(json)
        // IPv4 first; pod addresses are /32 and /128.
        #expect(addresses.map { $0.contains(":") } == (stack.v4 ? [false] : []) + (stack.v6 ? [true] : []))
        for ip in ips {
            let text = ip["address"] as? String ?? ""
            #expect(text.hasSuffix(text.contains(":") ? "/128" : "/32"), "\(text)")
        }

        // The pod reaches the node and the node reaches the pod, over every family it has.
        if stack.v4 { #expect(try PodLab.ping(from: pod, PodLab.nodeIPv4)) }
        if stack.v6 { #expect(try PodLab.ping(from: pod, PodLab.nodeIPv6)) }
        for address in addresses { #expect(try PodLab.ping(from: lab.node, address), "node to pod \(address)") }
        // DAD is off on both ends: nothing tentative.
        #expect(!(try pod.run("ip -6 addr show dev eth0").stdout.contains("tentative")))
        #expect(try pod.run("ip -o link show eth0").stdout.contains("mtu 1450"))

        if version != "0.3.1" {
            let checkConfig = try withPrevResult(config, json)
            let check = try lab.run("CHECK", pod: pod, container: "ctr-1", config: checkConfig)
            #expect(check.status == 0, "\(check.output)")
            // Remove the pod's default route of one family: CHECK names it.
            let family = stack.v4 ? "" : "-6 "
            try pod.run("ip \(family)route del default")
            let failed = try lab.run("CHECK", pod: pod, container: "ctr-1", config: checkConfig)
            #expect(failed.status != 0)
            #expect(failed.json["code"] as? Int == CNIError.checkFailed)
            #expect(
                (failed.json["details"] as? String)?.contains("no \(stack.v4 ? "IPv4" : "IPv6") default route") == true)
        } else {
            let check = try lab.run("CHECK", pod: pod, container: "ctr-1", config: config)
            #expect(check.json["code"] as? Int == CNIError.incompatibleVersion)
        }

        for _ in 0..<2 {
            let del = try lab.run("DEL", pod: pod, container: "ctr-1", config: config)
            #expect(del.status == 0, "\(del.output)")
        }
        #expect(try lab.hostVethsGone(hostVeth))
        #expect(!(try pod.run("ip link show").stdout.contains("eth0")))
        let left = try await lab.leftovers()
        #expect(left.handles.isEmpty)
        #expect(left.endpoints.isEmpty)
    }

    @Test func addRecordsTheWorkloadEndpointAndHostRoutes() async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        let pod = try lab.newPod()
        let add = try lab.run("ADD", pod: pod, container: "ctr-wep", config: lab.config())
        #expect(add.status == 0, "\(add.output)")
        let hostVeth = hostVethName(namespace: "default", pod: "web", containerID: "ctr-wep")
        let addresses = resultAddresses(add.json)
        let routes4 = try lab.node.run("ip route show dev \(hostVeth)").stdout
        let routes6 = try lab.node.run("ip -6 route show dev \(hostVeth)").stdout
        #expect(routes4.contains("\(addresses[0]) scope link"))
        #expect(routes6.contains(addresses[1]))
        #expect(try lab.node.run("sysctl -n net.ipv4.conf.\(hostVeth).proxy_arp").stdout == "1\n")
        #expect(try lab.node.run("sysctl -n net.ipv6.conf.\(hostVeth).accept_dad").stdout == "0\n")
        // The pod's gateways, with permanent neighbour entries.
        #expect(try pod.run("ip route show").stdout.contains("default via 169.254.1.1 dev eth0"))
        #expect(try pod.run("ip -6 route show").stdout.contains("default via fe80::ecee:eeff:feee:eeee dev eth0"))
        #expect(try pod.run("ip neigh show 169.254.1.1").stdout.contains("ee:ee:ee:ee:ee:ee PERMANENT"))
        #expect(try pod.run("ip -6 neigh show fe80::ecee:eeff:feee:eeee").stdout.contains("PERMANENT"))
        let left = try await lab.leftovers()
        #expect(left.endpoints == ["node--a-k8s-web-eth0"])
        let shown = try TestProducts.run(
            "tandemctl", ["get", "workloadendpoint", "-n", "default", "-o", "yaml", "--datastore", lab.datastore])
        #expect(shown.stdout.contains("containerID: ctr-wep"))
        #expect(shown.stdout.contains("interfaceName: \(hostVeth)"))
        #expect(shown.stdout.contains("\(addresses[1])/128"))
        // A second ADD for the same container and interface is refused and does not disturb the pod.
        let again = try lab.run("ADD", pod: pod, container: "ctr-wep", config: lab.config())
        #expect(again.status != 0)
        #expect(again.json["code"] as? Int == CNIError.dataplaneFailure, "\(again.output)")
        #expect(again.output.contains("interface eth0 already exists"), "\(again.output)")
        #expect(try lab.node.run("ip link show \(hostVeth)").status == 0, "the running pod's host veth stays")
        #expect(try PodLab.ping(from: lab.node, addresses[0]))
        #expect(try await lab.leftovers().handles.count == 1)
        _ = try lab.run("DEL", pod: pod, container: "ctr-wep", config: lab.config())
    }

    /// Two pods on one node reach each other over both families through the node's host routes.
    @Test func podsOnOneNodeReachEachOther() async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        let podA = try lab.newPod()
        let podB = try lab.newPod()
        let addA = try lab.run(
            "ADD", pod: podA, container: "ctr-a", config: lab.config(),
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=a")
        let addB = try lab.run(
            "ADD", pod: podB, container: "ctr-b", config: lab.config(),
            args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=b")
        #expect(addA.status == 0 && addB.status == 0, "\(addA.output) \(addB.output)")
        for address in resultAddresses(addB.json) { #expect(try PodLab.ping(from: podA, address), "a to \(address)") }
        for address in resultAddresses(addA.json) { #expect(try PodLab.ping(from: podB, address), "b to \(address)") }
    }

    @Test func statusAndGarbageCollection() async throws {
        var lab = try PodLab()
        defer { lab.remove() }
        let status = try lab.run("STATUS", pod: nil, container: "", config: lab.config(version: "1.1.0"))
        #expect(status.status == 0, "\(status.output)")
        let podA = try lab.newPod()
        let podB = try lab.newPod()
        #expect(
            try lab.run(
                "ADD", pod: podA, container: "keep", config: lab.config(version: "1.1.0"),
                args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=a"
            ).status == 0)
        #expect(
            try lab.run(
                "ADD", pod: podB, container: "gone", config: lab.config(version: "1.1.0"),
                args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=b"
            ).status == 0)
        // A GC without a well-formed list of live attachments would collect everything: refused, nothing released.
        for (label, extra) in [
            ("missing", ""), ("not a list", #","cni.dev/valid-attachments":"keep""#),
            ("an entry without containerID", #","cni.dev/valid-attachments":[{"ifname":"eth0"}]"#),
            ("a null entry", #","cni.dev/valid-attachments":[null]"#),
        ] {
            let refused = try lab.run("GC", pod: nil, container: "", config: lab.config(version: "1.1.0", extra: extra))
            #expect(refused.status != 0, "\(label)")
            #expect(refused.json["code"] as? Int == CNIError.invalidConfig, "\(label): \(refused.output)")
            #expect((refused.json["details"] as? String)?.contains("nothing released") == true, "\(label)")
            let kept = try await lab.leftovers()
            #expect(kept.handles.count == 2 && kept.endpoints.count == 2, "\(label): \(kept)")
        }
        let gc = try lab.run(
            "GC", pod: nil, container: "",
            config: lab.config(
                version: "1.1.0", extra: #","cni.dev/valid-attachments":[{"containerID":"keep","ifname":"eth0"}]"#))
        #expect(gc.status == 0, "\(gc.output)")
        let left = try await lab.leftovers()
        #expect(left.handles == ["k8s-pod-network.keep"])
        #expect(left.endpoints == ["node--a-k8s-a-eth0"])
        // STATUS without an IPv6 pool, asked for IPv6: not available (50), naming the family.
        let v4Lab = try PodLab(
            pools: "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: v4}\nspec: {cidr: 10.78.0.0/16}\n")
        defer { v4Lab.remove() }
        let unavailable = try v4Lab.run("STATUS", pod: nil, container: "", config: v4Lab.config(version: "1.1.0"))
        #expect(unavailable.json["code"] as? Int == 50)
        #expect((unavailable.json["details"] as? String)?.contains("IPv6") == true)
    }

    @Test func anAddKilledMidwayLeavesNothingAfterDelOrGC() async throws {
        for point in ["after-ipam", "after-veth", "after-endpoint"] {
            for cleanup in ["DEL", "GC"] {
                var lab = try PodLab()
                defer { lab.remove() }
                let pod = try lab.newPod()
                let killed = try lab.run(
                    "ADD", pod: pod, container: "ctr-k", config: lab.config(version: "1.1.0"),
                    environment: ["TANDEM_TEST_KILL_AT": point])
                #expect(killed.status == 137, "\(point): \(killed.output)")
                if cleanup == "DEL" {
                    #expect(
                        try lab.run("DEL", pod: pod, container: "ctr-k", config: lab.config(version: "1.1.0")).status
                            == 0)
                    #expect(!(try pod.run("ip link show").stdout.contains("eth0")), "\(point)")
                } else {
                    let gc = try lab.run(
                        "GC", pod: nil, container: "",
                        config: lab.config(version: "1.1.0", extra: #","cni.dev/valid-attachments":[]"#))
                    #expect(gc.status == 0)
                }
                let left = try await lab.leftovers()
                #expect(left.handles.isEmpty, "\(point) then \(cleanup)")
                #expect(left.endpoints.isEmpty, "\(point) then \(cleanup)")
            }
        }
    }
}
