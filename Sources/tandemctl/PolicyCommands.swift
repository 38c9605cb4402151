import ArgumentParser
import Foundation
import TandemCore
import TandemModel
import TandemPolicy
import TandemSelector
import TandemStore

/// `tandemctl policy`: which policies select an endpoint, and what a selector matches.
struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy", abstract: "Network policy: what selects an endpoint, what a selector matches.",
        subcommands: [PolicySelecting.self, SelectorEval.self])
}

/// `tandemctl policy selecting ENDPOINT`: the policies that apply to a workload endpoint, in the order they are
/// evaluated, with their directions, and the rules compiled for each family.
struct PolicySelecting: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selecting",
        abstract: "Show the policies that select a workload endpoint (by endpoint name or pod name), in order.")

    @Argument(help: "The WorkloadEndpoint's name, or its pod's name.") var endpoint: String
    @Option(name: [.short, .long], help: "The endpoint's namespace.") var namespace: String = "default"
    @OptionGroup var options: DatastoreOptions

    func run() async throws {
        try await reportingErrors {
            let store = try options.resourceStore()
            let workloads = try await store.list(.workloadEndpoint).compactMap { $0.resource as? WorkloadEndpoint }
            guard
                let workload = workloads.first(where: {
                    ($0.metadata.namespace ?? "default") == namespace
                        && ($0.metadata.name == endpoint || $0.spec.pod == endpoint)
                })
            else {
                throw ResourceError("no workload endpoint or pod \"\(endpoint)\" in namespace \(namespace)")
            }
            let all = workloads.map { PolicyEndpoint($0, localTo: nil) }
            let input = PolicyInput(
                networkPolicies: try await store.list(.networkPolicy).compactMap { $0.resource as? NetworkPolicy },
                globalNetworkPolicies: try await store.list(.globalNetworkPolicy).compactMap {
                    $0.resource as? GlobalNetworkPolicy
                },
                profiles: try await store.list(.profile).compactMap { $0.resource as? Profile }, endpoints: all)
            guard let target = all.first(where: { $0.name == workload.metadata.name }) else { return }
            let labels = target.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
            print("Endpoint \(namespace)/\(target.name) (\(labels.joined(separator: ", ")))")
            let selecting = policiesSelecting(target, in: input)
            if selecting.isEmpty {
                print("No policy selects it: its traffic is allowed in both directions (or decided by its profiles).")
            }
            let plan = computePolicy(input, local: [target])
            for (position, policy) in selecting.enumerated() {
                let order = policy.order.map { "order \($0)" } ?? "no order"
                print(
                    "\(position + 1). \(policy.kind.name) \(policy.name) (\(order)): "
                        + policy.directions.map(\.rawValue).joined(separator: ", "))
                for direction in policy.directions {
                    let rules =
                        plan.endpoints.first { $0.direction == direction }?.policies.first { $0.name == policy.name }?
                        .rules ?? []
                    let families = Dictionary(grouping: rules, by: \.family).mapValues(\.count)
                    print(
                        "   \(direction.rawValue): \(families[.v4] ?? 0) IPv4 rule(s), \(families[.v6] ?? 0) IPv6 rule(s); "
                            + "what no rule allows is denied")
                }
            }
            for warning in ProblemList.summary(plan.warnings.lazy.map(\.description)) { print("warning: \(warning)") }
        }
    }
}

/// `tandemctl policy selector 'SELECTOR' --label k=v ...`: whether a selector matches a set of labels, with the
/// parse error's position when it does not parse. Exit status 0 when it matches, 1 when not.
struct SelectorEval: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selector", abstract: "Evaluate a selector against labels (exit 0 if it matches, 1 if not).")

    @Argument(help: "The selector, for example \"app == 'web' && has(tier)\".") var selector: String
    @Option(name: .customLong("label"), help: "A label key=value (repeat for more).") var labels: [String] = []

    func run() async throws {
        let parsed: Selector
        do {
            parsed = try Selector(parsing: selector)
        } catch {
            printError("\(error)")
            printError("  " + selector)
            printError("  " + String(repeating: " ", count: error.offset) + "^")
            throw ExitCode(2)
        }
        var map: [String: String] = [:]
        for label in labels {
            let parts = label.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty else {
                printError("--label \(label): expected key=value")
                throw ExitCode(2)
            }
            map[parts[0]] = parts[1]
        }
        let matches = parsed.matches(map)
        print("\(parsed.canonical): \(matches ? "matches" : "does not match")")
        if !matches { throw ExitCode(1) }
    }
}
