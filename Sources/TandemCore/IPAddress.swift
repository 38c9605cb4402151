/// An IP address family.
public enum IPFamily: Int, Sendable, Hashable, CaseIterable, Codable, CustomStringConvertible {
    case v4 = 4
    case v6 = 6

    /// The number of bits in an address of this family.
    public var bitWidth: Int { self == .v4 ? 32 : 128 }

    /// `IPv4` or `IPv6`, as an operator reads it.
    public var description: String { self == .v4 ? "IPv4" : "IPv6" }
}

/// An IPv4 or IPv6 address.
public enum IPAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    case v4(IPv4Address)
    case v6(IPv6Address)

    /// Parses either family. Text with a `:` is IPv6, anything else IPv4; so `::ffff:192.0.2.1` stays an
    /// IPv6 (IPv4-mapped) address, as the kernel and Go's `net.ParseIP` keep it in 16 bytes.
    public init(_ text: String) throws(AddressParseError) {
        if text.utf8.contains(UInt8(ascii: ":")) {
            self = .v6(try IPv6Address(text))
        } else {
            do {
                self = .v4(try IPv4Address(text))
            } catch {
                throw AddressParseError(expected: "IP address", text: text, reason: error.reason)
            }
        }
    }

    /// The family of the address.
    public var family: IPFamily {
        switch self {
        case .v4: .v4
        case .v6: .v6
        }
    }

    /// The address as an unsigned integer of the family's width, widened to 128 bits.
    public var integer: UInt128 {
        switch self {
        case .v4(let address): UInt128(address.value)
        case .v6(let address): address.value
        }
    }

    /// Builds an address of `family` from an integer; bits above the family's width are dropped.
    public init(family: IPFamily, integer: UInt128) {
        switch family {
        case .v4: self = .v4(IPv4Address(UInt32(truncatingIfNeeded: integer)))
        case .v6: self = .v6(IPv6Address(integer))
        }
    }

    /// IPv4 sorts before IPv6; within a family, numeric order.
    public static func < (lhs: IPAddress, rhs: IPAddress) -> Bool {
        switch (lhs, rhs) {
        case (.v4(let a), .v4(let b)): a < b
        case (.v6(let a), .v6(let b)): a < b
        case (.v4, .v6): true
        case (.v6, .v4): false
        }
    }

    /// Canonical text: dotted quad, or RFC 5952 for IPv6.
    public var description: String {
        switch self {
        case .v4(let address): address.description
        case .v6(let address): address.description
        }
    }
}
