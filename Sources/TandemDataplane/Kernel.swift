import TandemCore
import TandemNetlink
import TandemNetlinkCodec

/// The kernel operations the dataplane managers use, as one seam: ``Netlink`` implements it against the real
/// kernel (one netlink socket in one network namespace) and ``FakeKernel`` in memory, for tests that need no root
/// and for errors the kernel will not produce on demand. Errors are ``NetlinkError``s on both sides, with the errno
/// the kernel gives (EEXIST, ENOENT, ESRCH, ENODEV, ENETDOWN) and the equivalent `ip` command.
///
/// Generic netlink (WireGuard's device configuration) joins it with the WireGuard manager, with its fake.
public protocol KernelNetworking: AnyObject, Sendable {
    /// `ip link show`.
    func links() throws(NetlinkError) -> [Link]
    /// `ip link show NAME`; nil when there is none.
    func link(named name: String) throws(NetlinkError) -> Link?
    /// `ip link set dev NAME [up|down] [address MAC] [mtu M] [name N]`.
    func setLink(_ link: Link, _ change: LinkChange) throws(NetlinkError)
    /// `ip link del dev NAME`.
    func deleteLink(_ link: Link) throws(NetlinkError)
    /// `ip link add NAME type KIND` (to probe whether the kernel has a link type).
    func createLink(name: String, kind: String) throws(NetlinkError)
    /// `ip link add NAME address MAC mtu M type vxlan id VNI local IP dev PARENT dstport PORT nolearning`.
    func createVXLAN(
        name: String, _ configuration: VXLANConfiguration, mac: MACAddress?, mtu: UInt32?)
        throws(NetlinkError)

    /// `ip addr show` (one family and one interface when given).
    func addresses(family: IPFamily?, index: Int32?) throws(NetlinkError) -> [InterfaceAddress]
    /// `ip addr add CIDR dev NAME [nodad]`.
    func addAddress(_ cidr: CIDR, to link: Link, noDAD: Bool) throws(NetlinkError)
    /// `ip addr del CIDR dev NAME`.
    func deleteAddress(_ cidr: CIDR, from link: Link) throws(NetlinkError)

    /// `ip [-6] route show table TABLE` (every table when nil).
    func routes(family: IPFamily, table: UInt32?) throws(NetlinkError) -> [Route]
    /// `ip route add|replace ...`.
    func addRoute(_ route: Route, interfaceName: String?, replace: Bool) throws(NetlinkError)
    /// `ip route del ...`.
    func deleteRoute(_ route: Route, interfaceName: String?) throws(NetlinkError)

    /// `ip [-6] neigh show [proxy]`.
    func neighbours(family: IPFamily, proxies: Bool) throws(NetlinkError) -> [Neighbour]
    /// `ip neigh replace ADDR lladdr MAC dev NAME nud permanent` (`ip neigh add proxy ...` for a proxy entry).
    func replaceNeighbour(_ neighbour: Neighbour, interfaceName: String) throws(NetlinkError)
    /// `ip neigh del [proxy] ADDR dev NAME`.
    func deleteNeighbour(_ neighbour: Neighbour, interfaceName: String) throws(NetlinkError)

    /// `bridge fdb show`.
    func fdbEntries() throws(NetlinkError) -> [FDBEntry]
    /// `bridge fdb replace MAC dev NAME dst IP self permanent`.
    func replaceFDBEntry(_ entry: FDBEntry, interfaceName: String) throws(NetlinkError)
    /// `bridge fdb del MAC dev NAME dst IP self`.
    func deleteFDBEntry(_ entry: FDBEntry, interfaceName: String) throws(NetlinkError)

    /// `ip [-6] rule show`.
    func rules(family: IPFamily) throws(NetlinkError) -> [RoutingRule]
    /// `ip rule add ...` (EEXIST for an identical rule).
    func addRule(_ rule: RoutingRule) throws(NetlinkError)
    /// `ip rule del ...`.
    func deleteRule(_ rule: RoutingRule) throws(NetlinkError)
}

extension Netlink: KernelNetworking {}
