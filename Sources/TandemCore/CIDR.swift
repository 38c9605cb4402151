/// An address with a prefix length, such as `10.0.0.0/16`, `2001:db8::5/64` or `fd00::/122`.
///
/// Like Calico's `cnet.IPNet`, the address may carry host bits (`10.0.0.5/24` is a host address on a /24);
/// `network` gives the masked form and `isStrictlyMasked` says whether host bits are clear.
public struct CIDR: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The address as written (host bits are kept).
    public var address: IPAddress
    /// The prefix length, 0...32 for IPv4 and 0...128 for IPv6.
    public var prefixLength: Int

    /// Builds a prefix; the length must suit the family.
    public init(address: IPAddress, prefixLength: Int) throws(AddressParseError) {
        guard prefixLength >= 0 && prefixLength <= address.family.bitWidth else {
            throw AddressParseError(
                expected: "CIDR", text: "\(address)/\(prefixLength)",
                reason: "prefix length must be between 0 and \(address.family.bitWidth) for \(address.family)")
        }
        self.address = address
        self.prefixLength = prefixLength
    }

    init(uncheckedAddress address: IPAddress, prefixLength: Int) {
        self.address = address
        self.prefixLength = prefixLength
    }

    /// The single address `address`/32 or `address`/128.
    public init(host address: IPAddress) {
        self.init(uncheckedAddress: address, prefixLength: address.family.bitWidth)
    }

    /// Parses `address/length`. The length is decimal without leading zeros or sign.
    public init(_ text: String) throws(AddressParseError) {
        guard let slash = text.utf8.firstIndex(of: UInt8(ascii: "/")) else {
            throw AddressParseError(expected: "CIDR", text: text, reason: "missing '/prefix-length'")
        }
        let addressText = String(text[..<slash])
        let lengthText = text.utf8[text.utf8.index(after: slash)...]
        let address: IPAddress
        do {
            address = try IPAddress(addressText)
        } catch {
            throw AddressParseError(expected: "CIDR", text: text, reason: error.reason)
        }
        guard !lengthText.isEmpty, lengthText.count <= 3,
            lengthText.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            lengthText.count == 1 || lengthText.first != UInt8(ascii: "0")
        else {
            throw AddressParseError(
                expected: "CIDR", text: text, reason: "prefix length must be a decimal number without leading zeros")
        }
        let length = lengthText.reduce(0) { $0 * 10 + Int($1 - 48) }
        guard length <= address.family.bitWidth else {
            throw AddressParseError(
                expected: "CIDR", text: text,
                reason: "prefix length must be between 0 and \(address.family.bitWidth) for \(address.family)")
        }
        self.init(uncheckedAddress: address, prefixLength: length)
    }

    /// Parses a CIDR, or a bare address as a single-address prefix (/32 or /128).
    public init(cidrOrAddress text: String) throws(AddressParseError) {
        if text.utf8.contains(UInt8(ascii: "/")) {
            try self.init(text)
        } else {
            let address = try IPAddress(text)
            self.init(uncheckedAddress: address, prefixLength: address.family.bitWidth)
        }
    }

    /// The family of the prefix.
    public var family: IPFamily { address.family }

    /// The number of host bits (`width - prefixLength`).
    public var hostBits: Int { family.bitWidth - prefixLength }

    /// The mask of the prefix, as an integer of the family's width.
    var mask: UInt128 {
        let width = family.bitWidth
        if prefixLength == 0 { return 0 }
        let ones: UInt128 = width == 128 ? ~0 : (UInt128(1) << UInt128(width)) - 1
        return ones & ~((UInt128(1) << UInt128(width - prefixLength)) &- 1)
    }

    /// The first address of the prefix (host bits cleared).
    public var networkAddress: IPAddress { IPAddress(family: family, integer: address.integer & mask) }

    /// The last address of the prefix (host bits set).
    public var lastAddress: IPAddress {
        IPAddress(family: family, integer: (address.integer & mask) | hostMask)
    }

    private var hostMask: UInt128 {
        hostBits == 128 ? ~0 : (UInt128(1) << UInt128(hostBits)) &- 1
    }

    /// The prefix with host bits cleared: `10.0.0.5/24` gives `10.0.0.0/24`.
    public var network: CIDR { CIDR(uncheckedAddress: networkAddress, prefixLength: prefixLength) }

    /// Whether no host bits are set (`10.0.0.0/24` yes, `10.0.0.1/24` no).
    public var isStrictlyMasked: Bool { address.integer & hostMask == 0 }

    /// The number of addresses, or nil for an IPv6 /0 (2^128 does not fit in 128 bits).
    public var addressCount: UInt128? { hostBits == 128 ? nil : UInt128(1) << UInt128(hostBits) }

    /// Whether `other` is inside this prefix (same family only).
    public func contains(_ other: IPAddress) -> Bool {
        other.family == family && other.integer & mask == address.integer & mask
    }

    /// Whether every address of `other` is inside this prefix.
    public func contains(_ other: CIDR) -> Bool {
        other.family == family && other.prefixLength >= prefixLength && contains(other.address)
    }

    /// Whether the two prefixes share at least one address. Prefixes of different families never overlap.
    public func overlaps(_ other: CIDR) -> Bool {
        guard other.family == family else { return false }
        return prefixLength <= other.prefixLength ? contains(other.address) : other.contains(address)
    }

    /// The address at `ordinal` from the network address (ordinal 0 is the network address itself), or nil
    /// when the ordinal is beyond the prefix.
    public func address(atOrdinal ordinal: UInt128) -> IPAddress? {
        guard hostBits == 128 || ordinal < (UInt128(1) << UInt128(hostBits)) else { return nil }
        return IPAddress(family: family, integer: (address.integer & mask) + ordinal)
    }

    /// The position of `other` from the network address, or nil when it is outside the prefix.
    public func ordinal(of other: IPAddress) -> UInt128? {
        guard contains(other) else { return nil }
        return other.integer - (address.integer & mask)
    }

    /// The prefix split into consecutive sub-prefixes of `length`, produced lazily: a /48 split into /122
    /// blocks is a sequence of 2^74 elements that is never materialised.
    public func subdivided(into length: Int) throws(AddressParseError) -> CIDRSubdivision {
        guard length >= prefixLength && length <= family.bitWidth && length - prefixLength < 128 else {
            throw AddressParseError(
                expected: "block size", text: "/\(length)",
                reason: "must be between \(prefixLength) and \(family.bitWidth) to split \(network)")
        }
        return CIDRSubdivision(parent: network, length: length)
    }

    /// IPv4 before IPv6, then by network address, then shorter prefixes first.
    public static func < (lhs: CIDR, rhs: CIDR) -> Bool {
        if lhs.address != rhs.address { return lhs.address < rhs.address }
        return lhs.prefixLength < rhs.prefixLength
    }

    /// `address/length`, with the address in canonical form (host bits kept as written).
    public var description: String { "\(address)/\(prefixLength)" }
}

/// The sub-prefixes of one length inside a parent prefix, in address order, computed on demand.
public struct CIDRSubdivision: Sequence, Sendable {
    /// The prefix being split (strictly masked).
    public let parent: CIDR
    /// The prefix length of each piece.
    public let length: Int

    /// How many pieces there are: 2^(length - parent length).
    public var count: UInt128 { UInt128(1) << UInt128(length - parent.prefixLength) }

    /// The piece at `index` (0-based); `index` must be below `count`.
    public subscript(index: UInt128) -> CIDR {
        precondition(index < count, "subdivision index out of range")
        let step = parent.family.bitWidth - length
        let base = parent.address.integer + (step == 128 ? 0 : index << UInt128(step))
        return CIDR(uncheckedAddress: IPAddress(family: parent.family, integer: base), prefixLength: length)
    }

    /// The index of the piece that holds `address`, or nil when it is outside the parent.
    public func index(containing address: IPAddress) -> UInt128? {
        guard let ordinal = parent.ordinal(of: address) else { return nil }
        let step = parent.family.bitWidth - length
        return step == 128 ? 0 : ordinal >> UInt128(step)
    }

    public func makeIterator() -> Iterator { Iterator(subdivision: self, position: 0) }

    /// Walks the pieces in order.
    public struct Iterator: IteratorProtocol, Sendable {
        let subdivision: CIDRSubdivision
        var position: UInt128
        var done = false

        public mutating func next() -> CIDR? {
            guard !done else { return nil }
            let piece = subdivision[position]
            if position == subdivision.count - 1 { done = true } else { position += 1 }
            return piece
        }
    }
}
