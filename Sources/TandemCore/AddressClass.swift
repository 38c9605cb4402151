/// What kind of address an address is, for deciding whether it may serve as a node address, a pool or a
/// route. Each address has exactly one class; the most specific one wins.
public enum AddressClass: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// `0.0.0.0` or `::`.
    case unspecified
    /// `127.0.0.0/8` or `::1`.
    case loopback
    /// `169.254.0.0/16` or `fe80::/10`: valid only on one link, never a node or pod address.
    case linkLocal = "link-local"
    /// `224.0.0.0/4`, `255.255.255.255` or `ff00::/8`.
    case multicast
    /// IPv6 unique local `fc00::/7` (RFC 4193), the IPv6 counterpart of private IPv4 space.
    case uniqueLocal = "unique-local"
    /// IPv6 site-local `fec0::/10`, deprecated by RFC 3879.
    case siteLocal = "site-local (deprecated)"
    /// Documentation ranges: `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`.
    case documentation
    /// IPv4-mapped IPv6 `::ffff:0:0/96`: an IPv4 address dressed as IPv6.
    case ipv4Mapped = "IPv4-mapped"
    /// Anything else: routable unicast (for IPv4 this includes the RFC 1918 private ranges).
    case globalUnicast = "global unicast"

    public var description: String { rawValue }
}

private let v4Classes: [(CIDR, AddressClass)] = [
    ("0.0.0.0/32", .unspecified), ("127.0.0.0/8", .loopback), ("169.254.0.0/16", .linkLocal),
    ("224.0.0.0/4", .multicast), ("255.255.255.255/32", .multicast), ("192.0.2.0/24", .documentation),
    ("198.51.100.0/24", .documentation), ("203.0.113.0/24", .documentation),
]

private let v6Classes: [(CIDR, AddressClass)] = [
    ("::/128", .unspecified), ("::1/128", .loopback), ("fe80::/10", .linkLocal), ("ff00::/8", .multicast),
    ("fec0::/10", .siteLocal), ("fc00::/7", .uniqueLocal), ("2001:db8::/32", .documentation),
    ("3fff::/20", .documentation), ("::ffff:0:0/96", .ipv4Mapped),
]

private let v4Private: [CIDR] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]

extension IPAddress {
    /// The class of this address.
    public var addressClass: AddressClass {
        let table = family == .v4 ? v4Classes : v6Classes
        for (prefix, addressClass) in table where prefix.contains(self) { return addressClass }
        return .globalUnicast
    }

    /// Whether this is `0.0.0.0` or `::`.
    public var isUnspecified: Bool { addressClass == .unspecified }
    /// Whether this is a loopback address.
    public var isLoopback: Bool { addressClass == .loopback }
    /// Whether this is link-local (`169.254.0.0/16`, `fe80::/10`).
    public var isLinkLocal: Bool { addressClass == .linkLocal }
    /// Whether this is multicast (or the IPv4 broadcast address).
    public var isMulticast: Bool { addressClass == .multicast }
    /// Whether this is an IPv6 unique local address (`fc00::/7`).
    public var isUniqueLocal: Bool { addressClass == .uniqueLocal }
    /// Whether this is a deprecated IPv6 site-local address (`fec0::/10`).
    public var isSiteLocal: Bool { addressClass == .siteLocal }
    /// Whether this is in a documentation range.
    public var isDocumentation: Bool { addressClass == .documentation }
    /// Whether this is an IPv4-mapped IPv6 address.
    public var isIPv4Mapped: Bool { addressClass == .ipv4Mapped }
    /// Whether this is routable unicast, the class a node address should have.
    public var isGlobalUnicast: Bool { addressClass == .globalUnicast }
    /// Whether this is an RFC 1918 private IPv4 address.
    public var isPrivateIPv4: Bool { family == .v4 && v4Private.contains { $0.contains(self) } }
}

extension CIDR: ExpressibleByStringLiteral {
    /// A literal prefix; a malformed literal is a programming error and traps.
    public init(stringLiteral value: String) {
        do { try self.init(value) } catch { preconditionFailure("\(error)") }
    }
}
