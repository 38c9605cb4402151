import CNetlink
import Glibc
import TandemAutodetection
import TandemCore
import TandemLinux
import TandemNetlink
import TandemNetlinkCodec

/// The host's interfaces and addresses as autodetection reads them, from the kernel (`ip -d addr show`).
public func readHostInterfaces() throws -> [HostInterface] {
    let netlink = try Netlink()
    let addresses = try netlink.addresses()
    return try netlink.links().sorted { $0.index < $1.index }.map { link in
        HostInterface(
            name: link.name, isUp: link.isUp,
            addresses: addresses.filter { $0.index == link.index }.map { address in
                HostAddress(
                    address.cidr, tentative: address.isTentative, deprecated: address.isDeprecated,
                    dadFailed: address.isDADFailed,
                    temporary: address.cidr.family == .v6 && address.flags & AddressFlags.temporary != 0)
            })
    }
}

/// The local address the kernel picks to reach `destination` (an address or a host name) over `family`, found the
/// way Calico's `can-reach` does: a UDP socket connected to port 80 sends nothing, then `getsockname`. Nil when
/// the kernel has no route. (`ip route get DESTINATION` shows the same `src`.)
public func kernelSourceAddress(toward destination: String, family: IPFamily) throws(AutodetectionError) -> IPAddress? {
    var hints = addrinfo()
    hints.ai_family = family == .v4 ? AF_INET : AF_INET6
    hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
    var found: UnsafeMutablePointer<addrinfo>?
    let status = getaddrinfo(destination, "80", &hints, &found)
    guard status == 0, let first = found else {
        throw AutodetectionError(
            "can-reach=\(destination): cannot resolve it to an \(family) address (\(String(cString: gai_strerror(status))))"
        )
    }
    defer { freeaddrinfo(found) }
    let fd = socket(first.pointee.ai_family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw AutodetectionError("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    guard connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 else {
        if errno == ENETUNREACH || errno == EHOSTUNREACH { return nil }
        throw AutodetectionError("can-reach=\(destination): connect: \(String(cString: strerror(errno)))")
    }
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let named = withUnsafeMutablePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { throw AutodetectionError("getsockname: \(String(cString: strerror(errno)))") }
    return withUnsafeBytes(of: &storage) { raw -> IPAddress? in
        if family == .v4 {
            let address = raw.load(fromByteOffset: 4, as: UInt32.self)  // sin_addr, network order
            return try? IPAddress(networkBytes: withUnsafeBytes(of: address) { Array($0) })
        }
        return try? IPAddress(networkBytes: Array(raw[8..<24]))  // sin6_addr
    }
}

/// What the kernel says about each family's forwarding and default route (`sysctl net.ipv4.ip_forward
/// net.ipv6.conf.all.forwarding`, `ip route show default`, `ip -6 route show default`).
public func readFamilyStates(_ families: [IPFamily]) throws -> [FamilyState] {
    let netlink = try Netlink()
    let links = try netlink.links()
    return try families.map { family in
        let key = family == .v4 ? "net.ipv4.ip_forward" : "net.ipv6.conf.all.forwarding"
        let forwarding = (try? Sysctl.read(key)).map { $0 != "0" }
        let defaultRoute = try netlink.routes(family: family).first {
            $0.destination.prefixLength == 0 && $0.type == RouteType.unicast
        }
        let uplink = defaultRoute?.outputInterface.flatMap { index in links.first { $0.index == index }?.name }
        var acceptRA: Int?
        if family == .v6, let uplink {
            acceptRA = (try? Sysctl.read(Sysctl.interfaceKey(ipv6: true, uplink, "accept_ra"))).flatMap { Int($0) }
        }
        return FamilyState(
            family: family, forwarding: forwarding, defaultRouteInterface: uplink, uplinkAcceptRA: acceptRA,
            defaultRouteFromRA: defaultRoute?.routeProtocol == RouteProtocol.routerAdvertisement)
    }
}
