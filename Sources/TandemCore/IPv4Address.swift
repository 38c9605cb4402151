/// An IPv4 address, stored as a host-order 32-bit integer.
public struct IPv4Address: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The address as an integer: `10.0.0.1` is `0x0A00_0001`.
    public var value: UInt32

    public init(_ value: UInt32) { self.value = value }

    /// Builds an address from its four octets, most significant first.
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }

    /// Parses dotted-quad text. Leading zeros are rejected because `010` reads as octal to some tools
    /// and as decimal to others.
    public init(_ text: String) throws(AddressParseError) {
        var utf8Text = text
        switch utf8Text.withUTF8({ IPv4Address.parse($0) }) {
        case .success(let address): self = address
        case .failure(let reason): throw AddressParseError(expected: "IPv4 address", text: text, reason: reason.text)
        }
    }

    /// The four octets, most significant first.
    public var octets: [UInt8] {
        [
            UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 8),
            UInt8(truncatingIfNeeded: value),
        ]
    }

    public static func < (lhs: IPv4Address, rhs: IPv4Address) -> Bool { lhs.value < rhs.value }

    /// Dotted-quad text, e.g. `192.0.2.1`.
    public var description: String {
        var out = [UInt8]()
        out.reserveCapacity(15)
        appendDottedQuad(to: &out)
        return String(decoding: out, as: UTF8.self)
    }

    func appendDottedQuad(to out: inout [UInt8]) {
        for shift in stride(from: 24, through: 0, by: -8) {
            let octet = UInt8(truncatingIfNeeded: value >> UInt32(shift))
            if shift != 24 { out.append(UInt8(ascii: ".")) }
            if octet >= 100 { out.append(48 + octet / 100) }
            if octet >= 10 { out.append(48 + (octet / 10) % 10) }
            out.append(48 + octet % 10)
        }
    }

    struct Reason: Error { var text: String }

    /// Parses exactly `a.b.c.d` from `bytes`.
    static func parse<C: Collection>(_ bytes: C) -> Result<IPv4Address, Reason>
    where C.Element == UInt8 {
        var value: UInt32 = 0
        var parts = 0
        var octet: UInt32 = 0
        var digits = 0
        var firstDigit: UInt8 = 0
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"):
                if digits == 0 { firstDigit = byte }
                digits += 1
                if digits > 1 && firstDigit == UInt8(ascii: "0") {
                    return .failure(Reason(text: "an octet has a leading zero, which some tools read as octal"))
                }
                octet = octet * 10 + UInt32(byte - 48)
                if octet > 255 { return .failure(Reason(text: "an octet is greater than 255")) }
            case UInt8(ascii: "."):
                if digits == 0 { return .failure(Reason(text: "an octet is empty")) }
                parts += 1
                if parts > 3 { return .failure(Reason(text: "more than four octets")) }
                value = value << 8 | octet
                octet = 0
                digits = 0
            case UInt8(ascii: "%"):
                return .failure(Reason(text: "zone suffixes are not allowed"))
            default:
                return .failure(Reason(text: "unexpected character '\(printable(byte))'"))
            }
        }
        if digits == 0 {
            return .failure(Reason(text: parts == 0 && bytes.isEmpty ? "empty" : "an octet is empty"))
        }
        if parts != 3 { return .failure(Reason(text: "expected four octets")) }
        return .success(IPv4Address(value << 8 | octet))
    }
}

/// A byte rendered for an error message.
func printable(_ byte: UInt8) -> String {
    if byte >= 0x20 && byte < 0x7F { return String(UnicodeScalar(byte)) }
    return "\\x" + String(byte, radix: 16)
}
