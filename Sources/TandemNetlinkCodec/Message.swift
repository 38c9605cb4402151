/// Netlink message types of the route family (linux/netlink.h, linux/rtnetlink.h).
public enum NetlinkMessageType {
    public static let noop: UInt16 = 1
    public static let error: UInt16 = 2
    public static let done: UInt16 = 3
    public static let overrun: UInt16 = 4
    public static let newLink: UInt16 = 16
    public static let deleteLink: UInt16 = 17
    public static let getLink: UInt16 = 18
    public static let setLink: UInt16 = 19
    public static let newAddress: UInt16 = 20
    public static let deleteAddress: UInt16 = 21
    public static let getAddress: UInt16 = 22
    public static let newRoute: UInt16 = 24
    public static let deleteRoute: UInt16 = 25
    public static let getRoute: UInt16 = 26
    public static let newNeighbour: UInt16 = 28
    public static let deleteNeighbour: UInt16 = 29
    public static let getNeighbour: UInt16 = 30
}

/// `nlmsghdr.nlmsg_flags`. The high bits mean different things for GET, NEW and ERROR messages, hence the
/// overlapping values.
public struct NetlinkFlags: OptionSet, Sendable, Hashable {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let request = NetlinkFlags(rawValue: 0x1)
    public static let multipart = NetlinkFlags(rawValue: 0x2)
    public static let acknowledge = NetlinkFlags(rawValue: 0x4)
    public static let echo = NetlinkFlags(rawValue: 0x8)
    /// Set by the kernel on a dump whose contents changed while it was being taken.
    public static let dumpInterrupted = NetlinkFlags(rawValue: 0x10)
    // GET requests.
    public static let root = NetlinkFlags(rawValue: 0x100)
    public static let match = NetlinkFlags(rawValue: 0x200)
    public static let dump: NetlinkFlags = [.root, .match]
    // NEW requests.
    public static let replace = NetlinkFlags(rawValue: 0x100)
    public static let exclusive = NetlinkFlags(rawValue: 0x200)
    public static let create = NetlinkFlags(rawValue: 0x400)
    public static let append = NetlinkFlags(rawValue: 0x800)
    // ERROR messages.
    public static let capped = NetlinkFlags(rawValue: 0x100)
    public static let acknowledgeTLVs = NetlinkFlags(rawValue: 0x200)
}

/// A malformed message from the kernel (or a golden test).
public struct NetlinkDecodeError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// One netlink message: the 16-byte `nlmsghdr` and its payload.
public struct NetlinkMessage: Equatable, Sendable {
    public static let headerSize = 16

    public var type: UInt16
    public var flags: NetlinkFlags
    public var sequence: UInt32
    public var portID: UInt32
    public var payload: [UInt8]

    public init(type: UInt16, flags: NetlinkFlags, sequence: UInt32 = 0, portID: UInt32 = 0, payload: [UInt8] = []) {
        self.type = type
        self.flags = flags
        self.sequence = sequence
        self.portID = portID
        self.payload = payload
    }

    /// The message on the wire: the header with its length, the payload, padding to 4 bytes.
    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        writer.append(UInt32(Self.headerSize + payload.count))
        writer.append(type)
        writer.append(flags.rawValue)
        writer.append(sequence)
        writer.append(portID)
        writer.bytes += payload
        writer.pad()
        return writer.bytes
    }

    /// Splits a datagram into its messages.
    public static func decode(_ bytes: [UInt8]) throws(NetlinkDecodeError) -> [NetlinkMessage] {
        var messages: [NetlinkMessage] = []
        var offset = 0
        while bytes.count - offset >= headerSize {
            var reader = ByteReader(bytes, from: offset)
            let length = Int(try reader.u32())
            guard length >= headerSize, offset + length <= bytes.count else {
                throw NetlinkDecodeError(
                    "netlink message at offset \(offset) claims \(length) bytes of \(bytes.count - offset)")
            }
            let type = try reader.u16()
            let flags = NetlinkFlags(rawValue: try reader.u16())
            let sequence = try reader.u32()
            let portID = try reader.u32()
            messages.append(
                NetlinkMessage(
                    type: type, flags: flags, sequence: sequence, portID: portID,
                    payload: Array(bytes[(offset + headerSize)..<(offset + length)])))
            offset += align(length)
        }
        return messages
    }
}

/// `NLMSG_ALIGN`: netlink aligns messages and attributes to 4 bytes.
@inlinable
public func align(_ length: Int) -> Int { (length + 3) & ~3 }

/// The payload of an `NLMSG_ERROR` message: an errno (0 is the ACK), the header of the request it answers, and,
/// with extended ACKs, the kernel's message and the offset of the offending attribute.
public struct NetlinkErrorPayload: Equatable, Sendable {
    /// Positive errno (the kernel sends it negated); 0 for an acknowledgement.
    public var errno: Int32
    public var requestType: UInt16
    public var requestSequence: UInt32
    /// `NLMSGERR_ATTR_MSG`: the kernel's explanation, when it gave one.
    public var message: String?
    /// `NLMSGERR_ATTR_OFFS`: byte offset of the attribute the kernel refused, in the request.
    public var attributeOffset: UInt32?

    public init(
        errno: Int32, requestType: UInt16, requestSequence: UInt32, message: String? = nil,
        attributeOffset: UInt32? = nil
    ) {
        self.errno = errno
        self.requestType = requestType
        self.requestSequence = requestSequence
        self.message = message
        self.attributeOffset = attributeOffset
    }

    public init(decoding reply: NetlinkMessage) throws(NetlinkDecodeError) {
        var reader = ByteReader(reply.payload)
        errno = -(try reader.i32())
        // The echoed request header; without NLM_F_CAPPED its payload follows too.
        let requestLength = Int(try reader.u32())
        requestType = try reader.u16()
        _ = try reader.u16()
        requestSequence = try reader.u32()
        _ = try reader.u32()
        extendedAck: do {
            guard reply.flags.contains(.acknowledgeTLVs) else { break extendedAck }
            let attributesStart =
                4 + (reply.flags.contains(.capped) ? NetlinkMessage.headerSize : align(requestLength))
            guard attributesStart <= reply.payload.count else { break extendedAck }
            for attribute in try NetlinkAttribute.decode(Array(reply.payload[attributesStart...])) {
                switch attribute.type {
                case 1: self.message = attribute.string
                case 2: attributeOffset = attribute.u32
                default: break
                }
            }
        }
    }

    public func encoded(capped: Bool = true) -> NetlinkMessage {
        var writer = ByteWriter()
        writer.append(UInt32(bitPattern: -errno))
        writer.append(UInt32(NetlinkMessage.headerSize))
        writer.append(requestType)
        writer.append(UInt16(0))
        writer.append(requestSequence)
        writer.append(UInt32(0))
        var flags: NetlinkFlags = capped ? .capped : []
        var attributes: [NetlinkAttribute] = []
        if let message { attributes.append(NetlinkAttribute(1, string: message)) }
        if let attributeOffset { attributes.append(NetlinkAttribute(2, u32: attributeOffset)) }
        if !attributes.isEmpty {
            flags.insert(.acknowledgeTLVs)
            writer.bytes += NetlinkAttribute.encode(attributes)
        }
        return NetlinkMessage(
            type: NetlinkMessageType.error, flags: flags, sequence: requestSequence, payload: writer.bytes)
    }
}
