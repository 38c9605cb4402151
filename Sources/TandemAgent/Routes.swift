import TandemCore
import TandemModel
import TandemNetlink
import TandemNetlinkCodec

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

/// What identifies a route for the reconciler.
struct RouteKey: Hashable {
    var destination: CIDR
    var type: UInt8
    var interface: Int32?
}

/// What one reconcile pass changed.
public struct RouteReport: Sendable, Equatable {
    public var added: [String] = []
    public var removed: [String] = []
    /// Endpoints whose interface does not exist (yet): their routes wait for it.
    public var waiting: [String] = []
    /// Routes the kernel refused (an interface that is down, say), with its reason; the rest of the pass went on.
    public var failed: [String] = []
    public var isEmpty: Bool { added.isEmpty && removed.isEmpty && failed.isEmpty }
}

/// Keeps the kernel's routes of protocol 80 (`proto 80` in `ip route`) equal to the desired ones. Only routes
/// of that protocol in the main table are ever deleted, so routes of BIRD, the kernel, the CNI plugin's initial
/// ones and the operator's are left alone; a pod route the plugin made is taken over by replacing it.
public struct RouteReconciler: Sendable {
    public static let routeProtocol = RouteProtocol.tandem

    let netlink: Netlink

    public init(netlink: Netlink) { self.netlink = netlink }

    /// One pass: `ip route replace` for each missing route, `ip route del` for each owned route not wanted.
    public func reconcile(_ desired: [DesiredRoute]) throws -> RouteReport {
        var report = RouteReport()
        let links = try netlink.links()
        var indexByName: [String: Int32] = [:]
        var nameByIndex: [Int32: String] = [:]
        for link in links {
            indexByName[link.name] = link.index
            nameByIndex[link.index] = link.name
        }
        for family in [IPFamily.v4, .v6] {
            let owned = try netlink.routes(family: family).filter { $0.routeProtocol == Self.routeProtocol }
            var wanted: [Route] = []
            for route in desired where route.destination.family == family {
                if let name = route.interfaceName {
                    guard let index = indexByName[name] else {
                        report.waiting.append(route.description)
                        continue
                    }
                    wanted.append(
                        Route(
                            destination: route.destination, outputInterface: index, routeProtocol: Self.routeProtocol,
                            scope: family == .v4 ? RouteScope.link : RouteScope.universe))
                } else {
                    wanted.append(
                        Route(
                            destination: route.destination, routeProtocol: Self.routeProtocol, type: RouteType.blackhole
                        ))
                }
            }
            // Routes are matched by destination, type and interface (a blackhole has none): hash sets, so a pass
            // over ten thousand converged routes is linear.
            func key(_ route: Route) -> RouteKey {
                RouteKey(
                    destination: route.destination, type: route.type,
                    interface: route.type == RouteType.blackhole ? nil : route.outputInterface)
            }
            let ownedKeys = Set(owned.map(key))
            let wantedKeys = Set(wanted.map(key))
            // One refused route does not hold up the others: it is reported and tried again next pass.
            for want in wanted where !ownedKeys.contains(key(want)) {
                let name = want.outputInterface.flatMap { nameByIndex[$0] }
                do {
                    try netlink.addRoute(want, interfaceName: name, replace: true)
                    report.added.append(want.ipCommand("replace", interfaceName: name))
                } catch {
                    report.failed.append("\(error)")
                }
            }
            for route in owned where !wantedKeys.contains(key(route)) {
                let name = route.outputInterface.flatMap { nameByIndex[$0] }
                do {
                    try netlink.deleteRoute(route, interfaceName: name)
                    report.removed.append(route.ipCommand("del", interfaceName: name))
                } catch {
                    // Gone already (its interface went with its pod) is not a failure.
                    if !error.isNotFound { report.failed.append("\(error)") }
                }
            }
        }
        return report
    }
}
