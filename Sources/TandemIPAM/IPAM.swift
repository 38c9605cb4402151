import TandemCore
import TandemModel
import TandemSelector
import TandemStore

/// Why an IPAM call failed, in the operator's terms.
public enum IPAMError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No pool can serve the request (none configured, none selects the node, wrong use...).
    case noPools(String)
    /// The pools are full, or the node may not claim more blocks; the message says which and why.
    case exhausted(String)
    /// The address is outside every enabled pool.
    case notInPool(String)
    /// The address is already allocated.
    case alreadyAssigned(String)
    /// The address is not allocated (release of a free address).
    case notAssigned(String)
    /// Too many concurrent writers kept winning the compare-and-swap race.
    case tooManyRetries
    /// A stored IPAM record could not be read.
    case corrupt(String)
    /// The datastore failed.
    case datastore(String)

    public var description: String {
        switch self {
        case .noPools(let message), .exhausted(let message), .corrupt(let message), .datastore(let message):
            message
        case .notInPool: "The provided IP address is not in a configured pool\n"
        case .alreadyAssigned(let address): "Address already assigned in block: \(address)"
        case .notAssigned(let address): "IP address \(address) is not assigned"
        case .tooManyRetries: "Max retries hit - excessive concurrent IPAM requests"
        }
    }
}

/// The addresses one AutoAssign handed out, each with its block's prefix length (callers narrow to /32, /128).
public struct Assignment: Sendable, Equatable {
    public var ipv4: [CIDR] = []
    public var ipv6: [CIDR] = []
    public init(ipv4: [CIDR] = [], ipv6: [CIDR] = []) {
        self.ipv4 = ipv4
        self.ipv6 = ipv6
    }
}

/// An AutoAssign request: how many addresses of each family, for whom, from which pools.
public struct AutoAssignRequest: Sendable {
    public var num4: Int
    public var num6: Int
    public var handle: String
    public var attributes: [String: String]
    public var host: String
    /// Pools by CIDR or name; empty means every pool that selects the host.
    public var ipv4Pools: [String]
    public var ipv6Pools: [String]
    /// Per-request cap on the host's blocks (0 = the IPAMConfiguration's, else 20).
    public var maxBlocksPerHost: Int
    public var intendedUse: IPPoolAllowedUse

    public init(
        num4: Int, num6: Int, handle: String, attributes: [String: String] = [:], host: String,
        ipv4Pools: [String] = [], ipv6Pools: [String] = [], maxBlocksPerHost: Int = 0,
        intendedUse: IPPoolAllowedUse = .workload
    ) {
        self.num4 = num4
        self.num6 = num6
        self.handle = handle
        self.attributes = attributes
        self.host = host
        self.ipv4Pools = ipv4Pools
        self.ipv6Pools = ipv6Pools
        self.maxBlocksPerHost = maxBlocksPerHost
        self.intendedUse = intendedUse
    }
}

/// Calico's block-affinity IPAM over the datastore interface. Every change is a compare-and-swap
/// transaction (a block and its handle together), retried on conflict up to 100 times; there are no locks
/// outside the store, so any number of processes on any backend can allocate at once.
public struct IPAM: Sendable {
    public let store: any Datastore
    let resources: ResourceStore
    /// Nanoseconds since the epoch, for new blocks' sequence numbers; injected to keep this layer pure.
    let nanoseconds: @Sendable () -> UInt64
    /// A long-lived process's memory of the cluster and of its blocks (the node agent's), which lets an ADD and a
    /// DEL be one transaction; nil: everything is read from the store.
    public let cache: IPAMCache?

    /// Retries of one compare-and-swap before giving up.
    public static let retries = 100
    /// Blocks a host may claim when nothing else is configured.
    public static let defaultMaxBlocksPerHost = 20

    public init(store: any Datastore, nanoseconds: @escaping @Sendable () -> UInt64, cache: IPAMCache? = nil) {
        self.store = store
        self.nanoseconds = nanoseconds
        self.cache = cache
        resources = ResourceStore(datastore: store, now: { "" }, newUID: { "" })
    }

    // MARK: Configuration and pools

    /// The IPAMConfiguration in force: the stored `default`, or Calico's defaults when there is none.
    public func configuration() async throws -> IPAMConfigurationSpec {
        var spec =
            (try await resources.get(.ipamConfiguration, name: "default")?.resource as? IPAMConfiguration)?.spec
            ?? IPAMConfigurationSpec()
        spec.applyDefaults(metadata: ObjectMeta(name: "default"))
        return spec
    }

    /// Every pool, defaults applied, sorted by name.
    public func pools() async throws -> [IPPool] {
        try await resources.list(.ipPool).compactMap { stored -> IPPool? in
            guard var pool = stored.resource as? IPPool else { return nil }
            pool.applyDefaults()
            return pool
        }.sorted { ($0.metadata.name ?? "") < ($1.metadata.name ?? "") }
    }

    /// The labels of a Node resource, or none when the node is not registered.
    func nodeLabels(_ host: String) async throws -> [String: String] {
        try await resources.get(.node, name: host)?.resource.metadata.labels ?? [:]
    }

    /// The pools a request may use, in order (Calico `determinePools`).
    func determinePools(
        family: IPFamily, requested: [String], host: String, use: IPPoolAllowedUse, context: AssignContext? = nil
    ) async throws -> [IPPool] {
        let all: [IPPool]
        if let context { all = context.pools } else { all = try await pools() }
        let enabled = all.filter { $0.spec.disabled != true && $0.spec.network != nil }
        var chosen: [IPPool]
        if !requested.isEmpty {
            chosen = []
            for text in requested {
                let asCIDR = try? CIDR(text)
                guard
                    let pool = enabled.first(where: { $0.metadata.name == text })
                        ?? enabled.first(where: { asCIDR != nil && $0.spec.network == asCIDR!.network })
                else {
                    throw IPAMError.noPools("the given pool (\(text)) does not exist, or is not enabled")
                }
                if pool.spec.network!.family != family {
                    throw IPAMError.noPools(
                        "provided \(family) IPPools list contains one or more \(family == .v4 ? IPFamily.v6 : .v4) IPPools (\(text))"
                    )
                }
                if !chosen.contains(pool) { chosen.append(pool) }
            }
        } else {
            let labels: [String: String]
            if let context { labels = context.labels } else { labels = try await nodeLabels(host) }
            chosen = enabled.filter { pool in
                guard pool.spec.network!.family == family, pool.spec.assignmentMode != "Manual" else { return false }
                let selector = (try? Selector(parsing: pool.spec.nodeSelector ?? "all()")) ?? Selector.all
                return selector.matches(labels)
            }
            if chosen.isEmpty {
                let ofFamily = enabled.filter { $0.spec.network!.family == family }
                throw IPAMError.noPools(
                    ofFamily.isEmpty
                        ? "no enabled \(family) pools are configured"
                        : "no configured Calico pools for node \(host) (\(family) pools: "
                            + ofFamily.map { "\($0.metadata.name ?? "") selects \($0.spec.nodeSelector ?? "all()")" }
                            .joined(separator: ", ") + ")")
            }
        }
        let usable = chosen.filter { $0.spec.effectiveAllowedUses.contains(use) }
        if usable.isEmpty {
            throw IPAMError.noPools(
                "cannot find a qualified ippool, no pools match the required use (\(use.rawValue))")
        }
        return usable
    }

    // MARK: AutoAssign

    /// What one AutoAssign reads once for both families.
    struct AssignContext {
        var pools: [IPPool]
        var configuration: IPAMConfigurationSpec
        var labels: [String: String]
    }

    /// Assigns `num4` IPv4 and `num6` IPv6 addresses. Both families or neither: if the second family fails,
    /// the first family's addresses are released and the error names the family and the reason.
    /// A datastore failure stays one (the caller may try again later); anything else is exhaustion as before.
    static func assignmentError(_ message: String, cause: any Error) -> IPAMError {
        if let failure = cause as? DatastoreError, !failure.isConflict { return .datastore(message) }
        if case .datastore = cause as? IPAMError { return .datastore(message) }
        return .exhausted(message)
    }

    public func autoAssign(_ request: AutoAssignRequest) async throws -> Assignment {
        var assignment = Assignment()
        // Pools, configuration and the node's labels are read once for both families.
        let context = AssignContext(
            pools: try await pools(), configuration: try await configuration(),
            labels: try await nodeLabels(request.host))
        if request.num4 > 0 {
            do {
                assignment.ipv4 = try await assign(family: .v4, request: request, context: context)
            } catch {
                throw Self.assignmentError("IPv4 assignment failed: \(error)", cause: error)
            }
        }
        if request.num6 > 0 {
            do {
                assignment.ipv6 = try await assign(family: .v6, request: request, context: context)
            } catch {
                let held = assignment.ipv4.map(\.address)
                var note = ""
                if !held.isEmpty {
                    let list = held.map(\.description).joined(separator: ", ")
                    if (try? await releaseIPs(held, handle: request.handle)) != nil {
                        note = "; the IPv4 address(es) \(list) were released"
                    } else {
                        note =
                            "; the IPv4 address(es) \(list) stay under handle \(request.handle) until a DEL releases them"
                    }
                }
                throw Self.assignmentError("IPv6 assignment failed: \(error)\(note)", cause: error)
            }
        }
        return assignment
    }

    private func assign(family: IPFamily, request: AutoAssignRequest, context: AssignContext) async throws -> [CIDR] {
        let count = family == .v4 ? request.num4 : request.num6
        let pools = try await determinePools(
            family: family, requested: family == .v4 ? request.ipv4Pools : request.ipv6Pools, host: request.host,
            use: request.intendedUse, context: context)
        let config = context.configuration
        let configured = config.maxBlocksPerHost ?? 0
        let cap =
            switch (configured, request.maxBlocksPerHost) {
            case (0, 0): Self.defaultMaxBlocksPerHost
            case (0, let perRequest): perRequest
            case (let global, 0): global
            case (let global, let perRequest): min(global, perRequest)
            }
        var assigned: [CIDR] = []
        for _ in 0..<Self.retries {
            if assigned.count == count { return assigned }
            let need = count - assigned.count
            // 1. Blocks this host is affine to, in the chosen pools.
            let affine = try await affineBlocks(host: request.host, family: family, pools: pools)
            var madeProgress = false
            var lostARace = false
            for (cidr, item) in affine where assigned.count < count {
                guard try isConfirmed(item) else { continue }
                if let got = try await assignFromBlock(
                    cidr, count: need, request: request, onlyIfAffineTo: request.host)
                {
                    assigned += got
                    madeProgress = madeProgress || !got.isEmpty
                } else {
                    lostARace = true
                }
            }
            if assigned.count == count { return assigned }
            // Another writer changed one of this node's blocks under us: read again rather than claim a new block
            // (claiming on every lost race leaves a busy node with many nearly empty blocks).
            if madeProgress || lostARace { continue }
            // 2. Claim a new block.
            if config.autoAllocateBlocks ?? true {
                // The claim counter is read before the blocks are counted again, and the claim compares it: a
                // concurrent claim of this host bumps it, so this one fails, counts again and sees the cap.
                let claims = try await store.get(IPAMKeys.claims(host: request.host, family: family))
                let counted = try await affineBlocks(host: request.host, family: family, pools: pools)
                if try counted.filter({ try isConfirmed($0.item) }).count >= cap {
                    throw IPAMError.exhausted(
                        "Need to allocate an IPAM block but could not - limit of \(cap) blocks reached for this node "
                            + "(assigned \(assigned.count) out of \(count) requested \(family) addresses)")
                }
                if let got = try await claimBlock(
                    count: need, request: request, family: family, pools: pools, claims: claims)
                {
                    assigned += got
                    continue
                }
            }
            // 3. Borrow from other hosts' blocks, unless affinity is strict.
            if config.strictAffinity != true {
                switch try await borrow(count: need, request: request, family: family, pools: pools) {
                case .some(let got) where !got.isEmpty:
                    assigned += got
                    continue
                case .some:
                    continue  // lost a race for a block with room: read again
                case nil:
                    break
                }
                throw IPAMError.exhausted(
                    "Assigned \(assigned.count) out of \(count) requested \(family) addresses; "
                        + (try await exhaustionReport(pools: pools)))
            }
            throw IPAMError.exhausted(
                "Assigned \(assigned.count) out of \(count) requested \(family) addresses; "
                    + "No more free affine blocks and strict affinity enabled; "
                    + (try await exhaustionReport(pools: pools)))
        }
        throw IPAMError.tooManyRetries
    }

    /// The confirmed affine blocks of `host` that lie in `pools`, the most recently claimed first. Calico walks
    /// them in address order, which reads every full block before reaching the one with room: a node with many
    /// blocks paid for each pod in proportion to its pod count. The newest block is the one most likely to have
    /// room; older blocks with freed addresses are still found after it.
    func affineBlocks(host: String, family: IPFamily, pools: [IPPool]) async throws -> [(cidr: CIDR, item: KeyValue)] {
        let (items, _) = try await store.list(prefix: IPAMKeys.affinityPrefix(host: host, family: family))
        // Sorted and filtered by key alone; an affinity's state is decoded only when its block is tried (a node
        // with a thousand blocks does not decode a thousand records per pod).
        return items.sorted(by: { ($0.createRevision, $0.key) > ($1.createRevision, $1.key) }).compactMap { item in
            guard let cidr = cidr(fromAffinityKey: item.key, family: family),
                pools.contains(where: { $0.spec.network!.contains(cidr) })
            else { return nil }
            return (cidr, item)
        }
    }

    /// Every confirmed block affine to `host`, both families, in address order: the blocks the node routes and
    /// announces.
    public func confirmedAffineBlocks(host: String) async throws -> [CIDR] {
        var blocks: [CIDR] = []
        for family in [IPFamily.v4, .v6] {
            let (items, _) = try await store.list(prefix: IPAMKeys.affinityPrefix(host: host, family: family))
            for item in items {
                guard let cidr = cidr(fromAffinityKey: item.key, family: family), try isConfirmed(item) else {
                    continue
                }
                blocks.append(cidr)
            }
        }
        return blocks.sorted()
    }

    /// Whether a stored affinity is confirmed (not pending, not being deleted).
    func isConfirmed(_ item: KeyValue) throws -> Bool {
        let affinity = try decode(BlockAffinity.self, item.value, key: item.key)
        return affinity.state == "confirmed" && affinity.deleted != true
    }

    /// Parses the block CIDR back from the last path element of a block key.
    func cidr(fromBlockKey key: String, family: IPFamily) -> CIDR? { cidr(fromAffinityKey: key, family: family) }

    /// Parses the block CIDR back from the last path element of an affinity key.
    func cidr(fromAffinityKey key: String, family: IPFamily) -> CIDR? {
        guard let name = key.split(separator: "/").last else { return nil }
        var parts = name.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
        guard let length = parts.popLast() else { return nil }
        let address =
            family == .v4 ? parts.joined(separator: ".") : parts.joined(separator: ":")
        return try? CIDR("\(address)/\(length)")
    }

    /// Assigns up to `count` addresses from one block with a compare-and-swap of the block and the handle.
    /// Returns nil on a lost race (the caller re-reads), [] when the block is full or not usable.
    private func assignFromBlock(
        _ cidr: CIDR, count: Int, request: AutoAssignRequest, onlyIfAffineTo host: String?
    )
        async throws -> [CIDR]?
    {
        let key = IPAMKeys.block(cidr)
        guard let stored = try await store.get(key) else { return [] }
        // A full block is recognised from its stored bytes without decoding it (the encoding is ours, with
        // sorted keys); decoding a block with its attributes costs far more than the read.
        if Block.isFull(encoded: stored.value) { return [] }
        var block = try decode(Block.self, stored.value, key: key)
        if let host, block.host != host { return [] }
        let addresses = block.assign(count: count, handle: request.handle, attributes: request.attributes)
        if addresses.isEmpty { return [] }
        var writes: [Write] = [.update(key: key, value: encode(block), ifRevision: stored.modRevision)]
        writes.append(try await handleWrite(request.handle, block: cidr, delta: addresses.count))
        do {
            try await store.transact(writes)
        } catch {
            if error.isConflict { return nil }
            throw IPAMError.datastore("\(error)")
        }
        return addresses.map { try! CIDR(address: $0, prefixLength: cidr.prefixLength) }
    }

    /// The write that adds `delta` (or removes, when negative) addresses of `handle` in `block`.
    func handleWrite(_ handle: String, block: CIDR, delta: Int) async throws -> Write {
        let key = IPAMKeys.handle(handle)
        if let stored = try await store.get(key) {
            var record = try decode(IPAMHandle.self, stored.value, key: key)
            let count = (record.block[block.description] ?? 0) + delta
            record.block[block.description] = count > 0 ? count : nil
            if record.block.isEmpty { return .delete(key: key, ifRevision: stored.modRevision) }
            return .update(key: key, value: encode(record), ifRevision: stored.modRevision)
        }
        return .create(key: key, value: encode(IPAMHandle(handleID: handle, block: [block.description: max(delta, 0)])))
    }

    /// The block index a host starts its search at, so the same host tries the same blocks (FNV-1a 32).
    static func startIndex(host: String, count: UInt128) -> UInt128 {
        var hash: UInt32 = 2_166_136_261
        for byte in host.utf8 {
            hash ^= UInt32(byte)
            hash = hash &* 16_777_619
        }
        return UInt128(hash) % count
    }

    /// Claims one block for the request's host in the first pool that has one free (a block CIDR nobody has
    /// created, or an existing block nobody is affine to that is empty) and assigns from it. The block, the
    /// affinity and the handle are written in one transaction, so a block is never left affine and empty by a
    /// claim. Returns nil when every pool is full.
    private func claimBlock(
        count: Int, request: AutoAssignRequest, family: IPFamily, pools: [IPPool], claims: KeyValue?
    ) async throws
        -> [CIDR]?
    {
        let host = request.host
        let claimsKey = IPAMKeys.claims(host: host, family: family)
        let claimed = claims.flatMap { Int(String(decoding: $0.value, as: UTF8.self)) } ?? 0
        let countClaim: Write =
            if let claims {
                .update(key: claimsKey, value: Array("\(claimed + 1)".utf8), ifRevision: claims.modRevision)
            } else {
                .create(key: claimsKey, value: Array("1".utf8))
            }
        let (items, _) = try await store.list(prefix: IPAMKeys.blockPrefix(family))
        var existing: [String: KeyValue] = [:]
        for item in items { existing[item.key] = item }
        for pool in pools {
            guard let network = pool.spec.network, let size = pool.spec.effectiveBlockSize,
                let blocks = try? network.subdivided(into: size)
            else { continue }
            let inPool = existing.keys.filter { key in
                cidr(fromBlockKey: key, family: family).map { network.contains($0) } ?? false
            }.count
            let total = blocks.count
            // Every existing block may be passed over before a free one turns up; a few more cover lost races.
            let steps = min(total, UInt128(inPool) + 64)
            var index = Self.startIndex(host: host, count: total)
            for _ in 0..<steps {
                defer { index = index + 1 == total ? 0 : index + 1 }
                let cidr = blocks[index]
                let key = IPAMKeys.block(cidr)
                let affinity = encode(BlockAffinity(state: "confirmed"))
                let affinityKey = IPAMKeys.affinity(host: host, cidr: cidr)
                var writes: [Write]? = nil
                var addresses: [IPAddress] = []
                if let stored = existing[key] {
                    var block = try decode(Block.self, stored.value, key: key)
                    if block.affinity == nil && block.isEmpty {
                        block.affinity = "host:\(host)"
                        addresses = block.assign(count: count, handle: request.handle, attributes: request.attributes)
                        writes = [
                            .update(key: key, value: encode(block), ifRevision: stored.modRevision),
                            .put(key: affinityKey, value: affinity),
                        ]
                    }
                } else {
                    var block = Block(cidr: cidr, host: host, sequenceStart: nanoseconds())
                    addresses = block.assign(count: count, handle: request.handle, attributes: request.attributes)
                    writes = [.create(key: key, value: encode(block)), .create(key: affinityKey, value: affinity)]
                }
                if let writes, !addresses.isEmpty {
                    return try await commit(writes, addresses, cidr)
                }
            }
        }
        // Every pool is full: an empty block another node has held for a while is taken over (Calico's
        // EmptyBlockMinReclaimAge, a minute: a node that just claimed one is about to use it). The block's sequence
        // number started at its creation time in nanoseconds and grows by one per write, so it dates the claim.
        for item in items {
            var block = try decode(Block.self, item.value, key: item.key)
            guard block.isEmpty, let holder = block.host, holder != host,
                pools.contains(where: { $0.spec.network!.contains(block.network) }),
                nanoseconds() &- block.sequenceNumber >= Self.emptyBlockMinReclaimAge
            else { continue }
            let cidr = block.network
            block.affinity = "host:\(host)"
            let addresses = block.assign(count: count, handle: request.handle, attributes: request.attributes)
            return try await commit(
                [
                    .update(key: item.key, value: encode(block), ifRevision: item.modRevision),
                    .delete(key: IPAMKeys.affinity(host: holder, cidr: cidr), ifRevision: nil),
                    .put(
                        key: IPAMKeys.affinity(host: host, cidr: cidr), value: encode(BlockAffinity(state: "confirmed"))
                    ),
                ], addresses, cidr)
        }
        return nil

        /// The claim's transaction with the handle and the claim counter; [] when another writer won.
        func commit(_ writes: [Write], _ addresses: [IPAddress], _ cidr: CIDR) async throws -> [CIDR] {
            let all =
                writes + [
                    try await handleWrite(request.handle, block: cidr, delta: addresses.count), countClaim,
                ]
            do {
                try await store.transact(all)
                return addresses.map { try! CIDR(address: $0, prefixLength: cidr.prefixLength) }
            } catch {
                if !error.isConflict { throw IPAMError.datastore("\(error)") }
                // Someone else took it, perhaps another request of this node: the caller reads the node's blocks
                // again before claiming (moving on to the next block would give a busy node one nearly empty block
                // per lost race).
                return []
            }
        }
    }

    /// How long a block must have been claimed before another node may take it over empty (Calico's one minute).
    public static let emptyBlockMinReclaimAge: UInt64 = 60_000_000_000

    /// Assigns from blocks of other hosts (or no host) that have room.
    private func borrow(
        count: Int, request: AutoAssignRequest, family: IPFamily, pools: [IPPool]
    ) async throws
        -> [CIDR]?
    {
        let (items, _) = try await store.list(prefix: IPAMKeys.blockPrefix(family))
        for item in items {
            let block = try decode(Block.self, item.value, key: item.key)
            guard !block.unallocated.isEmpty, block.host != request.host,
                pools.contains(where: { $0.spec.network!.contains(block.network) })
            else { continue }
            if let got = try await assignFromBlock(block.network, count: count, request: request, onlyIfAffineTo: nil) {
                if !got.isEmpty { return got }
            } else {
                return []  // lost a race: let the caller re-read
            }
        }
        return nil
    }

    /// Names each pool, its size, how many blocks it holds and which nodes hold them.
    func exhaustionReport(pools: [IPPool]) async throws -> String {
        var parts: [String] = []
        for pool in pools {
            guard let network = pool.spec.network, let size = pool.spec.effectiveBlockSize else { continue }
            let family = network.family
            let (items, _) = try await store.list(prefix: IPAMKeys.blockPrefix(family))
            var holders: [String: Int] = [:]
            var blocks = 0
            var used = 0
            for item in items {
                let block = try decode(Block.self, item.value, key: item.key)
                guard network.contains(block.network) else { continue }
                blocks += 1
                used += block.inUse
                holders[block.host ?? "(no node)", default: 0] += 1
            }
            let capacity = network.addressCount.map { "\($0)" } ?? "2^128"
            let possible = (try? network.subdivided(into: size))?.count ?? 0
            let nodes = holders.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")
            parts.append(
                "pool \(pool.metadata.name ?? "") (\(network)) is full: \(used) of \(capacity) addresses in use, "
                    + "\(blocks) of \(possible) /\(size) blocks allocated, held by [\(nodes)]")
        }
        return "No IPs available in pools: " + parts.joined(separator: "; ")
    }

    // MARK: AssignIP

    /// Assigns one given address (CNI `IP=`); claims its block for `host` when nobody holds it.
    public func assignIP(
        _ address: IPAddress, handle: String, attributes: [String: String] = [:], host: String,
        intendedUse: IPPoolAllowedUse = .workload
    ) async throws {
        let pools = try await pools().filter { $0.spec.disabled != true }
        guard let pool = pools.first(where: { $0.spec.network?.contains(address) == true }),
            let size = pool.spec.effectiveBlockSize, let network = pool.spec.network
        else { throw IPAMError.notInPool(address.description) }
        if !pool.spec.effectiveAllowedUses.contains(intendedUse) {
            throw IPAMError.noPools(
                "IP address \(address) is in IP pool \"\(pool.metadata.name ?? "")\", which is not allowed for use \"\(intendedUse.rawValue)\" (allowedUses: \(pool.spec.effectiveAllowedUses.map(\.rawValue)))"
            )
        }
        let cidr = try CIDR(address: address, prefixLength: size).network
        _ = network
        let strict = try await configuration().strictAffinity == true
        for _ in 0..<Self.retries {
            let key = IPAMKeys.block(cidr)
            var writes: [Write]
            if let stored = try await store.get(key) {
                var block = try decode(Block.self, stored.value, key: key)
                if strict, let owner = block.host, owner != host {
                    throw IPAMError.exhausted(
                        "cannot assign \(address): its block \(cidr) is affine to node \(owner) and strict affinity is enabled"
                    )
                }
                guard block.assign(address: address, handle: handle, attributes: attributes) else {
                    throw IPAMError.alreadyAssigned(address.description)
                }
                writes = [.update(key: key, value: encode(block), ifRevision: stored.modRevision)]
            } else {
                var block = Block(cidr: cidr, host: host, sequenceStart: nanoseconds())
                _ = block.assign(address: address, handle: handle, attributes: attributes)
                writes = [
                    .create(key: key, value: encode(block)),
                    .put(
                        key: IPAMKeys.affinity(host: host, cidr: cidr), value: encode(BlockAffinity(state: "confirmed"))
                    ),
                ]
            }
            writes.append(try await handleWrite(handle, block: cidr, delta: 1))
            do {
                try await store.transact(writes)
                return
            } catch {
                if !error.isConflict { throw IPAMError.datastore("\(error)") }
            }
        }
        throw IPAMError.tooManyRetries
    }

    // MARK: Queries

    /// Every address held by `handle`, with its block's prefix length, in address order.
    public func addresses(ofHandle handle: String) async throws -> [CIDR] {
        let key = IPAMKeys.handle(handle)
        guard let stored = try await store.get(key) else { return [] }
        let record = try decode(IPAMHandle.self, stored.value, key: key)
        var result: [CIDR] = []
        for blockText in record.block.keys {
            guard let cidr = try? CIDR(blockText), let blockValue = try await store.get(IPAMKeys.block(cidr)) else {
                continue
            }
            let block = try decode(Block.self, blockValue.value, key: IPAMKeys.block(cidr))
            for (ordinal, index) in block.allocations.enumerated() {
                guard let index, block.attributes[index].handle_id == handle,
                    let address = cidr.address(atOrdinal: UInt128(ordinal))
                else { continue }
                result.append(try CIDR(address: address, prefixLength: cidr.prefixLength))
            }
        }
        return result.sorted()
    }

    /// The nodes named (`node` attribute) by the allocations a handle holds: whose pod it is.
    public func nodes(ofHandle handle: String) async throws -> Set<String> {
        let key = IPAMKeys.handle(handle)
        guard let stored = try await store.get(key) else { return [] }
        let record = try decode(IPAMHandle.self, stored.value, key: key)
        var nodes: Set<String> = []
        for blockText in record.block.keys {
            guard let cidr = try? CIDR(blockText), let blockValue = try await store.get(IPAMKeys.block(cidr)) else {
                continue
            }
            let block = try decode(Block.self, blockValue.value, key: IPAMKeys.block(cidr))
            for attribute in block.attributes where attribute.handle_id == handle {
                if let node = attribute.secondary?["node"] { nodes.insert(node) }
            }
        }
        return nodes
    }

    /// Every handle ID in the store.
    public func handles() async throws -> [String] {
        try await store.list(prefix: IPAMKeys.handlePrefix).items.map {
            String($0.key.dropFirst(IPAMKeys.handlePrefix.count))
        }
    }

    // MARK: Release

    /// Releases addresses (optionally only if held by `handle`). Returns the ones that were not allocated.
    /// A block left empty keeps its affinity; the node's agent releases it after a grace period
    /// (``EmptyBlockTracker``).
    @discardableResult
    public func releaseIPs(_ addresses: [IPAddress], handle: String? = nil) async throws -> [IPAddress] {
        var notAllocated: [IPAddress] = []
        var byBlock: [String: (cidr: CIDR, ordinals: Set<Int>)] = [:]
        for family in IPFamily.allCases {
            let wanted = addresses.filter { $0.family == family }
            guard !wanted.isEmpty else { continue }
            let (items, _) = try await store.list(prefix: IPAMKeys.blockPrefix(family))
            let blocks = try items.map { try decode(Block.self, $0.value, key: $0.key).network }
            for address in wanted {
                guard let cidr = blocks.first(where: { $0.contains(address) }),
                    let ordinal = cidr.ordinal(of: address)
                else {
                    notAllocated.append(address)
                    continue
                }
                byBlock[IPAMKeys.block(cidr), default: (cidr, [])].ordinals.insert(Int(ordinal))
            }
        }
        for (_, entry) in byBlock {
            let freed = try await release(in: entry.cidr) { ordinal, attribute in
                entry.ordinals.contains(ordinal) && (handle == nil || attribute.handle_id == handle)
            }
            let freedCount = freed.values.reduce(0, +)
            if freedCount < entry.ordinals.count {
                // Those not freed were free already (or held by another handle): report them.
                let (items, _) = try await store.list(prefix: IPAMKeys.block(entry.cidr))
                if let block = try items.first.map({ try decode(Block.self, $0.value, key: $0.key) }) {
                    for ordinal in entry.ordinals {
                        let address = entry.cidr.address(atOrdinal: UInt128(ordinal))!
                        if block.allocations[ordinal] == nil || handle != nil { notAllocated.append(address) }
                    }
                }
            }
        }
        return notAllocated.filter { address in
            addresses.contains(address)
        }.reduce(into: [IPAddress]()) { if !$0.contains($1) { $0.append($1) } }
    }

    /// Releases every address held by `handle`. Releasing an unknown handle does nothing (idempotent DEL).
    public func releaseByHandle(_ handle: String) async throws {
        if let cache, try await releaseInOneTransaction(handle, cache: cache) { return }
        let key = IPAMKeys.handle(handle)
        guard let stored = try await store.get(key) else { return }
        let record = try decode(IPAMHandle.self, stored.value, key: key)
        for blockText in record.block.keys.sorted() {
            guard let cidr = try? CIDR(blockText) else { continue }
            _ = try await release(in: cidr) { _, attribute in attribute.handle_id == handle }
        }
        // A handle whose counts drifted (a crash between writes is impossible, but old data may differ) goes too.
        if let left = try await store.get(key) {
            _ = try? await store.delete(key, ifRevision: left.modRevision)
        }
    }

    /// One compare-and-swap release in one block, with the handle counts and the affinity in the same
    /// transaction.
    private func release(
        in cidr: CIDR, where predicate: @escaping (Int, AllocationAttribute) -> Bool
    ) async throws
        -> [String: Int]
    {
        let key = IPAMKeys.block(cidr)
        for _ in 0..<Self.retries {
            guard let stored = try await store.get(key) else { return [:] }
            var block = try decode(Block.self, stored.value, key: key)
            let freed = block.release(where: predicate)
            if freed.isEmpty { return [:] }
            // A block left empty stays affine, as Calico keeps it: the node's next pod reuses it without a claim,
            // a route change and a BGP update. ``releaseEmptyBlock(_:host:ifRevision:)`` gives it up later.
            var writes: [Write] = [.update(key: key, value: encode(block), ifRevision: stored.modRevision)]
            for (handle, count) in freed where !handle.isEmpty {
                writes.append(try await handleWrite(handle, block: cidr, delta: -count))
            }
            do {
                try await store.transact(writes)
                return freed
            } catch {
                if !error.isConflict { throw IPAMError.datastore("\(error)") }
            }
        }
        throw IPAMError.tooManyRetries
    }
}
