import TandemCore
import TandemModel

/// A route the agent wants in the main table: to a local pod through its veth, or a blackhole for a block
/// affine to this node (so traffic to an unassigned address of the block stops here instead of leaving by the
/// default route).
public struct DesiredRoute: Hashable, Sendable, CustomStringConvertible {
    public var destination: CIDR
    /// The interface: a pod's host-side veth or the VXLAN device; nil for a blackhole, or for a route through a
    /// gateway the kernel reaches by itself (a node on the same subnet).
    public var interfaceName: String?
    /// The next hop: a remote node's tunnel address (with an interface: reached `onlink`, no route to it needed) or
    /// its node address (without).
    public var gateway: IPAddress?

    public init(destination: CIDR, interfaceName: String?, gateway: IPAddress? = nil) {
        self.destination = destination
        self.interfaceName = interfaceName
        self.gateway = gateway
    }

    public var description: String {
        guard let interfaceName else {
            return gateway.map { "\(destination) via \($0)" } ?? "blackhole \(destination)"
        }
        return "\(destination)" + (gateway.map { " via \($0)" } ?? "") + " dev \(interfaceName)"
            + (gateway == nil ? "" : " onlink")
    }
}

/// The routes the agent owns for `node`: one /32 or /128 per address of each of its workload endpoints, one
/// blackhole per affine block (except single-address blocks, which the pod route covers).
/// An address two endpoints claim gets one route, to the first in the order given (the store's key order), so
/// the route does not swap between them from pass to pass.
public func desiredRoutes(node: String, endpoints: [WorkloadEndpoint], affineBlocks: [CIDR]) -> [DesiredRoute] {
    var routes: [DesiredRoute] = []
    var claimed: Set<CIDR> = []
    for endpoint in endpoints where endpoint.spec.node == node {
        guard let interface = endpoint.spec.interfaceName, !interface.isEmpty else { continue }
        for text in endpoint.spec.ipNetworks ?? [] {
            guard let cidr = try? CIDR(cidrOrAddress: text) else { continue }
            let host = CIDR(host: cidr.address)
            guard claimed.insert(host).inserted else { continue }
            routes.append(DesiredRoute(destination: host, interfaceName: interface))
        }
    }
    for block in affineBlocks where block.prefixLength < block.family.bitWidth {
        routes.append(DesiredRoute(destination: block.network, interfaceName: nil))
    }
    return routes
}
