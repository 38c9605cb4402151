import TandemCore

/// A JSON document tree that keeps the order of object keys, so resources print in the order operators
/// know from Calico, and numbers keep their exact text (an int64 is never rounded through a Double).
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    /// A number, as its literal text (`42`, `-1.5e3`).
    case number(String)
    case string(String)
    case array([JSONValue])
    /// An object; keys are unique and in document order.
    case object([(key: String, value: JSONValue)])

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): true
        case (.bool(let a), .bool(let b)): a == b
        case (.number(let a), .number(let b)): a == b || (Double(a) != nil && Double(a) == Double(b))
        case (.string(let a), .string(let b)): a == b
        case (.array(let a), .array(let b)): a == b
        case (.object(let a), .object(let b)):
            a.count == b.count && a.allSatisfy { pair in b.contains { $0.key == pair.key && $0.value == pair.value } }
        default: false
        }
    }

    /// The value at `key` when this is an object.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let pairs) = self else { return nil }
        return pairs.last { $0.key == key }?.value
    }

    /// The string, when this is a string.
    public var stringValue: String? {
        if case .string(let text) = self { return text }
        return nil
    }

    /// Sets `key` in an object, replacing an existing value in place or appending.
    public mutating func set(_ key: String, _ value: JSONValue) {
        guard case .object(var pairs) = self else { return }
        if let index = pairs.firstIndex(where: { $0.key == key }) {
            pairs[index].value = value
        } else {
            pairs.append((key, value))
        }
        self = .object(pairs)
    }

    /// Removes `key` from an object.
    public mutating func remove(_ key: String) {
        guard case .object(let pairs) = self else { return }
        self = .object(pairs.filter { $0.key != key })
    }

    /// A short rendering of the value for error messages: strings quoted, containers abbreviated.
    public var brief: String {
        switch self {
        case .null: "null"
        case .bool(let value): "\(value)"
        case .number(let text): text
        case .string(let text): "\"\(text)\""
        case .array: "a list"
        case .object: "an object"
        }
    }

    /// The name of the value's JSON type, for error messages.
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "a list"
        case .object: "an object"
        }
    }

    /// RFC 7396 JSON merge patch: objects merge key by key, `null` removes, anything else replaces.
    public func merging(patch: JSONValue) -> JSONValue {
        guard case .object(let patchPairs) = patch else { return patch }
        var result: JSONValue = if case .object = self { self } else { .object([]) }
        for (key, value) in patchPairs {
            if value == .null {
                result.remove(key)
            } else {
                result.set(key, (result[key] ?? .null).merging(patch: value))
            }
        }
        return result
    }
}

// MARK: - JSON text

extension JSONValue {
    /// Serialises to JSON text; `pretty` indents by two spaces like `calicoctl -o json`.
    public func jsonText(pretty: Bool = true) -> String {
        var out = ""
        write(to: &out, pretty: pretty, indent: 0)
        return out
    }

    private func write(to out: inout String, pretty: Bool, indent: Int) {
        let newline = pretty ? "\n" : ""
        let pad = pretty ? String(repeating: "  ", count: indent + 1) : ""
        let closePad = pretty ? String(repeating: "  ", count: indent) : ""
        switch self {
        case .null: out += "null"
        case .bool(let value): out += value ? "true" : "false"
        case .number(let text): out += text
        case .string(let text): JSONValue.writeString(text, to: &out)
        case .array(let items):
            if items.isEmpty {
                out += "[]"
                return
            }
            out += "[" + newline
            for (index, item) in items.enumerated() {
                out += pad
                item.write(to: &out, pretty: pretty, indent: indent + 1)
                out += (index < items.count - 1 ? "," : "") + newline
            }
            out += closePad + "]"
        case .object(let pairs):
            if pairs.isEmpty {
                out += "{}"
                return
            }
            out += "{" + newline
            for (index, pair) in pairs.enumerated() {
                out += pad
                JSONValue.writeString(pair.key, to: &out)
                out += pretty ? ": " : ":"
                pair.value.write(to: &out, pretty: pretty, indent: indent + 1)
                out += (index < pairs.count - 1 ? "," : "") + newline
            }
            out += closePad + "}"
        }
    }

    private static func writeString(_ text: String, to out: inout String) {
        out += jsonQuoted(text)
    }
}

extension JSONValue: Codable {
    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// Takes the raw tree under Tandem's decoder; rebuilds it from containers under any other decoder.
    public init(from decoder: any Decoder) throws {
        if let value = decoder.jsonValue {
            self = value
            return
        }
        if let object = try? decoder.container(keyedBy: AnyKey.self) {
            self = .object(try object.allKeys.map { ($0.stringValue, try object.decode(JSONValue.self, forKey: $0)) })
        } else if var array = try? decoder.unkeyedContainer() {
            var items: [JSONValue] = []
            while !array.isAtEnd { items.append(try array.decode(JSONValue.self)) }
            self = .array(items)
        } else {
            let single = try decoder.singleValueContainer()
            if single.decodeNil() {
                self = .null
            } else if let flag = try? single.decode(Bool.self) {
                self = .bool(flag)
            } else if let number = try? single.decode(Int64.self) {
                self = .number(String(number))
            } else if let number = try? single.decode(Double.self) {
                self = .number(String(number))
            } else {
                self = .string(try single.decode(String.self))
            }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .null:
            var single = encoder.singleValueContainer()
            try single.encodeNil()
        case .bool(let flag):
            var single = encoder.singleValueContainer()
            try single.encode(flag)
        case .number(let text):
            var single = encoder.singleValueContainer()
            if let integer = Int64(text) { try single.encode(integer) } else { try single.encode(Double(text) ?? 0) }
        case .string(let text):
            var single = encoder.singleValueContainer()
            try single.encode(text)
        case .array(let items):
            var array = encoder.unkeyedContainer()
            for item in items { try array.encode(item) }
        case .object(let pairs):
            var object = encoder.container(keyedBy: AnyKey.self)
            for (key, value) in pairs { try object.encode(value, forKey: AnyKey(stringValue: key)) }
        }
    }
}
