/// Appends integers in host byte order, as netlink wants them (addresses, which are in network order, are
/// appended as bytes).
public struct ByteWriter: Sendable {
    public var bytes: [UInt8] = []
    public init() {}

    public mutating func append<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value) { bytes.append(contentsOf: $0) }
    }

    /// Zero bytes up to the next 4-byte boundary.
    public mutating func pad() {
        bytes.append(contentsOf: repeatElement(0, count: align(bytes.count) - bytes.count))
    }
}

/// Reads host-order integers from a byte array, refusing to run past its end.
public struct ByteReader: Sendable {
    public let bytes: [UInt8]
    public private(set) var offset: Int

    public init(_ bytes: [UInt8], from offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    public var remaining: Int { bytes.count - offset }

    public mutating func read<T: FixedWidthInteger>(_: T.Type) throws(NetlinkDecodeError) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else {
            throw NetlinkDecodeError("truncated: needed \(size) bytes at offset \(offset), \(remaining) left")
        }
        var value = T.zero
        withUnsafeMutableBytes(of: &value) { target in
            for index in 0..<size { target[index] = bytes[offset + index] }
        }
        offset += size
        return value
    }

    public mutating func u8() throws(NetlinkDecodeError) -> UInt8 { try read(UInt8.self) }
    public mutating func u16() throws(NetlinkDecodeError) -> UInt16 { try read(UInt16.self) }
    public mutating func u32() throws(NetlinkDecodeError) -> UInt32 { try read(UInt32.self) }
    public mutating func i32() throws(NetlinkDecodeError) -> Int32 { try read(Int32.self) }

    public mutating func skip(_ count: Int) throws(NetlinkDecodeError) {
        guard remaining >= count else {
            throw NetlinkDecodeError("truncated: cannot skip \(count) bytes at offset \(offset)")
        }
        offset += count
    }
}
