/// A 48-bit Ethernet MAC address.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    /// The six bytes, in transmission order.
    public var bytes: [UInt8]

    /// The MAC Calico gives every host-side veth; its EUI-64 link-local address is the pods' IPv6 gateway.
    public static let calicoHostVeth = MACAddress(uncheckedBytes: [0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE])

    /// Builds an address from six bytes.
    public init(bytes: [UInt8]) throws(AddressParseError) {
        guard bytes.count == 6 else {
            throw AddressParseError(expected: "MAC address", text: "\(bytes)", reason: "must be 6 bytes")
        }
        self.bytes = bytes
    }

    init(uncheckedBytes: [UInt8]) { bytes = uncheckedBytes }

    /// A random unicast, locally administered address (the kind the kernel picks for a veth end without one).
    public static func randomLocallyAdministered<G: RandomNumberGenerator>(using generator: inout G) -> MACAddress {
        var bytes = (0..<6).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes[0] = (bytes[0] & 0xFE) | 0x02
        return MACAddress(uncheckedBytes: bytes)
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (or with `-` separators), either case.
    public init(_ text: String) throws(AddressParseError) {
        let parts = text.split(separator: text.contains("-") ? "-" : ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else {
            throw AddressParseError(expected: "MAC address", text: text, reason: "expected six ':'-separated bytes")
        }
        var bytes = [UInt8]()
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else {
                throw AddressParseError(expected: "MAC address", text: text, reason: "'\(part)' is not two hex digits")
            }
            bytes.append(byte)
        }
        self.bytes = bytes
    }

    /// Whether the group (multicast) bit is set.
    public var isMulticast: Bool { bytes[0] & 0x01 != 0 }
    /// Whether the locally-administered bit is set.
    public var isLocallyAdministered: Bool { bytes[0] & 0x02 != 0 }

    /// The modified EUI-64 interface identifier (RFC 4291 appendix A): flip the universal/local bit and put
    /// `ff:fe` in the middle.
    public var eui64InterfaceID: UInt64 {
        let b = bytes
        let id: [UInt8] = [b[0] ^ 0x02, b[1], b[2], 0xFF, 0xFE, b[3], b[4], b[5]]
        return id.reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// The `fe80::/64` link-local address the kernel derives from this MAC with `addrgenmode eui64`:
    /// `ee:ee:ee:ee:ee:ee` gives `fe80::ecee:eeff:feee:eeee`.
    public var eui64LinkLocal: IPv6Address {
        IPv6Address(UInt128(0xFE80) << 112 | UInt128(eui64InterfaceID))
    }

    /// Lower-case, colon-separated.
    public var description: String {
        let digits = Array("0123456789abcdef")
        return bytes.map { String([digits[Int($0 >> 4)], digits[Int($0 & 0xF)]]) }.joined(separator: ":")
    }
}
