import TandemCore
import TandemModel

/// Calico's VXLAN constants (FelixConfiguration `vxlanVNI`, `vxlanPort` defaults) and device names.
public enum VXLANDefaults {
    public static let vni: UInt32 = 4096
    public static let port: UInt16 = 4789
    /// The device of each family: `vxlan.calico` carries IPv4 pods over the IPv4 underlay, `vxlan-v6.calico` IPv6
    /// pods over the IPv6 underlay.
    public static func deviceName(_ family: IPFamily) -> String { family == .v4 ? "vxlan.calico" : "vxlan-v6.calico" }
    /// What VXLAN adds to each packet: outer IP, UDP, VXLAN and Ethernet headers (Calico's 50 and 70).
    public static func overhead(_ family: IPFamily) -> UInt32 {
        (family == .v4 ? Encapsulation.vxlan : .vxlanV6).overhead
    }
    /// The IPAM handle of a node's tunnel address (Calico's).
    public static func handle(node: String, family: IPFamily) -> String {
        family == .v4 ? "vxlan-tunnel-addr-\(node)" : "vxlan-v6-tunnel-addr-\(node)"
    }
    /// The allocation attribute `type` of a tunnel address (Calico's).
    public static func allocationType(_ family: IPFamily) -> String {
        family == .v4 ? "vxlanTunnelAddress" : "vxlanV6TunnelAddress"
    }
}

/// Calico's VTEP MAC of a node (`felix/calc/vxlan_resolver.go`): `66` and the first five bytes of the SHA-1 of the
/// node's name (IPv4), or of the name with `-v6` (IPv6). The Node's `vxlanTunnelMACAddr` / `…V6` win when set.
public func vtepMAC(node: String, family: IPFamily) -> MACAddress {
    let digest = SHA1.hash(Array((family == .v4 ? node : node + "-v6").utf8))
    return try! MACAddress(bytes: [0x66] + digest.prefix(5))
}

/// This node's VXLAN device of one family.
public struct VXLANTunnel: Sendable, Equatable {
    public var family: IPFamily
    public var deviceName: String
    public var mac: MACAddress
    /// The node's address of the family: the local tunnel endpoint; the parent link is the one holding it.
    public var nodeAddress: IPAddress
    /// The node's tunnel address (from its block), the device's only address of the family.
    public var tunnelAddress: IPAddress
    public var vni: UInt32
    public var port: UInt16
    /// FelixConfiguration `vxlanMTU` / `vxlanMTUV6`; nil: the host MTU less the overhead.
    public var explicitMTU: UInt32?

    public init(
        family: IPFamily, deviceName: String, mac: MACAddress, nodeAddress: IPAddress, tunnelAddress: IPAddress,
        vni: UInt32, port: UInt16, explicitMTU: UInt32?
    ) {
        self.family = family
        self.deviceName = deviceName
        self.mac = mac
        self.nodeAddress = nodeAddress
        self.tunnelAddress = tunnelAddress
        self.vni = vni
        self.port = port
        self.explicitMTU = explicitMTU
    }
}

/// Another node's tunnel endpoint in one family.
public struct RemoteVTEP: Sendable, Equatable, Hashable {
    public var node: String
    public var family: IPFamily
    public var nodeAddress: IPAddress
    public var tunnelAddress: IPAddress
    public var mac: MACAddress

    public init(node: String, family: IPFamily, nodeAddress: IPAddress, tunnelAddress: IPAddress, mac: MACAddress) {
        self.node = node
        self.family = family
        self.nodeAddress = nodeAddress
        self.tunnelAddress = tunnelAddress
        self.mac = mac
    }
}

/// What the node's overlay wants: its devices, the remote VTEPs (a neighbour and an FDB entry each), and the routes
/// to other nodes' blocks in VXLAN pools (through the device, or directly to a node on the same subnet with
/// CrossSubnet).
public struct VXLANPlan: Sendable, Equatable {
    public var tunnels: [IPFamily: VXLANTunnel] = [:]
    public var remotes: [RemoteVTEP] = []
    public var routes: [DesiredRoute] = []
    /// Why a family's overlay is not (yet) complete, for the log: a missing tunnel address, a node without one.
    public var pending: [String] = []
    /// The families with a VXLAN pool: their overlay is in use (for the MTU) even before this node's device exists,
    /// so that a pod added meanwhile already gets the MTU it will need.
    public var families: Set<IPFamily> = []

    public init() {}

    /// The encapsulations in use, for the MTU.
    public func encapsulations(explicitMTU: [IPFamily: UInt32]) -> [Encapsulation] {
        IPFamily.allCases.filter { families.contains($0) }.map { family in
            (family == .v4 ? Encapsulation.vxlan : .vxlanV6).withMTU(explicitMTU[family])
        }
    }
}

/// A node's address of a family as written on the Node (`spec.bgp.ipv4Address`, with its prefix: the subnet
/// CrossSubnet compares against).
func nodeSubnet(_ node: Node, _ family: IPFamily) -> CIDR? {
    let text = family == .v4 ? node.spec.bgp?.ipv4Address : node.spec.bgp?.ipv6Address
    return text.flatMap { try? CIDR(cidrOrAddress: $0) }
}

/// A node's VXLAN tunnel address of a family (`spec.ipv4VXLANTunnelAddr` / `ipv6VXLANTunnelAddr`).
func tunnelAddress(_ node: Node, _ family: IPFamily) -> IPAddress? {
    let text = family == .v4 ? node.spec.ipv4VXLANTunnelAddr : node.spec.ipv6VXLANTunnelAddr
    return text.flatMap { try? IPAddress($0) }.flatMap { $0.family == family ? $0 : nil }
}

/// A node's VTEP MAC of a family: the Node's field, or Calico's derived one.
func vtepMAC(_ node: Node, _ family: IPFamily) -> MACAddress {
    let text = family == .v4 ? node.spec.vxlanTunnelMACAddr : node.spec.vxlanTunnelMACAddrV6
    return text.flatMap { try? MACAddress($0) } ?? vtepMAC(node: node.metadata.name ?? "", family: family)
}

/// The VXLAN mode of a pool (Never when unset).
func vxlanMode(_ pool: IPPool) -> EncapsulationMode {
    pool.spec.vxlanMode.flatMap(EncapsulationMode.init(rawValue:)) ?? .never
}

/// Calico's overlay for `node` (`vxlan_resolver.go`, `l3_route_resolver.go`): per family with a VXLAN pool, a
/// device when the node has an address and a tunnel address of that family; a VTEP per other node that has both;
/// and per other node's affine block in a VXLAN pool a route through the device to its tunnel address, or, with
/// CrossSubnet and the other node's address inside this node's subnet, straight to its node address.
public func vxlanPlan(
    node name: String, nodes: [Node], pools: [IPPool], affinities: [String: Set<CIDR>], families: Set<IPFamily>,
    vni: UInt32 = VXLANDefaults.vni, port: UInt16 = VXLANDefaults.port, explicitMTU: [IPFamily: UInt32] = [:]
) -> VXLANPlan {
    var plan = VXLANPlan()
    let vxlanPools = pools.filter { vxlanMode($0) != .never }
    guard !vxlanPools.isEmpty, let me = nodes.first(where: { $0.metadata.name == name }) else { return plan }
    for family in IPFamily.allCases where families.contains(family) {
        let familyPools = vxlanPools.filter { $0.spec.network?.family == family }
        guard !familyPools.isEmpty else { continue }
        plan.families.insert(family)
        guard let mySubnet = nodeSubnet(me, family) else {
            plan.pending.append("no IPv\(family.rawValue) VXLAN device: this node has no \(family) address")
            continue
        }
        guard let myTunnel = tunnelAddress(me, family) else {
            plan.pending.append("no IPv\(family.rawValue) VXLAN device yet: this node has no tunnel address")
            continue
        }
        let device = VXLANDefaults.deviceName(family)
        plan.tunnels[family] = VXLANTunnel(
            family: family, deviceName: device, mac: vtepMAC(me, family), nodeAddress: mySubnet.address,
            tunnelAddress: myTunnel, vni: vni, port: port, explicitMTU: explicitMTU[family])
        for other in nodes.sorted(by: { ($0.metadata.name ?? "") < ($1.metadata.name ?? "") }) {
            guard let otherName = other.metadata.name, otherName != name else { continue }
            guard let otherAddress = nodeSubnet(other, family)?.address else { continue }
            guard let otherTunnel = tunnelAddress(other, family) else {
                plan.pending.append("node \(otherName) has no IPv\(family.rawValue) tunnel address: its blocks wait")
                continue
            }
            plan.remotes.append(
                RemoteVTEP(
                    node: otherName, family: family, nodeAddress: otherAddress, tunnelAddress: otherTunnel,
                    mac: vtepMAC(other, family)))
            // Same subnet: the other node's address lies in the prefix this node's address is written with.
            let sameSubnet = mySubnet.contains(otherAddress)
            for block in (affinities[otherName] ?? []).sorted(by: { $0.description < $1.description })
            where block.family == family {
                guard let pool = familyPools.first(where: { $0.spec.network?.contains(block) == true }) else {
                    continue
                }
                if vxlanMode(pool) == .crossSubnet && sameSubnet {
                    plan.routes.append(DesiredRoute(destination: block, interfaceName: nil, gateway: otherAddress))
                } else {
                    plan.routes.append(DesiredRoute(destination: block, interfaceName: device, gateway: otherTunnel))
                }
            }
        }
    }
    return plan
}

/// What this node's tunnel address of one family needs (Calico's `allocateip`): a new one from a VXLAN pool, or
/// the one it has released.
public enum TunnelAddressAction: Sendable, Equatable, CustomStringConvertible {
    /// Allocate from these pools (names), releasing `replacing` first when the node holds one no pool qualifies.
    case allocate(pools: [String], replacing: IPAddress?)
    /// No pool qualifies any more: release it and clear the Node's field.
    case release(IPAddress)

    public var description: String {
        switch self {
        case .allocate(let pools, let replacing):
            "allocate from \(pools.joined(separator: ", "))" + (replacing.map { " (replacing \($0))" } ?? "")
        case .release(let address): "release \(address)"
        }
    }
}

/// The tunnel-address work for `node`, per family: a family with an enabled VXLAN pool (of the families the node
/// carries, and the node having an address of it) needs a tunnel address inside such a pool; one the node holds
/// without a qualifying pool is released. Empty when the Node is as it should be.
public func tunnelAddressActions(
    node name: String, nodes: [Node], pools: [IPPool], families: Set<IPFamily>, enabled: Bool = true
) -> [IPFamily: TunnelAddressAction] {
    guard let me = nodes.first(where: { $0.metadata.name == name }) else { return [:] }
    var actions: [IPFamily: TunnelAddressAction] = [:]
    for family in IPFamily.allCases {
        let qualifying = pools.filter {
            enabled && families.contains(family) && vxlanMode($0) != .never && $0.spec.disabled != true
                && $0.spec.network?.family == family && $0.spec.allowedUses?.contains("Tunnel") != false
        }
        actions[family] = TunnelAddressAction(
            current: tunnelAddress(me, family), qualifying: qualifying,
            wanted: !qualifying.isEmpty && nodeSubnet(me, family) != nil)
    }
    return actions
}

extension TunnelAddressAction {
    /// What to do about a node's tunnel address of one kind and family: nothing while it holds one inside a
    /// qualifying pool, allocate when it is wanted and it holds none there, release when it is no longer wanted.
    init?(current: IPAddress?, qualifying: [IPPool], wanted: Bool) {
        if wanted {
            if let current, qualifying.contains(where: { $0.spec.network?.contains(current) == true }) { return nil }
            self = .allocate(pools: qualifying.compactMap(\.metadata.name).sorted(), replacing: current)
        } else if let current {
            self = .release(current)
        } else {
            return nil
        }
    }
}
