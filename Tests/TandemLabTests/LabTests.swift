import Foundation
import TandemTestSupport
import Testing

/// A lab of this test: a unique name (namespaces NAME-fab, NAME-n1, ...) and its own state directory, removed with
/// `tandem-lab down` and a check that nothing it made is left.
struct TestLab {
    let name = "t" + String(UInt32.random(in: 0...0xFF_FFFF), radix: 16)
    let state: ScratchDirectory

    init() throws { state = try ScratchDirectory("lab") }

    var options: [String] { ["--name", name, "--state-dir", state.path] }
    var directory: String { state.path + "/" + name }

    @discardableResult
    func run(_ arguments: [String]) throws -> TestProducts.Output {
        try TestProducts.run("tandem-lab", arguments + options)
    }

    /// `tandem-lab up`, failing the test with the lab's output if it fails.
    func up(_ arguments: [String]) throws {
        let output = try run(["up"] + arguments)
        guard output.status == 0 else {
            throw TestSupportError("tandem-lab up failed:\n\(output.stdout)\(output.stderr)")
        }
    }

    /// Namespaces of this lab that exist.
    func namespaces() throws -> [String] {
        try shell("ip netns list").stdout.split(separator: "\n").map { String($0.split(separator: " ")[0]) }
            .filter { $0.hasPrefix(name + "-") }
    }

    /// Processes whose command line names this lab's directory (tandem-node, BIRD).
    func processes() throws -> [String] {
        try shell("pgrep -af -- '\(directory)/' | grep -v pgrep || true").stdout.split(separator: "\n")
            .map(String.init).filter { !$0.contains("<defunct>") }
    }

    /// Removes the lab and checks that nothing is left.
    func down() {
        _ = try? run(["down"])
        state.remove()
    }

    /// `ip netns exec NODE-NS COMMAND`.
    func onNode(_ node: String, _ command: String) throws -> TestProducts.Output {
        try shell("ip netns exec \(name)-\(node) \(command)")
    }
}

/// Polls `condition` every 100 ms until it holds or `seconds` pass.
func eventually(within seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if try condition() { return true }
        usleep(100_000)
    }
    return try condition()
}

/// An IPv6 address in its canonical form, an IPv4-mapped one as the IPv4 address (inet_pton / inet_ntop).
func canonicalAddress(_ text: String) -> String {
    var bytes = [UInt8](repeating: 0, count: 16)
    guard inet_pton(AF_INET6, text, &bytes) == 1 else { return text }
    if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff {
        return bytes[12...].map(String.init).joined(separator: ".")
    }
    var buffer = [CChar](repeating: 0, count: 64)
    guard inet_ntop(AF_INET6, bytes, &buffer, 64) != nil else { return text }
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The lab's pod addresses from `tandem-lab status`: `pod NAME on NODE: ADDR [ADDR]`.
func podAddresses(_ status: String) -> [String: [String]] {
    var result: [String: [String]] = [:]
    for line in status.split(separator: "\n") where line.hasPrefix("pod ") {
        let words = line.split(separator: " ").map(String.init)
        result[words[1]] = Array(words.dropFirst(4))
    }
    return result
}

@Suite(.serialized) struct LabTests {
    /// The issue's main demonstration, dual-stack: three nodes, a pod each, everything reaches everything; BGP routes
    /// and blackholes in the kernel; sessions up in both families; agent restarts lose no packet; a route deleted by
    /// hand returns and a foreign route stays; a broken node makes check fail; down leaves nothing.
    @Test func dualStackClusterOfThree() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "3"])
        for node in ["n1", "n2", "n3"] {
            let added = try lab.run(["pod", "add", node])
            #expect(added.status == 0, "\(added.stdout)\(added.stderr)")
        }
        let check = try lab.run(["check"])
        #expect(check.status == 0, "\(check.stdout)")
        #expect(check.stdout.contains("all reachable"))
        #expect(check.stdout.contains("IPv4: rows ping columns") && check.stdout.contains("IPv6: rows ping columns"))

        // Other nodes' blocks from BIRD, the node's own block as the agent's blackhole, per family.
        let routes6 = try lab.onNode("n1", "ip -6 route").stdout
        let routes4 = try lab.onNode("n1", "ip route").stdout
        #expect(routes6.contains("/122 via fd99::2 dev eth0 proto bird"))
        #expect(routes6.contains("/122 via fd99::3 dev eth0 proto bird"))
        #expect(routes6.contains("blackhole fd00:244:") && routes6.contains("/122 dev lo proto 80"))
        #expect(routes4.contains("/26 via 10.99.0.2 dev eth0 proto bird"))
        #expect(routes4.contains("/26 proto 80") && routes4.contains("blackhole 10.244."))

        // Sessions established in both families, as tandemctl shows them.
        let status = try lab.onNode(
            "n1", "\(TestProducts.directory().path)/tandemctl node status --bird-socket \(lab.directory)/n1/bird.ctl")
        #expect(status.status == 0)
        #expect(status.stdout.components(separatedBy: "Established").count - 1 == 4, "\(status.stdout)")
        #expect(status.stdout.contains("IPv4 BGP status") && status.stdout.contains("IPv6 BGP status"))
        #expect(status.stdout.contains("fd99::2") && status.stdout.contains("node-to-node mesh"))
        let list = try TestProducts.run(
            "tandemctl", ["node", "list", "--datastore", "sqlite://\(lab.directory)/datastore.db"])
        #expect(
            list.stdout.contains("n3") && list.stdout.contains("10.99.0.3/24") && list.stdout.contains("fd99::3/64"))

        // Restarting tandem-node on both ends loses no packet of a running flow, in either family.
        let pods = podAddresses(try lab.run(["status"]).stdout)
        let target = try #require(pods["pod-n2-1"])
        #expect(target.count == 2)
        let flows = target.map { address in
            Flow("ip netns exec \(lab.name)-pod-n1-1 ping -n -q -i 0.02 -c 200 \(address)")
        }
        usleep(300_000)
        #expect(try lab.run(["restart", "n1"]).status == 0)
        #expect(try lab.run(["restart", "n2"]).status == 0)
        for flow in flows {
            let output = flow.wait()
            #expect(output.contains(" 0% packet loss"), "\(output)")
        }

        // A pod route deleted by hand returns within the resync (5 s in the lab); a route the agent does not own
        // stays.
        let podV4 = target.first { !$0.contains(":") }!
        let podV6 = target.first { $0.contains(":") }!
        _ = try lab.onNode("n2", "ip route add 198.51.100.0/24 via 10.99.0.254 proto static")
        _ = try lab.onNode("n2", "ip -6 route add 2001:db8:99::/64 via fd99::fe proto static")
        _ = try lab.onNode("n2", "ip route del \(podV4)/32")
        _ = try lab.onNode("n2", "ip -6 route del \(podV6)/128")
        #expect(
            try eventually(within: 8) {
                try lab.onNode("n2", "ip route").stdout.contains("\(podV4) dev cali")
                    && lab.onNode("n2", "ip -6 route").stdout.contains("\(podV6) dev cali")
            })
        #expect(
            try lab.onNode("n2", "ip route").stdout.contains("198.51.100.0/24 via 10.99.0.254 dev eth0 proto static"))
        #expect(
            try lab.onNode("n2", "ip -6 route").stdout.contains("2001:db8:99::/64 via fd99::fe dev eth0 proto static"))
        #expect(try lab.run(["check"]).status == 0)

        // calico-node's BIRD probes, per family: ready with the sessions up; not ready as soon as BIRD is killed; ready
        // again once the agent has started it and the sessions are back.
        let birdProbe =
            "\(TestProducts.directory().path)/tandem-node health -bird-live -bird-ready -bird6-ready --bird-dir \(lab.directory)/n1"
        #expect(try eventually(within: 20) { try lab.onNode("n1", birdProbe).status == 0 })
        let n1Bird = try String(contentsOfFile: lab.directory + "/n1/bird.conf.pid", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try shell("kill \(n1Bird)")
        #expect(try eventually(within: 10) { try lab.onNode("n1", birdProbe).status != 0 }, "BIRD's death went unseen")
        #expect(try eventually(within: 40) { try lab.onNode("n1", birdProbe).status == 0 }, "BIRD did not come back")

        // A node whose BIRD is gone: check says so and fails.
        let birdPID = try String(contentsOfFile: lab.directory + "/n3/bird.conf.pid", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let state = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: lab.directory + "/state.json")))
        let nodes = try #require((state as? [String: Any])?["nodes"] as? [[String: Any]])
        let agentPID = try #require(nodes.first { $0["name"] as? String == "n3" }?["agentPID"] as? Int)
        _ = try shell("kill \(agentPID) && sleep 0.3 && kill \(birdPID)")
        #expect(
            try eventually(within: 10) {
                try lab.onNode("n1", "ip route").stdout.contains("via 10.99.0.3") == false
            })
        let broken = try lab.run(["check"])
        #expect(broken.status != 0)
        #expect(broken.stdout.contains("FAIL"))

        // Down leaves no namespace, link or process.
        let down = try lab.run(["down"])
        #expect(down.status == 0)
        #expect(try lab.namespaces().isEmpty)
        #expect(try lab.processes().isEmpty)
    }

    /// The same with no IPv4 anywhere: hashed router IDs, IPv6 sessions only, pods with IPv6 only.
    @Test func ipv6OnlyClusterOfThree() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "3", "--ipv6-only"])
        // The seed's IPv6 pool (natOutgoing, /122 blocks) takes over from the default one.
        let datastore = "sqlite://\(lab.directory)/datastore.db"
        let seedPool = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../TandemModelTests/Fixtures/seeds/seed002-02-ippool-ipv6-pool.yaml").standardized
        let applied = try TestProducts.run("tandemctl", ["apply", "-f", seedPool.path, "--datastore", datastore])
        #expect(applied.status == 0, "\(applied.stderr)")
        let disabled = try TestProducts.run(
            "tandemctl",
            [
                "patch", "ippool", "default-ipv6-ippool", "-p", "{\"spec\":{\"disabled\":true}}", "--datastore",
                datastore,
            ])
        #expect(disabled.status == 0, "\(disabled.stderr)")
        for node in ["n1", "n2", "n3"] { #expect(try lab.run(["pod", "add", node]).status == 0) }
        // Labels reach the pod's WorkloadEndpoint (through the CNI convention args.cni.labels), with Calico's own.
        let labelled = try lab.run(["pod", "add", "n1", "web", "--label", "app=web", "--label", "tier=front"])
        #expect(labelled.status == 0, "\(labelled.stdout)\(labelled.stderr)")
        let endpoints = try TestProducts.run(
            "tandemctl",
            ["get", "workloadendpoints", "-o", "yaml", "--datastore", "sqlite://\(lab.directory)/datastore.db"])
        #expect(
            endpoints.stdout.contains("app: web") && endpoints.stdout.contains("tier: front"), "\(endpoints.stdout)")
        #expect(endpoints.stdout.contains("projectcalico.org/namespace: default"))
        // A label Kubernetes would refuse: the ADD fails naming it, and nothing of the pod is left.
        let refused = try lab.run(["pod", "add", "n2", "broken", "--label", "bad key=x"])
        #expect(refused.status != 0)
        #expect((refused.stdout + refused.stderr).contains("bad key"), "\(refused.stdout)\(refused.stderr)")
        #expect(!(try lab.namespaces().contains("\(lab.name)-broken")))
        // n2 keeps only its first pod's veth.
        let links = try lab.onNode("n2", "ip -o link show").stdout.split(separator: "\n")
        #expect(links.filter { $0.contains(": cali") }.count == 1, "\(links)")
        let check = try lab.run(["check"])
        #expect(check.status == 0, "\(check.stdout)")
        #expect(!check.stdout.contains("IPv4:"))
        // Every pod reaches the outside (the gateway, which routes no pool) through natOutgoing.
        #expect(check.stdout.contains("outside") && !check.stdout.contains("no-NAT"), "\(check.stdout)")
        let pods = podAddresses(try lab.run(["status"]).stdout)
        #expect(pods.values.allSatisfy { $0.count == 1 && $0[0].hasPrefix("fd00:10:244:") }, "\(pods)")
        // The gateway sees the node's address.
        let listener = try shell(
            "ip netns exec \(lab.name)-fab setsid socat TCP6-LISTEN:9090,fork,reuseaddr "
                + "SYSTEM:'echo peer=$SOCAT_PEERADDR' >/dev/null 2>&1 & echo $!")
        defer { _ = try? shell("kill \(listener.stdout.trimmingCharacters(in: .whitespacesAndNewlines))") }
        #expect(
            try eventually(within: 10) {
                let said = try shell(
                    "ip netns exec \(lab.name)-web socat -T 2 - 'TCP:[fd99::fe]:9090,connect-timeout=2' </dev/null"
                ).stdout
                return said.hasPrefix("peer=[")
                    && canonicalAddress(String(said.dropFirst(6).prefix { $0 != "]" })) == "fd99::1"
            })
        // The seed's pool is CrossSubnet: a node on the same subnet is routed straight to, by the agent (BIRD leaves
        // VXLAN pools to it).
        #expect(try lab.onNode("n1", "ip -6 route").stdout.contains("/122 via fd99::3 dev eth0 proto 80"))
        #expect(!(try lab.onNode("n1", "ip route").stdout.contains("10.244.")))
        let status = try lab.onNode(
            "n1", "\(TestProducts.directory().path)/tandemctl node status --bird-socket \(lab.directory)/n1/bird.ctl")
        #expect(status.stdout.contains("No IPv4 peers found."))
        #expect(status.stdout.components(separatedBy: "Established").count - 1 == 2)
        let log = try String(contentsOfFile: lab.directory + "/n1/tandem-node.log", encoding: .utf8)
        #expect(log.contains("hash of the node name"))
        #expect(try lab.run(["down"]).status == 0)
        #expect(try lab.namespaces().isEmpty)
    }

    /// The lab on a real etcd, reached by the nodes over the fabric: dual-stack through etcd's IPv4 address, pods
    /// reach each other; etcd crashes and restarts, and the agents' watches carry on by themselves (the resync is
    /// ten minutes away, yet a new pod's routes appear at once); `down` leaves no address allocated in etcd. Then
    /// IPv6-only through etcd's IPv6 address. A loopback etcd URL is refused with the explanation.
    @Test func etcdDatastore() throws {
        let etcd = try TestEtcd(listenEverywhere: true)
        defer { etcd.stop() }
        let lab = try TestLab()
        defer { lab.down() }
        let loopback = try lab.run(["up", "--datastore", etcd.url])
        #expect(loopback.status != 0)
        #expect(loopback.stderr.contains("the node's own loopback"), "\(loopback.stderr)")
        #expect(loopback.stderr.contains("etcd://10.99.0.253:\(etcd.clientPort)"), "\(loopback.stderr)")

        try lab.up([
            "--nodes", "3", "--datastore", "etcd://10.99.0.253:\(etcd.clientPort)", "--resync-interval", "600",
        ])
        for node in ["n1", "n2", "n3"] { #expect(try lab.run(["pod", "add", node]).status == 0) }
        let check = try lab.run(["check"])
        #expect(check.status == 0, "\(check.stdout)")
        let nodes = try TestProducts.run("tandemctl", ["node", "list", "--datastore", etcd.url])
        #expect(["n1", "n2", "n3"].allSatisfy { nodes.stdout.contains($0) }, "\(nodes.stdout)")

        // Readiness follows the datastore: not ready within 10 s of etcd stopping, ready again once it is back.
        let probe = "\(TestProducts.directory().path)/tandem-node health -felix-ready"
        #expect(try eventually(within: 20) { try lab.onNode("n1", probe).status == 0 })
        etcd.kill()
        var unready = ""
        #expect(
            try eventually(within: 10) {
                let answer = try lab.onNode("n1", probe)
                unready = answer.stdout
                return answer.status != 0
            }, "n1 stayed ready with etcd down")
        #expect(unready.contains("felix is not ready") && unready.contains("datastore"), "\(unready)")
        try etcd.start()
        #expect(
            try eventually(within: 20) { try lab.onNode("n1", probe).status == 0 }, "n1 not ready after etcd returned")
        let late = try lab.run(["pod", "add", "n1", "late"])
        #expect(late.status == 0, "\(late.stdout)\(late.stderr)")
        let addresses = podAddresses(try lab.run(["status"]).stdout)["late"] ?? []
        #expect(addresses.count == 2, "\(addresses)")
        // The agent's own routes (proto 80) for the new pod: only its watch can have told it in time.
        #expect(
            try eventually(within: 5) {
                let routes =
                    try lab.onNode("n1", "ip route show proto 80").stdout
                    + lab.onNode("n1", "ip -6 route show proto 80").stdout
                return addresses.allSatisfy { routes.contains($0 + " dev cali") }
            }, "n1's agent did not program the new pod's routes after etcd restarted")
        #expect(try lab.run(["check"]).status == 0)
        #expect(try lab.run(["down"]).status == 0)
        #expect(try lab.namespaces().isEmpty)
        #expect(!(try shell("ip -o link show").stdout.contains("\(lab.name)-host")))
        let handles = try TestProducts.run("tandemctl", ["ipam", "check", "--datastore", etcd.url])
        #expect(handles.status == 0, "\(handles.stdout)")

        let ipv6Etcd = try TestEtcd(listenEverywhere: true)
        defer { ipv6Etcd.stop() }
        let ipv6Lab = try TestLab()
        defer { ipv6Lab.down() }
        try ipv6Lab.up(["--nodes", "2", "--ipv6-only", "--datastore", "etcd://[fd99::fd]:\(ipv6Etcd.clientPort)"])
        for node in ["n1", "n2"] { #expect(try ipv6Lab.run(["pod", "add", node]).status == 0) }
        let ipv6Check = try ipv6Lab.run(["check"])
        #expect(ipv6Check.status == 0, "\(ipv6Check.stdout)")
        #expect(!ipv6Check.stdout.contains("IPv4:"))
    }

    /// Network policy in both families, enforced by the agents with nftables and then with iptables: default deny
    /// plus an allow from labelled clients over TCP and ICMP; a policy with only IPv4 nets leaves IPv6 denied;
    /// neighbour discovery keeps working under deny; deleting the policies restores traffic.
    @Test(arguments: ["nftables", "iptables"])
    func policyInBothFamilies(backend: String) throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "2", "--policy-backend", backend])
        let datastore = "sqlite://\(lab.directory)/datastore.db"
        #expect(try lab.run(["pod", "add", "n1", "server", "--label", "app=server"]).status == 0)
        #expect(try lab.run(["pod", "add", "n2", "client", "--label", "role=client"]).status == 0)
        #expect(try lab.run(["pod", "add", "n2", "stranger", "--label", "role=other"]).status == 0)
        let server = try #require(podAddresses(try lab.run(["status"]).stdout)["server"])
        let server4 = try #require(server.first { !$0.contains(":") })
        let server6 = try #require(server.first { $0.contains(":") })
        // A TCP server in the server pod, on both families.
        let listener = try shell(
            "ip netns exec \(lab.name)-server setsid socat TCP6-LISTEN:8080,ipv6only=0,fork,reuseaddr "
                + "SYSTEM:'echo hello' >/dev/null 2>&1 & echo $!")
        defer { _ = try? shell("kill \(listener.stdout.trimmingCharacters(in: .whitespacesAndNewlines))") }
        func ping(_ pod: String, _ address: String) throws -> Bool {
            try shell("ip netns exec \(lab.name)-\(pod) ping -c 1 -W 1 \(address)").status == 0
        }
        func tcp(_ pod: String, _ address: String) throws -> Bool {
            let target = address.contains(":") ? "[\(address)]" : address
            return try shell(
                "ip netns exec \(lab.name)-\(pod) socat -T 2 - TCP:\(target):8080,connect-timeout=2 </dev/null"
            ).stdout.contains("hello")
        }
        func reach(_ pod: String) throws -> [Bool] {
            [try ping(pod, server4), try ping(pod, server6), try tcp(pod, server4), try tcp(pod, server6)]
        }
        func apply(_ yaml: String) throws {
            let file = try lab.state.write("policy-\(UUID().uuidString).yaml", yaml)
            let applied = try TestProducts.run("tandemctl", ["apply", "-f", file, "--datastore", datastore])
            #expect(applied.status == 0, "\(applied.stderr)")
        }
        #expect(try eventually(within: 5) { try reach("stranger") == [true, true, true, true] })

        try apply(
            """
            apiVersion: projectcalico.org/v3
            kind: GlobalNetworkPolicy
            metadata: {name: default-deny}
            spec: {selector: app == 'server', types: [Ingress]}
            ---
            apiVersion: projectcalico.org/v3
            kind: NetworkPolicy
            metadata: {name: allow-client, namespace: default}
            spec:
              selector: app == 'server'
              order: 100
              ingress:
              - {action: Allow, protocol: TCP, source: {selector: role == 'client'}, destination: {ports: [8080]}}
              - {action: Allow, protocol: ICMP, source: {selector: role == 'client'}}
              - {action: Allow, protocol: ICMPv6, source: {selector: role == 'client'}}
            """)
        #expect(
            try eventually(within: 10) { try reach("stranger") == [false, false, false, false] },
            "the stranger still reaches the server")
        #expect(try reach("client") == [true, true, true, true])

        // Someone flushes the node's rules (`nft flush ruleset`, `iptables -F`): the agent finds it on its resync
        // (5 s in the lab) and loads the policy again.
        let flush = backend == "nftables" ? "nft flush ruleset" : "sh -c 'iptables -F && ip6tables -F'"
        // Counted in the agent's log: how often it has loaded the whole table (nftables) or hooked FORWARD
        // (iptables). The flush is seen by its repair, not by listing the rules after it: the agent's resync may
        // fall between the flush and any listing.
        let logPath = lab.directory + "/n1/tandem-node.log"
        let marker = backend == "nftables" ? "table inet tandem created" : "FORWARD hooked"
        func repairs() -> Int {
            ((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "").components(separatedBy: marker).count - 1
        }
        let before = repairs()
        #expect(try lab.onNode("n1", flush).status == 0)
        #expect(
            try eventually(within: 10) {
                try repairs() > before && reach("stranger") == [false, false, false, false]
                    && reach("client") == [true, true, true, true]
            }, "policy was not enforced again after the flush")
        let repairedLog = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        #expect(repairs() > before, "\(repairedLog.suffix(3000))")

        let selecting = try TestProducts.run("tandemctl", ["policy", "selecting", "server", "--datastore", datastore])
        #expect(selecting.status == 0, "\(selecting.stderr)")
        #expect(
            selecting.stdout.contains("1. NetworkPolicy default/allow-client (order 100.0): ingress"),
            "\(selecting.stdout)")
        #expect(
            selecting.stdout.contains("2. GlobalNetworkPolicy default-deny (no order): ingress"), "\(selecting.stdout)")
        #expect(selecting.stdout.contains("ingress: 2 IPv4 rule(s), 2 IPv6 rule(s)"), "\(selecting.stdout)")
        // Neighbour discovery under deny: the node forgets the server's MAC and must ask again.
        let links = try lab.onNode("n1", "ip -o link show").stdout
        let veth = try #require(
            links.split(separator: " ").map(String.init).first { $0.hasPrefix("cali") }?.split(separator: "@").first)
        let flushed = try lab.onNode("n1", "ip -6 neigh flush dev \(veth)")
        #expect(flushed.status == 0, "\(flushed.stderr)")
        #expect(!(try lab.onNode("n1", "ip -6 neigh show dev \(veth)").stdout.contains(server6)))
        #expect(try ping("client", server6), "IPv6 broke under deny: neighbour discovery was dropped")
        #expect(try lab.onNode("n1", "ip -6 neigh show dev \(veth)").stdout.contains(server6))

        // Only IPv4 nets: IPv6 stays denied, not opened.
        try apply(
            """
            apiVersion: projectcalico.org/v3
            kind: NetworkPolicy
            metadata: {name: allow-client, namespace: default}
            spec:
              selector: app == 'server'
              order: 100
              ingress: [{action: Allow, source: {nets: [10.0.0.0/8]}}]
            """)
        #expect(try eventually(within: 10) { try reach("stranger") == [true, false, true, false] })

        let deleted = try TestProducts.run(
            "tandemctl", ["delete", "globalnetworkpolicy", "default-deny", "--datastore", datastore])
        #expect(deleted.status == 0, "\(deleted.stderr)")
        let deletedNP = try TestProducts.run(
            "tandemctl", ["delete", "networkpolicy", "allow-client", "-n", "default", "--datastore", datastore])
        #expect(deletedNP.status == 0, "\(deletedNP.stderr)")
        #expect(try eventually(within: 10) { try reach("stranger") == [true, true, true, true] })
        let log = try String(contentsOfFile: lab.directory + "/n1/tandem-node.log", encoding: .utf8)
        #expect(log.contains("policy (\(backend))"), "\(log.suffix(2000))")
    }

    /// natOutgoing in both families, on both backends: a pod reaches the lab's gateway (which has no route to any
    /// pool) and the gateway sees the node's address; pod-to-pod traffic keeps the pod's address; turning
    /// natOutgoing off for IPv6 takes effect live (the gateway can no longer answer the pod).
    @Test(arguments: ["nftables", "iptables"])
    func natOutgoingInBothFamilies(backend: String) throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "2", "--policy-backend", backend])
        let datastore = "sqlite://\(lab.directory)/datastore.db"
        func patchIPv6Pool(_ natOutgoing: Bool) throws {
            let patched = try TestProducts.run(
                "tandemctl",
                [
                    "patch", "ippool", "default-ipv6-ippool", "-p", "{\"spec\":{\"natOutgoing\":\(natOutgoing)}}",
                    "--datastore", datastore,
                ])
            #expect(patched.status == 0, "\(patched.stderr)")
        }
        try patchIPv6Pool(true)
        #expect(try lab.run(["pod", "add", "n1", "client"]).status == 0)
        #expect(try lab.run(["pod", "add", "n2", "server"]).status == 0)
        let pods = podAddresses(try lab.run(["status"]).stdout)
        let client = try #require(pods["client"])
        let server = try #require(pods["server"])
        // A TCP service on the gateway (the fabric), in the server pod and on node n2, answering with the peer's
        // address and port.
        var servers: [String] = []
        for namespace in ["\(lab.name)-fab", "\(lab.name)-server", "\(lab.name)-n2"] {
            let started = try shell(
                "ip netns exec \(namespace) setsid socat TCP6-LISTEN:9090,ipv6only=0,fork,reuseaddr "
                    + "SYSTEM:'echo peer=$SOCAT_PEERADDR port=$SOCAT_PEERPORT' >/dev/null 2>&1 & echo $!")
            servers.append(started.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        defer { _ = try? shell("kill \(servers.joined(separator: " "))") }
        /// The address and port the service saw, the address canonical (socat prints
        /// `[0000:...:ffff:0a63:0001]`); nil when no answer.
        func ask(_ address: String) throws -> (peer: String, port: Int)? {
            let target = address.contains(":") ? "[\(address)]" : address
            let said = try shell(
                "ip netns exec \(lab.name)-client socat -T 2 - TCP:\(target):9090,connect-timeout=2 </dev/null"
            ).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            guard said.hasPrefix("peer=["), let close = said.firstIndex(of: "]"),
                let port = Int(said[said.index(after: close)...].replacing(" port=", with: ""))
            else { return nil }
            return ("peer=" + canonicalAddress(String(said[said.index(said.startIndex, offsetBy: 6)..<close])), port)
        }
        func peer(_ address: String) throws -> String { try ask(address)?.peer ?? "" }
        func check() throws -> String {
            let checked = try lab.run(["check"])
            #expect(checked.status == 0, "\(checked.stdout)\(checked.stderr)")
            return checked.stdout
        }
        // To the outside: the node's address in both families.
        #expect(try eventually(within: 10) { try peer("10.99.0.254") == "peer=10.99.0.1" })
        #expect(try eventually(within: 10) { try peer("fd99::fe") == "peer=fd99::1" })
        // Pod to pod: the pod's own address in both families.
        let client4 = try #require(client.first { !$0.contains(":") })
        let client6 = try #require(client.first { $0.contains(":") })
        #expect(try peer(try #require(server.first { !$0.contains(":") })) == "peer=\(client4)")
        #expect(try peer(try #require(server.first { $0.contains(":") })) == "peer=\(client6)")
        // Every pod reaches the outside in both families: `check`'s outside column says ok.
        let reachable = try check()
        #expect(!reachable.contains("no-NAT") && reachable.contains("outside"), "\(reachable)")
        // Another node's address is outside every pool: masqueraded (natOutgoingExclusions IPPoolsOnly).
        #expect(try peer("10.99.0.2") == "peer=10.99.0.1")
        #expect(try peer("fd99::2") == "peer=fd99::1")
        // A SNAT address per family for this node (natOutgoingAddress and Tandem's natOutgoingAddressV6), a port
        // range, a log level, and node addresses excluded from NAT, live.
        #expect(try lab.onNode("n1", "ip addr add 10.99.0.101/24 dev eth0").status == 0)
        #expect(try lab.onNode("n1", "ip addr add fd99::101/64 dev eth0 nodad").status == 0)
        let felix = try lab.state.write(
            "felix.yaml",
            """
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata: {name: node.n1}
            spec:
              natOutgoingAddress: 10.99.0.101
              natOutgoingAddressV6: 'fd99::101'
              natPortRange: '40000:40099'
              natOutgoingExclusions: IPPoolsAndHostIPs
              logSeverityScreen: Debug
            """)
        let applied = try TestProducts.run("tandemctl", ["apply", "-f", felix, "--datastore", datastore])
        #expect(applied.status == 0, "\(applied.stderr)")
        #expect(try eventually(within: 10) { try peer("10.99.0.254") == "peer=10.99.0.101" })
        #expect(try eventually(within: 10) { try peer("fd99::fe") == "peer=fd99::101" })
        for outside in ["10.99.0.254", "fd99::fe"] {
            let port = try #require(try ask(outside)?.port)
            #expect((40000...40099).contains(port), "\(outside) saw source port \(port)")
        }
        // Node addresses excluded: n2 sees the pod's own address (it routes the pod's block back over BGP).
        #expect(try eventually(within: 10) { try peer("10.99.0.2") == "peer=\(client4)" })
        #expect(try peer("fd99::2") == "peer=\(client6)")
        #expect(
            try eventually(within: 10) {
                try String(contentsOfFile: lab.directory + "/n1/tandem-node.log", encoding: .utf8)
                    .contains("log level debug (FelixConfiguration logSeverityScreen Debug)")
            })
        let deleted = try TestProducts.run(
            "tandemctl", ["delete", "felixconfiguration", "node.n1", "--datastore", datastore])
        #expect(deleted.status == 0, "\(deleted.stderr)")
        #expect(try eventually(within: 10) { try peer("10.99.0.254") == "peer=10.99.0.1" })
        // IPv6 natOutgoing off, live: the gateway gets the pod's address and has no route back to it.
        try patchIPv6Pool(false)
        #expect(try eventually(within: 10) { try peer("fd99::fe").isEmpty }, "IPv6 still masqueraded")
        #expect(try peer("10.99.0.254") == "peer=10.99.0.1")
        // `check` says why the outside is out of reach in IPv6, and still passes.
        let explained = try check()
        #expect(explained.contains("no NAT and no route back: pool default-ipv6-ippool"), "\(explained)")
        let log = try String(contentsOfFile: lab.directory + "/n1/tandem-node.log", encoding: .utf8)
        #expect(log.contains("component=nat"), "\(log.suffix(2000))")
    }

    /// A node with 100 pods under policy: restarting its agent (SIGTERM, start) loses no packet of a running flow in
    /// either family, and deletes or re-adds no workload route and no policy chain (counted with `ip monitor` and
    /// `nft monitor` across the restart).
    @Test func restartingANodeWithAHundredPodsChangesNothing() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "2"])
        let datastore = "sqlite://\(lab.directory)/datastore.db"
        for index in 0..<100 {
            let added = try lab.run(["pod", "add", "n1", "p\(index)", "--label", "app=web\(index % 10)"])
            #expect(added.status == 0, "\(added.stdout)\(added.stderr)")
        }
        #expect(try lab.run(["pod", "add", "n2", "client", "--label", "role=client"]).status == 0)
        let file = try lab.state.write(
            "policy.yaml",
            """
            apiVersion: projectcalico.org/v3
            kind: GlobalNetworkPolicy
            metadata: {name: web}
            spec:
              selector: has(app)
              ingress: [{action: Allow, source: {selector: role == 'client'}}]
            """)
        #expect(try TestProducts.run("tandemctl", ["apply", "-f", file, "--datastore", datastore]).status == 0)
        let pods = podAddresses(try lab.run(["status"]).stdout)
        let target = try #require(pods["p42"])
        #expect(target.count == 2)
        // Policy in place for every pod before the restart: each pod's ingress chain jumps to the policy's chain
        // (the dispatch map alone exists without the policy).
        #expect(
            try eventually(within: 30) {
                try lab.onNode("n1", "nft list map inet tandem to-endpoint").stdout.components(separatedBy: "jump to-")
                    .count - 1 == 100
                    && lab.onNode("n1", "nft list table inet tandem").stdout.components(separatedBy: "jump pol-")
                        .count - 1 == 100
            }, "the policy did not reach every pod before the restart")
        #expect(
            try eventually(within: 10) {
                try shell("ip netns exec \(lab.name)-client ping -c 1 -W 1 \(target[0])").status == 0
            })
        let monitors = try ScratchDirectory("monitor")
        defer { monitors.remove() }
        let routeLog = monitors.path + "/routes"
        let nftLog = monitors.path + "/nft"
        let started = try shell(
            "ip netns exec \(lab.name)-n1 sh -c 'ip monitor route > \(routeLog) 2>&1 & echo $!; "
                + "nft monitor > \(nftLog) 2>&1 & echo $!'")
        let monitorPIDs = started.stdout.split(separator: "\n").joined(separator: " ")
        defer { _ = try? shell("kill \(monitorPIDs)") }
        usleep(300_000)
        // Control events: the monitors are seen to record (a test that cannot see a change cannot prove there was none).
        _ = try lab.onNode("n1", "ip route add 192.0.2.77/32 dev lo proto 80")
        _ = try lab.onNode("n1", "ip route del 192.0.2.77/32 dev lo proto 80")
        _ = try lab.onNode("n1", "nft add table inet tandemprobe")
        _ = try lab.onNode("n1", "nft delete table inet tandemprobe")
        let flows = target.map { address in
            Flow("ip netns exec \(lab.name)-client ping -n -q -i 0.02 -c 250 \(address)")
        }
        usleep(300_000)
        #expect(try lab.run(["restart", "n1"]).status == 0)
        for flow in flows {
            let output = flow.wait()
            #expect(output.contains(" 0% packet loss"), "\(output)")
        }
        // Past the restarted agent's first resync (5 s in the lab).
        usleep(5_500_000)
        _ = try shell("kill \(monitorPIDs)")
        let routeEvents = try String(contentsOfFile: routeLog, encoding: .utf8)
        let nftEvents = try String(contentsOfFile: nftLog, encoding: .utf8)
        #expect(
            routeEvents.contains("192.0.2.77") && nftEvents.contains("tandemprobe"), "the monitors recorded nothing")
        let workloadRouteChanges = routeEvents.split(separator: "\n").filter {
            $0.contains("proto 80") && !$0.contains("192.0.2.77")
        }
        #expect(workloadRouteChanges.isEmpty, "routes deleted or re-added: \(workloadRouteChanges.prefix(20))")
        let chainChanges = nftEvents.split(separator: "\n").filter { !$0.contains("tandemprobe") }.filter {
            $0.hasPrefix("add chain") || $0.hasPrefix("delete chain") || $0.hasPrefix("add rule")
                || $0.hasPrefix("delete rule") || $0.hasPrefix("add table") || $0.hasPrefix("delete table")
        }
        #expect(chainChanges.isEmpty, "policy changed across the restart: \(chainChanges.prefix(20))")
        let log = try String(contentsOfFile: lab.directory + "/n1/tandem-node.log", encoding: .utf8)
        #expect(log.contains("stopped"), "\(log.suffix(2000))")
    }

    /// The pod MTU follows the host (Calico's rule: the smallest MTU of the interfaces matching `mtuIfacePattern`):
    /// a node whose underlay MTU is 1400 gives its new pods 1400 on both ends of the veth, and they carry IPv6 at
    /// it; FelixConfiguration `mtuIfacePattern` changed live to match nothing gives the next pod Calico's 1460.
    @Test func podMTUFollowsTheHostAndThePattern() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "2"])
        let datastore = "sqlite://\(lab.directory)/datastore.db"
        #expect(try lab.onNode("n1", "ip link set eth0 mtu 1400").status == 0)
        #expect(
            eventually(within: 15) {
                (try? String(contentsOfFile: lab.directory + "/n1/mtu", encoding: .utf8)) == "1400\n"
            }, "the agent did not write the pod MTU")
        #expect(try lab.run(["pod", "add", "n1", "small"]).status == 0)
        #expect(try lab.run(["pod", "add", "n2", "peer"]).status == 0)
        func mtu(_ namespace: String, _ interface: String) throws -> Int? {
            let shown = try shell("ip -n \(namespace) -o link show \(interface)").stdout
            guard let range = shown.firstRange(of: "mtu ") else { return nil }
            return Int(shown[range.upperBound...].prefix { $0.isNumber })
        }
        #expect(try mtu("\(lab.name)-small", "eth0") == 1400)
        let hostVeth = try lab.onNode("n1", "ip -o link show").stdout.split(separator: "\n")
            .first { $0.contains(": cali") }
        #expect(hostVeth?.contains("mtu 1400") == true, "\(hostVeth ?? "")")
        // n2's underlay is 1500: its pod has 1500.
        #expect(try mtu("\(lab.name)-peer", "eth0") == 1500)
        let pods = podAddresses(try lab.run(["status"]).stdout)
        let peer6 = try #require(pods["peer"]?.first { $0.contains(":") })
        #expect(
            try shell("ip netns exec \(lab.name)-small ping -c 1 -W 2 -s 1300 \(peer6)").status == 0,
            "IPv6 at the pod MTU")
        let felix = try lab.state.write(
            "felix-mtu.yaml",
            """
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata: {name: node.n1}
            spec: {mtuIfacePattern: '^nothing-matches$'}
            """)
        let applied = try TestProducts.run("tandemctl", ["apply", "-f", felix, "--datastore", datastore])
        #expect(applied.status == 0, "\(applied.stderr)")
        #expect(
            eventually(within: 10) {
                (try? String(contentsOfFile: lab.directory + "/n1/mtu", encoding: .utf8)) == "1460\n"
            })
        #expect(try lab.run(["pod", "add", "n1", "fallback"]).status == 0)
        #expect(try mtu("\(lab.name)-fallback", "eth0") == 1460)
        // A pattern that is no regular expression is refused, naming the field.
        let bad = try lab.state.write(
            "felix-bad.yaml",
            """
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata: {name: node.n1}
            spec: {mtuIfacePattern: '(eth'}
            """)
        let refused = try TestProducts.run("tandemctl", ["apply", "-f", bad, "--datastore", datastore])
        #expect(refused.status != 0 && refused.stderr.contains("spec.mtuIfacePattern"), "\(refused.stderr)")
    }

    /// A node whose only IPv6 address is link-local, in a cluster with an IPv6 pool: tandem-node refuses to start
    /// and says why and how to fix it.
    @Test func aLinkLocalOnlyNodeFailsWithTheExplanation() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "1", "--ipv4-only"])
        let pool = try lab.state.write(
            "pool.yaml",
            """
            apiVersion: projectcalico.org/v3
            kind: IPPool
            metadata: {name: pods-v6}
            spec: {cidr: "fd00:245::/56"}
            """)
        let datastore = "sqlite://\(lab.directory)/datastore.db"
        #expect(try TestProducts.run("tandemctl", ["apply", "-f", pool, "--datastore", datastore]).status == 0)
        // eth0 has 10.99.0.1/24 and its fe80:: address only.
        let bin = TestProducts.directory().path
        let started = try lab.onNode(
            "n1",
            "\(bin)/tandem-node serve --nodename n1 --datastore \(datastore) --cni-socket @tandem-ll-test "
                + "--bird-dir \(lab.directory)/n1-second")
        #expect(started.status == 1)
        #expect(started.stdout.contains("failed to autodetect an IPv6 address"), "\(started.stdout)")
        #expect(started.stdout.contains("an enabled IPv6 pool exists"))
        #expect(started.stdout.contains("link-local"))
        #expect(started.stdout.contains("Fix:"))
        #expect(try lab.run(["down"]).status == 0)
    }

    @Test func badInputIsRefusedByName() throws {
        let lab = try TestLab()
        defer { lab.down() }
        let both = try lab.run(["up", "--ipv4-only", "--ipv6-only"])
        #expect(both.status != 0 && both.stderr.contains("--ipv4-only and --ipv6-only exclude each other"))
        let nodes = try lab.run(["up", "--nodes", "0"])
        #expect(nodes.status != 0 && nodes.stderr.contains("--nodes 0"))
        let noLab = try lab.run(["check"])
        #expect(noLab.status != 0 && (noLab.stdout + noLab.stderr).contains("no lab \"\(lab.name)\" is up"))
        #expect(try lab.namespaces().isEmpty)
    }
}

/// A shell command running on its own thread, for a flow that runs while the test does other things.
final class Flow: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)
    private var output = ""

    init(_ command: String) {
        Thread.detachNewThread { [self] in
            output = ((try? shell(command)).map { $0.stdout + $0.stderr }) ?? "could not run \(command)"
            done.signal()
        }
    }

    func wait() -> String {
        done.wait()
        return output
    }
}
