import Foundation
import TandemLinux
import TandemTestSupport
import Testing

/// WireGuard between the lab's nodes (issue 17), each family: pod traffic on the fabric is only WireGuard's UDP; the
/// rule, the table and the published keys; on and off live; peers following keys and nodes; the MTU the overhead
/// leaves; nothing left by `down`.
@Suite(.serialized) struct WireGuardLabTests {
    /// The lab's pools (LabPlan.pool4 / pool6 lie inside them): no packet on the fabric may carry such an address.
    static let podNetworks = "net 10.244.0.0/16 or net fd00:244::/48"

    /// A packet capture on the lab's fabric bridge (tcpdump in NAME-fab on br0), into a pcap file.
    struct FabricCapture {
        let lab: TestLab
        let file: String
        let pid: String

        init(_ lab: TestLab, label: String) throws {
            self.lab = lab
            file = lab.state.file("\(label).pcap")
            let log = lab.state.file("\(label).log")
            let started = try shell(
                "ip netns exec \(lab.name)-fab tcpdump -i br0 -n --immediate-mode -U -w \(file) >\(log) 2>&1 & echo $!")
            pid = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let listening = eventually(within: 5) {
                ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("listening on br0")
            }
            guard listening else {
                _ = try? shell("kill \(pid)")
                throw TestSupportError(
                    "tcpdump did not start: \((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")
            }
        }

        /// Stops tcpdump (its last packets written) and waits for it to exit.
        func stop() {
            _ = try? shell(
                "kill \(pid) 2>/dev/null; for i in $(seq 50); do kill -0 \(pid) 2>/dev/null || break; sleep 0.1; done"
            )
        }

        /// Captured packets matching a pcap filter, one line each.
        func packets(_ filter: String) throws -> [String] {
            try shell("tcpdump -n -r \(file) '\(filter)' 2>/dev/null").stdout.split(separator: "\n").map(String.init)
        }

        /// Whether `text` appears anywhere in the captured bytes.
        func contains(_ text: String) throws -> Bool {
            try Data(contentsOf: URL(fileURLWithPath: file)).range(of: Data(text.utf8)) != nil
        }
    }

    /// A TCP server in `pod` on port 8080, both families, answering with the line it read and " back"; killed by the
    /// returned closure.
    static func tcpServer(_ lab: TestLab, in pod: String) throws -> () -> Void {
        let started = try shell(
            "ip netns exec \(lab.name)-\(pod) setsid socat TCP6-LISTEN:8080,ipv6only=0,fork,reuseaddr "
                + "SYSTEM:'read line; echo \"$line back\"' >/dev/null 2>&1 & echo $!")
        let pid = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        return { _ = try? shell("kill \(pid)") }
    }

    /// Sends `line` from `pod` to the TCP server at `address`; true when the server's answer came back.
    static func tcp(_ lab: TestLab, from pod: String, to address: String, line: String) throws -> Bool {
        let target = address.contains(":") ? "[\(address)]" : address
        return try shell(
            "echo \(line) | ip netns exec \(lab.name)-\(pod) socat -T 2 - TCP:\(target):8080,connect-timeout=2"
        ).stdout.contains("\(line) back")
    }

    static func ping(_ lab: TestLab, from pod: String, to address: String) throws -> Bool {
        try shell("ip netns exec \(lab.name)-\(pod) ping -n -c 1 -W 1 \(address)").status == 0
    }

    /// Every pod pings every other pod's addresses; true when all answered.
    static func allPing(_ lab: TestLab, _ pods: [String: [String]]) throws -> Bool {
        for (pod, _) in pods {
            for (other, addresses) in pods where other != pod {
                for address in addresses where try !ping(lab, from: pod, to: address) { return false }
            }
        }
        return true
    }

    /// `wg show INTERFACE dump` on a node (its mount and network namespaces); empty when there is no device.
    static func dump(_ lab: TestLab, _ node: String, _ interface: String) throws -> String {
        try shell(
            "nsenter --mount=\(lab.directory)/mnt/\(node) --net=/run/netns/\(lab.name)-\(node) "
                + "wg show \(interface) dump 2>/dev/null"
        ).stdout
    }

    /// The public keys of a device's peers.
    static func peerKeys(_ dump: String) -> [String] {
        dump.split(separator: "\n").dropFirst().map { String($0.split(separator: "\t")[0]) }
    }

    /// `tandemctl get node NODE -o yaml`.
    static func node(_ lab: TestLab, _ node: String) throws -> String {
        try TestProducts.run(
            "tandemctl", ["get", "node", node, "-o", "yaml", "--datastore", "sqlite://\(lab.directory)/datastore.db"]
        ).stdout
    }

    /// FelixConfiguration `default` with WireGuard on or off in both families.
    static func setWireGuard(_ lab: TestLab, _ enabled: Bool) throws {
        let file = try lab.state.write(
            "wireguard-\(enabled).yaml",
            """
            apiVersion: projectcalico.org/v3
            kind: FelixConfiguration
            metadata: {name: default}
            spec: {wireguardEnabled: \(enabled), wireguardEnabledV6: \(enabled)}
            """)
        let applied = try TestProducts.run(
            "tandemctl", ["apply", "-f", file, "--datastore", "sqlite://\(lab.directory)/datastore.db"])
        #expect(applied.status == 0, "\(applied.stderr)")
    }

    /// Pings between every pair of pods and a TCP exchange per family, while the fabric is captured.
    static func captureTraffic(_ lab: TestLab, _ pods: [String: [String]], label: String) throws -> FabricCapture {
        let stopServer = try tcpServer(lab, in: "pod-n2-1")
        defer { stopServer() }
        let capture = try FabricCapture(lab, label: label)
        defer { capture.stop() }
        #expect(try allPing(lab, pods), "pods do not reach each other")
        for address in try #require(pods["pod-n2-1"]) {
            let answered = try eventually(within: 3) {
                try tcp(lab, from: "pod-n1-1", to: address, line: "tandem-secret-\(label)")
            }
            #expect(answered, "no TCP answer from \(address)")
        }
        return capture
    }

    /// The issue's demonstration, dual-stack and IPv6-only: three nodes, a pod each, all reachable; on the fabric
    /// between the nodes, pod traffic (pings between every pair, a TCP exchange) is only WireGuard's UDP, on 51820 for
    /// IPv4 and 51821 for IPv6, with no pod address and no payload in the clear; the rule and table 1 on the node,
    /// and the keys on the Node's status.
    @Test(arguments: [["--wireguard", "both"], ["--ipv6-only", "--wireguard", "v6"]])
    func encryptedBetweenNodes(mode: [String]) throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "3"] + mode)
        let v4 = !mode.contains("--ipv6-only")
        for node in ["n1", "n2", "n3"] { #expect(try lab.run(["pod", "add", node]).status == 0) }
        // `check` probes every pair at once, so two nodes' first packets can make both initiate a WireGuard
        // handshake at the same instant; each then drops the other's response and wireguard-go tries again only
        // after its REKEY_TIMEOUT, 5 s: a probe waits up to 2 × 4 s.
        let check = try lab.run(["check", "--timeout", "4"])
        #expect(check.status == 0 && check.stdout.contains("all reachable"), "\(check.stdout)")
        let pods = podAddresses(try lab.run(["status"]).stdout)
        #expect(pods.values.allSatisfy { $0.count == (v4 ? 2 : 1) }, "\(pods)")

        let capture = try Self.captureTraffic(lab, pods, label: "encrypted")
        let clear = try capture.packets(Self.podNetworks)
        #expect(clear.isEmpty, "pod addresses in the clear on the fabric: \(clear.prefix(10))")
        #expect(try !capture.contains("tandem-secret"), "the TCP payload is readable on the fabric")
        let v4Tunnel = try capture.packets("udp port 51820")
        let v6Tunnel = try capture.packets("ip6 and udp port 51821")
        #expect(v4 ? v4Tunnel.count >= 12 : v4Tunnel.isEmpty, "IPv4 WireGuard packets: \(v4Tunnel.count)")
        #expect(v6Tunnel.count >= 12, "IPv6 WireGuard packets: \(v6Tunnel.count)")

        // The rule and the table, per family.
        let rule = "99:\tnot from all fwmark 0x200000/0x200000 lookup 1"
        #expect(try shell("ip -n \(lab.name)-n1 -6 rule").stdout.contains(rule))
        #expect(try shell("ip -n \(lab.name)-n1 -4 rule").stdout.contains(rule) == v4)
        let table6 = try shell("ip -n \(lab.name)-n1 -6 route show table 1").stdout
        let remote6 = try #require(pods["pod-n2-1"]?.first { $0.contains(":") })
        #expect(table6.contains("/122 dev wg-v6.cali proto 80"), "\(table6)")
        #expect(table6.contains("throw fd00:244:"), "n1's own block goes back to the main table: \(table6)")
        #expect(try shell("ip -n \(lab.name)-n1 -6 route get \(remote6)").stdout.contains("dev wg-v6.cali"))
        let table4 = try shell("ip -n \(lab.name)-n1 -4 route show table 1").stdout
        #expect(table4.contains("/26 dev wireguard.cali proto 80") == v4, "\(table4)")

        // The keys on the Node's status: the public halves of the node's key files.
        let status = try Self.node(lab, "n1")
        let key6 = try shell("wg pubkey < \(lab.directory)/n1/wireguard-ipv6.key").stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!key6.isEmpty && status.contains("wireguardPublicKeyV6: \(key6)"), "\(status)")
        if v4 {
            let key4 = try shell("wg pubkey < \(lab.directory)/n1/wireguard-ipv4.key").stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(!key4.isEmpty && status.contains("wireguardPublicKey: \(key4)"), "\(status)")
        } else {
            #expect(!status.contains("wireguardPublicKey:"), "\(status)")
        }
    }

    /// FelixConfiguration turns WireGuard off and on again live: off, pods reach each other within 5 s in both
    /// families, in the clear (the capture sees their addresses), with no device, rule, table entry or published
    /// key left; on again, reachable within 5 s and only WireGuard on the fabric once the peers are set.
    @Test func onAndOffLive() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "3", "--wireguard", "both"])
        for node in ["n1", "n2", "n3"] { #expect(try lab.run(["pod", "add", node]).status == 0) }
        let pods = podAddresses(try lab.run(["status"]).stdout)
        let nodes = ["n1", "n2", "n3"]

        try Self.setWireGuard(lab, false)
        #expect(try eventually(within: 5) { try Self.allPing(lab, pods) }, "pods unreachable 5 s after WireGuard off")
        func leftovers(_ node: String) throws -> [String] {
            var found: [String] = []
            for device in ["wireguard.cali", "wg-v6.cali"]
            where try shell("ip -n \(lab.name)-\(node) link show \(device)").status == 0 {
                found.append(device)
            }
            for family in ["-4", "-6"] {
                let rules = try shell("ip -n \(lab.name)-\(node) \(family) rule").stdout
                if rules.contains("lookup 1") { found.append("rule \(family): \(rules)") }
                let table = try shell("ip -n \(lab.name)-\(node) \(family) route show table 1").stdout
                if !table.isEmpty { found.append("table 1 \(family): \(table)") }
            }
            if try Self.node(lab, node).contains("wireguardPublicKey") { found.append("keys on the Node status") }
            return found
        }
        var left: [String] = []
        #expect(
            try eventually(within: 10) {
                left = try nodes.flatMap { node in try leftovers(node).map { "\(node): \($0)" } }
                return left.isEmpty
            }, "left with WireGuard off: \(left)")
        // In the clear: the capture that sees nothing with WireGuard sees the pod addresses now.
        let plain = try Self.captureTraffic(lab, pods, label: "plain")
        #expect(try plain.packets(Self.podNetworks).count >= 12)
        #expect(try plain.contains("tandem-secret-plain"))

        try Self.setWireGuard(lab, true)
        #expect(try eventually(within: 5) { try Self.allPing(lab, pods) }, "pods unreachable 5 s after WireGuard on")
        #expect(
            try eventually(within: 15) {
                try nodes.allSatisfy { node in
                    try ["wireguard.cali", "wg-v6.cali"].allSatisfy {
                        Self.peerKeys(try Self.dump(lab, node, $0)).count == 2
                    }
                }
            }, "the peers were not set again")
        #expect(try eventually(within: 10) { try Self.allPing(lab, pods) }, "pods unreachable through the tunnels")
        let encrypted = try Self.captureTraffic(lab, pods, label: "again")
        let clear = try encrypted.packets(Self.podNetworks)
        #expect(clear.isEmpty, "pod addresses in the clear: \(clear.prefix(10))")
        #expect(try !encrypted.contains("tandem-secret"))
        #expect(try encrypted.packets("udp port 51820").count >= 12)
        #expect(try encrypted.packets("udp port 51821").count >= 12)
        // Switching a peer from plain text (a throw route) to the device replaces the route in place: no apply of
        // the WireGuard manager fails on the way (it once deleted the replaced route again: ESRCH and a retry).
        for node in nodes {
            let log = try String(contentsOfFile: "\(lab.directory)/\(node)/tandem-node.log", encoding: .utf8)
            let failures = log.split(separator: "\n").filter {
                $0.contains("component=wireguard") && $0.contains("apply failed")
            }
            #expect(failures.isEmpty, "\(node): \(failures.prefix(3))")
        }
    }

    /// Peers follow keys and nodes: a node whose key files are deleted makes new keys, and the other nodes' devices
    /// carry its new public keys (not the old ones) within the resync; pods still reach each other. A node removed
    /// from the datastore (its agent stopped) stops being a peer on the others within the resync.
    @Test func peersFollowNodesAndKeys() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "3", "--wireguard", "both"])
        for node in ["n1", "n2", "n3"] { #expect(try lab.run(["pod", "add", node]).status == 0) }
        let pods = podAddresses(try lab.run(["status"]).stdout)
        let devices = ["wireguard.cali": "ipv4", "wg-v6.cali": "ipv6"]
        func publicKey(_ node: String, _ family: String) throws -> String {
            try shell("wg pubkey < \(lab.directory)/\(node)/wireguard-\(family).key 2>/dev/null").stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        var old: [String: String] = [:]
        for (device, family) in devices {
            old[device] = try publicKey("n2", family)
            #expect(try Self.peerKeys(Self.dump(lab, "n1", device)).contains(try #require(old[device])))
            #expect(FileManager.default.fileExists(atPath: "\(lab.directory)/n2/wireguard-\(family).key"))
            try FileManager.default.removeItem(atPath: "\(lab.directory)/n2/wireguard-\(family).key")
        }
        var new: [String: String] = [:]
        #expect(
            try eventually(within: 15) {
                for (device, family) in devices {
                    let key = try publicKey("n2", family)
                    guard !key.isEmpty, key != old[device] else { return false }
                    new[device] = key
                    for node in ["n1", "n3"] {
                        let peers = Self.peerKeys(try Self.dump(lab, node, device))
                        guard peers.contains(key), !peers.contains(old[device]!) else { return false }
                    }
                }
                return true
            }, "n2's new keys did not reach n1 and n3: old \(old), new \(new)")
        // n2's own devices use the new keys, and its Node carries them.
        for device in devices.keys {
            let own = try Self.dump(lab, "n2", device).split(separator: "\n").first?.split(separator: "\t")
            #expect(own.map { String($0[1]) } == new[device], "\(device)")
        }
        let status = try Self.node(lab, "n2")
        #expect(
            status.contains("wireguardPublicKey: \(new["wireguard.cali"] ?? "?")")
                && status.contains("wireguardPublicKeyV6: \(new["wg-v6.cali"] ?? "?")"), "\(status)")
        #expect(try eventually(within: 10) { try Self.allPing(lab, pods) }, "pods unreachable after n2's new keys")

        // n3 goes: its agent stopped, its Node deleted.
        let state = try JSONSerialization.jsonObject(
            with: Data(contentsOf: URL(fileURLWithPath: lab.directory + "/state.json")))
        let nodes = try #require((state as? [String: Any])?["nodes"] as? [[String: Any]])
        let agentPID = try #require(nodes.first { $0["name"] as? String == "n3" }?["agentPID"] as? Int)
        var n3Keys: [String] = []
        for family in ["ipv4", "ipv6"] { n3Keys.append(try publicKey("n3", family)) }
        _ = try shell("kill \(agentPID)")
        let deleted = try TestProducts.run(
            "tandemctl", ["delete", "node", "n3", "--datastore", "sqlite://\(lab.directory)/datastore.db"])
        #expect(deleted.status == 0, "\(deleted.stderr)")
        var remaining: [String] = []
        #expect(
            try eventually(within: 15) {
                remaining = try ["n1", "n2"].flatMap { node in
                    try devices.keys.map { try Self.dump(lab, node, $0) }
                }
                return remaining.allSatisfy { dump in
                    Self.peerKeys(dump).count == 1 && !n3Keys.contains { dump.contains($0) }
                        && !dump.contains("10.99.0.3") && !dump.contains("fd99::3")
                }
            }, "n3 is still a peer: \(remaining)")
        let n1 = try #require(pods["pod-n1-1"])
        let n2 = try #require(pods["pod-n2-1"])
        for address in n2 { #expect(try Self.ping(lab, from: "pod-n1-1", to: address)) }
        for address in n1 { #expect(try Self.ping(lab, from: "pod-n2-1", to: address)) }
    }

    /// The MTU WireGuard's overhead leaves on 1500-byte links: devices 1440 (IPv4, 60 bytes) and 1420 (IPv6, 80);
    /// pods get the smaller; the largest unfragmented ping from a pod to a remote pod passes in each family and one
    /// byte more does not.
    @Test func mtuFollowsTheOverhead() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "2", "--wireguard", "both"])
        for node in ["n1", "n2"] { #expect(try lab.run(["pod", "add", node]).status == 0) }
        func mtu(_ namespace: String, _ interface: String) throws -> Int? {
            let shown = try shell("ip -n \(namespace) -o link show \(interface)").stdout
            guard let range = shown.firstRange(of: "mtu ") else { return nil }
            return Int(shown[range.upperBound...].prefix { $0.isNumber })
        }
        for node in ["n1", "n2"] {
            #expect(try mtu("\(lab.name)-\(node)", "eth0") == 1500)
            #expect(try mtu("\(lab.name)-\(node)", "wireguard.cali") == 1440)
            #expect(try mtu("\(lab.name)-\(node)", "wg-v6.cali") == 1420)
            #expect(try mtu("\(lab.name)-pod-\(node)-1", "eth0") == 1420)
            #expect(try String(contentsOfFile: "\(lab.directory)/\(node)/mtu", encoding: .utf8) == "1420\n")
        }
        let remote = try #require(podAddresses(try lab.run(["status"]).stdout)["pod-n2-1"])
        let remote4 = try #require(remote.first { !$0.contains(":") })
        let remote6 = try #require(remote.first { $0.contains(":") })
        func ping(_ arguments: String) throws -> Bool {
            try shell("ip netns exec \(lab.name)-pod-n1-1 ping -n -c 1 -W 2 -M do \(arguments)").status == 0
        }
        #expect(try ping("-s 1392 \(remote4)"), "1420-byte IPv4 packet")
        #expect(try !ping("-s 1393 \(remote4)"), "1421-byte IPv4 packet passed unfragmented")
        #expect(try ping("-6 -s 1372 \(remote6)"), "1420-byte IPv6 packet")
        #expect(try !ping("-6 -s 1373 \(remote6)"), "1421-byte IPv6 packet passed unfragmented")
    }

    /// `down` leaves no wireguard-go of the lab (found through its nodes' namespaces before), no mount of its mount
    /// namespaces, no network namespace.
    @Test func downLeavesNothing() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "2", "--wireguard", "both"])
        var wireguardGo: [String] = []
        for node in ["n1", "n2"] {
            for pid in try shell("ip netns pids \(lab.name)-\(node)").stdout.split(separator: "\n") {
                let commandLine = (try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)) ?? ""
                if commandLine.contains("wireguard-go") { wireguardGo.append(String(pid)) }
            }
        }
        #expect(wireguardGo.count == 4, "wireguard-go per node and family: \(wireguardGo)")
        let mounts = lab.directory + "/mnt"
        func mounted() throws -> [String] {
            (readKernelFile("/proc/self/mountinfo") ?? "").split(separator: "\n")
                .filter { $0.contains(mounts) }.map(String.init)
        }
        let before = try mounted()
        #expect(before.count == 3, "the directory and a namespace per node: \(before)")
        let down = try lab.run(["down"])
        #expect(down.status == 0, "\(down.stdout)\(down.stderr)")
        /// Alive: it exists, is not a zombie, and is still wireguard-go (not a reused pid).
        func alive(_ pid: String) -> Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")"),
                let commandLine = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8)
            else { return false }
            return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first != "Z"
                && commandLine.contains("wireguard-go")
        }
        #expect(eventually(within: 5) { !wireguardGo.contains(where: alive) }, "wireguard-go left running")
        let after = try mounted()
        #expect(after.isEmpty, "\(after)")
        #expect(try lab.namespaces().isEmpty)
        #expect(try lab.processes().isEmpty)
    }
}
