import TandemCalculation
import TandemCore
import TandemModel
import TandemNetlinkCodec
import TandemStore
import Testing

/// WireGuard's calculation, per family: peers only for nodes with an address and a unique key; their blocks and
/// tunnel addresses through the device; this node's and plain-text nodes' blocks thrown to the main table; the
/// interface-address work follows the key.
@Suite struct WireGuardPlanTests {
    static let key1 = WireGuardKey(bytes: [UInt8](repeating: 1, count: 32))!
    static let key2 = WireGuardKey(bytes: [UInt8](repeating: 2, count: 32))!
    static let key3 = WireGuardKey(bytes: [UInt8](repeating: 3, count: 32))!

    func node(
        _ name: String, v4: String?, v6: String?, key4: WireGuardKey? = nil, key6: WireGuardKey? = nil,
        wireguard4: String? = nil, wireguard6: String? = nil, vxlan4: String? = nil
    ) -> Node {
        var spec = NodeSpec()
        var bgp = NodeBGPSpec()
        bgp.ipv4Address = v4
        bgp.ipv6Address = v6
        spec.bgp = bgp
        spec.ipv4VXLANTunnelAddr = vxlan4
        if wireguard4 != nil || wireguard6 != nil {
            spec.wireguard = NodeWireguardSpec(interfaceIPv4Address: wireguard4, interfaceIPv6Address: wireguard6)
        }
        var node = Node(metadata: ObjectMeta(name: name), spec: spec)
        var status: [(String, JSONValue)] = []
        if let key4 { status.append(("wireguardPublicKey", .string(key4.base64))) }
        if let key6 { status.append(("wireguardPublicKeyV6", .string(key6.base64))) }
        if !status.isEmpty { node.status = .object(status) }
        return node
    }

    let affinities: [String: Set<CIDR>] = [
        "n1": [CIDR("10.244.0.0/26"), CIDR("fd00:244::/122")],
        "n2": [CIDR("10.244.1.0/26"), CIDR("fd00:244:0:1::/122")],
        "n3": [CIDR("10.244.2.0/26"), CIDR("fd00:244:0:2::/122")],
    ]

    func settings() -> [IPFamily: WireGuardSettings] {
        [.v4: WireGuardSettings(family: .v4), .v6: WireGuardSettings(family: .v6)]
    }

    @Test func peersAndTablesInBothFamilies() throws {
        let nodes = [
            node(
                "n1", v4: "10.99.0.1/24", v6: "fd99::1/64", key4: Self.key1, key6: Self.key1, wireguard4: "10.244.0.1"),
            node(
                "n2", v4: "10.99.0.2/24", v6: "fd99::2/64", key4: Self.key2, key6: Self.key2, wireguard4: "10.244.1.1",
                wireguard6: "fd00:244:0:1::1", vxlan4: "10.244.1.2"),
            // n3 has published an IPv6 key only: IPv4 to it goes in plain text.
            node("n3", v4: "10.99.0.3/24", v6: "fd99::3/64", key6: Self.key3),
        ]
        let plan = wireGuardPlan(
            node: "n1", nodes: nodes, affinities: affinities, families: [.v4, .v6], enabled: [.v4, .v6],
            settings: settings())
        let v4 = try #require(plan.families[.v4])
        #expect(v4.settings.interfaceName == "wireguard.cali" && v4.settings.listenPort == 51820)
        #expect(v4.interfaceAddress == (try IPAddress("10.244.0.1")))
        #expect(v4.peers.map(\.node) == ["n2"])
        #expect(v4.peers[0].endpoint.description == "10.99.0.2:51820")
        #expect(
            v4.peers[0].allowedIPs.map(\.description) == [
                "10.99.0.2/32", "10.244.1.0/26", "10.244.1.1/32", "10.244.1.2/32",
            ])
        #expect(v4.peers[0].routedIPs.map(\.description) == ["10.244.1.0/26", "10.244.1.1/32", "10.244.1.2/32"])
        #expect(v4.deviceRoutes.map(\.description) == ["10.244.1.0/26", "10.244.1.1/32", "10.244.1.2/32"])
        #expect(v4.throwRoutes.map(\.description) == ["10.244.0.0/26", "10.244.2.0/26"])
        #expect(v4.plaintext.map(\.node) == ["n3"])
        #expect(v4.plaintext[0].reason.contains("wireguardPublicKey"))

        let v6 = try #require(plan.families[.v6])
        #expect(v6.settings.interfaceName == "wg-v6.cali" && v6.settings.listenPort == 51821)
        #expect(v6.peers.map(\.node) == ["n2", "n3"])
        #expect(v6.peers[0].endpoint.description == "[fd99::2]:51821")
        #expect(
            v6.peers[0].allowedIPs.map(\.description) == ["fd00:244:0:1::/122", "fd00:244:0:1::1/128", "fd99::2/128"])
        #expect(v6.throwRoutes.map(\.description) == ["fd00:244::/122"])
        #expect(v6.interfaceAddress == nil)
    }

    @Test func ipv6OnlyAndDisabledFamilies() throws {
        let nodes = [
            node("n1", v4: nil, v6: "fd99::1/64", key6: Self.key1),
            node("n2", v4: nil, v6: "fd99::2/64", key6: Self.key2),
        ]
        let plan = wireGuardPlan(
            node: "n1", nodes: nodes, affinities: affinities, families: [.v6], enabled: [.v4, .v6],
            settings: settings())
        #expect(plan.families[.v4] == nil)
        #expect(plan.families[.v6]?.peers.map(\.node) == ["n2"])
        // Enabled for IPv4 on a cluster without IPv4: nothing, and nothing said (the family is not in use).
        #expect(plan.pending.isEmpty)
        let off = wireGuardPlan(
            node: "n1", nodes: nodes, affinities: affinities, families: [.v6], enabled: [], settings: settings())
        #expect(off.families.isEmpty)
        // A dual-stack cluster where this node has no IPv4 address: IPv4 waits, and says why.
        let lopsided = wireGuardPlan(
            node: "n1", nodes: nodes, affinities: affinities, families: [.v4, .v6], enabled: [.v4],
            settings: settings())
        #expect(lopsided.families[.v4] == nil && lopsided.pending.count == 1)
    }

    /// With host encryption the peers' own addresses are routed through the device too.
    @Test func hostEncryptionRoutesTheNodesThemselves() throws {
        let nodes = [
            node("n1", v4: "10.99.0.1/24", v6: "fd99::1/64", key4: Self.key1, key6: Self.key1),
            node("n2", v4: "10.99.0.2/24", v6: "fd99::2/64", key4: Self.key2, key6: Self.key2),
        ]
        var settings = settings()
        settings[.v4]?.hostEncryption = true
        settings[.v6]?.hostEncryption = true
        let plan = wireGuardPlan(
            node: "n1", nodes: nodes, affinities: affinities, families: [.v4, .v6], enabled: [.v4, .v6],
            settings: settings)
        #expect(plan.families[.v4]?.deviceRoutes.map(\.description) == ["10.99.0.2/32", "10.244.1.0/26"])
        #expect(plan.families[.v6]?.deviceRoutes.map(\.description) == ["fd00:244:0:1::/122", "fd99::2/128"])
    }

    /// Two nodes publishing one key: neither is a peer (Felix), both in plain text.
    @Test func aSharedKeyIsNobodys() throws {
        let nodes = [
            node("n1", v4: "10.99.0.1/24", v6: nil, key4: Self.key1),
            node("n2", v4: "10.99.0.2/24", v6: nil, key4: Self.key2),
            node("n3", v4: "10.99.0.3/24", v6: nil, key4: Self.key2),
        ]
        let plan = wireGuardPlan(
            node: "n1", nodes: nodes, affinities: affinities, families: [.v4], enabled: [.v4], settings: settings())
        let v4 = try #require(plan.families[.v4])
        #expect(v4.peers.isEmpty)
        #expect(v4.plaintext.map(\.node) == ["n2", "n3"])
        #expect(v4.plaintext.allSatisfy { $0.reason.contains("also another node's") })
    }

    /// The interface address follows the key: allocated once this node's key is published, released when the
    /// family is turned off.
    @Test func interfaceAddressWork() throws {
        var pool = IPPool(metadata: ObjectMeta(name: "v4"), spec: IPPoolSpec())
        pool.spec.cidr = "10.244.0.0/16"
        var pool6 = IPPool(metadata: ObjectMeta(name: "v6"), spec: IPPoolSpec())
        pool6.spec.cidr = "fd00:244::/48"
        let keyless = [node("n1", v4: "10.99.0.1/24", v6: "fd99::1/64")]
        #expect(
            wireGuardAddressActions(
                node: "n1", nodes: keyless, pools: [pool, pool6], families: [.v4, .v6], enabled: [.v4, .v6]
            ).isEmpty)
        let keyed = [node("n1", v4: "10.99.0.1/24", v6: "fd99::1/64", key4: Self.key1, key6: Self.key1)]
        let actions = wireGuardAddressActions(
            node: "n1", nodes: keyed, pools: [pool, pool6], families: [.v4, .v6], enabled: [.v4, .v6])
        #expect(actions[.v4] == .allocate(pools: ["v4"], replacing: nil))
        #expect(actions[.v6] == .allocate(pools: ["v6"], replacing: nil))
        let holding = [node("n1", v4: "10.99.0.1/24", v6: nil, key4: Self.key1, wireguard4: "10.244.0.1")]
        #expect(
            wireGuardAddressActions(node: "n1", nodes: holding, pools: [pool], families: [.v4], enabled: [.v4])
                .isEmpty)
        #expect(
            wireGuardAddressActions(node: "n1", nodes: holding, pools: [pool], families: [.v4], enabled: [])[.v4]
                == .release(try IPAddress("10.244.0.1")))
    }

    @Test func felixConfigurationSettings() throws {
        var cache = ClusterCache(nodeName: "n1")
        _ = cache.apply(
            put(
                try resource(
                    """
                    apiVersion: projectcalico.org/v3
                    kind: FelixConfiguration
                    metadata: {name: default}
                    spec:
                      wireguardEnabled: true
                      wireguardEnabledV6: true
                      wireguardListeningPortV6: 51999
                      wireguardMTU: 1400
                      wireguardInterfaceName: wg4
                      wireguardRoutingRulePriority: 90
                      wireguardKeepAlive: 25s
                      wireguardHostEncryptionEnabled: true
                    """), revision: 2))
        #expect(cache.wireGuardEnabled == [.v4, .v6])
        let settings = cache.wireGuardSettings
        #expect(settings[.v4]?.interfaceName == "wg4" && settings[.v6]?.interfaceName == "wg-v6.cali")
        #expect(settings[.v6]?.listenPort == 51999 && settings[.v4]?.listenPort == 51820)
        #expect(settings[.v4]?.explicitMTU == 1400 && settings[.v6]?.explicitMTU == nil)
        #expect(settings[.v4]?.rulePriority == 90 && settings[.v6]?.persistentKeepalive == 25)
        #expect(settings[.v4]?.hostEncryption == true)
    }
}
