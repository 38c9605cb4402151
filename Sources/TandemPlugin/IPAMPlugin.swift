import Foundation
import Synchronization
import TandemCNI
import TandemCore
import TandemIPAM
import TandemStore

/// The tandem-ipam plugin's work for one invocation, also used in-process by the `tandem` plugin when its IPAM
/// type is tandem-ipam (no second process per pod).
struct IPAMPlugin {
    let network: String
    let ipamConfig: IPAMConfig
    let ipam: IPAM
    let host: String
    let handle: String

    init(
        network: String, config: [String: Any], containerID: String, store: any Datastore,
        environment: [String: String], cache: IPAMCache? = nil
    ) throws(CNIError) {
        self.network = network
        ipamConfig = try IPAMConfig(network: config)
        ipam = IPAM(store: store, nanoseconds: { UInt64(Date().timeIntervalSince1970 * 1e9) }, cache: cache)
        host = nodeName(config: config, environment: environment)
        handle = "\(network).\(containerID)"
    }

    /// ADD: one address per enabled family with the block's prefix, or the `IP=` addresses as /32 and /128. The
    /// same ADD twice returns the same addresses.
    func add(args: [String: String]) async throws -> [CIDR] {
        try await addReportingFresh(args: args).addresses
    }

    /// ADD, also saying whether the addresses were assigned by this call (false: the handle already held them,
    /// so a failed pod ADD must not release them: they may be a running pod's).
    func addReportingFresh(args: [String: String]) async throws -> (addresses: [CIDR], fresh: Bool) {
        let (addresses, fresh) = try await ipamGate.serialize(host) {
            // With the agent's cache, a new pod's addresses are one transaction that also creates its handle; a
            // handle that exists already (a repeated ADD) is looked at below, as without the cache.
            if args["IP"] == nil, ipam.cache != nil {
                let outcome: IPAM.OneTransactionOutcome
                do {
                    outcome = try await ipam.assignInOneTransaction(autoAssignRequest(args: args))
                } catch {
                    throw Self.assignmentFailure(error)
                }
                if case .assigned(let assignment) = outcome { return (assignment.ipv4 + assignment.ipv6, true) }
            }
            let held = try await ipam.addresses(ofHandle: handle)
            if !held.isEmpty { return (held, false) }
            return (try await assign(args: args), true)
        }
        // Addresses asked for by name (`IP=`) are single addresses, /32 and /128, as Calico returns them; assigned
        // ones carry their block's prefix.
        if args["IP"] != nil { return (addresses.map { CIDR(host: $0.address) }, fresh) }
        return (addresses, fresh)
    }

    /// The pod's allocation attributes: the node, the time, and for a Kubernetes pod its name and namespace.
    private func attributes(args: [String: String]) -> [String: String] {
        var attributes = [
            "node": host, "timestamp": Timestamp.rfc3339(secondsSinceEpoch: Int64(Date().timeIntervalSince1970)),
        ]
        // Calico records the pod only for a Kubernetes pod (both names given); another runtime's container is
        // known by its handle alone.
        if let pod = kubernetesPod(args) {
            attributes["pod"] = pod.name
            attributes["namespace"] = pod.namespace
        }
        return attributes
    }

    /// The automatic assignment the configuration asks for: one address per enabled family.
    private func autoAssignRequest(args: [String: String]) -> AutoAssignRequest {
        AutoAssignRequest(
            num4: ipamConfig.assignIPv4 ? 1 : 0, num6: ipamConfig.assignIPv6 ? 1 : 0, handle: handle,
            attributes: attributes(args: args), host: host, ipv4Pools: ipamConfig.ipv4Pools,
            ipv6Pools: ipamConfig.ipv6Pools)
    }

    /// An assignment's failure as the runtime should see it: a datastore failure is worth another try.
    private static func assignmentFailure(_ error: any Error) -> CNIError {
        if case IPAMError.datastore(let message) = error {
            // The datastore failed (etcd unreachable, a write whose outcome is unknown): worth another try.
            return CNIError(
                code: CNIError.tryAgainLater, "datastore error during IP address assignment", details: message)
        }
        return CNIError(code: CNIError.ipamFailure, "IP address assignment failed", details: "\(error)")
    }

    private func assign(args: [String: String]) async throws -> [CIDR] {
        let attributes = attributes(args: args)
        if let requested = args["IP"] {
            for text in requested.split(separator: ",") {
                let address: IPAddress
                do {
                    address = try IPAddress(String(text))
                } catch {
                    try? await ipam.releaseByHandle(handle)
                    throw CNIError(code: CNIError.invalidEnvironment, "invalid CNI_ARGS IP", details: "\(error)")
                }
                do {
                    try await ipam.assignIP(address, handle: handle, attributes: attributes, host: host)
                } catch {
                    try? await ipam.releaseByHandle(handle)
                    throw CNIError(code: CNIError.ipamFailure, "cannot assign \(address)", details: "\(error)")
                }
            }
            return try await ipam.addresses(ofHandle: handle)
        }
        do {
            let assignment = try await ipam.autoAssign(autoAssignRequest(args: args))
            return assignment.ipv4 + assignment.ipv6
        } catch {
            throw Self.assignmentFailure(error)
        }
    }

    /// DEL: releases everything the handle holds; nothing held is success.
    func delete() async throws {
        try await ipamGate.serialize(host) { try await ipam.releaseByHandle(handle) }
    }

    /// CHECK: the handle holds an address of every family the configuration asks for.
    func check() async throws {
        let held = try await ipam.addresses(ofHandle: handle)
        if held.isEmpty {
            throw CNIError(code: CNIError.ipamFailure, "no addresses are allocated for \(handle)")
        }
        let families = Set(held.map(\.family))
        for (wanted, family) in [(ipamConfig.assignIPv4, IPFamily.v4), (ipamConfig.assignIPv6, .v6)]
        where wanted && !families.contains(family) {
            throw CNIError(code: CNIError.ipamFailure, "the allocation of \(handle) has no \(family) address")
        }
    }

    /// STATUS: the store answers and an enabled pool exists for each family the configuration assigns.
    func status() async throws {
        let pools = try await ipam.pools().filter { $0.spec.disabled != true }
        for (wanted, family) in [(ipamConfig.assignIPv4, IPFamily.v4), (ipamConfig.assignIPv6, .v6)]
        where wanted && !pools.contains(where: { $0.spec.network?.family == family }) {
            throw CNIError(
                code: CNIError.notAvailable, "the plugin is not available", details: "no enabled \(family) IP pool")
        }
    }

    /// GC: releases this network's allocations whose container is not among the valid attachments.
    /// The runtime lists only its own node's attachments, so only this node's allocations are candidates: a
    /// handle whose addresses name another node (or no node) is left alone. `<network>.<container>` with a
    /// container ID free of dots, so that network `a` never collects the handles of network `a.b`.
    func garbageCollect(validContainers: Set<String>) async throws {
        try await ipamGate.serialize(host) {
            for held in try await ipam.handles() where held.hasPrefix(network + ".") {
                let container = String(held.dropFirst(network.count + 1))
                guard !container.contains("."), !validContainers.contains(container),
                    try await ipam.nodes(ofHandle: held) == [host]
                else { continue }
                try await ipam.releaseByHandle(held)
            }
        }
    }
}

/// The node name: the configuration's `nodename` (an empty one is unset, as in Calico), else `NODENAME`, else the
/// host name lower-cased (Calico's order; Kubernetes node names are lower case).
func nodeName(config: [String: Any], environment: [String: String]) -> String {
    (config["nodename"] as? String).flatMap { $0.isEmpty ? nil : $0 } ?? environment["NODENAME"]
        ?? ProcessInfo.processInfo.hostName.trimmingCharacters(in: .whitespaces).lowercased()
}

/// `cni.dev/valid-attachments` (CNI 1.1.0 GC), or `cni.dev/attachments` as some runtimes spell it. GC releases
/// everything of this node not listed, so a list that is missing or malformed is an error, never an empty list:
/// collecting on it would release every running pod's addresses.
func validContainers(config: [String: Any]) throws(CNIError) -> Set<String> {
    let key = config["cni.dev/valid-attachments"] != nil ? "cni.dev/valid-attachments" : "cni.dev/attachments"
    guard let value = config[key] else {
        throw CNIError(
            code: CNIError.invalidConfig, "GC needs cni.dev/valid-attachments in the network configuration",
            details: "without the list of live attachments nothing can be told apart from garbage; nothing released")
    }
    guard let attachments = value as? [Any] else {
        throw CNIError(
            code: CNIError.invalidConfig, "\(key) must be a list of attachments",
            details: "got \(String(describing: value).prefix(200)); nothing released")
    }
    var containers: Set<String> = []
    for (index, attachment) in attachments.enumerated() {
        guard let entry = attachment as? [String: Any], let container = entry["containerID"] as? String,
            !container.isEmpty
        else {
            throw CNIError(
                code: CNIError.invalidConfig, "\(key)[\(index)] has no containerID",
                details: "got \(String(describing: attachment).prefix(200)); nothing released")
        }
        containers.insert(container)
    }
    return containers
}

/// The IPAM plugin's result: addresses with their block's prefix, and a default route per family.
func ipamResult(_ cidrs: [CIDR]) -> CNIResult {
    CNIResult(
        ips: cidrs.map { CNIResult.IP(address: $0.description) },
        routes: Array(Set(cidrs.map(\.family))).sorted { $0.rawValue < $1.rawValue }.map {
            CNIResult.Route(dst: $0 == .v4 ? "0.0.0.0/0" : "::/0")
        })
}

/// Assignments and releases made by this process for one node, one at a time. Correctness never depends on it
/// (every write is a compare-and-swap); it keeps the agent's concurrent calls for a node from racing each other for
/// the node's blocks and retrying, as Calico's IPAM plugin does with its host-wide lock. Calls for different nodes
/// (one agent serving several, as in a benchmark) use different blocks and run at once.
let ipamGate = KeyedSerialGate()

/// A first-come, first-served lock for async code.
final class SerialGate: Sendable {
    init() {}

    private let state = Mutex<(busy: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func enter() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let admitted = state.withLock { state -> Bool in
                if !state.busy {
                    state.busy = true
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if admitted { continuation.resume() }
        }
    }

    func leave() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.busy = false
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}

/// One `SerialGate` per key (a container): calls for the same key run one after another, others at once. The node
/// agent uses it so that a runtime's DEL waits for the ADD it is cleaning up after, even when the runtime gave up
/// waiting for that ADD.
public final class KeyedSerialGate: Sendable {
    private let gates = Mutex<[String: (gate: SerialGate, users: Int)]>([:])

    public init() {}

    public func serialize<T>(_ key: String, _ body: () async throws -> T) async rethrows -> T {
        let gate = gates.withLock { gates -> SerialGate in
            let entry = gates[key] ?? (SerialGate(), 0)
            gates[key] = (entry.gate, entry.users + 1)
            return entry.gate
        }
        await gate.enter()
        defer {
            gate.leave()
            gates.withLock { gates in
                guard let entry = gates[key] else { return }
                gates[key] = entry.users > 1 ? (entry.gate, entry.users - 1) : nil
            }
        }
        return try await body()
    }
}
