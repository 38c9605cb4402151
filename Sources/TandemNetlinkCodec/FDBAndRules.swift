import TandemCore

/// `RTM_*RULE` message types and `FRA_*` rule attributes (linux/fib_rules.h).
public enum RuleMessageType {
    public static let new: UInt16 = 32
    public static let delete: UInt16 = 33
    public static let get: UInt16 = 34
}

enum RuleAttribute {
    static let destination: UInt16 = 1
    static let source: UInt16 = 2
    static let priority: UInt16 = 6
    static let mark: UInt16 = 10
    static let table: UInt16 = 15
    static let mask: UInt16 = 16
}

/// `AF_BRIDGE` and the neighbour flags of forwarding database entries.
public enum BridgeFamily {
    public static let value: UInt8 = 7
    /// `NTF_SELF`: the entry belongs to the device itself (a VXLAN device's remote VTEPs), not to a bridge.
    public static let selfFlag: UInt8 = 0x02
}

/// A forwarding database entry of a device such as a VXLAN device: frames for `mac` go to the remote `destination`
/// (`bridge fdb replace MAC dev DEV dst IP self permanent`).
public struct FDBEntry: Equatable, Sendable, Hashable {
    public var index: Int32
    public var mac: MACAddress
    /// The remote tunnel endpoint (nil: an entry without a destination).
    public var destination: IPAddress?

    public init(index: Int32, mac: MACAddress, destination: IPAddress?) {
        self.index = index
        self.mac = mac
        self.destination = destination
    }

    public init(decoding message: NetlinkMessage) throws(NetlinkDecodeError) {
        let header = try NeighbourHeader(decoding: message.payload)
        guard header.family == BridgeFamily.value else { throw NetlinkDecodeError("not a bridge FDB entry") }
        let attributes = try NetlinkAttribute.decode(message.payload, from: NeighbourHeader.size)
        guard let link = attributes.first(NeighbourAttribute.linkLayerAddress) else {
            throw NetlinkDecodeError("FDB entry without NDA_LLADDR")
        }
        guard let mac = try? MACAddress(bytes: link.value) else {
            throw NetlinkDecodeError("FDB entry with a link-layer address of \(link.value.count) bytes")
        }
        index = header.index
        self.mac = mac
        if let value = attributes.first(NeighbourAttribute.destination)?.value {
            destination = try IPAddress(networkBytes: value)
        } else {
            destination = nil
        }
    }

    func payload() -> [UInt8] {
        let header = NeighbourHeader(
            family: BridgeFamily.value, index: index, state: NeighbourState.permanent, flags: BridgeFamily.selfFlag)
        var attributes = [NetlinkAttribute(NeighbourAttribute.linkLayerAddress, bytes: mac.bytes)]
        if let destination {
            attributes.append(NetlinkAttribute(NeighbourAttribute.destination, bytes: destination.networkBytes))
        }
        return header.encoded() + NetlinkAttribute.encode(attributes)
    }

    /// `bridge fdb replace MAC dev NAME dst IP self permanent`.
    public func bridgeCommand(_ verb: String, interfaceName: String) -> String {
        "bridge fdb \(verb) \(mac) dev \(interfaceName)" + (destination.map { " dst \($0)" } ?? "") + " self permanent"
    }
}

public enum FDBRequest {
    /// `bridge fdb show`.
    public static func list() -> NetlinkMessage {
        NetlinkMessage(
            type: NetlinkMessageType.getNeighbour, flags: [.request, .dump],
            payload: NeighbourHeader(family: BridgeFamily.value).encoded())
    }

    /// `bridge fdb replace ...`.
    public static func replace(_ entry: FDBEntry) -> NetlinkMessage {
        NetlinkMessage(
            type: NetlinkMessageType.newNeighbour, flags: [.request, .acknowledge, .create, .replace],
            payload: entry.payload())
    }

    /// `bridge fdb del ...`.
    public static func delete(_ entry: FDBEntry) -> NetlinkMessage {
        NetlinkMessage(
            type: NetlinkMessageType.deleteNeighbour, flags: [.request, .acknowledge], payload: entry.payload())
    }
}

/// A policy routing rule (`ip rule`): traffic matching the selectors looks up `table`.
public struct RoutingRule: Equatable, Sendable, Hashable {
    public var family: IPFamily
    public var priority: UInt32?
    public var table: UInt32
    public var mark: UInt32?
    public var mask: UInt32?
    public var source: CIDR?
    public var destination: CIDR?
    /// `not`: the rule matches what its selectors do not.
    public var invert: Bool

    public init(
        family: IPFamily, priority: UInt32? = nil, table: UInt32, mark: UInt32? = nil, mask: UInt32? = nil,
        source: CIDR? = nil, destination: CIDR? = nil, invert: Bool = false
    ) {
        self.family = family
        self.priority = priority
        self.table = table
        self.mark = mark
        self.mask = mask
        self.source = source
        self.destination = destination
        self.invert = invert
    }

    static let invertFlag: UInt32 = 0x2
    static let actionToTable: UInt8 = 1

    public init(decoding message: NetlinkMessage) throws(NetlinkDecodeError) {
        var reader = ByteReader(message.payload)
        let familyByte = try reader.u8()
        guard let family = IPFamily(netlinkFamily: familyByte) else {
            throw NetlinkDecodeError("rule of family \(familyByte)")
        }
        let destinationLength = try reader.u8()
        let sourceLength = try reader.u8()
        try reader.skip(1)
        let tableByte = try reader.u8()
        try reader.skip(3)
        let flags = try reader.u32()
        let attributes = try NetlinkAttribute.decode(message.payload, from: 12)
        self.family = family
        priority = attributes.first(RuleAttribute.priority)?.u32
        table = attributes.first(RuleAttribute.table)?.u32 ?? UInt32(tableByte)
        mark = attributes.first(RuleAttribute.mark)?.u32
        mask = attributes.first(RuleAttribute.mask)?.u32
        func prefix(_ attribute: UInt16, _ length: UInt8) throws(NetlinkDecodeError) -> CIDR? {
            guard let value = attributes.first(attribute)?.value else { return nil }
            let address = try IPAddress(networkBytes: value)
            guard let cidr = try? CIDR(address: address, prefixLength: Int(length)) else {
                throw NetlinkDecodeError("rule prefix \(address)/\(length)")
            }
            return cidr
        }
        source = try prefix(RuleAttribute.source, sourceLength)
        destination = try prefix(RuleAttribute.destination, destinationLength)
        invert = flags & Self.invertFlag != 0
    }

    func payload() -> [UInt8] {
        var writer = ByteWriter()
        writer.append(family.netlinkFamily)
        writer.append(UInt8(destination?.prefixLength ?? 0))
        writer.append(UInt8(source?.prefixLength ?? 0))
        writer.append(UInt8(0))  // tos
        writer.append(UInt8(table < 256 ? table : 252))  // RT_TABLE_COMPAT when the table needs FRA_TABLE
        writer.append(UInt8(0))
        writer.append(UInt8(0))
        writer.append(Self.actionToTable)
        writer.append(invert ? Self.invertFlag : 0)
        var attributes = [NetlinkAttribute(RuleAttribute.table, u32: table)]
        if let priority { attributes.append(NetlinkAttribute(RuleAttribute.priority, u32: priority)) }
        if let mark { attributes.append(NetlinkAttribute(RuleAttribute.mark, u32: mark)) }
        if let mask { attributes.append(NetlinkAttribute(RuleAttribute.mask, u32: mask)) }
        if let source { attributes.append(NetlinkAttribute(RuleAttribute.source, bytes: source.address.networkBytes)) }
        if let destination {
            attributes.append(NetlinkAttribute(RuleAttribute.destination, bytes: destination.address.networkBytes))
        }
        return writer.bytes + NetlinkAttribute.encode(attributes)
    }

    /// `ip [-6] rule add|del [not] [from SRC] [to DST] [fwmark MARK/MASK] lookup TABLE [priority N]`.
    public func ipCommand(_ verb: String) -> String {
        var words = ["ip", family == .v6 ? "-6" : nil, "rule", verb].compactMap { $0 }
        if invert { words.append("not") }
        if let source { words += ["from", source.description] }
        if let destination { words += ["to", destination.description] }
        if let mark {
            words += ["fwmark", "0x\(String(mark, radix: 16))" + (mask.map { "/0x\(String($0, radix: 16))" } ?? "")]
        }
        words += ["lookup", "\(table)"]
        if let priority { words += ["priority", "\(priority)"] }
        return words.joined(separator: " ")
    }
}

public enum RuleRequest {
    /// `ip [-6] rule show`.
    public static func list(family: IPFamily) -> NetlinkMessage {
        var header = [UInt8](repeating: 0, count: 12)
        header[0] = family.netlinkFamily
        return NetlinkMessage(type: RuleMessageType.get, flags: [.request, .dump], payload: header)
    }

    /// `ip rule add ...` (exclusive: an identical rule is EEXIST).
    public static func add(_ rule: RoutingRule) -> NetlinkMessage {
        NetlinkMessage(
            type: RuleMessageType.new, flags: [.request, .acknowledge, .create, .exclusive], payload: rule.payload())
    }

    /// `ip rule del ...`.
    public static func delete(_ rule: RoutingRule) -> NetlinkMessage {
        NetlinkMessage(type: RuleMessageType.delete, flags: [.request, .acknowledge], payload: rule.payload())
    }
}
