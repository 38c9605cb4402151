/// A netlink attribute (`struct nlattr` and its value): type, value, padded to 4 bytes. Nested attributes are
/// attributes whose value is itself a list of attributes.
public struct NetlinkAttribute: Equatable, Sendable {
    /// `NLA_F_NESTED`: set by the kernel (and by us, where the kernel insists) on attributes holding attributes.
    public static let nestedFlag: UInt16 = 0x8000
    static let typeMask: UInt16 = 0x3FFF

    /// The attribute type without the nested and byte-order flags.
    public var type: UInt16
    public var isNested: Bool
    public var value: [UInt8]

    public init(_ type: UInt16, bytes: [UInt8], nested: Bool = false) {
        self.type = type
        self.value = bytes
        self.isNested = nested
    }

    public init(_ type: UInt16, string: String) { self.init(type, bytes: Array(string.utf8) + [0]) }
    public init(_ type: UInt16, u8: UInt8) { self.init(type, bytes: [u8]) }

    public init(_ type: UInt16, u16: UInt16) {
        var writer = ByteWriter()
        writer.append(u16)
        self.init(type, bytes: writer.bytes)
    }

    public init(_ type: UInt16, u32: UInt32) {
        var writer = ByteWriter()
        writer.append(u32)
        self.init(type, bytes: writer.bytes)
    }

    public init(_ type: UInt16, i32: Int32) { self.init(type, u32: UInt32(bitPattern: i32)) }

    public init(_ type: UInt16, nested attributes: [NetlinkAttribute]) {
        self.init(type, bytes: Self.encode(attributes), nested: true)
    }

    /// The value as a NUL-terminated string (the terminator and anything after it dropped).
    public var string: String {
        String(decoding: value.prefix { $0 != 0 }, as: UTF8.self)
    }

    public var u8: UInt8? { value.count >= 1 ? value[0] : nil }

    public var u16: UInt16? {
        var reader = ByteReader(value)
        return try? reader.u16()
    }

    public var u32: UInt32? {
        var reader = ByteReader(value)
        return try? reader.u32()
    }

    public var i32: Int32? { u32.map { Int32(bitPattern: $0) } }

    /// The value decoded as nested attributes.
    public func attributes() throws(NetlinkDecodeError) -> [NetlinkAttribute] { try Self.decode(value) }

    public static func encode(_ attributes: [NetlinkAttribute]) -> [UInt8] {
        var writer = ByteWriter()
        for attribute in attributes {
            writer.append(UInt16(4 + attribute.value.count))
            writer.append(attribute.type | (attribute.isNested ? nestedFlag : 0))
            writer.bytes += attribute.value
            writer.pad()
        }
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8], from start: Int = 0) throws(NetlinkDecodeError) -> [NetlinkAttribute] {
        var attributes: [NetlinkAttribute] = []
        var offset = start
        while bytes.count - offset >= 4 {
            var reader = ByteReader(bytes, from: offset)
            let length = Int(try reader.u16())
            let rawType = try reader.u16()
            guard length >= 4, offset + length <= bytes.count else {
                throw NetlinkDecodeError(
                    "attribute at offset \(offset) claims \(length) bytes of \(bytes.count - offset)")
            }
            attributes.append(
                NetlinkAttribute(
                    rawType & typeMask, bytes: Array(bytes[(offset + 4)..<(offset + length)]),
                    nested: rawType & nestedFlag != 0))
            offset += align(length)
        }
        return attributes
    }
}

extension Array where Element == NetlinkAttribute {
    /// The first attribute of `type`.
    public func first(_ type: UInt16) -> NetlinkAttribute? { first { $0.type == type } }
}
