import TandemCore
import TandemModel

/// A resource read from the datastore, with the revision that compare-and-swap compares.
public struct StoredResource: Sendable {
    public var resource: any AnyResource
    public var revision: Int64
}

/// What a write of resources did to each one.
public enum WriteOutcome: String, Sendable {
    case created, updated, deleted, unchanged
}

/// Why a resource operation failed, in the operator's terms.
public struct ResourceError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Resources on top of the key-value datastore: Calico's key layout, JSON values, create / apply /
/// replace / delete semantics, and the checks that need the rest of the store (pool overlap, fields that
/// cannot change). Every call writes all of its resources in one transaction or none.
public struct ResourceStore: Sendable {
    public let datastore: any Datastore
    /// Supplies `metadata.creationTimestamp` (RFC 3339) and `metadata.uid`; injected so this layer stays pure.
    let now: @Sendable () -> String
    let newUID: @Sendable () -> String
    /// Chooses Service addresses and NodePorts (random, as the API server does); injected so tests are repeatable.
    let random: RandomBelow

    /// How many times a write whose chosen address or NodePort another writer took meanwhile is retried with
    /// fresh reads (each lost race means another write succeeded, so this bounds the wait, not the outcome).
    static let allocationAttempts = 16

    public init(
        datastore: any Datastore, now: @escaping @Sendable () -> String, newUID: @escaping @Sendable () -> String
    ) {
        self.init(datastore: datastore, now: now, newUID: newUID, random: systemRandomBelow)
    }

    /// A store whose Service addresses and NodePorts are chosen with `random`.
    public init(
        datastore: any Datastore, now: @escaping @Sendable () -> String, newUID: @escaping @Sendable () -> String,
        random: @escaping RandomBelow
    ) {
        self.datastore = datastore
        self.now = now
        self.newUID = newUID
        self.random = random
    }

    /// Decodes stored bytes into a resource of `kind`, with `resourceVersion` from the store.
    func decode(_ keyValue: KeyValue, kind: ResourceKind) throws(ResourceError) -> StoredResource {
        var warnings: [String] = []
        // Stored values are JSON; the YAML reader remains for anything written otherwise.
        guard
            let document = (try? JSONValue.parse(json: keyValue.value))
                ?? String(validating: keyValue.value, as: UTF8.self).flatMap({
                    try? YAMLCodec.documents(from: $0, warnings: &warnings).first
                })
        else {
            throw ResourceError("stored value of \(keyValue.key) is not valid JSON")
        }
        do {
            var resource = try kind.decode(document)
            resource.metadata.resourceVersion = String(keyValue.modRevision)
            return StoredResource(resource: resource, revision: keyValue.modRevision)
        } catch {
            throw ResourceError("stored value of \(keyValue.key) is not a valid \(kind.name): \(error)")
        }
    }

    /// One resource, or nil.
    public func get(_ kind: ResourceKind, name: String, namespace: String? = nil) async throws -> StoredResource? {
        guard let keyValue = try await datastore.get(kind.key(name: name, namespace: namespace)) else { return nil }
        return try decode(keyValue, kind: kind)
    }

    /// Every resource of a kind (in one namespace, or all namespaces when nil), sorted by key.
    public func list(_ kind: ResourceKind, namespace: String? = nil) async throws -> [StoredResource] {
        let (items, _) = try await datastore.list(prefix: kind.keyPrefix(namespace: namespace))
        var result: [StoredResource] = []
        for item in items { result.append(try decode(item, kind: kind)) }
        return result
    }

    /// How a batch treats existing resources.
    public enum Mode: Sendable {
        /// Every resource must be new.
        case create
        /// New resources are created, existing ones replaced.
        case apply
        /// Every resource must exist.
        case replace
    }

    /// Writes `resources` (already validated) atomically; with `dryRun`, checks everything and writes nothing.
    /// Returns what happened to each resource, in order.
    ///
    /// `alsoWriting` joins raw key writes (with their own preconditions) to the same transaction.
    ///
    /// A Service is admitted as the Kubernetes API server admits it (``ServiceAdmission``): its IP families are
    /// defaulted from the cluster's ServiceCIDRs, its cluster IPs and NodePorts allocated or checked, and their
    /// records (`/tandem/serviceips/...`, `/tandem/nodeports/...`) created or released in the same transaction. A
    /// ServiceCIDR cannot lose a range that still holds allocated addresses.
    @discardableResult
    public func write(
        _ resources: [any AnyResource], mode: Mode, dryRun: Bool = false, alsoWriting extra: [Write] = []
    ) async throws
        -> [WriteOutcome]
    {
        var attempt = 1
        while true {
            do {
                return try await writeOnce(resources, mode: mode, dryRun: dryRun, alsoWriting: extra)
            } catch let lost as LostAllocationRace {
                guard attempt < Self.allocationAttempts else {
                    throw ResourceError(
                        "\(lost.error); other writers kept taking the chosen Service addresses or ports "
                            + "(\(attempt) attempts), nothing was written; try again")
                }
                attempt += 1
            }
        }
    }

    /// A transaction that failed because another writer created or changed an allocation record first.
    private struct LostAllocationRace: Error { var error: DatastoreError }

    private func writeOnce(
        _ resources: [any AnyResource], mode: Mode, dryRun: Bool, alsoWriting extra: [Write]
    ) async throws
        -> [WriteOutcome]
    {
        var writes: [Write] = extra
        var outcomes: [WriteOutcome] = []
        var problems: [String] = []
        var newPools: [IPPool] = []
        let timestamp = now()
        var allocations: ServiceAllocationSession?
        var allocationWrites: [Write] = []
        for original in resources {
            var resource = original
            resource.applyDefaults()
            let key = resource.key
            let existing = try await datastore.get(key)
            switch (mode, existing) {
            case (.create, .some):
                problems.append("\(resource.displayName) already exists")
                continue
            case (.replace, .none):
                problems.append("\(resource.displayName) does not exist")
                continue
            default: break
            }
            var metadata = resource.metadata
            let requestedVersion = metadata.resourceVersion
            metadata.resourceVersion = nil
            var previous: StoredResource?
            if let existing {
                let stored = try decode(existing, kind: resource.kind)
                previous = stored
                if let requestedVersion, !requestedVersion.isEmpty, requestedVersion != String(existing.modRevision) {
                    problems.append(
                        "\(resource.displayName) has been modified (resourceVersion \(existing.modRevision), manifest has \(requestedVersion)); get it again and reapply"
                    )
                    continue
                }
                metadata.uid = stored.resource.metadata.uid
                metadata.creationTimestamp = stored.resource.metadata.creationTimestamp
                problems += immutabilityProblems(old: stored.resource, new: resource)
            } else {
                metadata.uid = metadata.uid ?? newUID()
                metadata.creationTimestamp = metadata.creationTimestamp ?? timestamp
                if let pool = resource as? IPPool { newPools.append(pool) }
            }
            resource.metadata = metadata
            if let service = resource as? KubernetesService {
                if allocations == nil {
                    allocations = ServiceAllocationSession(
                        datastore: datastore, random: random,
                        ranges: ServiceRanges(try await serviceCIDRsAfter(resources)))
                }
                var admission = ServiceAdmission(service, old: previous?.resource as? KubernetesService)
                do {
                    try await admission.run(&allocations!)
                } catch let refusal as ServiceRefusal {
                    let name = "\(service.metadata.namespace ?? "default")/\(service.metadata.name ?? "")"
                    problems.append(
                        ResourceValidationError(kind: "Service", name: name, problems: refusal.problems).description)
                    continue
                }
                resource = admission.service
                allocationWrites += admission.writes
            }
            let bytes = Array(resource.json.jsonText(pretty: false).utf8)
            if let existing {
                if existing.value == bytes {
                    outcomes.append(.unchanged)
                    continue
                }
                writes.append(.update(key: key, value: bytes, ifRevision: existing.modRevision))
                outcomes.append(.updated)
            } else {
                writes.append(.create(key: key, value: bytes))
                outcomes.append(.created)
            }
        }
        if !newPools.isEmpty {
            // All new pools at once against one listing of the store (see PoolOverlaps).
            var overlaps = PoolOverlaps()
            overlaps.addStored(try await list(.ipPool).compactMap { $0.resource as? IPPool })
            for pool in newPools { overlaps.addNew(pool) }
            problems += overlaps.problems()
        }
        if resources.contains(where: { $0.kind == .serviceCIDR }) {
            problems += try await serviceRangeProblems(
                after: try await serviceCIDRsAfter(resources), releasedKeys: [])
        }
        if !problems.isEmpty { throw ResourceError(ProblemList.joined(problems)) }
        writes += allocationWrites
        if !dryRun && !writes.isEmpty {
            do {
                try await datastore.transact(writes)
            } catch {
                guard error.isConflict else { throw error }
                if let key = error.conflictKey, ServiceAllocationKeys.isAllocation(key) {
                    throw LostAllocationRace(error: error)
                }
                throw ResourceError(
                    "\(error); another writer changed the resources meanwhile, nothing was written; try again")
            }
        }
        return outcomes
    }

    /// Deletes the named resources atomically. Missing ones are an error unless `skipMissing`.
    public func delete(
        _ targets: [(kind: ResourceKind, name: String, namespace: String?)], skipMissing: Bool = false
    )
        async throws -> [WriteOutcome]
    {
        var writes: [Write] = []
        var outcomes: [WriteOutcome] = []
        var problems: [String] = []
        // A Service's addresses and NodePorts are released in the same transaction as its delete.
        var releases = ServiceAllocationSession(datastore: datastore, random: random, ranges: ServiceRanges([]))
        var deletedCIDRs: Set<String> = []
        for target in targets {
            let key = target.kind.key(name: target.name, namespace: target.namespace)
            guard let existing = try await datastore.get(key) else {
                if skipMissing {
                    outcomes.append(.unchanged)
                } else {
                    let label = target.kind.namespaced ? "\(target.namespace ?? "default")/\(target.name)" : target.name
                    problems.append("\(target.kind.name) \"\(label)\" does not exist")
                }
                continue
            }
            writes.append(.delete(key: key, ifRevision: existing.modRevision))
            outcomes.append(.deleted)
            if target.kind == .service,
                let service = try decode(existing, kind: .service).resource as? KubernetesService
            {
                writes += try await releases.releaseAll(of: service)
            }
            if target.kind == .serviceCIDR { deletedCIDRs.insert(target.name) }
        }
        if !deletedCIDRs.isEmpty {
            let remaining = try await list(.serviceCIDR).compactMap { $0.resource as? ServiceCIDR }.filter {
                !deletedCIDRs.contains($0.metadata.name ?? "")
            }
            problems += try await serviceRangeProblems(after: remaining, releasedKeys: releases.touched)
        }
        if !problems.isEmpty { throw ResourceError(ProblemList.joined(problems)) }
        if !writes.isEmpty { try await datastore.transact(writes) }
        return outcomes
    }

    /// Applies an RFC 7386 merge patch to a stored resource, validates the result and writes it back
    /// only if nobody changed it meanwhile.
    public func patch(
        _ kind: ResourceKind, name: String, namespace: String?, patch: JSONValue
    ) async throws
        -> any AnyResource
    {
        guard let stored = try await get(kind, name: name, namespace: namespace) else {
            throw ResourceError("\(kind.name) \"\(name)\" does not exist")
        }
        var merged = stored.resource.json.merging(patch: patch)
        merged.set("kind", .string(kind.name))
        var patched: any AnyResource
        do {
            patched = try kind.decode(merged)
        } catch {
            throw ResourceError("patch makes \(stored.resource.displayName) invalid: \(error)")
        }
        if patched.metadata.name != stored.resource.metadata.name
            || (kind.namespaced && patched.metadata.namespace != stored.resource.metadata.namespace)
        {
            throw ResourceError("a patch cannot change metadata.name or metadata.namespace")
        }
        let problems = patched.validate()
        if !problems.isEmpty {
            throw ResourceError(
                ResourceValidationError(kind: kind.name, name: name, problems: problems).description)
        }
        patched.metadata.resourceVersion = String(stored.revision)
        _ = try await write([patched], mode: .replace)
        return try await get(kind, name: name, namespace: namespace)?.resource ?? patched
    }

    /// The ServiceCIDRs once `resources` are written: the stored ones, replaced or joined by those of the batch.
    private func serviceCIDRsAfter(_ resources: [any AnyResource]) async throws -> [ServiceCIDR] {
        var byName: [String: ServiceCIDR] = [:]
        for stored in try await list(.serviceCIDR) {
            if let cidr = stored.resource as? ServiceCIDR { byName[cidr.metadata.name ?? ""] = cidr }
        }
        for case let cidr as ServiceCIDR in resources { byName[cidr.metadata.name ?? ""] = cidr }
        return Array(byName.values)
    }

    /// The problems of leaving only the ServiceCIDRs `after`: ranges that go while Services hold addresses there.
    /// The allocation records are listed only when a stored range actually goes.
    private func serviceRangeProblems(after: [ServiceCIDR], releasedKeys: Set<String>) async throws -> [String] {
        let before = try await list(.serviceCIDR).compactMap { $0.resource as? ServiceCIDR }
        let kept = Set(after.flatMap { $0.spec.networks.map(\.network) })
        guard before.contains(where: { $0.spec.networks.contains { !kept.contains($0.network) } }) else { return [] }
        let records = try await datastore.list(prefix: ServiceAllocationKeys.addressPrefix).items
        return serviceRangeRemovalProblems(before: before, after: after, records: records, releasedKeys: releasedKeys)
    }

    private func immutabilityProblems(old: any AnyResource, new: any AnyResource) -> [String] {
        guard let old = old as? IPPool, let new = new as? IPPool else { return [] }
        var problems: [String] = []
        if old.spec.network != new.spec.network {
            problems.append(
                "\(new.displayName): spec.cidr: CIDR cannot be changed (\(old.spec.cidr ?? "") -> \(new.spec.cidr ?? "")); follow IP pool migration guide to avoid corruption."
            )
        }
        if old.spec.effectiveBlockSize != new.spec.effectiveBlockSize {
            problems.append(
                "\(new.displayName): spec.blockSize: Block size cannot be changed (\(old.spec.effectiveBlockSize ?? 0) -> \(new.spec.effectiveBlockSize ?? 0)); follow IP pool migration guide to avoid corruption."
            )
        }
        if old.spec.effectiveAllowedUses.contains(.loadBalancer)
            && new.spec.effectiveAllowedUses.contains(where: { $0 != .loadBalancer })
        {
            problems.append(
                "\(new.displayName): spec.allowedUses: cannot change from LoadBalancer to Workload or Tunnel")
        }
        return problems
    }
}
