import TandemCore
import TandemModel

// Blocks are the records IPAM reads and writes on every assignment, and the largest: Foundation's JSONEncoder and
// JSONDecoder spent more time on them than the datastore did. This codec writes the same JSON (keys sorted, nil
// fields left out, so `Block.isFull(encoded:)` still applies) directly, and reads any JSON spelling of a block
// (including JSONEncoder's escaped slashes) through the strict JSON reader.

extension Block {
    /// The block as JSON with sorted keys, no whitespace.
    func encodedJSON() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256 + allocations.count * 8 + attributes.count * 160)
        out += Array("{".utf8)
        if let affinity {
            out += Array("\"affinity\":".utf8)
            appendJSONString(affinity, to: &out)
            out.append(UInt8(ascii: ","))
        }
        out += Array("\"allocations\":[".utf8)
        for (position, allocation) in allocations.enumerated() {
            if position > 0 { out.append(UInt8(ascii: ",")) }
            out += Array((allocation.map(String.init) ?? "null").utf8)
        }
        out += Array("],\"attributes\":[".utf8)
        for (position, attribute) in attributes.enumerated() {
            if position > 0 { out.append(UInt8(ascii: ",")) }
            out.append(UInt8(ascii: "{"))
            if let handle = attribute.handle_id {
                out += Array("\"handle_id\":".utf8)
                appendJSONString(handle, to: &out)
            }
            if let secondary = attribute.secondary {
                if attribute.handle_id != nil { out.append(UInt8(ascii: ",")) }
                out += Array("\"secondary\":{".utf8)
                for (index, (key, value)) in secondary.sorted(by: { $0.key < $1.key }).enumerated() {
                    if index > 0 { out.append(UInt8(ascii: ",")) }
                    appendJSONString(key, to: &out)
                    out.append(UInt8(ascii: ":"))
                    appendJSONString(value, to: &out)
                }
                out.append(UInt8(ascii: "}"))
            }
            out.append(UInt8(ascii: "}"))
        }
        out += Array("],\"cidr\":".utf8)
        appendJSONString(cidr, to: &out)
        if let deleted { out += Array(",\"deleted\":\(deleted)".utf8) }
        out += Array(",\"sequenceNumber\":\(sequenceNumber)".utf8)
        if let sequences = sequenceNumberForAllocation {
            out += Array(",\"sequenceNumberForAllocation\":{".utf8)
            for (index, (key, value)) in sequences.sorted(by: { $0.key < $1.key }).enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                appendJSONString(key, to: &out)
                out += Array(":\(value)".utf8)
            }
            out.append(UInt8(ascii: "}"))
        }
        out += Array(",\"unallocated\":[".utf8)
        for (position, ordinal) in unallocated.enumerated() {
            if position > 0 { out.append(UInt8(ascii: ",")) }
            out += Array(String(ordinal).utf8)
        }
        out += Array("]}".utf8)
        return out
    }

    /// Reads a stored block; the error names the first field that is missing or of the wrong type.
    init(json bytes: [UInt8]) throws(BlockDecodingError) {
        let value: JSONValue
        do {
            value = try JSONValue.parse(json: bytes)
        } catch {
            throw BlockDecodingError("\(error)")
        }
        guard case .object = value else { throw BlockDecodingError("a block is a JSON object") }
        func integer<T: FixedWidthInteger>(_ value: JSONValue?, _ field: String) throws(BlockDecodingError) -> T {
            guard case .number(let text)? = value, let number = T(text) else {
                throw BlockDecodingError("\(field): expected an integer")
            }
            return number
        }
        func string(_ value: JSONValue?, _ field: String) throws(BlockDecodingError) -> String? {
            switch value {
            case nil, .null?: return nil
            case .string(let text)?: return text
            default: throw BlockDecodingError("\(field): expected a string")
            }
        }
        func array(_ value: JSONValue?, _ field: String) throws(BlockDecodingError) -> [JSONValue] {
            guard case .array(let items)? = value else { throw BlockDecodingError("\(field): expected an array") }
            return items
        }
        guard let cidr = try string(value["cidr"], "cidr") else { throw BlockDecodingError("cidr: missing") }
        self.cidr = cidr
        affinity = try string(value["affinity"], "affinity")
        allocations = []
        for (index, item) in try array(value["allocations"], "allocations").enumerated() {
            if case .null = item {
                allocations.append(nil)
            } else {
                allocations.append(try integer(item, "allocations[\(index)]") as Int)
            }
        }
        unallocated = []
        for (index, item) in try array(value["unallocated"], "unallocated").enumerated() {
            unallocated.append(try integer(item, "unallocated[\(index)]"))
        }
        attributes = []
        for (index, item) in try array(value["attributes"], "attributes").enumerated() {
            guard case .object = item else { throw BlockDecodingError("attributes[\(index)]: expected an object") }
            var secondary: [String: String]?
            switch item["secondary"] {
            case nil, .null?: secondary = nil
            case .object(let pairs)?:
                secondary = [:]
                for pair in pairs {
                    guard case .string(let text) = pair.value else {
                        throw BlockDecodingError("attributes[\(index)].secondary.\(pair.key): expected a string")
                    }
                    secondary?[pair.key] = text
                }
            default: throw BlockDecodingError("attributes[\(index)].secondary: expected an object")
            }
            var attribute = AllocationAttribute(
                handle: try string(item["handle_id"], "attributes[\(index)].handle_id"), attributes: [:])
            attribute.secondary = secondary
            attributes.append(attribute)
        }
        sequenceNumber = try integer(value["sequenceNumber"], "sequenceNumber")
        switch value["sequenceNumberForAllocation"] {
        case nil, .null?: sequenceNumberForAllocation = nil
        case .object(let pairs)?:
            var sequences: [String: UInt64] = [:]
            for pair in pairs {
                sequences[pair.key] = try integer(pair.value, "sequenceNumberForAllocation.\(pair.key)")
            }
            sequenceNumberForAllocation = sequences
        default: throw BlockDecodingError("sequenceNumberForAllocation: expected an object")
        }
        switch value["deleted"] {
        case nil, .null?: deleted = nil
        case .bool(let flag)?: deleted = flag
        default: throw BlockDecodingError("deleted: expected true or false")
        }
        guard unallocated.allSatisfy({ allocations.indices.contains($0) }),
            allocations.allSatisfy({ $0 == nil || attributes.indices.contains($0!) })
        else { throw BlockDecodingError("an ordinal or attribute index is out of range") }
    }
}

/// Why a stored block could not be read.
struct BlockDecodingError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The block codec, chosen over the generic Foundation one wherever the static type is `Block`.
func encode(_ block: Block) -> [UInt8] { block.encodedJSON() }

func decode(_ type: Block.Type, _ bytes: [UInt8], key: String) throws -> Block {
    do {
        return try Block(json: bytes)
    } catch {
        throw IPAMError.corrupt("\(key): \(error)")
    }
}

private func appendJSONString(_ text: String, to out: inout [UInt8]) {
    out += Array(jsonQuoted(text).utf8)
}
