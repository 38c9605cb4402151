import Foundation
import TandemCore
import TandemLinux
import TandemNetlink
import TandemNetlinkCodec
import TandemTestSupport
import Testing

/// Forwarding database entries and routing rules through our netlink code, against the real kernel and checked with
/// `bridge` and `ip rule`, in both families.
@Suite struct FDBAndRuleKernelTests {
    @Test func vxlanFDBEntriesForBothFamilies() throws {
        let ns = try TestNamespace("fdb")
        defer { ns.remove() }
        let created = try ns.run(
            "ip link add vxlan.calico type vxlan id 4096 local 192.0.2.1 dstport 4789 nolearning && "
                + "ip link add vxlan-v6.calico type vxlan id 4096 local 2001:db8::1 dstport 4789 nolearning")
        #expect(created.status == 0, "\(created.stderr)")
        let netlink = try Netlink(namespace: ns.path)
        let v4 = try #require(try netlink.link(named: "vxlan.calico"))
        let v6 = try #require(try netlink.link(named: "vxlan-v6.calico"))
        let entries = [
            FDBEntry(
                index: v4.index, mac: try MACAddress("66:e9:a1:00:00:02"), destination: try IPAddress("10.99.0.2")),
            FDBEntry(index: v6.index, mac: try MACAddress("66:e9:a1:00:00:03"), destination: try IPAddress("fd99::3")),
        ]
        try netlink.replaceFDBEntry(entries[0], interfaceName: v4.name)
        try netlink.replaceFDBEntry(entries[1], interfaceName: v6.name)
        let shown = try ns.run("bridge fdb show").stdout
        #expect(shown.contains("66:e9:a1:00:00:02 dev vxlan.calico dst 10.99.0.2 self permanent"), "\(shown)")
        #expect(shown.contains("66:e9:a1:00:00:03 dev vxlan-v6.calico dst fd99::3 self permanent"), "\(shown)")
        let read = try netlink.fdbEntries()
        for entry in entries { #expect(read.contains(entry), "\(read)") }
        // Replace moves the MAC to another endpoint; delete removes it.
        var moved = entries[0]
        moved.destination = try IPAddress("10.99.0.9")
        try netlink.replaceFDBEntry(moved, interfaceName: v4.name)
        #expect(try ns.run("bridge fdb show dev vxlan.calico").stdout.contains("dst 10.99.0.9"))
        try netlink.deleteFDBEntry(moved, interfaceName: v4.name)
        #expect(!(try ns.run("bridge fdb show dev vxlan.calico").stdout.contains("66:e9:a1:00:00:02")))
        do {
            try netlink.deleteFDBEntry(moved, interfaceName: v4.name)
            Issue.record("deleting a missing FDB entry succeeded")
        } catch {
            #expect(error.isNotFound, "\(error)")
        }
    }

    @Test func routingRulesForBothFamilies() throws {
        let ns = try TestNamespace("rules")
        defer { ns.remove() }
        let netlink = try Netlink(namespace: ns.path)
        // WireGuard's rule, as Calico writes it: not marked 0x100000 -> table 1, priority 99.
        let rules = [
            RoutingRule(family: .v4, priority: 99, table: 1, mark: 0x10_0000, mask: 0x10_0000, invert: true),
            RoutingRule(family: .v6, priority: 99, table: 2, mark: 0x10_0000, mask: 0x10_0000, invert: true),
            RoutingRule(family: .v4, priority: 100, table: 300, source: CIDR("10.244.0.0/16")),
            RoutingRule(family: .v6, priority: 100, table: 300, destination: CIDR("fd00:244::/56")),
        ]
        for rule in rules { try netlink.addRule(rule) }
        let v4 = try ns.run("ip rule show").stdout
        let v6 = try ns.run("ip -6 rule show").stdout
        #expect(v4.contains("99:\tnot from all fwmark 0x100000/0x100000 lookup 1"), "\(v4)")
        #expect(v6.contains("99:\tnot from all fwmark 0x100000/0x100000 lookup 2"), "\(v6)")
        #expect(v4.contains("100:\tfrom 10.244.0.0/16 lookup 300"), "\(v4)")
        #expect(v6.contains("100:\tfrom all to fd00:244::/56 lookup 300"), "\(v6)")
        let read = try netlink.rules(family: .v4) + netlink.rules(family: .v6)
        for rule in rules { #expect(read.contains(rule), "\(read)") }
        // The kernel's own rules are read too (main and local tables).
        #expect(read.contains { $0.table == 254 && $0.family == .v6 })
        do {
            try netlink.addRule(rules[0])
            Issue.record("an identical rule was added twice")
        } catch {
            #expect(error.isExists)
        }
        for rule in rules { try netlink.deleteRule(rule) }
        #expect(!(try ns.run("ip rule show").stdout.contains("lookup 300")))
        #expect(!(try ns.run("ip -6 rule show").stdout.contains("lookup 2")))
    }
}

/// VXLAN devices through our netlink code, both underlay families: created as `ip link add ... type vxlan` would
/// make them (checked with `ip -d link`), read back with their configuration, and the request's bytes pinned.
@Suite struct VXLANDeviceTests {
    @Test func createdAndReadBackInBothFamilies() throws {
        let ns = try TestNamespace("vxdev")
        defer { ns.remove() }
        try #require(
            try ns.run(
                "ip link add eth0 type veth peer name peer0 && ip addr add 10.99.0.1/24 dev eth0 && "
                    + "ip addr add fd99::1/64 dev eth0 nodad && ip link set eth0 up"
            ).status == 0)
        let netlink = try Netlink(namespace: ns.path)
        let eth0 = try #require(try netlink.link(named: "eth0"))
        for (name, local, mac, mtu) in [
            ("vxlan.calico", "10.99.0.1", "66:3e:ca:a4:db:65", UInt32(1450)),
            ("vxlan-v6.calico", "fd99::1", "66:a0:68:c9:4c:79", 1430),
        ] {
            let configuration = VXLANConfiguration(
                vni: 4096, port: 4789, local: try IPAddress(local), parentIndex: eth0.index)
            try netlink.createVXLAN(name: name, configuration, mac: try MACAddress(mac), mtu: mtu)
            let shown = try ns.run("ip -d link show \(name)").stdout
            #expect(
                shown.contains("vxlan id 4096 local \(local) dev eth0 srcport 0 0 dstport 4789 nolearning"), "\(shown)")
            #expect(shown.contains("mtu \(mtu)") && shown.contains("link/ether \(mac)"), "\(shown)")
            let link = try #require(try netlink.link(named: name))
            let expectedMAC = try MACAddress(mac)
            #expect(link.kind == "vxlan" && link.vxlan == configuration && link.mac == expectedMAC)
            do {
                try netlink.createVXLAN(name: name, configuration, mac: nil, mtu: nil)
                Issue.record("a second \(name) was created")
            } catch {
                #expect(error.errno == EEXIST, "\(error)")
            }
        }
    }

    @Test func requestBytesArePinned() throws {
        let message = LinkRequest.createVXLAN(
            name: "vxlan.calico",
            VXLANConfiguration(vni: 4096, port: 4789, local: try IPAddress("10.99.0.1"), parentIndex: 2),
            mac: try MACAddress("66:3e:ca:a4:db:65"), mtu: 1450)
        let attributes = try NetlinkAttribute.decode(message.payload, from: InterfaceInfoHeader.size)
        let info = try #require(try attributes.first(LinkAttribute.linkInfo)?.attributes())
        #expect(info.first(LinkAttribute.infoKind)?.string == "vxlan")
        let data = try #require(try info.first(LinkAttribute.infoData)?.attributes())
        #expect(data.first(VXLANAttribute.id)?.u32 == 4096)
        #expect(data.first(VXLANAttribute.port)?.value == [0x12, 0xB5])  // 4789, network byte order
        #expect(data.first(VXLANAttribute.local)?.value == [10, 99, 0, 1])
        #expect(data.first(VXLANAttribute.learning)?.value == [0])
        #expect(data.first(VXLANAttribute.link)?.u32 == 2)
        let hex = message.payload.map { String(format: "%02x", $0) }.joined()
        // ifinfomsg; IFLA_IFNAME; IFLA_MTU 1450; IFLA_ADDRESS; IFLA_LINKINFO { kind "vxlan", data { ID 4096, LINK 2,
        // LOCAL 10.99.0.1, TTL, TOS, PROXY, RSC, L2MISS, L3MISS 0, LEARNING 0, PORT 4789 } }.
        #expect(
            hex
                == "00000000000000000000000000000000" + "1100030076786c616e2e63616c69636f00000000" + "08000400aa050000"
                + "0a000100663ecaa4db650000" + "6c001280" + "0a00010076786c616e000000" + "5c000280"
                + "0800010000100000" + "0800030002000000" + "080004000a630001" + "0500050000000000"
                + "0500060000000000" + "05000b0000000000" + "05000c0000000000" + "05000d0000000000"
                + "05000e0000000000" + "0500070000000000" + "06000f0012b50000",
            "\(hex)")
    }
}
