import TandemCore

/// The API group and version of every Tandem resource; Calico's, so existing manifests apply unchanged.
public let calicoAPIVersion = "projectcalico.org/v3"

/// Kubernetes-style object metadata.
public struct ObjectMeta: Codable, Sendable, Equatable {
    public var name: String?
    public var generateName: String?
    public var namespace: String?
    public var selfLink: String?
    public var uid: String?
    public var resourceVersion: String?
    public var generation: Int64?
    public var creationTimestamp: String?
    public var deletionTimestamp: String?
    public var deletionGracePeriodSeconds: Int64?
    public var labels: [String: String]?
    public var annotations: [String: String]?
    public var ownerReferences: JSONValue?
    public var finalizers: [String]?
    public var managedFields: JSONValue?

    public init(name: String? = nil, namespace: String? = nil, labels: [String: String]? = nil) {
        self.name = name
        self.namespace = namespace
        self.labels = labels
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decodeIfPresent(String.self, forKey: .name)
        generateName = try container.decodeIfPresent(String.self, forKey: .generateName)
        namespace = try container.decodeIfPresent(String.self, forKey: .namespace)
        selfLink = try container.decodeIfPresent(String.self, forKey: .selfLink)
        uid = try container.decodeIfPresent(String.self, forKey: .uid)
        resourceVersion = try container.decodeIfPresent(String.self, forKey: .resourceVersion)
        generation = try container.decodeIfPresent(Int64.self, forKey: .generation)
        creationTimestamp = try container.decodeIfPresent(String.self, forKey: .creationTimestamp)
        deletionTimestamp = try container.decodeIfPresent(String.self, forKey: .deletionTimestamp)
        deletionGracePeriodSeconds = try container.decodeIfPresent(Int64.self, forKey: .deletionGracePeriodSeconds)
        // YAML reads `routeReflector: true` or `rack: 12` as a boolean or a number; Calico stores the label's
        // value as the string it was written as, and so does Tandem.
        labels = try container.decodeIfPresent([String: ScalarText].self, forKey: .labels)?.mapValues(\.text)
        annotations = try container.decodeIfPresent([String: ScalarText].self, forKey: .annotations)?.mapValues(\.text)
        ownerReferences = try container.decodeIfPresent(JSONValue.self, forKey: .ownerReferences)
        finalizers = try container.decodeIfPresent([String].self, forKey: .finalizers)
        managedFields = try container.decodeIfPresent(JSONValue.self, forKey: .managedFields)
    }
}

/// A label or annotation value: a string, or a boolean or number YAML typed, kept as its text.
struct ScalarText: Decodable {
    var text: String

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let text = try? container.decode(String.self) {
            self.text = text
        } else if let flag = try? container.decode(Bool.self) {
            text = flag ? "true" : "false"
        } else if let value = try? container.decode(JSONValue.self), case .number(let number) = value {
            text = number
        } else {
            throw DecodingError.typeMismatch(
                String.self,
                .init(codingPath: decoder.codingPath, debugDescription: "expected a string, a boolean or a number"))
        }
    }
}

/// Collects the problems found in one resource.
public struct Validator: Sendable {
    public private(set) var problems: [FieldError] = []
    public init() {}

    /// Records a problem with the field at `path` holding `value`.
    public mutating func fail(_ path: String, _ value: String?, _ message: String) {
        problems.append(FieldError(path: path, value: value.map { "\"\($0)\"" }, message: message))
    }

    /// Records a problem with a non-string value (a number, a list...).
    public mutating func fail(_ path: String, raw value: String, _ message: String) {
        problems.append(FieldError(path: path, value: value, message: message))
    }

    public var isValid: Bool { problems.isEmpty }
}

/// The spec of one resource kind: its fields, defaults and validation.
public protocol ResourceSpec: Codable, Sendable, Equatable {
    /// The kind this spec belongs to.
    static var kind: ResourceKind { get }
    /// The empty spec, for resources written without one.
    init()
    /// Fills in the defaults Calico stores (block size, modes, ...).
    mutating func applyDefaults(metadata: ObjectMeta)
    /// Checks the spec; `metadata` is given for rules that depend on the name.
    func validate(metadata: ObjectMeta, into validator: inout Validator)
    /// Things that are valid but probably not what the operator meant.
    func warnings(metadata: ObjectMeta) -> [String]
    /// The resource's `apiVersion`: Calico's for Calico's kinds, Kubernetes' for Services and EndpointSlices.
    static var apiVersion: String { get }
    /// Whether the fields sit at the top level of the object rather than under `spec` (EndpointSlice).
    static var isInline: Bool { get }
}

extension ResourceSpec {
    public static var apiVersion: String { calicoAPIVersion }
    public static var isInline: Bool { false }
    public mutating func applyDefaults(metadata: ObjectMeta) {}
    public func warnings(metadata: ObjectMeta) -> [String] { [] }
}

/// Any resource, whatever its kind: what the CLI and the store handle.
public protocol AnyResource: Sendable {
    var kind: ResourceKind { get }
    var metadata: ObjectMeta { get set }
    /// The full resource as a JSON tree, fields in Calico's order, unset fields left out.
    var json: JSONValue { get }
    mutating func applyDefaults()
    /// Every problem with the resource; empty when valid.
    func validate() -> [FieldError]
    /// Things that are valid but probably not what the operator meant.
    func warnings() -> [String]
}

extension AnyResource {
    /// `Kind "name"` or `Kind "namespace/name"`, for messages.
    public var displayName: String {
        let name = metadata.name ?? ""
        if kind.namespaced { return "\(kind.name) \"\(metadata.namespace ?? "default")/\(name)\"" }
        return "\(kind.name) \"\(name)\""
    }

    /// The datastore key of this resource.
    public var key: String { kind.key(name: metadata.name ?? "", namespace: metadata.namespace) }
}

/// A resource of one kind: `apiVersion`, `kind`, `metadata`, `spec`.
public struct Resource<Spec: ResourceSpec>: AnyResource, Codable, Equatable {
    public var apiVersion: String
    public var metadataValue: ObjectMeta
    public var spec: Spec
    /// Status reported by the system (Node, IPPool); kept as written, never validated.
    public var status: JSONValue?

    public var kind: ResourceKind { Spec.kind }
    public var metadata: ObjectMeta {
        get { metadataValue }
        set { metadataValue = newValue }
    }

    public init(metadata: ObjectMeta, spec: Spec = Spec()) {
        apiVersion = Spec.apiVersion
        metadataValue = metadata
        self.spec = spec
    }

    enum CodingKeys: String, CodingKey { case apiVersion, kind, metadata, spec, status }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        apiVersion = try container.decodeIfPresent(String.self, forKey: .apiVersion) ?? Spec.apiVersion
        _ = try container.decodeIfPresent(String.self, forKey: .kind)
        metadataValue = try container.decodeIfPresent(ObjectMeta.self, forKey: .metadata) ?? ObjectMeta()
        spec =
            Spec.isInline ? try Spec(from: decoder) : try container.decodeIfPresent(Spec.self, forKey: .spec) ?? Spec()
        status = try container.decodeIfPresent(JSONValue.self, forKey: .status)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(apiVersion, forKey: .apiVersion)
        try container.encode(Spec.kind.name, forKey: .kind)
        try container.encode(metadataValue, forKey: .metadata)
        if Spec.isInline { try spec.encode(to: encoder) } else { try container.encode(spec, forKey: .spec) }
        try container.encodeIfPresent(status, forKey: .status)
    }

    public var json: JSONValue { ValueEncoder.encode(self) }

    public mutating func applyDefaults() { spec.applyDefaults(metadata: metadataValue) }

    public func warnings() -> [String] {
        spec.warnings(metadata: metadataValue).map { "\(displayName): \($0)" }
    }

    public func validate() -> [FieldError] {
        var validator = Validator()
        if apiVersion != Spec.apiVersion {
            validator.fail("apiVersion", apiVersion, "must be \(Spec.apiVersion)")
        }
        validateMetadata(metadataValue, kind: Spec.kind, into: &validator)
        spec.validate(metadata: metadataValue, into: &validator)
        return validator.problems
    }
}

/// A resource that failed validation, with every problem found.
public struct ResourceValidationError: Error, Sendable, CustomStringConvertible {
    public var kind: String
    public var name: String
    public var problems: [FieldError]

    public init(kind: String, name: String, problems: [FieldError]) {
        self.kind = kind
        self.name = name
        self.problems = problems
    }

    /// The first few problems and a count of the rest (see ``ProblemList``).
    public var description: String {
        let head = "\(kind) \"\(ProblemList.clip(name))\" is invalid"
        if problems.count == 1 { return ProblemList.clipLines("\(head): \(problems[0])") }
        return head + ":\n"
            + ProblemList.summary(problems.lazy.map(\.description)).map { "  - \($0)" }.joined(separator: "\n")
    }
}
