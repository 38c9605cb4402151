import Synchronization
import TandemCalculation
import TandemCore
import TandemNetlink
import TandemNetlinkCodec

/// Keeps the kernel's routes of protocol 80 (`proto 80` in `ip route`) in the main table equal to the desired
/// workload routes and blackholes, and the routes to other nodes' blocks the overlay wants (through the VXLAN
/// device, or `onlink` to a node on the same subnet), both families. Only routes of that protocol are ever deleted, so routes of
/// BIRD, the kernel, the CNI plugin's initial ones and the operator's are left alone; a pod route the plugin made
/// is taken over by replacing it. Every apply reads the kernel's routes back (one dump per family), so a route
/// deleted by hand returns at the next apply or resync.
public final class RouteManager: DataplaneManager {
    public static let routeProtocol = RouteProtocol.tandem
    public let name = "routes"
    let kernel: any KernelNetworking
    private let desired = Mutex<[DesiredRoute]?>(nil)

    public init(kernel: any KernelNetworking) { self.kernel = kernel }

    /// The routes wanted from now on (no I/O).
    public func setDesired(_ routes: [DesiredRoute]) {
        desired.withLock { $0 = routes }
    }

    /// `ip route replace` for each missing route, `ip route del` for each owned route not wanted. Nothing is done
    /// before the first desired state (an agent that has not read the datastore yet must not delete routes).
    public func apply(resync: Bool) throws -> ManagerReport {
        guard let desired = desired.withLock({ $0 }) else { return ManagerReport() }
        var report = ManagerReport()
        var failed: [String] = []
        let links = try kernel.links()
        var indexByName: [String: Int32] = [:]
        var nameByIndex: [Int32: String] = [:]
        for link in links {
            indexByName[link.name] = link.index
            nameByIndex[link.index] = link.name
        }
        for family in [IPFamily.v4, .v6] {
            let owned = try kernel.routes(family: family, table: RouteTable.main).filter {
                $0.routeProtocol == Self.routeProtocol
            }
            var wanted: [Route] = []
            for route in desired where route.destination.family == family {
                if let name = route.interfaceName {
                    guard let index = indexByName[name] else {
                        report.waiting.append("\(route.description): no interface \(name) yet")
                        continue
                    }
                    if let gateway = route.gateway {
                        // `ip route replace BLOCK via GW dev DEV onlink proto 80`.
                        wanted.append(
                            Route(
                                destination: route.destination, gateway: gateway, outputInterface: index,
                                routeProtocol: Self.routeProtocol, scope: RouteScope.universe, flags: routeFlagOnLink))
                    } else {
                        wanted.append(
                            Route(
                                destination: route.destination, outputInterface: index,
                                routeProtocol: Self.routeProtocol,
                                scope: family == .v4 ? RouteScope.link : RouteScope.universe))
                    }
                } else if let gateway = route.gateway {
                    // `ip route replace BLOCK via NODE proto 80`: the kernel picks the interface.
                    wanted.append(
                        Route(destination: route.destination, gateway: gateway, routeProtocol: Self.routeProtocol))
                } else {
                    wanted.append(
                        Route(
                            destination: route.destination, routeProtocol: Self.routeProtocol, type: RouteType.blackhole
                        ))
                }
            }
            // Routes are matched by destination, type and interface (a blackhole has none): hash sets, so a pass
            // over ten thousand converged routes is linear.
            let ownedKeys = Set(owned.map(RouteKey.init))
            let wantedKeys = Set(wanted.map(RouteKey.init))
            // One refused route does not hold up the others: it is reported and tried again.
            for want in wanted where !ownedKeys.contains(RouteKey(want)) {
                let name = want.outputInterface.flatMap { nameByIndex[$0] }
                do {
                    try kernel.addRoute(want, interfaceName: name, replace: true)
                    report.changes.append(want.ipCommand("replace", interfaceName: name))
                } catch {
                    failed.append("\(error)")
                }
            }
            for route in owned where !wantedKeys.contains(RouteKey(route)) {
                let name = route.outputInterface.flatMap { nameByIndex[$0] }
                do {
                    try kernel.deleteRoute(route, interfaceName: name)
                    report.changes.append(route.ipCommand("del", interfaceName: name))
                } catch {
                    // Gone already (its interface went with its pod) is not a failure.
                    if !error.isNotFound { failed.append("\(error)") }
                }
            }
        }
        if !failed.isEmpty {
            throw DataplaneError(
                "\(failed.count) route change(s) refused (the others were applied): "
                    + failed.joined(separator: "; "))
        }
        return report
    }
}

/// What identifies a route for the manager: destination, type and interface (none for a blackhole).
struct RouteKey: Hashable {
    var destination: CIDR
    var type: UInt8
    var interface: Int32?
    var gateway: IPAddress?

    init(_ route: Route) {
        destination = route.destination
        type = route.type
        // A blackhole has no interface; a route through a gateway without `onlink` has the one the kernel chose.
        interface =
            route.type == RouteType.blackhole || (route.gateway != nil && !route.isOnLink) ? nil : route.outputInterface
        gateway = route.gateway
    }
}
