import ArgumentParser
import Foundation
import Logging
import TandemModel
import TandemStore

/// `'IPPool'` when every resource is of one kind, for calicoctl-style summaries.
func kindSummary(_ resources: [any AnyResource]) -> String {
    let kinds = Set(resources.map(\.kind.name))
    return kinds.count == 1 ? "\(resources.count) '\(kinds.first!)' resource(s)" : "\(resources.count) resource(s)"
}

/// Shared body of apply / create / replace.
func writeManifest(
    path: String, mode: ResourceStore.Mode, dryRun: Bool, verb: String, options: DatastoreOptions
)
    async throws
{
    try await reportingErrors {
        let contents = try Manifest.parse(try readManifest(path), source: path == "-" ? "stdin" : path)
        // As many warnings as rules is possible; the first few tell the operator what to fix.
        for warning in ProblemList.summary(contents.warnings) { printError("Warning: \(warning)") }
        // Calico's fields are accepted so its manifests apply; those Tandem does not act on are named.
        for case let configuration as FelixConfiguration in contents.resources
        where !configuration.spec.fieldsNotHonoured.isEmpty {
            printError(
                "Warning: FelixConfiguration \(configuration.metadata.name ?? ""): not honoured by Tandem, stored "
                    + "without effect: \(configuration.spec.fieldsNotHonoured.joined(separator: ", "))")
        }
        let store = try options.resourceStore()
        do {
            let outcomes = try await store.write(contents.resources, mode: mode, dryRun: dryRun)
            for (resource, outcome) in zip(contents.resources, outcomes) {
                logger.debug(
                    dryRun ? "validated resource" : "\(verb == "apply" ? "applied" : verb + "d") resource",
                    metadata: resourceFields(resource, outcome: dryRun ? "not written (--dry-run)" : outcome.rawValue))
            }
        } catch {
            throw ResourceError("Failed to \(verb) \(kindSummary(contents.resources)); nothing was written:\n\(error)")
        }
        if dryRun {
            print("Validated \(kindSummary(contents.resources)); nothing written (--dry-run)")
        } else {
            let past = verb == "apply" ? "applied" : verb + "d"
            print("Successfully \(past) \(kindSummary(contents.resources))")
        }
    }
}

/// A resource's identity and what became of it, as log fields.
func resourceFields(_ resource: any AnyResource, outcome: String) -> Logger.Metadata {
    var fields: Logger.Metadata = [
        "kind": "\(resource.kind.name)", "name": "\(resource.metadata.name ?? "")", "outcome": "\(outcome)",
    ]
    if let namespace = resource.metadata.namespace { fields["namespace"] = "\(namespace)" }
    return fields
}

/// `-f FILE|-`, shared by the commands that read manifests.
struct ManifestFile: ParsableArguments {
    @Option(name: [.short, .customLong("filename")], help: "Manifest file (YAML or JSON), or - for stdin.")
    var filename: String
}

/// `--dry-run`, shared by apply and create.
struct DryRun: ParsableArguments {
    @Flag(name: .customLong("dry-run"), help: "Validate against the datastore without writing.")
    var enabled = false
}

struct Apply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create resources, or replace them if they exist.")
    @OptionGroup var file: ManifestFile
    @OptionGroup var dryRun: DryRun
    @OptionGroup var options: DatastoreOptions

    func run() async throws {
        try await writeManifest(
            path: file.filename, mode: .apply, dryRun: dryRun.enabled, verb: "apply", options: options)
    }
}

struct Create: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create resources; fails if any exists.")
    @OptionGroup var file: ManifestFile
    @OptionGroup var dryRun: DryRun
    @OptionGroup var options: DatastoreOptions

    func run() async throws {
        try await writeManifest(
            path: file.filename, mode: .create, dryRun: dryRun.enabled, verb: "create", options: options)
    }
}

struct Replace: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Replace existing resources; fails if any is missing.")
    @OptionGroup var file: ManifestFile
    @OptionGroup var options: DatastoreOptions

    func run() async throws {
        try await writeManifest(path: file.filename, mode: .replace, dryRun: false, verb: "replace", options: options)
    }
}

/// Resolves a kind name given on the command line, or fails with the list of known kinds.
func resolveKind(_ text: String) throws -> ResourceKind {
    guard let kind = ResourceKind.named(text) else {
        throw ResourceError(
            "unknown resource kind \"\(text)\"; known kinds: " + ResourceKind.all.map(\.name).joined(separator: ", "))
    }
    return kind
}

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete resources named in a manifest, or one resource by kind and name.")
    @Option(name: [.short, .customLong("filename")], help: "Manifest file (YAML or JSON), or - for stdin.")
    var filename: String?
    @Argument(help: "Kind of the resource (with NAME, instead of -f).") var kind: String?
    @Argument(help: "Name of the resource.") var name: String?
    @Option(name: [.short, .long], help: "Namespace, for namespaced kinds.") var namespace: String?
    @Flag(name: .customLong("skip-not-exists"), help: "Do not fail on resources that do not exist.")
    var skipNotExists = false
    @OptionGroup var options: DatastoreOptions

    func validate() throws {
        if filename == nil && (kind == nil || name == nil) {
            throw ValidationError("give -f FILE, or KIND NAME")
        }
        if filename != nil && kind != nil { throw ValidationError("give either -f FILE or KIND NAME, not both") }
    }

    func run() async throws {
        try await reportingErrors {
            var targets: [(kind: ResourceKind, name: String, namespace: String?)] = []
            if let filename {
                let contents = try Manifest.parse(
                    try readManifest(filename), source: filename == "-" ? "stdin" : filename, validate: false)
                targets = contents.resources.map { ($0.kind, $0.metadata.name ?? "", $0.metadata.namespace) }
            } else if let kind, let name {
                let resolved = try resolveKind(kind)
                targets = [(resolved, name, resolved.namespaced ? (namespace ?? "default") : nil)]
            }
            let store = try options.resourceStore()
            let outcomes = try await store.delete(targets, skipMissing: skipNotExists)
            for (target, outcome) in zip(targets, outcomes) {
                logger.debug(
                    outcome == .deleted ? "deleted resource" : "resource did not exist (--skip-not-exists)",
                    metadata: target.namespace.map {
                        ["kind": "\(target.kind.name)", "name": "\(target.name)", "namespace": "\($0)"]
                    } ?? ["kind": "\(target.kind.name)", "name": "\(target.name)"])
            }
            let deleted = outcomes.filter { $0 == .deleted }.count
            let kinds = Set(targets.map(\.kind.name))
            let what = kinds.count == 1 ? "'\(kinds.first!)' " : ""
            print("Successfully deleted \(deleted) \(what)resource(s)")
        }
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case ps, wide, yaml, json
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show resources as a table, YAML or JSON.")
    @Argument(help: "Kind: ippool, bgppeer, node, networkpolicy, ...") var kind: String
    @Argument(help: "Name of one resource.") var name: String?
    @Option(name: .shortAndLong, help: "Output: ps (table, default), wide, yaml, json.") var output: OutputFormat = .ps
    @Option(name: [.short, .long], help: "Namespace, for namespaced kinds.") var namespace: String?
    @Flag(name: [.customShort("A"), .customLong("all-namespaces")], help: "All namespaces.") var allNamespaces = false
    @OptionGroup var options: DatastoreOptions

    func run() async throws {
        try await reportingErrors {
            let resolved = try resolveKind(kind)
            let store = try options.resourceStore()
            let scope: String? = resolved.namespaced && !allNamespaces ? (namespace ?? "default") : nil
            var resources: [any AnyResource]
            if let name {
                guard let stored = try await store.get(resolved, name: name, namespace: scope) else {
                    let label = resolved.namespaced ? "\(scope ?? "default")/\(name)" : name
                    throw ResourceError("\(resolved.name) \"\(label)\" does not exist")
                }
                resources = [stored.resource]
            } else {
                resources = try await store.list(resolved, namespace: scope).map(\.resource)
            }
            switch output {
            case .ps, .wide:
                let wide = output == .wide
                var context = TableContext()
                if resolved == .node,
                    let config = try await store.get(.bgpConfiguration, name: "default")?.resource as? BGPConfiguration
                {
                    context.globalASNumber = config.spec.effectiveASNumber
                }
                var columns = wide ? resolved.wideColumns : resolved.columns
                var rows = resources.map { resolved.tableRow($0, wide: wide, context: context) }
                // Like calicoctl, the NAMESPACE column appears when a namespace was asked for.
                if resolved.namespaced && (allNamespaces || namespace != nil) {
                    columns.insert("NAMESPACE", at: 0)
                    rows = zip(resources, rows).map { [$0.metadata.namespace ?? "default"] + $1 }
                }
                print(renderTable(columns: columns, rows: rows), terminator: "")
            case .yaml, .json:
                let document: JSONValue =
                    name != nil
                    ? resources[0].json
                    : .object([
                        ("apiVersion", .string(resolved.apiVersion == calicoAPIVersion ? calicoAPIVersion : "v1")),
                        ("items", .array(resources.map(\.json))),
                        ("kind", .string(resolved.name + "List")),
                        (
                            "metadata",
                            .object([("resourceVersion", .string(String(try await store.datastore.currentRevision())))])
                        ),
                    ])
                print(
                    output == .yaml ? YAMLCodec.yamlText(document) : document.jsonText(),
                    terminator: output == .json ? "\n" : "")
            }
        }
    }
}

/// The table calicoctl prints (Go tabwriter, minimum width 5, padding 3): every cell, the last one too, is
/// padded to its column's width plus three spaces, and a blank line ends the table.
func renderTable(columns: [String], rows: [[String]]) -> String {
    var widths = columns.map(\.count)
    for row in rows {
        for (index, cell) in row.enumerated() where index < widths.count {
            widths[index] = max(widths[index], cell.count)
        }
    }
    let padded = widths.map { max($0 + 3, 5) }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { $1 + String(repeating: " ", count: padded[$0] - $1.count) }.joined() + "\n"
    }
    return ([columns] + rows).map(line).joined() + "\n"
}

struct Patch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change fields of a resource with a JSON merge patch (RFC 7386).")
    @Argument(help: "Kind of the resource.") var kind: String
    @Argument(help: "Name of the resource.") var name: String
    @Option(name: [.short, .customLong("patch")], help: "The patch, as JSON: '{\"spec\":{\"natOutgoing\":true}}'.")
    var patch: String
    @Option(name: [.short, .long], help: "Namespace, for namespaced kinds.") var namespace: String?
    @OptionGroup var options: DatastoreOptions

    func run() async throws {
        try await reportingErrors {
            let resolved = try resolveKind(kind)
            var warnings: [String] = []
            let documents: [JSONValue]
            do {
                documents = try YAMLCodec.documents(from: patch, warnings: &warnings)
            } catch {
                throw ResourceError("invalid patch \(patch): \(error)")
            }
            guard documents.count == 1, case .object = documents[0] else {
                throw ResourceError("invalid patch \(patch): expected one JSON object")
            }
            let store = try options.resourceStore()
            let patched = try await store.patch(
                resolved, name: name, namespace: resolved.namespaced ? (namespace ?? "default") : nil,
                patch: documents[0])
            logger.debug("patched resource", metadata: resourceFields(patched, outcome: "updated"))
            print("Successfully patched 1 '\(resolved.name)' resource")
        }
    }
}
