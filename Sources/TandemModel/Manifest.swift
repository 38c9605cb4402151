/// Reads manifests: YAML or JSON, one or many documents, `kind: List` and `<Kind>List` wrappers.
public enum Manifest {
    /// What a manifest holds: its resources in order, and warnings worth showing the operator.
    public struct Contents: Sendable {
        public var resources: [any AnyResource]
        public var warnings: [String]
    }

    /// Parses and validates every resource of `text`. Any problem in any document fails the whole
    /// manifest, so a caller never writes part of it.
    ///
    /// - Parameter source: a name for messages (a file path, or `stdin`).
    public static func parse(
        _ text: String, source: String = "input", validate: Bool = true
    ) throws(ManifestError)
        -> Contents
    {
        var warnings: [String] = []
        let documents: [JSONValue]
        do {
            documents = try YAMLCodec.documents(from: text, warnings: &warnings)
        } catch {
            throw ManifestError(source: source, problems: [error.message])
        }
        if documents.isEmpty { throw ManifestError(source: source, problems: ["no resources found"]) }
        var resources: [any AnyResource] = []
        var problems: [String] = []
        for (index, document) in documents.enumerated() {
            let label = documents.count > 1 ? "document \(index + 1)" : "document"
            expand(document, label: label, impliedKind: nil, into: &resources, problems: &problems)
        }
        if validate {
            for resource in resources {
                let found = resource.validate()
                if !found.isEmpty {
                    let name = resource.metadata.name ?? ""
                    problems.append(
                        ResourceValidationError(kind: resource.kind.name, name: name, problems: found).description)
                }
                warnings += resource.warnings()
            }
            problems += duplicateProblems(resources)
        }
        if !problems.isEmpty { throw ManifestError(source: source, problems: problems) }
        return Contents(resources: resources, warnings: warnings)
    }

    private static func expand(
        _ document: JSONValue, label: String, impliedKind: ResourceKind?, into resources: inout [any AnyResource],
        problems: inout [String]
    ) {
        // A bare list of resources, as calicoctl also accepts.
        if case .array(let items) = document, impliedKind == nil {
            for (index, item) in items.enumerated() {
                expand(
                    item, label: "\(label) item \(index + 1)", impliedKind: nil, into: &resources, problems: &problems)
            }
            return
        }
        guard case .object = document else {
            problems.append("\(label): expected a resource object, got \(document.brief)")
            return
        }
        let kindText = document["kind"]?.stringValue ?? impliedKind?.name
        guard let kindText else {
            problems.append("\(label): kind is required")
            return
        }
        let apiVersion = document["apiVersion"]?.stringValue
        // A list's apiVersion is its items' (`v1` for a List of Services); a resource's is its kind's.
        let listed = ResourceKind.named(kindText.hasSuffix("List") ? String(kindText.dropLast(4)) : kindText)
        let expected = listed.map(\.apiVersion) ?? calicoAPIVersion
        let accepted = kindText == "List" ? [calicoAPIVersion, "v1"] : [expected]
        if let apiVersion, !accepted.contains(apiVersion) {
            problems.append(
                "\(label): apiVersion \"\(apiVersion)\" (kind \(kindText)) is not a Tandem resource; expected apiVersion \(expected)"
            )
            return
        }
        if apiVersion == nil && impliedKind == nil {
            problems.append("\(label): apiVersion is required (apiVersion: \(expected))")
            return
        }
        if kindText == "List" || (kindText.hasSuffix("List") && ResourceKind.named(String(kindText.dropLast(4))) != nil)
        {
            let inner = kindText == "List" ? nil : ResourceKind.named(String(kindText.dropLast(4)))
            guard case .array(let items)? = document["items"] else {
                if document["items"] == nil || document["items"] == .null { return }
                problems.append("\(label): \(kindText).items must be a list")
                return
            }
            for (index, item) in items.enumerated() {
                expand(
                    item, label: "\(label) item \(index + 1)", impliedKind: inner, into: &resources, problems: &problems
                )
            }
            return
        }
        guard let kind = ResourceKind.named(kindText), kind.name == kindText || impliedKind != nil else {
            let known = ResourceKind.all.map(\.name).joined(separator: ", ")
            problems.append("\(label): unknown kind \"\(kindText)\"; Tandem resources are \(known)")
            return
        }
        if let impliedKind, impliedKind != kind {
            problems.append("\(label): kind \(kindText) inside a \(impliedKind.name)List")
            return
        }
        do {
            var resource = try kind.decode(document)
            if kind.namespaced && (resource.metadata.namespace ?? "").isEmpty {
                resource.metadata.namespace = "default"
            }
            // A workload endpoint's name follows from its identifiers; fill it in when left out, as Calico does.
            if var endpoint = resource as? WorkloadEndpoint, (endpoint.metadata.name ?? "").isEmpty,
                let derived = endpoint.spec.derivedName
            {
                endpoint.metadata.name = derived
                resource = endpoint
            }
            resources.append(resource)
        } catch {
            let name = document["metadata"]?["name"]?.stringValue ?? ""
            problems.append("\(label): \(kind.name) \"\(name)\" is invalid: \(error)")
        }
    }

    /// The same resource twice in one manifest is refused: which copy wins would be a guess.
    private static func duplicateProblems(_ resources: [any AnyResource]) -> [String] {
        var seen = Set<String>()
        var problems: [String] = []
        for resource in resources where !seen.insert(resource.key).inserted {
            problems.append("\(resource.displayName) appears more than once in the manifest")
        }
        return problems
    }
}

/// A manifest that cannot be used, with every problem found in it.
public struct ManifestError: Error, Sendable, CustomStringConvertible {
    public var source: String
    public var problems: [String]
    public init(source: String, problems: [String]) {
        self.source = source
        self.problems = problems
    }
    /// The first few problems and a count of the rest (see ``ProblemList``).
    public var description: String {
        if problems.count == 1 { return ProblemList.clipLines("\(source): \(problems[0])") }
        return "\(source):\n"
            + ProblemList.summary(problems).map { "  - " + $0.replacingOccurrences(of: "\n", with: "\n    ") }
            .joined(separator: "\n")
    }
}
