/// One kind of resource: its names, whether it lives in a namespace, how to read it and how `get`
/// prints it.
public struct ResourceKind: Sendable, Hashable, CustomStringConvertible {
    /// The kind as written in manifests: `IPPool`.
    public let name: String
    /// The plural used in datastore keys: `ippools`.
    public let plural: String
    /// Other names the CLI accepts (lower-case): `ippool`, `ipp`, `pool`...
    public let aliases: [String]
    /// Whether names are per namespace (NetworkPolicy, WorkloadEndpoint).
    public let namespaced: Bool
    /// Columns of `get` (default) and `get -o wide`.
    public let columns: [String]
    public let wideColumns: [String]
    /// The `apiVersion` its manifests carry.
    public let apiVersion: String
    let decodeResource: @Sendable (JSONValue) throws(FieldError) -> any AnyResource
    let row: @Sendable (any AnyResource, _ wide: Bool, TableContext) -> [String]

    public static func == (lhs: ResourceKind, rhs: ResourceKind) -> Bool { lhs.name == rhs.name }
    public func hash(into hasher: inout Hasher) { hasher.combine(name) }
    public var description: String { name }

    static func make<Spec: ResourceSpec>(
        _ spec: Spec.Type, name: String, plural: String, aliases: [String], namespaced: Bool = false,
        columns: [String], wideColumns: [String],
        row: @escaping @Sendable (Resource<Spec>, Bool, TableContext) -> [String]
    ) -> ResourceKind {
        ResourceKind(
            name: name, plural: plural, aliases: aliases, namespaced: namespaced, columns: columns,
            wideColumns: wideColumns, apiVersion: Spec.apiVersion,
            decodeResource: { value throws(FieldError) in try StrictDecoder.decode(Resource<Spec>.self, from: value) },
            row: { resource, wide, context in row(resource as! Resource<Spec>, wide, context) })
    }

    /// Reads a resource of this kind from a document tree; unknown fields and wrong types are errors.
    public func decode(_ value: JSONValue) throws(FieldError) -> any AnyResource { try decodeResource(value) }

    /// The table cells of `resource` for `get`.
    public func tableRow(_ resource: any AnyResource, wide: Bool, context: TableContext = TableContext()) -> [String] {
        row(resource, wide, context)
    }

    /// Every kind Tandem knows.
    public static let all: [ResourceKind] = [
        .ipPool, .ipamConfiguration, .bgpConfiguration, .bgpPeer, .felixConfiguration, .networkPolicy,
        .globalNetworkPolicy, .node, .hostEndpoint, .workloadEndpoint, .profile, .service, .endpointSlice,
        .serviceCIDR,
    ]

    /// Finds a kind by any accepted spelling: `IPPool`, `ippool`, `ippools`, `ipp`, `IPPoolList`...
    public static func named(_ text: String) -> ResourceKind? {
        let lower = text.lowercased()
        return all.first { kind in
            kind.name.lowercased() == lower || kind.plural == lower || kind.aliases.contains(lower)
        }
    }

    /// The datastore key prefix of every resource of this kind (within `namespace` when given).
    public func keyPrefix(namespace: String? = nil) -> String {
        let base = "/calico/resources/v3/projectcalico.org/\(plural)/"
        if namespaced, let namespace { return base + namespace + "/" }
        return base
    }

    /// The datastore key of one resource.
    public func key(name: String, namespace: String? = nil) -> String {
        keyPrefix(namespace: namespaced ? (namespace ?? "default") : nil) + name
    }
}
