/// An IPv6 address, stored as a 128-bit integer.
public struct IPv6Address: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The address as an integer, most significant bit first.
    public var value: UInt128

    public init(_ value: UInt128) { self.value = value }

    /// Builds an address from its eight 16-bit groups, most significant first.
    public init(groups: [UInt16]) {
        precondition(groups.count == 8, "an IPv6 address has eight groups")
        var value: UInt128 = 0
        for group in groups { value = value << 16 | UInt128(group) }
        self.value = value
    }

    /// Parses any RFC 4291 text form (`2001:db8::1`, `::`, `::ffff:192.0.2.1`, `64:ff9b::192.0.2.1`).
    /// Zone suffixes (`fe80::1%eth0`) are rejected: a zone belongs to an interface, not to a stored address.
    public init(_ text: String) throws(AddressParseError) {
        var utf8Text = text
        switch utf8Text.withUTF8({ IPv6Address.parse($0) }) {
        case .success(let address): self = address
        case .failure(let reason): throw AddressParseError(expected: "IPv6 address", text: text, reason: reason.text)
        }
    }

    /// The eight 16-bit groups, most significant first.
    public var groups: [UInt16] {
        (0..<8).map { UInt16(truncatingIfNeeded: value >> UInt128(112 - 16 * $0)) }
    }

    /// The sixteen bytes in network order.
    public var bytes: [UInt8] {
        (0..<16).map { UInt8(truncatingIfNeeded: value >> UInt128(120 - 8 * $0)) }
    }

    /// The embedded IPv4 address when this is an IPv4-mapped address (`::ffff:a.b.c.d`).
    public var mappedIPv4: IPv4Address? {
        value >> 32 == 0xFFFF ? IPv4Address(UInt32(truncatingIfNeeded: value)) : nil
    }

    public static func < (lhs: IPv6Address, rhs: IPv6Address) -> Bool { lhs.value < rhs.value }

    /// Canonical RFC 5952 text: lower case, no leading zeros, the longest run of two or more zero
    /// groups (the first one on a tie) written `::`, and IPv4-mapped addresses in dotted-quad form.
    public var description: String {
        var out = [UInt8]()
        out.reserveCapacity(45)
        // Longest run of zero groups, at least two long.
        var bestStart = -1
        var bestLength = 0
        var runStart = -1
        for index in 0...8 {
            if index < 8 && group(index) == 0 {
                if runStart < 0 { runStart = index }
            } else if runStart >= 0 {
                let length = index - runStart
                if length > bestLength {
                    bestStart = runStart
                    bestLength = length
                }
                runStart = -1
            }
        }
        if bestLength < 2 { bestStart = -1 }
        let mapped = mappedIPv4
        let lastGroup = mapped == nil ? 8 : 6
        var index = 0
        while index < lastGroup {
            if index == bestStart {
                out.append(UInt8(ascii: ":"))
                if index == 0 { out.append(UInt8(ascii: ":")) }
                index += bestLength
                if index >= lastGroup && mapped != nil { break }
                continue
            }
            appendHex(group(index), to: &out)
            if index < 7 { out.append(UInt8(ascii: ":")) }
            index += 1
        }
        if let mapped {
            if out.last != UInt8(ascii: ":") { out.append(UInt8(ascii: ":")) }
            mapped.appendDottedQuad(to: &out)
        }
        return String(decoding: out, as: UTF8.self)
    }

    @inline(__always)
    private func appendHex(_ group: UInt16, to out: inout [UInt8]) {
        var started = false
        var shift: UInt16 = 12
        while true {
            let nibble = UInt8(truncatingIfNeeded: (group >> shift) & 0xF)
            if nibble != 0 || started || shift == 0 {
                out.append(nibble < 10 ? 48 + nibble : 87 + nibble)
                started = true
            }
            if shift == 0 { break }
            shift -= 4
        }
    }

    @inline(__always)
    private func group(_ index: Int) -> UInt16 { UInt16(truncatingIfNeeded: value >> UInt128(112 - 16 * index)) }

    typealias Reason = IPv4Address.Reason

    static func parse(_ bytes: UnsafeBufferPointer<UInt8>) -> Result<IPv6Address, Reason> {
        let count = bytes.count
        if count == 0 { return .failure(Reason(text: "empty")) }
        if let zone = bytes.firstIndex(of: UInt8(ascii: "%")) {
            _ = zone
            return .failure(Reason(text: "zone suffixes (%interface) are not allowed; give the address alone"))
        }
        return withUnsafeTemporaryAllocation(of: UInt16.self, capacity: 8) { storage in
            storage.initialize(repeating: 0)
            return parseGroups(bytes, into: storage)
        }
    }

    private static func parseGroups(
        _ bytes: UnsafeBufferPointer<UInt8>, into groups: UnsafeMutableBufferPointer<UInt16>
    )
        -> Result<IPv6Address, Reason>
    {
        let count = bytes.count
        var groupCount = 0
        var gap = -1  // index in groups where "::" was
        var index = 0
        if bytes[0] == UInt8(ascii: ":") {
            guard count > 1 && bytes[1] == UInt8(ascii: ":") else {
                return .failure(Reason(text: "a single leading ':' is not allowed"))
            }
            gap = 0
            index = 2
            if index == count { return .success(IPv6Address(0)) }
        }
        while index < count {
            if groupCount == 8 { return .failure(Reason(text: "more than eight groups")) }
            // Read one group, or an embedded IPv4 address.
            var value: UInt32 = 0
            var digits = 0
            let groupStart = index
            while index < count, let nibble = hexValue(bytes[index]) {
                value = value << 4 | UInt32(nibble)
                digits += 1
                index += 1
                if digits > 4 { return .failure(Reason(text: "a group has more than four hex digits")) }
            }
            if index < count && bytes[index] == UInt8(ascii: ".") {
                // Embedded IPv4 in the last 32 bits.
                guard groupCount <= 6 else { return .failure(Reason(text: "the embedded IPv4 address does not fit")) }
                switch IPv4Address.parse(UnsafeBufferPointer(rebasing: bytes[groupStart..<count])) {
                case .success(let v4):
                    groups[groupCount] = UInt16(v4.value >> 16)
                    groups[groupCount + 1] = UInt16(truncatingIfNeeded: v4.value)
                    groupCount += 2
                    index = count
                    continue
                case .failure(let reason):
                    return .failure(Reason(text: "embedded IPv4 address: \(reason.text)"))
                }
            }
            if digits == 0 {
                if index < count {
                    return .failure(Reason(text: "unexpected character '\(printable(bytes[index]))'"))
                }
                return .failure(Reason(text: "a trailing ':' is not allowed"))
            }
            groups[groupCount] = UInt16(value)
            groupCount += 1
            if index == count { break }
            guard bytes[index] == UInt8(ascii: ":") else {
                return .failure(Reason(text: "unexpected character '\(printable(bytes[index]))'"))
            }
            index += 1
            if index < count && bytes[index] == UInt8(ascii: ":") {
                if gap >= 0 { return .failure(Reason(text: "'::' may appear only once")) }
                gap = groupCount
                index += 1
                if index == count { break }
            } else if index == count {
                return .failure(Reason(text: "a trailing ':' is not allowed"))
            }
        }
        if gap >= 0 {
            if groupCount == 8 { return .failure(Reason(text: "'::' stands for no groups in a full address")) }
            let moved = groupCount - gap
            for offset in 0..<moved {
                groups[7 - offset] = groups[groupCount - 1 - offset]
                groups[groupCount - 1 - offset] = 0
            }
        } else if groupCount != 8 {
            return .failure(Reason(text: "expected eight groups"))
        }
        var value: UInt128 = 0
        for group in groups { value = value << 16 | UInt128(group) }
        return .success(IPv6Address(value))
    }

    @inline(__always)
    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - 48
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - 87
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - 55
        default: nil
        }
    }
}
