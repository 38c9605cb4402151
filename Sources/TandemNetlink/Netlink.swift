import Glibc
import TandemCore
import TandemNetlinkCodec

/// Links, addresses, routes and neighbours of one network namespace, through one netlink socket. Each call's
/// documentation gives the `ip` command it is equivalent to; errors carry that command too.
public final class Netlink: @unchecked Sendable {
    public let socket: NetlinkSocket
    /// Where this socket lives, for messages ("host" or the namespace path).
    public let namespace: String

    /// The calling thread's namespace.
    public init() throws(NetlinkError) {
        socket = try NetlinkSocket()
        namespace = "host"
    }

    /// The namespace at `path` (`/var/run/netns/NAME`, `/proc/PID/ns/net`).
    public init(namespace path: String) throws {
        socket = try NetlinkSocket.inNamespace(path)
        namespace = path
    }

    private func netns(_ command: String) -> String {
        namespace == "host" ? command : "ip netns exec \(namespace) \(command)"
    }

    // MARK: Links

    /// `ip link show`.
    public func links() throws(NetlinkError) -> [Link] {
        try socket.perform(LinkRequest.list(), operation: "list links in \(namespace)", command: netns("ip link show"))
            .compactMap { try? Link(decoding: $0) }
    }

    /// `ip link show NAME`; nil if there is no such link.
    public func link(named name: String) throws(NetlinkError) -> Link? {
        do {
            let reply = try socket.perform(
                LinkRequest.get(name: name), operation: "look up link \(name) in \(namespace)",
                command: netns("ip link show \(name)"))
            return reply.first.flatMap { try? Link(decoding: $0) }
        } catch {
            guard error.isNotFound else { throw error }
            return nil
        }
    }

    /// `ip link add NAME type veth peer name PEER netns NS`: both ends in one request, the peer created directly
    /// in the namespace `peerNamespaceFD` refers to, so no half-made pair is ever visible in the wrong place.
    public func createVeth(
        name: String, peerName: String, mtu: UInt32? = nil, mac: MACAddress? = nil, peerMAC: MACAddress? = nil,
        peerNamespaceFD: Int32?, peerNamespaceName: String = "NS"
    ) throws(NetlinkError) {
        var command = "ip link add \(name)"
        if let mtu { command += " mtu \(mtu)" }
        if let mac { command += " address \(mac)" }
        command += " type veth peer name \(peerName)"
        if let mtu { command += " mtu \(mtu)" }
        if peerNamespaceFD != nil { command += " netns \(peerNamespaceName)" }
        try socket.perform(
            LinkRequest.createVeth(
                name: name, peerName: peerName, mtu: mtu, mac: mac, peerMAC: peerMAC, peerNamespaceFD: peerNamespaceFD),
            operation: "create veth \(name) with peer \(peerName)", command: netns(command))
    }

    /// `ip link add NAME type bridge`.
    public func createBridge(name: String) throws(NetlinkError) {
        try socket.perform(
            LinkRequest.createBridge(name: name), operation: "create bridge \(name) in \(namespace)",
            command: netns("ip link add \(name) type bridge"))
    }

    /// `ip link add NAME type KIND`.
    public func createLink(name: String, kind: String) throws(NetlinkError) {
        try socket.perform(
            LinkRequest.create(name: name, kind: kind), operation: "create \(kind) link \(name) in \(namespace)",
            command: netns("ip link add \(name) type \(kind)"))
    }

    /// `ip link add NAME [address MAC] [mtu M] type vxlan id VNI local IP dev PARENT dstport PORT nolearning`.
    public func createVXLAN(
        name: String, _ configuration: VXLANConfiguration, mac: MACAddress?, mtu: UInt32?
    ) throws(NetlinkError) {
        try socket.perform(
            LinkRequest.createVXLAN(name: name, configuration, mac: mac, mtu: mtu),
            operation: "create VXLAN device \(name) in \(namespace)",
            command: netns(
                "ip link add \(name)" + (mac.map { " address \($0)" } ?? "") + (mtu.map { " mtu \($0)" } ?? "")
                    + " type vxlan \(configuration.ipWords)"))
    }

    /// `ip link set dev NAME [up|down] [address MAC] [mtu M] [name N] [master BR]`.
    public func setLink(_ link: Link, _ change: LinkChange) throws(NetlinkError) {
        var command = "ip link set dev \(link.name)"
        if let up = change.up { command += up ? " up" : " down" }
        if let mac = change.mac { command += " address \(mac)" }
        if let mtu = change.mtu { command += " mtu \(mtu)" }
        if let name = change.name { command += " name \(name)" }
        if change.namespaceFD != nil { command += " netns NS" }
        if let master = change.masterIndex { command += " master if\(master)" }
        try socket.perform(
            LinkRequest.set(index: link.index, change), operation: "configure link \(link.name) in \(namespace)",
            command: netns(command))
    }

    /// `ip link del dev NAME`.
    public func deleteLink(_ link: Link) throws(NetlinkError) {
        try socket.perform(
            LinkRequest.delete(index: link.index), operation: "delete link \(link.name) in \(namespace)",
            command: netns("ip link del dev \(link.name)"))
    }

    // MARK: Addresses

    /// `ip addr show` (optionally `-4` / `-6`), optionally of one interface.
    public func addresses(family: IPFamily? = nil, index: Int32? = nil) throws(NetlinkError) -> [InterfaceAddress] {
        let flag = family.map { $0 == .v4 ? " -4" : " -6" } ?? ""
        return try socket.perform(
            AddressRequest.list(family: family), operation: "list addresses in \(namespace)",
            command: netns("ip\(flag) addr show")
        )
        .compactMap { try? InterfaceAddress(decoding: $0) }
        .filter { index == nil || $0.index == index }
    }

    /// `ip addr add CIDR dev NAME [nodad]`. With `nodad` an IPv6 address is usable at once instead of after
    /// duplicate address detection (about a second).
    public func addAddress(_ cidr: CIDR, to link: Link, noDAD: Bool = false) throws(NetlinkError) {
        let flags = noDAD && cidr.family == .v6 ? AddressFlags.noDAD : 0
        try socket.perform(
            AddressRequest.add(cidr, index: link.index, flags: flags),
            operation: "add address \(cidr) to \(link.name) in \(namespace)",
            command: netns("ip addr add \(cidr) dev \(link.name)\(flags != 0 ? " nodad" : "")"))
    }

    /// `ip addr del CIDR dev NAME`.
    public func deleteAddress(_ cidr: CIDR, from link: Link) throws(NetlinkError) {
        try socket.perform(
            AddressRequest.delete(cidr, index: link.index),
            operation: "delete address \(cidr) from \(link.name) in \(namespace)",
            command: netns("ip addr del \(cidr) dev \(link.name)"))
    }

    // MARK: Routes

    /// `ip [-6] route show table all`, filtered to `table` when given.
    public func routes(family: IPFamily, table: UInt32? = RouteTable.main) throws(NetlinkError) -> [Route] {
        try socket.perform(
            RouteRequest.list(family: family), operation: "list \(family) routes in \(namespace)",
            command: netns("ip\(family == .v6 ? " -6" : "") route show table \(table.map(String.init) ?? "all")")
        )
        .compactMap { try? Route(decoding: $0) }
        .filter { table == nil || $0.table == table }
    }

    /// `ip route add ...` (`replace: true`: `ip route replace ...`).
    public func addRoute(_ route: Route, interfaceName: String? = nil, replace: Bool = false) throws(NetlinkError) {
        let verb = replace ? "replace" : "add"
        try socket.perform(
            RouteRequest.add(route, replace: replace),
            operation: "\(verb) route to \(route.destination) in \(namespace)",
            command: netns(route.ipCommand(verb, interfaceName: interfaceName)))
    }

    /// `ip route del ...`.
    public func deleteRoute(_ route: Route, interfaceName: String? = nil) throws(NetlinkError) {
        try socket.perform(
            RouteRequest.delete(route), operation: "delete route to \(route.destination) in \(namespace)",
            command: netns(route.ipCommand("del", interfaceName: interfaceName)))
    }

    // MARK: Neighbours

    /// `ip [-6] neigh show` (`proxies: true`: `ip -6 neigh show proxy`).
    public func neighbours(family: IPFamily, proxies: Bool = false) throws(NetlinkError) -> [Neighbour] {
        try socket.perform(
            NeighbourRequest.list(family: family, proxies: proxies),
            operation: "list \(family) neighbours in \(namespace)",
            command: netns("ip\(family == .v6 ? " -6" : "") neigh show\(proxies ? " proxy" : "")")
        )
        .compactMap { try? Neighbour(decoding: $0) }
        .filter { $0.isProxy == proxies }
    }

    /// `ip neigh replace ADDR lladdr MAC dev NAME nud permanent`, or for a proxy entry
    /// `ip neigh add proxy ADDR dev NAME`.
    public func replaceNeighbour(_ neighbour: Neighbour, interfaceName: String) throws(NetlinkError) {
        let command =
            neighbour.isProxy
            ? "ip neigh add proxy \(neighbour.address) dev \(interfaceName)"
            : "ip neigh replace \(neighbour.address) lladdr \(neighbour.mac?.description ?? "?") dev \(interfaceName) nud permanent"
        try socket.perform(
            NeighbourRequest.replace(neighbour), operation: "set neighbour \(neighbour.address) on \(interfaceName)",
            command: netns(command))
    }

    /// `ip neigh del [proxy] ADDR dev NAME`.
    public func deleteNeighbour(_ neighbour: Neighbour, interfaceName: String) throws(NetlinkError) {
        try socket.perform(
            NeighbourRequest.delete(neighbour), operation: "delete neighbour \(neighbour.address) on \(interfaceName)",
            command: netns("ip neigh del\(neighbour.isProxy ? " proxy" : "") \(neighbour.address) dev \(interfaceName)")
        )
    }

    // MARK: Forwarding database

    /// `bridge fdb show` (every device's entries; VXLAN devices' remote endpoints among them).
    public func fdbEntries() throws(NetlinkError) -> [FDBEntry] {
        try socket.perform(
            FDBRequest.list(), operation: "list FDB entries in \(namespace)", command: netns("bridge fdb show")
        )
        .compactMap { try? FDBEntry(decoding: $0) }
    }

    /// `bridge fdb replace MAC dev NAME dst IP self permanent`.
    public func replaceFDBEntry(_ entry: FDBEntry, interfaceName: String) throws(NetlinkError) {
        try socket.perform(
            FDBRequest.replace(entry), operation: "set FDB entry \(entry.mac) on \(interfaceName)",
            command: netns(entry.bridgeCommand("replace", interfaceName: interfaceName)))
    }

    /// `bridge fdb del MAC dev NAME dst IP self`.
    public func deleteFDBEntry(_ entry: FDBEntry, interfaceName: String) throws(NetlinkError) {
        try socket.perform(
            FDBRequest.delete(entry), operation: "delete FDB entry \(entry.mac) on \(interfaceName)",
            command: netns(entry.bridgeCommand("del", interfaceName: interfaceName)))
    }

    // MARK: Routing rules

    /// `ip [-6] rule show`.
    public func rules(family: IPFamily) throws(NetlinkError) -> [RoutingRule] {
        try socket.perform(
            RuleRequest.list(family: family), operation: "list \(family) rules in \(namespace)",
            command: netns("ip\(family == .v6 ? " -6" : "") rule show")
        )
        .compactMap { try? RoutingRule(decoding: $0) }
    }

    /// `ip rule add ...`.
    public func addRule(_ rule: RoutingRule) throws(NetlinkError) {
        try socket.perform(
            RuleRequest.add(rule), operation: "add rule to table \(rule.table) in \(namespace)",
            command: netns(rule.ipCommand("add")))
    }

    /// `ip rule del ...`.
    public func deleteRule(_ rule: RoutingRule) throws(NetlinkError) {
        try socket.perform(
            RuleRequest.delete(rule), operation: "delete rule to table \(rule.table) in \(namespace)",
            command: netns(rule.ipCommand("del")))
    }
}
