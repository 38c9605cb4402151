/// The messages between the `tandem` CNI shim and the node agent's CNI service, over a Unix stream socket.
///
/// The shim forwards one invocation exactly as the runtime made it (argv[0], environment, stdin) and prints what
/// the agent answers (stdout, stderr, exit status). Both ends are Tandem's; the format is versioned by its magic.
/// Layout, integers little-endian: magic (4 bytes) | body length (UInt32) | body. A request body is a list of
/// byte strings (UInt32 count, then UInt32 length + bytes each): argv[0], stdin, then `NAME=value` per
/// environment variable. A reply body is the exit status (Int32), then stdout and stderr as byte strings.
public enum CNIWire {
    public static let requestMagic: [UInt8] = Array("TCQ1".utf8)
    public static let replyMagic: [UInt8] = Array("TCR1".utf8)
    /// Larger than any network configuration a runtime sends (prevResult and runtimeConfig included).
    public static let maximumBodyLength = 16 << 20
    /// The agent's default address: an abstract socket, so each network namespace (each node of the lab) has its own.
    public static let defaultAddress = "@tandem-cni"
}

/// One CNI invocation as the runtime made it.
public struct CNIRequest: Sendable, Equatable {
    public var invokedAs: String
    public var stdin: [UInt8]
    public var environment: [String: String]

    public init(invokedAs: String, stdin: [UInt8], environment: [String: String]) {
        self.invokedAs = invokedAs
        self.stdin = stdin
        self.environment = environment
    }

    /// The framed message.
    public func encoded() -> [UInt8] {
        var strings = [Array(invokedAs.utf8), stdin]
        for (name, value) in environment.sorted(by: { $0.key < $1.key }) {
            strings.append(Array("\(name)=\(value)".utf8))
        }
        var body: [UInt8] = []
        appendUInt32(UInt32(strings.count), to: &body)
        for string in strings { appendBytes(string, to: &body) }
        return frame(CNIWire.requestMagic, body)
    }

    /// Reads a request body (the bytes after the header).
    public init(body: [UInt8]) throws(CNIWireError) {
        var reader = WireReader(body)
        let count = try reader.uint32()
        guard count >= 2 else { throw CNIWireError("a request needs argv[0] and stdin; it has \(count) fields") }
        invokedAs = String(decoding: try reader.string(), as: UTF8.self)
        stdin = try reader.string()
        environment = [:]
        for _ in 2..<count {
            let entry = try reader.string()
            guard let equals = entry.firstIndex(of: UInt8(ascii: "=")) else {
                throw CNIWireError("an environment entry has no '='")
            }
            environment[String(decoding: entry[..<equals], as: UTF8.self)] = String(
                decoding: entry[(equals + 1)...], as: UTF8.self)
        }
        try reader.end()
    }
}

/// What the plugin answered: the exit status and its output.
public struct CNIReply: Sendable, Equatable {
    public var exitStatus: Int32
    public var stdout: [UInt8]
    public var stderr: [UInt8]

    public init(exitStatus: Int32, stdout: [UInt8], stderr: [UInt8] = []) {
        self.exitStatus = exitStatus
        self.stdout = stdout
        self.stderr = stderr
    }

    /// The framed message.
    public func encoded() -> [UInt8] {
        var body: [UInt8] = []
        appendUInt32(UInt32(bitPattern: exitStatus), to: &body)
        appendBytes(stdout, to: &body)
        appendBytes(stderr, to: &body)
        return frame(CNIWire.replyMagic, body)
    }

    /// Reads a reply body (the bytes after the header).
    public init(body: [UInt8]) throws(CNIWireError) {
        var reader = WireReader(body)
        exitStatus = Int32(bitPattern: try reader.uint32())
        stdout = try reader.string()
        stderr = try reader.string()
        try reader.end()
    }
}

/// Checks a message header (8 bytes) and returns the body length that follows.
public func cniWireBodyLength(header: [UInt8], magic: [UInt8]) throws(CNIWireError) -> Int {
    guard header.count == 8, Array(header[0..<4]) == magic else {
        throw CNIWireError("not a Tandem CNI message (bad magic); shim and agent must come from the same release")
    }
    var reader = WireReader(Array(header[4...]))
    let length = Int(try reader.uint32())
    guard length <= CNIWire.maximumBodyLength else {
        throw CNIWireError("message body of \(length) bytes exceeds the limit of \(CNIWire.maximumBodyLength)")
    }
    return length
}

/// A malformed or truncated message.
public struct CNIWireError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

private func frame(_ magic: [UInt8], _ body: [UInt8]) -> [UInt8] {
    var message = magic
    appendUInt32(UInt32(body.count), to: &message)
    return message + body
}

private func appendUInt32(_ value: UInt32, to bytes: inout [UInt8]) {
    for shift in stride(from: 0, to: 32, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> UInt32(shift))) }
}

private func appendBytes(_ value: [UInt8], to bytes: inout [UInt8]) {
    appendUInt32(UInt32(value.count), to: &bytes)
    bytes += value
}

private struct WireReader {
    let bytes: [UInt8]
    var offset = 0
    init(_ bytes: [UInt8]) { self.bytes = bytes }

    mutating func uint32() throws(CNIWireError) -> UInt32 {
        guard bytes.count - offset >= 4 else { throw CNIWireError("message truncated at byte \(offset)") }
        var value: UInt32 = 0
        for index in 0..<4 { value |= UInt32(bytes[offset + index]) << UInt32(8 * index) }
        offset += 4
        return value
    }

    mutating func string() throws(CNIWireError) -> [UInt8] {
        let length = Int(try uint32())
        guard bytes.count - offset >= length else { throw CNIWireError("message truncated at byte \(offset)") }
        defer { offset += length }
        return Array(bytes[offset..<(offset + length)])
    }

    func end() throws(CNIWireError) {
        guard offset == bytes.count else {
            throw CNIWireError("\(bytes.count - offset) unexpected bytes after the message")
        }
    }
}
