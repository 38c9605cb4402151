import TandemCore
import TandemModel
import TandemNetlinkCodec

/// Calico's WireGuard constants and names (FelixConfiguration defaults, `felix/config/config_params.go`).
public enum WireGuardDefaults {
    public static func interfaceName(_ family: IPFamily) -> String { family == .v4 ? "wireguard.cali" : "wg-v6.cali" }
    public static func port(_ family: IPFamily) -> UInt16 { family == .v4 ? 51820 : 51821 }
    /// Felix's first free index of `routeTableRanges`: both families use table 1.
    public static let routingTable: UInt32 = 1
    public static let rulePriority: UInt32 = 99
    /// The mark of WireGuard's own UDP packets (the next free bit of Felix's default `iptablesMarkMask`), so they
    /// skip the WireGuard table.
    public static let firewallMark: UInt32 = 0x20_0000
    /// The Node status field carrying the public key of a family.
    public static func statusField(_ family: IPFamily) -> String {
        family == .v4 ? "wireguardPublicKey" : "wireguardPublicKeyV6"
    }
    /// The FelixConfiguration field enabling a family.
    public static func enabledField(_ family: IPFamily) -> String {
        family == .v4 ? "wireguardEnabled" : "wireguardEnabledV6"
    }
    /// The IPAM handle of a node's WireGuard interface address (Calico's).
    public static func handle(node: String, family: IPFamily) -> String {
        family == .v4 ? "wireguard-tunnel-addr-\(node)" : "wireguard-v6-tunnel-addr-\(node)"
    }
    /// The allocation attribute `type` of that address (Calico's).
    public static func allocationType(_ family: IPFamily) -> String {
        family == .v4 ? "wireguardTunnelAddress" : "wireguardV6TunnelAddress"
    }
    public static func encapsulation(_ family: IPFamily) -> Encapsulation {
        family == .v4 ? .wireguard : .wireguardV6
    }
}

/// The WireGuard settings of one family, from FelixConfiguration.
public struct WireGuardSettings: Sendable, Equatable {
    public var family: IPFamily
    public var interfaceName: String
    public var listenPort: UInt16
    /// `wireguardMTU` / `wireguardMTUV6`; nil: the host MTU less the overhead (60, 80).
    public var explicitMTU: UInt32?
    public var rulePriority: UInt32
    public var routingTable: UInt32
    public var firewallMark: UInt32
    /// `wireguardKeepAlive` in seconds; 0: none.
    public var persistentKeepalive: UInt16
    /// `wireguardHostEncryptionEnabled`: traffic between the nodes themselves goes through WireGuard too.
    public var hostEncryption = false

    public init(family: IPFamily) {
        self.family = family
        interfaceName = WireGuardDefaults.interfaceName(family)
        listenPort = WireGuardDefaults.port(family)
        rulePriority = WireGuardDefaults.rulePriority
        routingTable = WireGuardDefaults.routingTable
        firewallMark = WireGuardDefaults.firewallMark
        persistentKeepalive = 0
    }
}

/// A remote node this node encrypts to, in one family.
public struct WireGuardPeerPlan: Sendable, Equatable {
    public var node: String
    public var publicKey: WireGuardKey
    /// Its address of the family and this node's port of the family (Felix dials the port it listens on itself).
    public var endpoint: WireGuardEndpoint
    /// What the device accepts from it and sends to it: its blocks of the family, its tunnel addresses (VXLAN,
    /// WireGuard) and its own address, sorted.
    public var allowedIPs: [CIDR]
    /// What the WireGuard table routes to it: its allowed IPs, but its own address only with host encryption
    /// (otherwise traffic to the node itself stays in plain text, as in Calico).
    public var routedIPs: [CIDR]
}

/// This node's WireGuard in one family (Felix's `wireguard.go`): the device, its peers, and the routing table that
/// sends pod traffic to keyed peers through the device and leaves everything else (`throw`) to the main table.
public struct WireGuardFamilyPlan: Sendable, Equatable {
    public var settings: WireGuardSettings
    /// The device's address: the Node's `spec.wireguard.interfaceIPv4Address` / `interfaceIPv6Address`, once
    /// allocated (a node gets one only after it published its key).
    public var interfaceAddress: IPAddress?
    /// Peers with an endpoint and a unique key, by node name.
    public var peers: [WireGuardPeerPlan]
    /// Routes of the WireGuard table: each peer's allowed IPs through the device.
    public var deviceRoutes: [CIDR]
    /// Routes of the WireGuard table that fall back to the main table: this node's blocks and the blocks of nodes
    /// reached in plain text.
    public var throwRoutes: [CIDR]
    /// Remote nodes reached in plain text, with why (no key published, a key shared with another node, no address
    /// of the family).
    public var plaintext: [(node: String, reason: String)]

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.settings == rhs.settings && lhs.interfaceAddress == rhs.interfaceAddress && lhs.peers == rhs.peers
            && lhs.deviceRoutes == rhs.deviceRoutes && lhs.throwRoutes == rhs.throwRoutes
            && lhs.plaintext.map(\.node) == rhs.plaintext.map(\.node)
            && lhs.plaintext.map(\.reason) == rhs.plaintext.map(\.reason)
    }
}

/// This node's WireGuard: a plan per enabled family with an address of the family on this node; the settings of
/// every family (a disabled family's device, rule and table are removed by name).
public struct WireGuardPlan: Sendable, Equatable {
    public var families: [IPFamily: WireGuardFamilyPlan] = [:]
    public var settings: [IPFamily: WireGuardSettings] = [.v4: WireGuardSettings(family: .v4), .v6: .init(family: .v6)]
    /// Enabled families this node cannot take part in, with why (no address of the family).
    public var pending: [String] = []

    public init() {}
}

/// Which tunnel address of a node: its VXLAN device's or its WireGuard device's, of one family.
public struct TunnelSlot: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: Sendable, Hashable { case vxlan, wireguard }
    public var kind: Kind
    public var family: IPFamily

    public init(_ kind: Kind, _ family: IPFamily) {
        self.kind = kind
        self.family = family
    }

    public var description: String { "IPv\(family.rawValue) \(kind == .vxlan ? "VXLAN" : "WireGuard")" }

    /// The IPAM handle of the address (Calico's).
    public func handle(node: String) -> String {
        kind == .vxlan
            ? VXLANDefaults.handle(node: node, family: family) : WireGuardDefaults.handle(node: node, family: family)
    }

    /// The allocation attribute `type` (Calico's).
    public var allocationType: String {
        kind == .vxlan ? VXLANDefaults.allocationType(family) : WireGuardDefaults.allocationType(family)
    }

    /// The Node field holding it, as a path of keys under `spec`.
    public var nodeField: [String] {
        switch (kind, family) {
        case (.vxlan, .v4): ["ipv4VXLANTunnelAddr"]
        case (.vxlan, .v6): ["ipv6VXLANTunnelAddr"]
        case (.wireguard, .v4): ["wireguard", "interfaceIPv4Address"]
        case (.wireguard, .v6): ["wireguard", "interfaceIPv6Address"]
        }
    }

    /// The node's address in this slot.
    public func address(of node: Node) -> IPAddress? {
        kind == .vxlan ? tunnelAddress(node, family) : wireGuardInterfaceAddress(node, family)
    }
}

/// A node's WireGuard public key of a family, from its status; nil when absent, empty or not a key.
public func wireGuardPublicKey(_ node: Node, _ family: IPFamily) -> WireGuardKey? {
    guard case .object(let fields)? = node.status,
        let text = fields.last(where: { $0.0 == WireGuardDefaults.statusField(family) })?.1.stringValue
    else { return nil }
    return WireGuardKey(base64: text).flatMap { $0.isZero ? nil : $0 }
}

/// A node's WireGuard interface address of a family (`spec.wireguard.interfaceIPv4Address` / `interfaceIPv6Address`).
func wireGuardInterfaceAddress(_ node: Node, _ family: IPFamily) -> IPAddress? {
    let text = family == .v4 ? node.spec.wireguard?.interfaceIPv4Address : node.spec.wireguard?.interfaceIPv6Address
    return text.flatMap { try? IPAddress($0) }.flatMap { $0.family == family ? $0 : nil }
}

/// Felix's WireGuard for `node` (`felix/wireguard/wireguard.go`), per enabled family: a peer for every other node
/// with an address of the family and a key no other node shares, allowed the node's blocks and tunnel addresses;
/// the routing table sends those through the device and throws this node's blocks and plain-text nodes' blocks
/// back to the main table.
public func wireGuardPlan(
    node name: String, nodes: [Node], affinities: [String: Set<CIDR>], families: Set<IPFamily>,
    enabled: Set<IPFamily>, settings: [IPFamily: WireGuardSettings]
) -> WireGuardPlan {
    var plan = WireGuardPlan()
    for (family, value) in settings { plan.settings[family] = value }
    guard let me = nodes.first(where: { $0.metadata.name == name }) else { return plan }
    for family in IPFamily.allCases where enabled.contains(family) && families.contains(family) {
        let settings = plan.settings[family]!
        guard nodeSubnet(me, family) != nil else {
            plan.pending.append(
                "WireGuard over IPv\(family.rawValue) is enabled but this node has no IPv\(family.rawValue) address")
            continue
        }
        // A key two nodes publish is neither's (Felix: traffic to both goes in plain text).
        var holders: [WireGuardKey: Int] = [:]
        for node in nodes where node.metadata.name != name {
            if let key = wireGuardPublicKey(node, family) { holders[key, default: 0] += 1 }
        }
        var peers: [WireGuardPeerPlan] = []
        var plaintext: [(node: String, reason: String)] = []
        var throwRoutes = Set(affinities[name]?.filter { $0.family == family } ?? [])
        for node in nodes.sorted(by: { ($0.metadata.name ?? "") < ($1.metadata.name ?? "") }) {
            guard let other = node.metadata.name, other != name else { continue }
            let blocks = (affinities[other] ?? []).filter { $0.family == family }
            var allowed = Set(blocks)
            for address in [tunnelAddress(node, family), wireGuardInterfaceAddress(node, family)].compactMap({ $0 }) {
                allowed.insert(CIDR(host: address))
            }
            let reason: String?
            let key = wireGuardPublicKey(node, family)
            let address = nodeSubnet(node, family)?.address
            if address == nil {
                reason = "it has no IPv\(family.rawValue) address"
            } else if let key {
                reason = holders[key, default: 0] > 1 ? "its public key is also another node's" : nil
            } else {
                reason = "it has published no \(WireGuardDefaults.statusField(family))"
            }
            if let reason {
                plaintext.append((other, reason))
                throwRoutes.formUnion(allowed)
                continue
            }
            // The peer's own address is allowed in, and routed out only with host encryption: without it a pod's
            // packet to that node leaves in plain text through the main table, and the node's reply, routed to the
            // pod through WireGuard, arrives with the node's address as source (Calico drops it then).
            allowed.insert(CIDR(host: address!))
            let routed =
                settings.hostEncryption ? allowed.sorted() : allowed.subtracting([CIDR(host: address!)]).sorted()
            peers.append(
                WireGuardPeerPlan(
                    node: other, publicKey: key!,
                    endpoint: WireGuardEndpoint(address: address!, port: settings.listenPort),
                    allowedIPs: allowed.sorted(), routedIPs: routed))
        }
        let deviceRoutes = Set(peers.flatMap(\.routedIPs))
        plan.families[family] = WireGuardFamilyPlan(
            settings: settings, interfaceAddress: wireGuardInterfaceAddress(me, family), peers: peers,
            deviceRoutes: deviceRoutes.sorted(), throwRoutes: throwRoutes.subtracting(deviceRoutes).sorted(),
            plaintext: plaintext)
    }
    return plan
}

/// This node's WireGuard interface-address work, as calico-node's `allocateip` does it: with WireGuard enabled for a
/// family and this node's key of that family published, an address from an enabled pool of the family that allows
/// tunnel use; released when either is no longer so.
public func wireGuardAddressActions(
    node name: String, nodes: [Node], pools: [IPPool], families: Set<IPFamily>, enabled: Set<IPFamily>
) -> [IPFamily: TunnelAddressAction] {
    guard let me = nodes.first(where: { $0.metadata.name == name }) else { return [:] }
    var actions: [IPFamily: TunnelAddressAction] = [:]
    for family in IPFamily.allCases {
        let qualifying = pools.filter {
            $0.spec.disabled != true && $0.spec.network?.family == family
                && $0.spec.allowedUses?.contains("Tunnel") != false
        }
        actions[family] = TunnelAddressAction(
            current: wireGuardInterfaceAddress(me, family), qualifying: qualifying,
            wanted: enabled.contains(family) && families.contains(family) && !qualifying.isEmpty
                && wireGuardPublicKey(me, family) != nil && nodeSubnet(me, family) != nil)
    }
    return actions
}

extension ClusterCache {
    /// The families FelixConfiguration turns WireGuard on for (`wireguardEnabled`, `wireguardEnabledV6`).
    public var wireGuardEnabled: Set<IPFamily> {
        Set(IPFamily.allCases.filter { felixSetting(WireGuardDefaults.enabledField($0)) == .bool(true) })
    }

    /// Each family's WireGuard settings from FelixConfiguration (interface names, ports, MTUs, rule priority,
    /// keep-alive), Felix's defaults where unset.
    public var wireGuardSettings: [IPFamily: WireGuardSettings] {
        func integer(_ field: String) -> Int? {
            if case .number(let text)? = felixSetting(field) { return Int(text) }
            return nil
        }
        var result: [IPFamily: WireGuardSettings] = [:]
        for family in IPFamily.allCases {
            let suffix = family == .v4 ? "" : "V6"
            var settings = WireGuardSettings(family: family)
            if let name = felixSetting("wireguardInterfaceName" + suffix)?.stringValue, !name.isEmpty {
                settings.interfaceName = name
            }
            if let port = integer("wireguardListeningPort" + suffix), let value = UInt16(exactly: port) {
                settings.listenPort = value
            }
            if let mtu = integer("wireguardMTU" + suffix), mtu > 0 { settings.explicitMTU = UInt32(mtu) }
            if let priority = integer("wireguardRoutingRulePriority"), let value = UInt32(exactly: priority) {
                settings.rulePriority = value
            }
            settings.hostEncryption = felixSetting("wireguardHostEncryptionEnabled") == .bool(true)
            if let text = felixSetting("wireguardKeepAlive")?.stringValue, let duration = GoDuration(text) {
                settings.persistentKeepalive = UInt16(clamping: Int(duration.seconds.rounded()))
            }
            result[family] = settings
        }
        return result
    }

    /// This node's WireGuard (``wireGuardPlan(node:nodes:affinities:families:enabled:settings:)``).
    public var wireGuardPlan: WireGuardPlan {
        TandemCalculation.wireGuardPlan(
            node: nodeName, nodes: nodes.keys.sorted().map { nodes[$0]! }, affinities: affinities, families: families,
            enabled: wireGuardEnabled, settings: wireGuardSettings)
    }

    /// This node's WireGuard interface-address work (``wireGuardAddressActions(node:nodes:pools:families:enabled:)``).
    public var wireGuardAddressActions: [IPFamily: TunnelAddressAction] {
        TandemCalculation.wireGuardAddressActions(
            node: nodeName, nodes: nodes.keys.sorted().map { nodes[$0]! },
            pools: pools.keys.sorted().map { pools[$0]! }, families: families, enabled: wireGuardEnabled)
    }
}
