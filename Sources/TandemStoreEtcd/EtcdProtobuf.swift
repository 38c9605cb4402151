import TandemStore

// The few messages of etcd's gRPC API (`etcdserverpb/rpc.proto`, `mvccpb/kv.proto`) that Tandem's datastore sends
// and reads, in protobuf's wire format, written and read here: a generated code base (and its plugin's build) for
// a dozen fields would cost more than it saves. Field numbers are etcd's.

/// Writes protobuf fields: varints (wire type 0) and length-delimited bytes or messages (wire type 2).
struct ProtobufWriter {
    private(set) var bytes: [UInt8] = []

    private mutating func varint(_ value: UInt64) {
        var value = value
        while value >= 0x80 {
            bytes.append(UInt8(truncatingIfNeeded: value) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
    }

    /// An integer field, written even when zero (etcd's compare targets are a oneof, where zero is a value).
    mutating func integer(_ field: Int, _ value: Int64) {
        varint(UInt64(field << 3))
        varint(UInt64(bitPattern: value))
    }

    mutating func bool(_ field: Int, _ value: Bool) { integer(field, value ? 1 : 0) }

    mutating func bytes(_ field: Int, _ value: some Collection<UInt8>) {
        varint(UInt64(field << 3 | 2))
        varint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func string(_ field: Int, _ value: String) { bytes(field, value.utf8) }

    mutating func message(_ field: Int, _ write: (inout ProtobufWriter) -> Void) {
        var nested = ProtobufWriter()
        write(&nested)
        bytes(field, nested.bytes)
    }
}

/// Reads the fields of one protobuf message; unknown fields and wire types (fixed 32 and 64 bits) are skipped.
struct ProtobufReader {
    enum Value {
        case integer(Int64)
        case bytes(ArraySlice<UInt8>)

        var integer: Int64 {
            if case .integer(let value) = self { return value }
            return 0
        }
        var bytes: ArraySlice<UInt8> {
            if case .bytes(let value) = self { return value }
            return []
        }
    }

    struct Malformed: Error {}

    private let data: ArraySlice<UInt8>
    private var index: Int

    init(_ data: ArraySlice<UInt8>) {
        self.data = data
        index = data.startIndex
    }

    private mutating func varint() throws(Malformed) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while index < data.endIndex, shift < 64 {
            let byte = data[index]
            index += 1
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
        throw Malformed()
    }

    /// The next field's number and value, or nil at the end.
    mutating func next() throws(Malformed) -> (field: Int, value: Value)? {
        while index < data.endIndex {
            let key = try varint()
            let field = Int(key >> 3)
            switch key & 7 {
            case 0:
                return (field, .integer(Int64(bitPattern: try varint())))
            case 2:
                let length = Int(try varint())
                guard length >= 0, data.endIndex - index >= length else { throw Malformed() }
                defer { index += length }
                return (field, .bytes(data[index..<(index + length)]))
            case 1:
                guard data.endIndex - index >= 8 else { throw Malformed() }
                index += 8
            case 5:
                guard data.endIndex - index >= 4 else { throw Malformed() }
                index += 4
            default:
                throw Malformed()
            }
        }
        return nil
    }
}

/// etcd's messages, as Tandem uses them.
enum EtcdMessages {
    /// `RangeRequest`: one key, or `[key, rangeEnd)`, at `revision` (0: the latest), at most `limit` keys.
    static func range(
        key: [UInt8], rangeEnd: [UInt8]? = nil, limit: Int = 0, revision: Int64 = 0, countOnly: Bool = false
    ) -> [UInt8] {
        var writer = ProtobufWriter()
        writeRange(&writer, key: key, rangeEnd: rangeEnd, limit: limit, revision: revision, countOnly: countOnly)
        return writer.bytes
    }

    private static func writeRange(
        _ writer: inout ProtobufWriter, key: [UInt8], rangeEnd: [UInt8]?, limit: Int, revision: Int64,
        countOnly: Bool
    ) {
        writer.bytes(1, key)
        if let rangeEnd { writer.bytes(2, rangeEnd) }
        if limit > 0 { writer.integer(3, Int64(limit)) }
        if revision > 0 { writer.integer(4, revision) }
        if countOnly { writer.bool(9, true) }
    }

    /// A `Compare` of a transaction.
    enum Compare {
        /// `create_revision == 0`: the key does not exist.
        case absent(key: String)
        /// `mod_revision == revision`.
        case modRevision(key: String, equals: Int64)
    }

    /// A `RequestOp` of a transaction.
    enum Operation {
        case put(key: String, value: [UInt8])
        case delete(key: String)
        case get(key: String)
    }

    /// `TxnRequest`: if every compare holds, `success`, else `failure`.
    static func transaction(compares: [Compare], success: [Operation], failure: [Operation]) -> [UInt8] {
        var writer = ProtobufWriter()
        for compare in compares {
            writer.message(1) { compareWriter in
                switch compare {
                case .absent(let key):
                    // result EQUAL (0) is the default; target CREATE (1).
                    compareWriter.integer(2, 1)
                    compareWriter.string(3, key)
                    compareWriter.integer(5, 0)
                case .modRevision(let key, let revision):
                    compareWriter.integer(2, 2)  // target MOD
                    compareWriter.string(3, key)
                    compareWriter.integer(6, revision)
                }
            }
        }
        for (field, operations) in [(2, success), (3, failure)] {
            for operation in operations {
                writer.message(field) { request in
                    switch operation {
                    case .put(let key, let value):
                        request.message(2) {
                            $0.string(1, key)
                            $0.bytes(2, value)
                        }
                    case .delete(let key):
                        request.message(3) { $0.string(1, key) }
                    case .get(let key):
                        request.message(1) { $0.string(1, key) }
                    }
                }
            }
        }
        return writer.bytes
    }

    /// What a `RangeResponse` holds.
    struct RangeReply {
        var revision: Int64 = 0
        var keyValues: [KeyValue] = []
        var more = false
    }

    /// What a `TxnResponse` holds: whether the compares held, and the keys its range operations read.
    struct TransactionReply {
        var revision: Int64 = 0
        var succeeded = false
        var keyValues: [KeyValue] = []
    }

    /// `ResponseHeader.revision`.
    static func headerRevision(_ bytes: ArraySlice<UInt8>) throws(ProtobufReader.Malformed) -> Int64 {
        var reader = ProtobufReader(bytes)
        while let (field, value) = try reader.next() {
            if field == 3 { return value.integer }
        }
        return 0
    }

    /// `mvccpb.KeyValue`.
    static func keyValue(_ bytes: ArraySlice<UInt8>) throws(ProtobufReader.Malformed) -> KeyValue {
        var reader = ProtobufReader(bytes)
        var key: [UInt8] = []
        var value: [UInt8] = []
        var create: Int64 = 0
        var modified: Int64 = 0
        var version: Int64 = 0
        while let (field, item) = try reader.next() {
            switch field {
            case 1: key = Array(item.bytes)
            case 2: create = item.integer
            case 3: modified = item.integer
            case 4: version = item.integer
            case 5: value = Array(item.bytes)
            default: break
            }
        }
        return KeyValue(
            key: String(decoding: key, as: UTF8.self), value: value, createRevision: create, modRevision: modified,
            version: version)
    }

    static func rangeReply(_ bytes: ArraySlice<UInt8>) throws(ProtobufReader.Malformed) -> RangeReply {
        var reader = ProtobufReader(bytes)
        var reply = RangeReply()
        while let (field, value) = try reader.next() {
            switch field {
            case 1: reply.revision = try headerRevision(value.bytes)
            case 2: reply.keyValues.append(try keyValue(value.bytes))
            case 3: reply.more = value.integer != 0
            default: break
            }
        }
        return reply
    }

    static func transactionReply(_ bytes: ArraySlice<UInt8>) throws(ProtobufReader.Malformed) -> TransactionReply {
        var reader = ProtobufReader(bytes)
        var reply = TransactionReply()
        while let (field, value) = try reader.next() {
            switch field {
            case 1: reply.revision = try headerRevision(value.bytes)
            case 2: reply.succeeded = value.integer != 0
            case 3:
                // ResponseOp: its response_range (1) holds keys.
                var operation = ProtobufReader(value.bytes)
                while let (kind, response) = try operation.next() {
                    if kind == 1 { reply.keyValues += try rangeReply(response.bytes).keyValues }
                }
            default: break
            }
        }
        return reply
    }
}
