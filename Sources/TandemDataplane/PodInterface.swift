import Glibc
import TandemCore
import TandemLinux
import TandemNetlink
import TandemNetlinkCodec

/// How one pod is wired: a veth pair from the host namespace into the pod's, the pod's addresses, its gateway
/// routes and neighbours, and a host route per address. The layout is Calico's (calico.md §2.3), so operators'
/// habits and Calico's tooling carry over; where Calico leaves a gap, it is closed here and said so.
public struct PodInterfaceSpec: Sendable, Equatable {
    /// The pod's network namespace (`CNI_NETNS`).
    public var namespacePath: String
    /// The pod-side interface name (`CNI_IFNAME`, usually eth0).
    public var containerInterface: String
    /// The host-side interface name (`cali` + 11 hex digits).
    public var hostInterface: String
    /// The pod's addresses, /32 and /128.
    public var addresses: [CIDR]
    /// MTU of both ends; nil keeps the kernel's default.
    public var mtu: UInt32?
    /// `container_settings.allow_ip_forwarding`: whether the pod may forward packets.
    public var allowIPForwarding: Bool
    /// Whether a host interface of the same name is this pod's own, left from an earlier sandbox, and may be
    /// replaced: true when the name comes from the pod's namespace and name (Kubernetes); false when it comes from
    /// the container ID's first characters, which another container may share.
    public var hostInterfaceIsThePods: Bool

    public init(
        namespacePath: String, containerInterface: String, hostInterface: String, addresses: [CIDR],
        mtu: UInt32? = nil, allowIPForwarding: Bool = false, hostInterfaceIsThePods: Bool = true
    ) {
        self.namespacePath = namespacePath
        self.containerInterface = containerInterface
        self.hostInterface = hostInterface
        self.addresses = addresses
        self.mtu = mtu
        self.allowIPForwarding = allowIPForwarding
        self.hostInterfaceIsThePods = hostInterfaceIsThePods
    }

    public var families: Set<IPFamily> { Set(addresses.map(\.family)) }
}

/// What `PodInterface.configure` made.
public struct WiredPod: Sendable, Equatable {
    public var containerMAC: MACAddress
    public var containerIndex: Int32
    public var hostIndex: Int32
}

/// A pod's veth pair between `PodInterface.createLink` and `configure`, with the netlink sockets of both ends.
/// Used by one thread at a time.
public final class PodLink: @unchecked Sendable {
    let host: Netlink
    let pod: Netlink
    let hostInterface: String
    var hostLink: Link?

    init(host: Netlink, pod: Netlink, hostInterface: String) {
        self.host = host
        self.pod = pod
        self.hostInterface = hostInterface
    }

    /// Deletes the pair (`ip link del cali…`); the pod end goes with it.
    public func remove() {
        if let made = try? host.link(named: hostInterface) { try? host.deleteLink(made) }
    }
}

/// A host veth named and numbered: the name the plugin gave it and the kernel's index for it, which a veth made
/// later under the same name does not share.
public struct DetachedHostVeth: Sendable, Hashable, CustomStringConvertible {
    public var name: String
    public var index: Int32

    public init(name: String, index: Int32) {
        self.name = name
        self.index = index
    }

    public var description: String { "\(name) (index \(index))" }
}

/// A pod veth on the host, as ``PodInterface/hostVeths(prefix:host:)`` lists it.
public struct HostVeth: Sendable, Hashable {
    public var veth: DetachedHostVeth
    public var isUp: Bool

    public init(veth: DetachedHostVeth, isUp: Bool) {
        self.veth = veth
        self.isUp = isUp
    }
}

/// Why wiring a pod failed: the step and the underlying error, in a sentence an operator can act on.
public struct PodWiringError: Error, CustomStringConvertible {
    public enum Kind: Sendable { case namespace, exists, kernel }
    public var kind: Kind
    public var description: String
}

/// Wiring, unwiring and checking a pod's interface.
public enum PodInterface {
    /// The gateways pods route through. Nothing owns 169.254.1.1; the host veth answers for it (proxy ARP) and
    /// the pod also gets a permanent neighbour entry for it. The IPv6 gateway is the host veth's own link-local
    /// address, derived from its MAC ee:ee:ee:ee:ee:ee.
    public static let ipv4Gateway = IPAddress.v4(IPv4Address(169, 254, 1, 1))
    public static let ipv6Gateway = IPAddress.v6(MACAddress.calicoHostVeth.eui64LinkLocal)

    /// The pod's veth pair, made and brought up before its addresses are known: the kernel's slowest step of a
    /// pod's ADD, so the plugin runs it while IPAM assigns the addresses. `spec.addresses` is not used.
    /// `ip link add cali… address ee:ee:ee:ee:ee:ee type veth peer name eth0 netns NS` and `ip link set cali… up`,
    /// with DAD and router advertisements off on the host end first. On failure nothing is left.
    public static func createLink(_ spec: PodInterfaceSpec, containerMAC: MACAddress? = nil) throws -> PodLink {
        let namespaceFD: Int32
        do {
            namespaceFD = try NetworkNamespace.open(spec.namespacePath)
        } catch {
            throw PodWiringError(kind: .namespace, description: "cannot use the pod's network namespace: \(error)")
        }
        defer { close(namespaceFD) }
        let host = try Netlink()
        let pod = try Netlink(namespace: spec.namespacePath)
        if try pod.link(named: spec.containerInterface) != nil {
            throw PodWiringError(
                kind: .exists,
                description:
                    "interface \(spec.containerInterface) already exists in \(spec.namespacePath); "
                    + "a second ADD for the same container and interface is refused (DEL it first)")
        }
        if let existing = try host.link(named: spec.hostInterface) {
            // A Kubernetes pod's name is its own: a host veth of it is left over from an earlier sandbox of the
            // same pod, and the new pair needs the name. A name from a container ID's first characters may be
            // another container's: never touched.
            guard spec.hostInterfaceIsThePods else {
                throw PodWiringError(
                    kind: .exists,
                    description:
                        "host interface \(spec.hostInterface) already exists and may belong to another container "
                        + "(its name is the first 11 characters of the container ID, which another ID can share); "
                        + "it was left alone. Give the pod K8S_POD_NAMESPACE and K8S_POD_NAME, or a container ID "
                        + "that differs in its first 11 characters")
            }
            try host.deleteLink(existing)
        }
        try host.createVeth(
            name: spec.hostInterface, peerName: spec.containerInterface, mtu: spec.mtu, mac: .calicoHostVeth,
            peerMAC: containerMAC, peerNamespaceFD: namespaceFD, peerNamespaceName: spec.namespacePath)
        let link = PodLink(host: host, pod: pod, hostInterface: spec.hostInterface)
        do {
            guard let hostLink = try host.link(named: spec.hostInterface) else {
                throw PodWiringError(
                    kind: .kernel, description: "the host veth \(spec.hostInterface) vanished after creation")
            }
            // DAD off before the link comes up, so its link-local address is usable at once; for an IPv4-only pod
            // too (a kernel without IPv6 has no such file, hence try?).
            try? Sysctl.write(Sysctl.interfaceKey(ipv6: true, spec.hostInterface, "accept_dad"), "0")
            try? Sysctl.write(Sysctl.interfaceKey(ipv6: true, spec.hostInterface, "accept_ra"), "0")
            try host.setLink(hostLink, LinkChange(up: true))
            link.hostLink = hostLink
        } catch {
            link.remove()
            throw error
        }
        return link
    }

    /// Gives a pod made by `createLink` its addresses, routes, neighbours and sysctls, and the host its routes to
    /// them. Leaves removing the link on failure to the caller (`PodLink.remove`: deleting the host veth removes
    /// its peer, and with them their addresses, routes and neighbours).
    public static func configure(_ spec: PodInterfaceSpec, link: PodLink) throws -> WiredPod {
        let host = link.host
        let pod = link.pod
        guard let hostLink = link.hostLink else {
            throw PodWiringError(kind: .kernel, description: "the host veth \(spec.hostInterface) was not made")
        }
        let families = spec.families
        let name = spec.hostInterface
        // Host side (this thread is in the host namespace: the plugin never enters another one on it).
        if families.contains(.v4) {
            try Sysctl.write(Sysctl.interfaceKey(ipv6: false, name, "route_localnet"), "1")
            try? Sysctl.write(Sysctl.interfaceKey(ipv6: false, name, "proxy_delay", neighbour: true), "0")
            try Sysctl.write(Sysctl.interfaceKey(ipv6: false, name, "proxy_arp"), "1")
            try Sysctl.write(Sysctl.interfaceKey(ipv6: false, name, "forwarding"), "1")
        }
        if families.contains(.v6) {
            try Sysctl.write(Sysctl.interfaceKey(ipv6: true, name, "disable_ipv6"), "0")
            try Sysctl.write(Sysctl.interfaceKey(ipv6: true, name, "proxy_ndp"), "1")
            try Sysctl.write(Sysctl.interfaceKey(ipv6: true, name, "forwarding"), "1")
        }
        if families.contains(.v6) {
            // The pod's IPv6 gateway is this address. The kernel derives it from the MAC only when the host uses
            // EUI-64 link-locals and only once the peer is up; adding it explicitly makes it exist now and
            // whatever addr_gen_mode the host has (Calico instead reads back what the kernel made and toggles the
            // link when it differs).
            do {
                try host.addAddress(
                    CIDR(uncheckedGateway: ipv6Gateway, prefixLength: 64), to: hostLink, noDAD: true)
            } catch {
                guard error.isExists else { throw error }
            }
        }

        // Pod side: sysctls need a thread inside the namespace; netlink goes through the socket opened there.
        let ifName = spec.containerInterface
        try NetworkNamespace.run(in: spec.namespacePath) {
            try? Sysctl.write(Sysctl.interfaceKey(ipv6: true, ifName, "accept_dad"), "0")
            if families.contains(.v6) {
                for scope in ["all", "default", "lo"] {
                    try Sysctl.write(Sysctl.interfaceKey(ipv6: true, scope, "disable_ipv6"), "0")
                }
                try Sysctl.write(Sysctl.interfaceKey(ipv6: true, ifName, "disable_ipv6"), "0")
                try Sysctl.write(
                    Sysctl.interfaceKey(ipv6: true, "all", "forwarding"), spec.allowIPForwarding ? "1" : "0")
            }
            if families.contains(.v4) {
                try Sysctl.write("net.ipv4.ip_forward", spec.allowIPForwarding ? "1" : "0")
            }
        }
        guard let podLink = try pod.link(named: ifName), let podMAC = podLink.mac else {
            throw PodWiringError(kind: .kernel, description: "the pod interface \(ifName) vanished after creation")
        }
        try pod.setLink(podLink, LinkChange(up: true))
        for address in spec.addresses {
            try pod.addAddress(address, to: podLink, noDAD: true)
        }
        if families.contains(.v4) {
            try pod.addRoute(
                Route(
                    destination: CIDR(uncheckedGateway: ipv4Gateway, prefixLength: 32), outputInterface: podLink.index,
                    scope: RouteScope.link),
                interfaceName: ifName, replace: true)
            try pod.addRoute(
                Route(destination: .defaultRoute(.v4), gateway: ipv4Gateway, outputInterface: podLink.index),
                interfaceName: ifName, replace: true)
        }
        if families.contains(.v6) {
            try pod.addRoute(
                Route(destination: .defaultRoute(.v6), gateway: ipv6Gateway, outputInterface: podLink.index),
                interfaceName: ifName, replace: true)
        }
        // The gateways' neighbour entries, permanent: the pod never waits on ARP or neighbour discovery for its
        // first packet, and loses neither to a host whose proxy ARP has no route to answer with.
        for gateway in [ipv4Gateway, ipv6Gateway] where families.contains(gateway.family) {
            try pod.replaceNeighbour(
                Neighbour(index: podLink.index, address: gateway, mac: .calicoHostVeth), interfaceName: ifName)
        }

        // Host routes: one per pod address, to the veth.
        for address in spec.addresses {
            let route = Route(
                destination: address, outputInterface: hostLink.index,
                scope: address.family == .v4 ? RouteScope.link : RouteScope.universe)
            do {
                try host.addRoute(route, interfaceName: name)
            } catch {
                guard error.isExists else { throw error }
                let existing = try host.routes(family: address.family).first {
                    $0.destination == address && $0.type == RouteType.unicast
                }
                if let existing, existing.outputInterface != hostLink.index {
                    throw PodWiringError(
                        kind: .exists,
                        description:
                            "a route to \(address) already exists on another interface (index "
                            + "\(existing.outputInterface.map(String.init) ?? "none")), not \(name): "
                            + "another pod or the operator holds this address")
                }
                try host.addRoute(route, interfaceName: name, replace: true)
            }
        }
        return WiredPod(containerMAC: podMAC, containerIndex: podLink.index, hostIndex: hostLink.index)
    }

    /// Whether the pod already has an interface of this name: a repeated ADD, refused before any address is
    /// assigned so that its rollback cannot release the running pod's addresses.
    public static func containerInterfaceExists(namespacePath: String, name: String) throws -> Bool {
        try Netlink(namespace: namespacePath).link(named: name) != nil
    }

    /// Removes the pod's interface (and with it the host veth). A namespace or interface that is already gone
    /// is success: DEL must be repeatable.
    public static func tearDown(namespacePath: String, containerInterface: String) throws {
        guard !namespacePath.isEmpty else { return }
        let pod: Netlink
        do {
            pod = try Netlink(namespace: namespacePath)
        } catch let error as SystemError where error.errno == ENOENT || error.errno == EINVAL {
            return
        }
        guard let link = try pod.link(named: containerInterface) else { return }
        do {
            try pod.deleteLink(link)
        } catch {
            guard error.isNotFound else { throw error }
        }
    }

    /// DEL's fast half, for the node agent: takes the pod's host veth out of service and says which it is, so that
    /// it can be deleted after DEL has answered (deleting a veth waits for the kernel's RCU grace periods, about
    /// 20 ms, 75 % of a DEL; setting it down costs well under a millisecond). `ip -n NS link show IFNAME` for its
    /// peer's index, then `ip link set cali… down`: the kernel flushes the routes through it in both families (the
    /// /32 and /128 to the pod); the pod's end is set down and renamed, so the pod can no longer send or receive
    /// with addresses DEL releases and its interface name is free. The host veth is found as the peer of the pod's interface, never by name alone: a
    /// host veth of the same name may already be a new sandbox's. Nil when the namespace or the interface is gone
    /// (a repeated DEL; the kernel removes a pair with its namespace).
    public static func detach(
        namespacePath: String, containerInterface: String, hostInterface: String
    ) throws -> DetachedHostVeth? {
        guard !namespacePath.isEmpty else { return nil }
        let pod: Netlink
        do {
            pod = try Netlink(namespace: namespacePath)
        } catch let error as SystemError where error.errno == ENOENT || error.errno == EINVAL {
            return nil
        }
        guard let podLink = try pod.link(named: containerInterface), let peerIndex = podLink.peerIndex else {
            return nil
        }
        let host = try Netlink()
        // The expected name first (one lookup); any other name through the list (a pair made by another version).
        var hostLink = try host.link(named: hostInterface)
        if hostLink?.index != peerIndex { hostLink = try host.links().first { $0.index == peerIndex } }
        guard let hostLink, hostLink.kind == "veth" else {
            // Not a pair with a host end here: remove the pod's interface now, as before.
            do {
                try pod.deleteLink(podLink)
            } catch {
                guard error.isNotFound else { throw error }
            }
            return nil
        }
        do {
            try host.setLink(hostLink, LinkChange(up: false))
        } catch {
            guard error.isNotFound else { throw error }
            return nil
        }
        // The pod's end down and renamed (the kernel renames only a link that is down): the interface name is free
        // at once for the container's next ADD, which must not find the old pair in its way. `ip -n NS link set
        // eth0 down` and `ip -n NS link set eth0 name tdelN`, N the host end's index (unique in the pod).
        do {
            try pod.setLink(podLink, LinkChange(up: false))
            try pod.setLink(podLink, LinkChange(name: Self.detachedPodInterfaceName(hostIndex: hostLink.index)))
        } catch {
            guard error.isNotFound else { throw error }
        }
        return DetachedHostVeth(name: hostLink.name, index: hostLink.index)
    }

    /// The pod end's name once DEL detached the pair: `tdel` and the host end's index (at most 15 characters).
    public static func detachedPodInterfaceName(hostIndex: Int32) -> String { "tdel\(hostIndex)" }

    /// Deletes a veth that ``detach(namespacePath:containerInterface:hostInterface:)`` took out of service, only if
    /// the link of that name still has that index: a veth of the same name made since (the same pod added again)
    /// is never touched. `ip link del dev cali…` (its peer goes with it). Returns whether it was deleted; a link
    /// already gone (with its namespace) is no error.
    @discardableResult
    public static func removeDetached(_ veth: DetachedHostVeth, host: Netlink? = nil) throws -> Bool {
        let host = try host ?? Netlink()
        guard let link = try host.link(named: veth.name), link.index == veth.index else { return false }
        do {
            try host.deleteLink(link)
        } catch {
            guard error.isNotFound else { throw error }
            return false
        }
        return true
    }

    /// The host's pod veths: links of kind veth whose name starts with `prefix` (Calico's `cali`), with their
    /// index and state. `ip -d link show type veth`.
    public static func hostVeths(prefix: String = "cali", host: Netlink? = nil) throws -> [HostVeth] {
        try (host ?? Netlink()).links().filter { $0.kind == "veth" && $0.name.hasPrefix(prefix) }.map {
            HostVeth(veth: DetachedHostVeth(name: $0.name, index: $0.index), isUp: $0.isUp)
        }
    }

    /// Compares the kernel with what ADD made: every difference, as sentences (empty when all is well).
    public static func check(_ spec: PodInterfaceSpec, containerMAC: MACAddress?) throws -> [String] {
        var problems: [String] = []
        let pod: Netlink
        do {
            pod = try Netlink(namespace: spec.namespacePath)
        } catch {
            return ["the pod's network namespace \(spec.namespacePath) cannot be entered: \(error)"]
        }
        let ifName = spec.containerInterface
        guard let podLink = try pod.link(named: ifName) else {
            return ["interface \(ifName) does not exist in \(spec.namespacePath)"]
        }
        if !podLink.isUp { problems.append("interface \(ifName) in the pod is down") }
        if let containerMAC, podLink.mac != containerMAC {
            problems.append(
                "interface \(ifName) has MAC \(podLink.mac?.description ?? "none"), the result says \(containerMAC)")
        }
        let held = Set(try pod.addresses(index: podLink.index).map(\.cidr))
        for address in spec.addresses where !held.contains(address) {
            problems.append("address \(address) is missing from \(ifName) in the pod")
        }
        for family in spec.families.sorted(by: { $0.rawValue < $1.rawValue }) {
            let gateway = family == .v4 ? ipv4Gateway : ipv6Gateway
            let hasDefault = try pod.routes(family: family).contains {
                $0.destination.prefixLength == 0 && $0.gateway == gateway && $0.outputInterface == podLink.index
            }
            if !hasDefault {
                problems.append(
                    "the pod has no \(family) default route via \(gateway) dev \(ifName)")
            }
        }
        let host = try Netlink()
        guard let hostLink = try host.link(named: spec.hostInterface) else {
            problems.append("the host interface \(spec.hostInterface) does not exist")
            return problems
        }
        if !hostLink.isUp { problems.append("the host interface \(spec.hostInterface) is down") }
        for family in spec.families {
            let routes = try host.routes(family: family)
            for address in spec.addresses where address.family == family {
                if !routes.contains(where: { $0.destination == address && $0.outputInterface == hostLink.index }) {
                    problems.append("the host has no route to \(address) dev \(spec.hostInterface)")
                }
            }
        }
        return problems
    }
}

extension CIDR {
    /// `0.0.0.0/0` or `::/0`.
    public static func defaultRoute(_ family: IPFamily) -> CIDR {
        CIDR(uncheckedGateway: IPAddress(family: family, integer: 0), prefixLength: 0)
    }

    /// A CIDR from an address and a prefix length known to be valid for its family.
    init(uncheckedGateway address: IPAddress, prefixLength: Int) {
        self = try! CIDR(address: address, prefixLength: prefixLength)
    }
}
