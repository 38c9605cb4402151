/// A problem with one field of a document: where it is and what is wrong with it.
public struct FieldError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The field path, e.g. `spec.ingress[0].source.nets[1]`.
    public var path: String
    /// The offending value as written, when there is one.
    public var value: String?
    public var message: String
    public init(path: String, value: String? = nil, message: String) {
        self.path = path
        self.value = value
        self.message = message
    }
    public var description: String {
        let location = value.map { "\(path) = \($0)" } ?? path
        return location.isEmpty ? message : "\(location): \(message)"
    }
}

/// Renders a coding path as `a.b[2].c`.
func renderPath(_ path: [any CodingKey]) -> String {
    var out = ""
    for key in path {
        if let index = key.intValue, key.stringValue.hasPrefix("Index") || key.stringValue == "\(index)" {
            out += "[\(index)]"
        } else {
            out += out.isEmpty ? key.stringValue : "." + key.stringValue
        }
    }
    return out
}

struct IndexKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(_ index: Int) {
        stringValue = "\(index)"
        intValue = index
    }
    init?(stringValue: String) {
        self.stringValue = stringValue
        intValue = Int(stringValue)
    }
    init?(intValue: Int) { self.init(intValue) }
}

// MARK: - Decoding

/// Decodes `Decodable` types from a ``JSONValue`` strictly: a field the type does not know is an error
/// (as calicoctl rejects unknown fields), and a value of the wrong type names the field and the value.
public enum StrictDecoder {
    public static func decode<T: Decodable>(
        _ type: T.Type, from value: JSONValue, path: [any CodingKey] = []
    )
        throws(FieldError) -> T
    {
        let tracker = AccessTracker()
        let decoder = ValueDecoder(value: value, codingPath: path, tracker: tracker)
        let result: T
        do {
            result = try T(from: decoder)
        } catch let error as FieldError {
            throw error
        } catch let error as DecodingError {
            throw FieldError(decodingError: error)
        } catch {
            throw FieldError(path: renderPath(path), message: "\(error)")
        }
        if let unknown = tracker.firstUnknownField() {
            throw FieldError(
                path: "", message: "field in document is not recognized or is in the wrong location: \(unknown)")
        }
        return result
    }
}

extension FieldError {
    init(decodingError: DecodingError) {
        switch decodingError {
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            self.init(path: renderPath(context.codingPath), message: context.debugDescription)
        case .keyNotFound(let key, let context):
            self.init(path: renderPath(context.codingPath + [key]), message: "required field is missing")
        @unknown default:
            self.init(path: "", message: "\(decodingError)")
        }
    }
}

/// Records which object keys a decode looked at, to find fields nobody asked for.
final class AccessTracker {
    /// Objects opened as keyed containers, by path, with their keys.
    var objects: [(path: String, keys: [String])] = []
    var accessed: Set<String> = []

    func firstUnknownField() -> String? {
        for object in objects {
            for key in object.keys {
                let path = object.path.isEmpty ? key : "\(object.path).\(key)"
                if !accessed.contains(path) { return path }
            }
        }
        return nil
    }
}

struct ValueDecoder: Decoder {
    let value: JSONValue
    let codingPath: [any CodingKey]
    let tracker: AccessTracker
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func mismatch(_ expected: String) -> FieldError {
        FieldError(path: renderPath(codingPath), message: "expected \(expected), got \(value.brief)")
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let pairs) = value else { throw mismatch("an object") }
        tracker.objects.append((renderPath(codingPath), pairs.map(\.key)))
        return KeyedDecodingContainer(KeyedValueContainer<Key>(decoder: self, pairs: pairs))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let items) = value else { throw mismatch("a list") }
        return UnkeyedValueContainer(decoder: self, items: items)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { SingleValueContainer(decoder: self) }

    func child(_ value: JSONValue, key: any CodingKey) -> ValueDecoder {
        ValueDecoder(value: value, codingPath: codingPath + [key], tracker: tracker)
    }

    // Scalars.
    func decodeBool() throws -> Bool {
        guard case .bool(let flag) = value else { throw mismatch("true or false") }
        return flag
    }
    func decodeString() throws -> String {
        guard case .string(let text) = value else { throw mismatch("a string") }
        return text
    }
    func decodeInteger<T: FixedWidthInteger>(_ type: T.Type) throws -> T {
        guard case .number(let text) = value else { throw mismatch("an integer") }
        guard let number = T(text) else {
            throw FieldError(
                path: renderPath(codingPath),
                message: "expected an integer between \(T.min) and \(T.max), got \(text)")
        }
        return number
    }
    func decodeDouble() throws -> Double {
        guard case .number(let text) = value, let number = Double(text) else { throw mismatch("a number") }
        return number
    }
    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        switch type {
        case is Bool.Type: return try decodeBool() as! T
        case is String.Type: return try decodeString() as! T
        case is Int.Type: return try decodeInteger(Int.self) as! T
        case is Int32.Type: return try decodeInteger(Int32.self) as! T
        case is Int64.Type: return try decodeInteger(Int64.self) as! T
        case is UInt8.Type: return try decodeInteger(UInt8.self) as! T
        case is UInt16.Type: return try decodeInteger(UInt16.self) as! T
        case is UInt32.Type: return try decodeInteger(UInt32.self) as! T
        case is UInt64.Type: return try decodeInteger(UInt64.self) as! T
        case is Double.Type: return try decodeDouble() as! T
        case is JSONValue.Type: return value as! T
        default: return try T(from: self)
        }
    }
}

struct KeyedValueContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let decoder: ValueDecoder
    let pairs: [(key: String, value: JSONValue)]
    var codingPath: [any CodingKey] { decoder.codingPath }
    var allKeys: [Key] { pairs.compactMap { Key(stringValue: $0.key) } }

    func contains(_ key: Key) -> Bool { pairs.contains { $0.key == key.stringValue } }

    private func child(_ key: Key) throws -> ValueDecoder {
        guard let value = pairs.last(where: { $0.key == key.stringValue })?.value else {
            throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "missing"))
        }
        let path = renderPath(codingPath)
        decoder.tracker.accessed.insert(path.isEmpty ? key.stringValue : "\(path).\(key.stringValue)")
        return decoder.child(value, key: key)
    }

    func decodeNil(forKey key: Key) throws -> Bool {
        let path = renderPath(codingPath)
        decoder.tracker.accessed.insert(path.isEmpty ? key.stringValue : "\(path).\(key.stringValue)")
        return pairs.last(where: { $0.key == key.stringValue })?.value == .null
    }
    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try child(key).decode(type) }
    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard contains(key), try !decodeNil(forKey: key) else { return nil }
        return try child(key).decode(type)
    }
    func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type, forKey key: Key
    ) throws
        -> KeyedDecodingContainer<NestedKey>
    {
        try child(key).container(keyedBy: type)
    }
    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try child(key).unkeyedContainer()
    }
    func superDecoder() throws -> any Decoder { decoder }
    func superDecoder(forKey key: Key) throws -> any Decoder { try child(key) }
}

struct UnkeyedValueContainer: UnkeyedDecodingContainer {
    let decoder: ValueDecoder
    let items: [JSONValue]
    var currentIndex = 0
    var codingPath: [any CodingKey] { decoder.codingPath }
    var count: Int? { items.count }
    var isAtEnd: Bool { currentIndex >= items.count }

    private mutating func next() throws -> ValueDecoder {
        guard !isAtEnd else {
            throw FieldError(path: renderPath(codingPath), message: "list has too few elements")
        }
        defer { currentIndex += 1 }
        return decoder.child(items[currentIndex], key: IndexKey(currentIndex))
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, items[currentIndex] == .null else { return false }
        currentIndex += 1
        return true
    }
    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try next().decode(type) }
    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy type: NestedKey.Type
    ) throws
        -> KeyedDecodingContainer<NestedKey>
    {
        try next().container(keyedBy: type)
    }
    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer { try next().unkeyedContainer() }
    mutating func superDecoder() throws -> any Decoder { try next() }
}

struct SingleValueContainer: SingleValueDecodingContainer {
    let decoder: ValueDecoder
    var codingPath: [any CodingKey] { decoder.codingPath }
    func decodeNil() -> Bool { decoder.value == .null }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try decoder.decode(type) }
}

extension Decoder {
    /// The raw value being decoded, when the decoder is Tandem's strict decoder.
    var jsonValue: JSONValue? { (self as? ValueDecoder)?.value }
    /// The field path being decoded, rendered.
    var fieldPath: String { renderPath(codingPath) }
}

// MARK: - Encoding

/// Encodes `Encodable` types to an ordered ``JSONValue``; object keys come out in encoding order and nil
/// optionals are left out, so output lists only the fields that are set.
public enum ValueEncoder {
    public static func encode<T: Encodable>(_ value: T) -> JSONValue {
        let root = EncodingBox()
        do {
            try value.encode(to: BoxEncoder(box: root, codingPath: []))
        } catch {
            preconditionFailure("encoding \(T.self) cannot fail: \(error)")
        }
        return root.value
    }
}

final class EncodingBox {
    enum Content {
        case value(JSONValue)
        case object([(String, EncodingBox)])
        case array([EncodingBox])
    }
    var content: Content = .value(.null)
    /// Where each key of an object `content` sits in its pairs, so that setting a key is not a search of them.
    var keyIndexes: [String: Int] = [:]

    /// Makes the content an empty object, unless it is an object already.
    func becomeObject() {
        if case .object = content { return }
        content = .object([])
        keyIndexes = [:]
    }

    /// Takes the content of `other`.
    func take(_ other: EncodingBox) {
        content = other.content
        keyIndexes = other.keyIndexes
    }

    /// Appends to an array's items in place. Reading the items out of `content` and storing them back would
    /// leave `content` holding the old items during the append, so every append would copy them all: a
    /// quadratic encoding of long lists (a policy with 50,000 rules).
    func appendItem(_ child: EncodingBox) {
        guard case .array(var items) = content else { return }
        content = .value(.null)
        items.append(child)
        content = .array(items)
    }

    /// Sets an object's key, replacing an earlier value of it, in place (see ``appendItem(_:)``).
    func setPair(_ key: String, _ child: EncodingBox) {
        guard case .object(var pairs) = content else { return }
        var indexes = keyIndexes
        keyIndexes = [:]
        content = .value(.null)
        if let index = indexes[key] {
            pairs[index].1 = child
        } else {
            indexes[key] = pairs.count
            pairs.append((key, child))
        }
        content = .object(pairs)
        keyIndexes = indexes
    }

    var value: JSONValue {
        switch content {
        case .value(let value): value
        case .object(let pairs): .object(pairs.map { ($0.0, $0.1.value) })
        case .array(let items): .array(items.map(\.value))
        }
    }
}

struct BoxEncoder: Encoder {
    let box: EncodingBox
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        box.becomeObject()
        return KeyedEncodingContainer(KeyedBoxContainer<Key>(box: box, codingPath: codingPath))
    }
    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if case .array = box.content {} else { box.content = .array([]) }
        return UnkeyedBoxContainer(box: box, codingPath: codingPath)
    }
    func singleValueContainer() -> any SingleValueEncodingContainer {
        SingleBoxContainer(box: box, codingPath: codingPath)
    }
}

func scalarValue<T: Encodable>(_ value: T) -> JSONValue? {
    switch value {
    case let flag as Bool: .bool(flag)
    case let text as String: .string(text)
    case let number as Int: .number(String(number))
    case let number as Int32: .number(String(number))
    case let number as Int64: .number(String(number))
    case let number as UInt8: .number(String(number))
    case let number as UInt16: .number(String(number))
    case let number as UInt32: .number(String(number))
    case let number as UInt64: .number(String(number))
    case let number as Double:
        number == number.rounded() && abs(number) < 1e15 ? .number(String(Int64(number))) : .number(String(number))
    case let json as JSONValue: json
    default: nil
    }
}

func encodeChild<T: Encodable>(_ value: T, path: [any CodingKey]) throws -> EncodingBox {
    let child = EncodingBox()
    if let scalar = scalarValue(value) {
        child.content = .value(scalar)
    } else {
        try value.encode(to: BoxEncoder(box: child, codingPath: path))
    }
    return child
}

struct KeyedBoxContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let box: EncodingBox
    let codingPath: [any CodingKey]

    private func append(_ key: Key, _ child: EncodingBox) { box.setPair(key.stringValue, child) }

    mutating func encodeNil(forKey key: Key) throws {
        let child = EncodingBox()
        append(key, child)
    }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        append(key, try encodeChild(value, path: codingPath + [key]))
    }
    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type, forKey key: Key
    )
        -> KeyedEncodingContainer<NestedKey>
    {
        let child = EncodingBox()
        append(key, child)
        return BoxEncoder(box: child, codingPath: codingPath + [key]).container(keyedBy: keyType)
    }
    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        let child = EncodingBox()
        append(key, child)
        return BoxEncoder(box: child, codingPath: codingPath + [key]).unkeyedContainer()
    }
    mutating func superEncoder() -> any Encoder { BoxEncoder(box: box, codingPath: codingPath) }
    mutating func superEncoder(forKey key: Key) -> any Encoder {
        let child = EncodingBox()
        append(key, child)
        return BoxEncoder(box: child, codingPath: codingPath + [key])
    }
}

struct UnkeyedBoxContainer: UnkeyedEncodingContainer {
    let box: EncodingBox
    let codingPath: [any CodingKey]
    var count: Int {
        if case .array(let items) = box.content { return items.count }
        return 0
    }

    private func append(_ child: EncodingBox) { box.appendItem(child) }

    mutating func encodeNil() throws { append(EncodingBox()) }
    mutating func encode<T: Encodable>(_ value: T) throws {
        append(try encodeChild(value, path: codingPath + [IndexKey(count)]))
    }
    mutating func nestedContainer<NestedKey: CodingKey>(
        keyedBy keyType: NestedKey.Type
    )
        -> KeyedEncodingContainer<NestedKey>
    {
        let child = EncodingBox()
        append(child)
        return BoxEncoder(box: child, codingPath: codingPath).container(keyedBy: keyType)
    }
    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let child = EncodingBox()
        append(child)
        return BoxEncoder(box: child, codingPath: codingPath).unkeyedContainer()
    }
    mutating func superEncoder() -> any Encoder {
        let child = EncodingBox()
        append(child)
        return BoxEncoder(box: child, codingPath: codingPath)
    }
}

struct SingleBoxContainer: SingleValueEncodingContainer {
    let box: EncodingBox
    let codingPath: [any CodingKey]
    mutating func encodeNil() throws { box.content = .value(.null) }
    mutating func encode<T: Encodable>(_ value: T) throws {
        box.take(try encodeChild(value, path: codingPath))
    }
}
