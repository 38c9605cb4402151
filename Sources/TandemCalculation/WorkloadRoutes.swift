import TandemCore
import TandemModel

/// A route the agent wants in the main table: to a local pod through its veth, or a blackhole for a block
/// affine to this node (so traffic to an unassigned address of the block stops here instead of leaving by the
/// default route).
public struct DesiredRoute: Hashable, Sendable, CustomStringConvertible {
    public var destination: CIDR
    /// The pod's host-side interface; nil for a blackhole.
    public var interfaceName: String?

    public init(destination: CIDR, interfaceName: String?) {
        self.destination = destination
        self.interfaceName = interfaceName
    }

    public var description: String {
        interfaceName.map { "\(destination) dev \($0)" } ?? "blackhole \(destination)"
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
