import Yams

/// Why a manifest could not be read at all (before any resource is looked at).
public struct ManifestSyntaxError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Reads and writes YAML (and JSON, which is read as YAML) as ``JSONValue`` trees.
public enum YAMLCodec {
    /// Parses every document of a (multi-document) YAML or JSON text. Empty documents are skipped.
    ///
    /// Scalars follow YAML 1.1 resolution as Kubernetes tooling does (`true`, `yes`, `on` are booleans
    /// when unquoted). A key given twice in one mapping keeps its last value, as calicoctl does, and is
    /// reported in `warnings` so the operator learns that one of the values was ignored.
    public static func documents(
        from text: String, warnings: inout [String]
    ) throws(ManifestSyntaxError)
        -> [JSONValue]
    {
        // Bounds, so a small hostile text cannot take the machine: aliases re-use a subtree, and nested ones expand
        // exponentially (484 bytes of them reached 2 GB).
        guard text.utf8.count <= Self.maximumBytes else {
            throw ManifestSyntaxError(
                "YAML of \(text.utf8.count) bytes refused: at most \(Self.maximumBytes) bytes are read")
        }
        var source = text
        // The YAML parser refuses a mapping with a repeated key outright. Kubernetes tooling keeps the last
        // value instead, and manifests in the wild rely on it, so each earlier occurrence is renamed with a
        // marker and dropped (with a warning) when the tree is built.
        for attempt in 0..<1000 {
            var documents: [JSONValue] = []
            do {
                var sequence = try Yams.compose_all(yaml: source)
                var budget = Self.maximumValues
                while let node = sequence.next() {
                    guard documents.count < Self.maximumDocuments else {
                        throw ManifestSyntaxError("more than \(Self.maximumDocuments) YAML documents refused")
                    }
                    // Counted first, without building anything: an alias bomb is refused in a fraction of a second.
                    var count = budget
                    try Self.count(node, depth: 0, budget: &count)
                    documents.append(try convert(node, path: "", depth: 0, budget: &budget, warnings: &warnings))
                }
                if let error = sequence.error { throw error }
                return documents.filter { $0 != .null }
            } catch YamlError.duplicatedKeysInMapping(let keys, let context) {
                guard let renamed = renameKey(keys.first ?? "", at: context.mark, in: source, marker: attempt) else {
                    throw ManifestSyntaxError("cannot parse YAML: key \"\(keys.first ?? "")\" is given more than once")
                }
                source = renamed
            } catch let error as ManifestSyntaxError {
                throw error
            } catch {
                throw ManifestSyntaxError("cannot parse YAML: \(error)")
            }
        }
        throw ManifestSyntaxError("cannot parse YAML: too many repeated keys")
    }

    static let duplicateMarker = "~~tandem-duplicate~~"

    /// At most this many bytes of YAML, documents, values (after aliases are expanded) and levels of nesting.
    public static let maximumBytes = 8 << 20
    public static let maximumDocuments = 100_000
    public static let maximumValues = 2_000_000
    public static let maximumDepth = 64

    /// Renames the key `key` that starts at `mark` (trying the 1-based and 0-based readings of the mark).
    private static func renameKey(_ key: String, at mark: Mark, in text: String, marker: Int) -> String? {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        for (line, column) in [
            (mark.line - 1, mark.column - 1), (mark.line, mark.column), (mark.line - 1, mark.column),
        ] {
            guard line >= 0, line < lines.count, column >= 0 else { continue }
            let characters = Array(lines[line])
            guard column + key.count <= characters.count else { continue }
            let found = String(characters[column..<(column + key.count)])
            var quoted = false
            if found != key {
                // A quoted key: "key" or 'key'.
                guard column + key.count + 2 <= characters.count,
                    String(characters[(column + 1)..<(column + 1 + key.count)]) == key
                else { continue }
                quoted = true
            }
            let end = column + key.count + (quoted ? 1 : 0)
            lines[line] = String(characters[..<end]) + "\(duplicateMarker)\(marker)" + String(characters[end...])
            return lines.joined(separator: "\n")
        }
        return nil
    }

    /// Walks `node` as ``convert`` would, counting values against `budget` and levels against the maximum depth.
    private static func count(_ node: Yams.Node, depth: Int, budget: inout Int) throws(ManifestSyntaxError) {
        budget -= 1
        guard budget >= 0 else {
            throw ManifestSyntaxError("YAML expands to more than \(maximumValues) values (nested aliases?); refused")
        }
        guard depth <= maximumDepth else {
            throw ManifestSyntaxError("YAML nested deeper than \(maximumDepth) levels; refused")
        }
        switch node {
        case .sequence(let sequence):
            for item in sequence { try count(item, depth: depth + 1, budget: &budget) }
        case .mapping(let mapping):
            for (_, value) in mapping { try count(value, depth: depth + 1, budget: &budget) }
        default: break
        }
    }

    private static func convert(
        _ node: Yams.Node, path: String, depth: Int, budget: inout Int, warnings: inout [String]
    ) throws -> JSONValue {
        budget -= 1
        guard budget >= 0 else {
            throw ManifestSyntaxError(
                "YAML expands to more than \(maximumValues) values (nested aliases?); refused at \(path.isEmpty ? "top level" : path)"
            )
        }
        guard depth <= maximumDepth else {
            throw ManifestSyntaxError("YAML nested deeper than \(maximumDepth) levels; refused at \(path)")
        }
        switch node {
        case .scalar(let scalar):
            // Explicit tags (`!!str 123`) win; plain scalars resolve by YAML 1.1 rules; quoted ones are strings.
            let explicit = Tag.Name(rawValue: scalar.tag.rawValue)
            let tag: Tag.Name =
                explicit != .implicit && explicit != .nonSpecific && scalar.tag.rawValue != "?"
                ? explicit : scalar.style == .plain ? Resolver.default.resolveTag(of: node) : .str
            // YAML 1.1's base-60 numbers (`64512:10`, `1:30.5`) are strings to Go's YAML, which Calico and
            // kubectl read manifests with, and to YAML 1.2: BGP communities and times must stay as written.
            if tag == .int || tag == .float, scalar.string.contains(":") { return .string(scalar.string) }
            switch tag {
            case .null: return .null
            case .bool: return .bool(Bool.construct(from: scalar) ?? false)
            case .int:
                if let value = Int.construct(from: scalar) { return .number(String(value)) }
                return .string(scalar.string)
            case .float:
                if let value = Double.construct(from: scalar), value.isFinite {
                    return .number(scalar.string.filter { $0 != "_" })
                }
                return .string(scalar.string)
            default: return .string(scalar.string)
            }
        case .sequence(let sequence):
            var items: [JSONValue] = []
            for (index, item) in sequence.enumerated() {
                items.append(
                    try convert(item, path: "\(path)[\(index)]", depth: depth + 1, budget: &budget, warnings: &warnings)
                )
            }
            return .array(items)
        case .mapping(let mapping):
            var object = JSONValue.object([])
            for (keyNode, valueNode) in mapping {
                guard let key = keyNode.scalar?.string else {
                    throw ManifestSyntaxError("mapping key at \(path.isEmpty ? "top level" : path) is not a scalar")
                }
                if let marker = key.range(of: duplicateMarker) {
                    let name = String(key[..<marker.lowerBound])
                    let childPath = path.isEmpty ? name : "\(path).\(name)"
                    warnings.append("field \(childPath) is given more than once; only the last value is used")
                    continue
                }
                let childPath = path.isEmpty ? key : "\(path).\(key)"
                object.set(
                    key, try convert(valueNode, path: childPath, depth: depth + 1, budget: &budget, warnings: &warnings)
                )
            }
            return object
        case .alias:
            throw ManifestSyntaxError("unresolved YAML alias at \(path)")
        }
    }

    /// YAML text for a value, block style, two-space indent, keys in the value's order.
    public static func yamlText(_ value: JSONValue) -> String {
        (try? Yams.serialize(node: node(for: value), indent: 2, width: -1, allowUnicode: true)) ?? value.jsonText()
    }

    private static func node(for value: JSONValue) -> Yams.Node {
        switch value {
        case .null: Yams.Node("null", Tag(.null))
        case .bool(let flag): Yams.Node(flag ? "true" : "false", Tag(.bool))
        case .number(let text): Yams.Node(text, Tag(.int))
        case .string(let text): Yams.Node(text, Tag(.str), needsQuoting(text) ? .singleQuoted : .plain)
        case .array(let items): Yams.Node(items.map(node(for:)))
        case .object(let pairs): Yams.Node(pairs.map { (Yams.Node($0.key), node(for: $0.value)) })
        }
    }

    /// Whether a plain scalar would read back as something other than this string.
    private static func needsQuoting(_ text: String) -> Bool {
        let resolved = Resolver.default.resolveTag(of: Yams.Node(text))
        return resolved != .str || text.isEmpty
    }
}
