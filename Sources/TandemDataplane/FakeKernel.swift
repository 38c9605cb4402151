import Glibc
import Synchronization
import TandemCore
import TandemNetlink
import TandemNetlinkCodec

/// An in-memory kernel for the managers' tests: links, addresses, routes in any table, neighbours, with the rules
/// that matter to the managers (Felix's mock netlink dataplane is the model):
/// - a route is identified by table, destination and metric: `add` of an existing one fails with EEXIST,
///   `replace` overwrites it; `del` of a missing one fails with ESRCH;
/// - a route through an interface that does not exist fails with ENODEV; an IPv4 route through a link that is down
///   fails with ENETDOWN (IPv6 accepts it, as Linux does);
/// - a link that goes down or away takes its routes, addresses (when deleted) and neighbours with it;
/// - any operation can be made to fail with an errno, once or until cleared (``failNext(_:errno:times:)``).
///
/// Every call is counted by operation (``calls(_:)``), so a test can prove that a converged manager wrote nothing.
public final class FakeKernel: KernelNetworking, Sendable {
    /// The operations that can be counted and made to fail.
    public enum Operation: String, Sendable, CaseIterable {
        case listLinks, getLink, setLink, deleteLink, createVXLAN
        case listAddresses, addAddress, deleteAddress
        case listRoutes, addRoute, deleteRoute
        case listNeighbours, replaceNeighbour, deleteNeighbour
        case listFDB, replaceFDB, deleteFDB
        case listRules, addRule, deleteRule
    }

    struct State {
        var links: [Int32: Link] = [:]
        var missingKinds: Set<String> = []
        var nextIndex: Int32 = 1
        var addresses: [InterfaceAddress] = []
        var routes: [Route] = []
        var neighbours: [Neighbour] = []
        var fdb: [FDBEntry] = []
        /// The kernel's default rules: local (0), main (32766), default (32767), per family.
        var rules: [RoutingRule] = IPFamily.allCases.flatMap { family in
            [
                RoutingRule(family: family, priority: 0, table: RouteTable.local),
                RoutingRule(family: family, priority: 32766, table: RouteTable.main),
            ] + (family == .v4 ? [RoutingRule(family: family, priority: 32767, table: 253)] : [])
        }
        var failures: [Operation: [(errno: Int32, remaining: Int)]] = [:]
        var calls: [Operation: Int] = [:]
    }

    private let state = Mutex(State())

    public init() {
        // Every namespace has a loopback.
        _ = addLink(name: "lo", up: true, kind: nil)
    }

    /// The flags of a link that is up with its carrier (a veth whose peer is up): up, running, lower up.
    static let operational = InterfaceFlags.up | InterfaceFlags.running | InterfaceFlags.lowerUp

    // MARK: Test controls

    /// Makes a link as `ip link add NAME type KIND` (plus `up`) would; returns it.
    @discardableResult
    public func addLink(name: String, up: Bool = true, kind: String? = "veth", mac: MACAddress? = nil) -> Link {
        state.withLock { state in
            let link = Link(
                index: state.nextIndex, name: name, flags: up ? Self.operational : 0, mac: mac, mtu: 1500, kind: kind)
            state.links[link.index] = link
            state.nextIndex += 1
            return link
        }
    }

    /// The next `times` calls of `operation` fail with `errno` (`times: .max`: until ``clearFailures()``).
    public func failNext(_ operation: Operation, errno: Int32, times: Int = 1) {
        state.withLock { $0.failures[operation, default: []].append((errno, times)) }
    }

    /// No more injected failures.
    public func clearFailures() {
        state.withLock { $0.failures = [:] }
    }

    /// How many times `operation` was called (failed calls included).
    public func calls(_ operation: Operation) -> Int {
        state.withLock { $0.calls[operation] ?? 0 }
    }

    /// Forgets the call counts.
    public func resetCalls() {
        state.withLock { $0.calls = [:] }
    }

    /// Every route of every table and family, as the kernel holds them.
    public var allRoutes: [Route] { state.withLock { $0.routes } }

    /// Adds a route behind the managers' backs (an operator's, BIRD's, the kernel's own), with no checks.
    public func injectRoute(_ route: Route) {
        state.withLock { $0.routes.append(route) }
    }

    /// Removes routes behind the managers' backs (`ip route del` by an operator).
    public func removeRoutes(where predicate: (Route) -> Bool) {
        state.withLock { $0.routes.removeAll(where: predicate) }
    }

    // MARK: Links of device fakes (for FakeWireGuardDevices): uncounted, never failed by injection

    /// Adds a link as `ip link add NAME type KIND` makes it (down, MTU `mtu`); nil when the name is taken.
    func addDeviceLink(name: String, kind: String, mtu: UInt32) -> Link? {
        state.withLock { state in
            guard !state.links.values.contains(where: { $0.name == name }) else { return nil }
            let link = Link(index: state.nextIndex, name: name, flags: 0, mtu: mtu, kind: kind)
            state.links[link.index] = link
            state.nextIndex += 1
            return link
        }
    }

    /// Whether a link of that name exists.
    func hasLink(named name: String) -> Bool {
        state.withLock { $0.links.values.contains { $0.name == name } }
    }

    /// Removes the link `name` with what hangs on it, as `ip link del` does; false when there is none.
    @discardableResult
    func removeDeviceLink(named name: String) -> Bool {
        state.withLock { state in
            guard let link = state.links.values.first(where: { $0.name == name }) else { return false }
            state.links[link.index] = nil
            state.routes.removeAll { $0.outputInterface == link.index }
            state.addresses.removeAll { $0.index == link.index }
            state.neighbours.removeAll { $0.index == link.index }
            state.fdb.removeAll { $0.index == link.index }
            return true
        }
    }

    // MARK: Failure injection and counting

    private func enter(
        _ operation: Operation, _ state: inout State, command: @autoclosure () -> String
    )
        throws(NetlinkError)
    {
        state.calls[operation, default: 0] += 1
        guard var queue = state.failures[operation], !queue.isEmpty else { return }
        let failure = queue[0]
        if failure.remaining != .max {
            if failure.remaining <= 1 { queue.removeFirst() } else { queue[0].remaining -= 1 }
        }
        state.failures[operation] = queue
        throw NetlinkError(
            errno: failure.errno, operation: "\(operation.rawValue) (injected)", command: command())
    }

    private func withState<T>(_ body: (inout State) throws(NetlinkError) -> T) throws(NetlinkError) -> T {
        let result: Result<T, NetlinkError> = state.withLock { state in
            do throws(NetlinkError) { return .success(try body(&state)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    // MARK: Links

    public func links() throws(NetlinkError) -> [Link] {
        try withState { state throws(NetlinkError) in
            try enter(.listLinks, &state, command: "ip link show")
            return state.links.values.sorted { $0.index < $1.index }
        }
    }

    public func link(named name: String) throws(NetlinkError) -> Link? {
        try withState { state throws(NetlinkError) in
            try enter(.getLink, &state, command: "ip link show \(name)")
            return state.links.values.first { $0.name == name }
        }
    }

    public func setLink(_ link: Link, _ change: LinkChange) throws(NetlinkError) {
        try withState { state throws(NetlinkError) in
            try enter(.setLink, &state, command: "ip link set dev \(link.name)")
            guard var current = state.links[link.index] else {
                throw NetlinkError(
                    errno: ENODEV, operation: "configure link \(link.name)", command: "ip link set dev \(link.name)")
            }
            if let up = change.up {
                current.flags = up ? current.flags | Self.operational : current.flags & ~Self.operational
                // A link going down takes its routes with it.
                if !up { state.routes.removeAll { $0.outputInterface == link.index } }
            }
            if let mac = change.mac { current.mac = mac }
            if let mtu = change.mtu { current.mtu = mtu }
            if let name = change.name { current.name = name }
            state.links[link.index] = current
        }
    }

    /// Link types this fake kernel lacks (`ip link add` says `Unknown device type`, EOPNOTSUPP), like this
    /// machine's kernel for ipip.
    public func lackLinkKinds(_ kinds: Set<String>) { state.withLock { $0.missingKinds = kinds } }

    public func createLink(name: String, kind: String) throws(NetlinkError) {
        try withState { state throws(NetlinkError) in
            try enter(.createVXLAN, &state, command: "ip link add \(name) type \(kind)")
            guard !state.missingKinds.contains(kind) else {
                throw NetlinkError(
                    errno: EOPNOTSUPP, operation: "create \(kind) link \(name)",
                    command: "ip link add \(name) type \(kind)",
                    kernelMessage: "Unknown device type")
            }
            let link = Link(index: state.nextIndex, name: name, flags: 0, mtu: 1480, kind: kind)
            state.links[link.index] = link
            state.nextIndex += 1
        }
    }

    public func createVXLAN(
        name: String, _ configuration: VXLANConfiguration, mac: MACAddress?, mtu: UInt32?
    ) throws(NetlinkError) {
        try withState { state throws(NetlinkError) in
            try enter(.createVXLAN, &state, command: "ip link add \(name) type vxlan \(configuration.ipWords)")
            guard !state.links.values.contains(where: { $0.name == name }) else {
                throw NetlinkError(
                    errno: EEXIST, operation: "create VXLAN device \(name)",
                    command: "ip link add \(name) type vxlan \(configuration.ipWords)")
            }
            if let parent = configuration.parentIndex, state.links[parent] == nil {
                throw NetlinkError(
                    errno: ENODEV, operation: "create VXLAN device \(name)",
                    command: "ip link add \(name) type vxlan \(configuration.ipWords)")
            }
            var link = Link(index: state.nextIndex, name: name, flags: 0, mac: mac, mtu: mtu ?? 1450, kind: "vxlan")
            link.vxlan = configuration
            state.links[link.index] = link
            state.nextIndex += 1
        }
    }

    public func deleteLink(_ link: Link) throws(NetlinkError) {
        try withState { state throws(NetlinkError) in
            try enter(.deleteLink, &state, command: "ip link del dev \(link.name)")
            guard state.links.removeValue(forKey: link.index) != nil else {
                throw NetlinkError(
                    errno: ENODEV, operation: "delete link \(link.name)", command: "ip link del dev \(link.name)")
            }
            state.routes.removeAll { $0.outputInterface == link.index }
            state.addresses.removeAll { $0.index == link.index }
            state.neighbours.removeAll { $0.index == link.index }
            state.fdb.removeAll { $0.index == link.index }
        }
    }

    // MARK: Addresses

    public func addresses(family: IPFamily?, index: Int32?) throws(NetlinkError) -> [InterfaceAddress] {
        try withState { state throws(NetlinkError) in
            try enter(.listAddresses, &state, command: "ip addr show")
            return state.addresses.filter {
                (family == nil || $0.cidr.family == family) && (index == nil || $0.index == index)
            }
        }
    }

    public func addAddress(_ cidr: CIDR, to link: Link, noDAD: Bool) throws(NetlinkError) {
        try withState { state throws(NetlinkError) in
            let command = "ip addr add \(cidr) dev \(link.name)"
            try enter(.addAddress, &state, command: command)
            guard state.links[link.index] != nil else {
                throw NetlinkError(errno: ENODEV, operation: "add address \(cidr)", command: command)
            }
            if state.addresses.contains(where: { $0.index == link.index && $0.cidr.address == cidr.address }) {
                throw NetlinkError(errno: EEXIST, operation: "add address \(cidr)", command: command)
            }
            state.addresses.append(InterfaceAddress(index: link.index, cidr: cidr))
        }
    }

    public func deleteAddress(_ cidr: CIDR, from link: Link) throws(NetlinkError) {
        try withState { state throws(NetlinkError) in
            let command = "ip addr del \(cidr) dev \(link.name)"
            try enter(.deleteAddress, &state, command: command)
            guard let at = state.addresses.firstIndex(where: { $0.index == link.index && $0.cidr == cidr }) else {
                throw NetlinkError(errno: EADDRNOTAVAIL, operation: "delete address \(cidr)", command: command)
            }
            state.addresses.remove(at: at)
        }
    }

    // MARK: Routes

    public func routes(family: IPFamily, table: UInt32?) throws(NetlinkError) -> [Route] {
        try withState { state throws(NetlinkError) in
            try enter(.listRoutes, &state, command: "ip route show table \(table.map(String.init) ?? "all")")
            return state.routes.filter { $0.family == family && (table == nil || $0.table == table) }
        }
    }

    /// The kernel's identity of a route: table, destination, metric.
    private static func sameSlot(_ left: Route, _ right: Route) -> Bool {
        left.table == right.table && left.destination == right.destination && (left.metric ?? 0) == (right.metric ?? 0)
    }

    public func addRoute(_ route: Route, interfaceName: String?, replace: Bool) throws(NetlinkError) {
        try withState { state throws(NetlinkError) in
            let command = route.ipCommand(replace ? "replace" : "add", interfaceName: interfaceName)
            let operation = "\(replace ? "replace" : "add") route to \(route.destination)"
            try enter(.addRoute, &state, command: command)
            if let index = route.outputInterface {
                guard let link = state.links[index] else {
                    throw NetlinkError(errno: ENODEV, operation: operation, command: command)
                }
                if route.family == .v4 && !link.isUp {
                    throw NetlinkError(
                        errno: ENETDOWN, operation: operation, command: command,
                        kernelMessage: "Nexthop device is not up")
                }
            }
            if let existing = state.routes.firstIndex(where: { Self.sameSlot($0, route) }) {
                guard replace else { throw NetlinkError(errno: EEXIST, operation: operation, command: command) }
                state.routes[existing] = route
            } else {
                state.routes.append(route)
            }
        }
    }

    public func deleteRoute(_ route: Route, interfaceName: String?) throws(NetlinkError) {
        try withState { state throws(NetlinkError) in
            let command = route.ipCommand("del", interfaceName: interfaceName)
            try enter(.deleteRoute, &state, command: command)
            // As the kernel: the given fields must match; an unset interface or protocol matches any.
            guard
                let at = state.routes.firstIndex(where: {
                    Self.sameSlot($0, route) && $0.type == route.type
                        && (route.outputInterface == nil || $0.outputInterface == route.outputInterface)
                })
            else {
                throw NetlinkError(errno: ESRCH, operation: "delete route to \(route.destination)", command: command)
            }
            state.routes.remove(at: at)
        }
    }

    // MARK: Neighbours

    public func neighbours(family: IPFamily, proxies: Bool) throws(NetlinkError) -> [Neighbour] {
        try withState { state throws(NetlinkError) in
            try enter(.listNeighbours, &state, command: "ip neigh show")
            return state.neighbours.filter { $0.address.family == family && $0.isProxy == proxies }
        }
    }

    public func replaceNeighbour(_ neighbour: Neighbour, interfaceName: String) throws(NetlinkError) {
        try withState { state throws(NetlinkError) in
            let command = "ip neigh replace \(neighbour.address) dev \(interfaceName)"
            try enter(.replaceNeighbour, &state, command: command)
            guard state.links[neighbour.index] != nil else {
                throw NetlinkError(errno: ENODEV, operation: "set neighbour \(neighbour.address)", command: command)
            }
            state.neighbours.removeAll {
                $0.index == neighbour.index && $0.address == neighbour.address && $0.isProxy == neighbour.isProxy
            }
            state.neighbours.append(neighbour)
        }
    }

    public func deleteNeighbour(_ neighbour: Neighbour, interfaceName: String) throws(NetlinkError) {
        try withState { state throws(NetlinkError) in
            let command = "ip neigh del \(neighbour.address) dev \(interfaceName)"
            try enter(.deleteNeighbour, &state, command: command)
            guard
                let at = state.neighbours.firstIndex(where: {
                    $0.index == neighbour.index && $0.address == neighbour.address && $0.isProxy == neighbour.isProxy
                })
            else {
                throw NetlinkError(errno: ENOENT, operation: "delete neighbour \(neighbour.address)", command: command)
            }
            state.neighbours.remove(at: at)
        }
    }

    // MARK: Forwarding database

    public func fdbEntries() throws(NetlinkError) -> [FDBEntry] {
        try withState { state throws(NetlinkError) in
            try enter(.listFDB, &state, command: "bridge fdb show")
            return state.fdb
        }
    }

    public func replaceFDBEntry(_ entry: FDBEntry, interfaceName: String) throws(NetlinkError) {
        try withState { state throws(NetlinkError) in
            let command = entry.bridgeCommand("replace", interfaceName: interfaceName)
            try enter(.replaceFDB, &state, command: command)
            guard state.links[entry.index] != nil else {
                throw NetlinkError(errno: ENODEV, operation: "set FDB entry \(entry.mac)", command: command)
            }
            // One entry per MAC and device: replace moves it to the new destination.
            state.fdb.removeAll { $0.index == entry.index && $0.mac == entry.mac }
            state.fdb.append(entry)
        }
    }

    public func deleteFDBEntry(_ entry: FDBEntry, interfaceName: String) throws(NetlinkError) {
        try withState { state throws(NetlinkError) in
            let command = entry.bridgeCommand("del", interfaceName: interfaceName)
            try enter(.deleteFDB, &state, command: command)
            guard let at = state.fdb.firstIndex(where: { $0.index == entry.index && $0.mac == entry.mac }) else {
                throw NetlinkError(errno: ENOENT, operation: "delete FDB entry \(entry.mac)", command: command)
            }
            state.fdb.remove(at: at)
        }
    }

    // MARK: Rules

    public func rules(family: IPFamily) throws(NetlinkError) -> [RoutingRule] {
        try withState { state throws(NetlinkError) in
            try enter(.listRules, &state, command: "ip rule show")
            return state.rules.filter { $0.family == family }
        }
    }

    public func addRule(_ rule: RoutingRule) throws(NetlinkError) {
        try withState { state throws(NetlinkError) in
            try enter(.addRule, &state, command: rule.ipCommand("add"))
            if state.rules.contains(rule) {
                throw NetlinkError(errno: EEXIST, operation: "add rule", command: rule.ipCommand("add"))
            }
            state.rules.append(rule)
        }
    }

    public func deleteRule(_ rule: RoutingRule) throws(NetlinkError) {
        try withState { state throws(NetlinkError) in
            try enter(.deleteRule, &state, command: rule.ipCommand("del"))
            guard let at = state.rules.firstIndex(of: rule) else {
                throw NetlinkError(errno: ENOENT, operation: "delete rule", command: rule.ipCommand("del"))
            }
            state.rules.remove(at: at)
        }
    }
}
