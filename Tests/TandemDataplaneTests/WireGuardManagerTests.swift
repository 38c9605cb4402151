import Crypto
import Foundation
import Synchronization
import TandemCalculation
import TandemCore
import TandemDataplane
import TandemModel
import TandemNetlinkCodec
import TandemTestSupport
import Testing

/// The WireGuard manager against the fake kernel and in-memory devices (no root): what it builds per family, what it
/// repairs, the key's life (file, rotation, publication), a family turned off, no way to make devices, failures.
@Suite struct WireGuardManagerTests {
    static func key(_ byte: UInt8) -> WireGuardKey { WireGuardKey(bytes: [UInt8](repeating: byte, count: 32))! }

    func node(_ name: String, _ index: Int, keys: Bool = true) -> Node {
        var spec = NodeSpec()
        var bgp = NodeBGPSpec()
        bgp.ipv4Address = "10.99.0.\(index)/24"
        bgp.ipv6Address = "fd99::\(index)/64"
        spec.bgp = bgp
        var node = Node(metadata: ObjectMeta(name: name), spec: spec)
        if keys {
            node.status = .object([
                ("wireguardPublicKey", .string(Self.key(UInt8(index)).base64)),
                ("wireguardPublicKeyV6", .string(Self.key(UInt8(100 + index)).base64)),
            ])
        }
        return node
    }

    func plan(peers: [Int], enabled: Set<IPFamily> = [.v4, .v6]) -> WireGuardPlan {
        var affinities: [String: Set<CIDR>] = [:]
        for index in [1] + peers {
            affinities["n\(index)"] = [
                try! CIDR("10.244.\(index).0/26"), try! CIDR("fd00:244:0:\(index)::/122"),
            ]
        }
        return wireGuardPlan(
            node: "n1", nodes: [node("n1", 1)] + peers.map { node("n\($0)", $0) }, affinities: affinities,
            families: [.v4, .v6], enabled: enabled,
            settings: [.v4: WireGuardSettings(family: .v4), .v6: WireGuardSettings(family: .v6)])
    }

    /// A node's kernel with its uplink, the devices, the manager and the keys it published.
    final class Published: Sendable {
        let keys = Mutex<[[IPFamily: WireGuardKey]]>([])
        func withLock<T>(_ body: (inout [[IPFamily: WireGuardKey]]) -> T) -> T { keys.withLock { body(&$0) } }
    }

    struct Rig {
        let kernel = FakeKernel()
        let devices: FakeWireGuardDevices
        let manager: WireGuardManager
        let scratch: ScratchDirectory
        let published = Published()

        init() throws {
            devices = FakeWireGuardDevices(kernel: kernel)
            scratch = try ScratchDirectory("wg-manager")
            let eth0 = kernel.addLink(name: "eth0", kind: nil)
            try kernel.addAddress(CIDR("10.99.0.1/24"), to: eth0, noDAD: false)
            try kernel.addAddress(CIDR("fd99::1/64"), to: eth0, noDAD: true)
            let published = self.published
            manager = WireGuardManager(
                kernel: kernel, devices: devices, keyDirectory: scratch.path,
                keysChanged: { keys in published.withLock { $0.append(keys) } })
        }
    }

    @Test func buildsBothFamiliesAndHoldsStill() throws {
        let rig = try Rig()
        defer { rig.scratch.remove() }
        rig.manager.setDesired(plan(peers: [2, 3]), mtuPattern: defaultMTUInterfacePattern)
        let first = try rig.manager.apply(resync: false)
        #expect(first.changes.contains { $0.hasPrefix("new IPv4 WireGuard key in \(rig.scratch.path)") })
        // The key file: mode 0600, and the device holds that key; the published key is its public key.
        let path = rig.manager.keyPath(.v4)
        let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let text = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let privateKey = try #require(WireGuardKey(base64: text))
        let device = try #require(try rig.devices.device(named: "wireguard.cali"))
        #expect(device.privateKey == privateKey.clamped)
        #expect(device.listenPort == 51820 && device.firewallMark == 0x20_0000)
        let expectedPublic = try Curve25519.KeyAgreement.PrivateKey(rawRepresentation: privateKey.bytes).publicKey
        #expect(rig.manager.publicKeys[.v4]?.bytes == Array(expectedPublic.rawRepresentation))
        #expect(rig.published.withLock { $0.last?.count } == 2)
        // Peers of both families, with their endpoints and allowed IPs.
        #expect(device.peers.map(\.publicKey) == [Self.key(2), Self.key(3)])
        #expect(device.peers.first?.endpoint?.description == "10.99.0.2:51820")
        let v6 = try #require(try rig.devices.device(named: "wg-v6.cali"))
        #expect(v6.listenPort == 51821 && v6.peers.count == 2)
        #expect(v6.peers.first?.endpoint?.description == "[fd99::2]:51821")
        #expect(Set(v6.peers.first?.allowedIPs ?? []) == [CIDR("fd00:244:0:2::/122"), CIDR("fd99::2/128")])
        // MTU, up; the table and the rule per family.
        #expect(try rig.kernel.link(named: "wireguard.cali")?.mtu == 1440)
        #expect(try rig.kernel.link(named: "wg-v6.cali")?.mtu == 1420)
        #expect(try rig.kernel.link(named: "wg-v6.cali")?.isUp == true)
        let table6 = try rig.kernel.routes(family: .v6, table: 1)
        #expect(
            table6.filter { $0.type == RouteType.unicast }.map(\.destination).sorted() == [
                CIDR("fd00:244:0:2::/122"), CIDR("fd00:244:0:3::/122"),
            ])
        #expect(table6.filter { $0.type == RouteType.throw }.map(\.destination) == [CIDR("fd00:244:0:1::/122")])
        for family in IPFamily.allCases {
            #expect(
                try rig.kernel.rules(family: family).filter { $0.table == 1 } == [
                    RoutingRule(family: family, priority: 99, table: 1, mark: 0x20_0000, mask: 0x20_0000, invert: true)
                ])
        }
        // Nothing more to do, even on a full resync.
        #expect(try rig.manager.apply(resync: true) == ManagerReport())
        #expect(rig.published.withLock { $0.count } == 1)
    }

    @Test func repairsWhatSomeoneElseChanged() throws {
        let rig = try Rig()
        defer { rig.scratch.remove() }
        rig.manager.setDesired(plan(peers: [2, 3]), mtuPattern: defaultMTUInterfacePattern)
        _ = try rig.manager.apply(resync: false)
        let key = try #require(try rig.devices.device(named: "wg-v6.cali")?.privateKey)
        // A peer removed by hand, a table route deleted, the rule deleted, the IPv4 device deleted.
        try rig.devices.configure(
            named: "wg-v6.cali",
            WireGuardDeviceChange(peers: [WireGuardPeerChange(publicKey: Self.key(103), remove: true)]))
        let route = try #require(try rig.kernel.routes(family: .v6, table: 1).first { $0.type == RouteType.unicast })
        try rig.kernel.deleteRoute(route, interfaceName: nil)
        try rig.kernel.deleteRule(try #require(try rig.kernel.rules(family: .v6).first { $0.table == 1 }))
        try rig.devices.deleteDevice(named: "wireguard.cali")
        let repaired = try rig.manager.apply(resync: true)
        #expect(repaired.changes.contains { $0.hasPrefix("ip link add wireguard.cali") })
        #expect(repaired.changes.contains { $0.contains("peer") && $0.contains("(n3)") })
        #expect(
            repaired.changes.contains {
                $0.hasPrefix("ip -6 rule add not fwmark 0x200000/0x200000 lookup 1 priority 99")
            })
        #expect(try rig.devices.device(named: "wg-v6.cali")?.peers.count == 2)
        #expect(try rig.kernel.routes(family: .v6, table: 1).count == 3)
        // The recreated device has the same key: peers need not learn a new one.
        #expect(try rig.devices.device(named: "wg-v6.cali")?.privateKey == key)
        #expect(rig.published.withLock { $0.count } == 1)
        #expect(try rig.manager.apply(resync: true) == ManagerReport())
    }

    @Test func aDeletedKeyFileGivesANewKeyThatIsPublished() throws {
        let rig = try Rig()
        defer { rig.scratch.remove() }
        rig.manager.setDesired(plan(peers: [2]), mtuPattern: defaultMTUInterfacePattern)
        _ = try rig.manager.apply(resync: false)
        let old = try #require(rig.manager.publicKeys[.v6])
        try FileManager.default.removeItem(atPath: rig.manager.keyPath(.v6))
        let rotated = try rig.manager.apply(resync: true)
        #expect(rotated.changes.contains { $0.hasPrefix("new IPv6 WireGuard key") })
        let new = try #require(rig.manager.publicKeys[.v6])
        #expect(new != old && rig.manager.publicKeys[.v4] != nil)
        #expect(rig.published.withLock { $0.last?[.v6] } == new)
    }

    @Test func peersFollowThePlanAndAFamilyTurnsOff() throws {
        let rig = try Rig()
        defer { rig.scratch.remove() }
        rig.manager.setDesired(plan(peers: [2, 3]), mtuPattern: defaultMTUInterfacePattern)
        _ = try rig.manager.apply(resync: false)
        // n3 leaves: its peer and routes go, in both families.
        rig.manager.setDesired(plan(peers: [2]), mtuPattern: defaultMTUInterfacePattern)
        let left = try rig.manager.apply(resync: false)
        #expect(left.changes.filter { $0.hasSuffix(" remove") }.count == 2)
        #expect(try rig.devices.device(named: "wireguard.cali")?.peers.map(\.publicKey) == [Self.key(2)])
        #expect(try rig.kernel.routes(family: .v4, table: 1).count == 2)
        // An operator's own route in the table is not the manager's: it stays through everything below.
        let foreign = Route(
            destination: CIDR("192.0.2.0/24"),
            outputInterface: try #require(try rig.kernel.link(named: "eth0")).index,
            table: 1, routeProtocol: RouteProtocol.boot)
        try rig.kernel.addRoute(foreign, interfaceName: "eth0", replace: false)
        _ = try rig.manager.apply(resync: true)
        // IPv4 off: its device, rule and table go, its key is no longer published; IPv6 stays.
        rig.manager.setDesired(plan(peers: [2], enabled: [.v6]), mtuPattern: defaultMTUInterfacePattern)
        let off = try rig.manager.apply(resync: false)
        #expect(off.changes.contains { $0.hasPrefix("ip link del wireguard.cali") })
        #expect(try rig.kernel.link(named: "wireguard.cali") == nil)
        #expect(try rig.kernel.rules(family: .v4).filter { $0.table == 1 }.isEmpty)
        #expect(try rig.kernel.routes(family: .v4, table: 1).map(\.destination) == [foreign.destination])
        #expect(rig.manager.publicKeys.keys.sorted { $0.rawValue < $1.rawValue } == [.v6])
        #expect(rig.published.withLock { $0.last?[.v4] } == nil)
        #expect(try rig.kernel.link(named: "wg-v6.cali") != nil)
    }

    @Test func withoutDevicesNothingIsPublishedAndItIsSaidOnce() throws {
        let kernel = FakeKernel()
        let scratch = try ScratchDirectory("wg-none")
        defer { scratch.remove() }
        let manager = WireGuardManager(
            kernel: kernel, devices: nil, unavailable: "no wireguard family, no /usr/bin/wireguard-go",
            keyDirectory: scratch.path)
        manager.setDesired(plan(peers: [2]), mtuPattern: defaultMTUInterfacePattern)
        let first = try manager.apply(resync: false)
        #expect(first.warnings.count == 1 && first.warnings[0].contains("no /usr/bin/wireguard-go"))
        #expect(manager.publicKeys.isEmpty && manager.implementation.hasPrefix("none"))
        #expect(try manager.apply(resync: true).warnings.isEmpty)
    }

    @Test func aFailedChangeIsRetried() throws {
        let rig = try Rig()
        defer { rig.scratch.remove() }
        rig.manager.setDesired(plan(peers: [2]), mtuPattern: defaultMTUInterfacePattern)
        rig.devices.fail(call: 1, of: .configure)
        #expect(throws: (any Error).self) { try rig.manager.apply(resync: false) }
        _ = try rig.manager.apply(resync: true)
        #expect(try rig.devices.device(named: "wireguard.cali")?.peers.count == 1)
        #expect(try rig.devices.device(named: "wg-v6.cali")?.peers.count == 1)
        #expect(try rig.manager.apply(resync: true) == ManagerReport())
    }
}
