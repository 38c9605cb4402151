import Synchronization
import TandemCore
import TandemModel
import TandemStore

/// What the node agent's watch-fed cache (its calculation layer) already knows that an assignment would otherwise
/// read from the datastore: the pools, the IPAM configuration, a node's labels and its affine blocks.
///
/// Nothing here is trusted for correctness. A stale view costs a failed compare-and-swap and a retry on the slow
/// path, never a duplicate: every address is taken by a transaction that compares the block's revision.
public struct IPAMView: Sendable {
    /// Every pool as stored (IPAM applies the defaults).
    public var pools: [IPPool]
    /// The stored `default` IPAMConfiguration's spec, or nil when there is none.
    public var configuration: IPAMConfigurationSpec?
    /// The labels of the Node the request is for (empty when it is not registered).
    public var nodeLabels: [String: String]
    /// The node's confirmed affine blocks, the most recently written affinity first.
    public var affineBlocks: [CIDR]

    public init(
        pools: [IPPool], configuration: IPAMConfigurationSpec?, nodeLabels: [String: String], affineBlocks: [CIDR]
    ) {
        self.pools = pools
        self.configuration = configuration
        self.nodeLabels = nodeLabels
        self.affineBlocks = affineBlocks
    }
}

/// An assigner's memory across calls, kept by a long-lived process (the node agent) for one datastore: the view of
/// its watch-fed cache, and the blocks it last read or wrote with their revisions.
///
/// With it, a dual-stack ADD whose node has room in its blocks is one round trip: one transaction that updates both
/// families' blocks (compared against the cached revisions) and creates the handle. A block written by someone else
/// since makes that transaction fail; the block is read again and the assignment retried, then the full path
/// (which reads everything) takes over. Blocks written here are cached with the revision the transaction returned,
/// so the next call starts from them.
public final class IPAMCache: Sendable {
    /// The view for a node, or nil when there is none (the cache is not in sync yet).
    let view: @Sendable (_ host: String) -> IPAMView?
    private let blocks = Mutex<[String: StoredBlock]>([:])
    /// The handles this process created, with the revision they were created at: a DEL of one of them deletes it
    /// compared against that revision instead of reading it first (a changed or gone handle fails the compare, and
    /// the DEL reads it then).
    private let handles = Mutex<[String: (record: IPAMHandle, modRevision: Int64)]>([:])
    /// Blocks (and handles) held at most; past it the memory is dropped and refilled as blocks are used.
    static let capacity = 4096

    /// A block's stored bytes and the mod revision they were written at, and the block they decode to once
    /// decoded (a block written here is never decoded again: decoding was a tenth of an assignment's CPU time).
    struct StoredBlock {
        var value: [UInt8]
        var modRevision: Int64
        var decoded: Block? = nil
    }

    public init(view: @escaping @Sendable (_ host: String) -> IPAMView?) {
        self.view = view
    }

    /// The block at `key` as last seen, read from `store` when it is not held (nil: no such block).
    func block(_ key: String, store: any Datastore) async throws -> StoredBlock? {
        if let held = blocks.withLock({ $0[key] }) { return held }
        guard let stored = try await store.get(key) else { return nil }
        let block = StoredBlock(value: stored.value, modRevision: stored.modRevision)
        remember(key, block)
        return block
    }

    /// Records what this process wrote (or read) at `key`.
    func remember(_ key: String, _ block: StoredBlock) {
        blocks.withLock { held in
            if held.count >= Self.capacity && held[key] == nil { held.removeAll(keepingCapacity: true) }
            held[key] = block
        }
    }

    /// Records a handle this process created at `modRevision`.
    func remember(handle key: String, _ record: IPAMHandle, modRevision: Int64) {
        handles.withLock { held in
            if held.count >= Self.capacity && held[key] == nil { held.removeAll(keepingCapacity: true) }
            held[key] = (record, modRevision)
        }
    }

    /// The handle at `key` as this process created it, if it did and has not seen it change since.
    func handle(_ key: String) -> (record: IPAMHandle, modRevision: Int64)? {
        handles.withLock { $0[key] }
    }

    /// Forgets `key` (a block or a handle): someone else wrote it, or it went.
    func forget(_ key: String) {
        _ = blocks.withLock { $0.removeValue(forKey: key) }
        _ = handles.withLock { $0.removeValue(forKey: key) }
    }
}

extension IPAM {
    /// Tries of the one-transaction path before the full path takes over.
    static let fastTries = 3

    /// What ``assignInOneTransaction(_:)`` did.
    public enum OneTransactionOutcome: Sendable, Equatable {
        case assigned(Assignment)
        /// The handle exists already: the caller looks at what it holds.
        case handleExists
        /// The view or the cached blocks cannot serve this request: the full path decides.
        case unavailable
    }

    /// Both families from the node's affine blocks in one transaction, with the handle created in it; see
    /// ``IPAMCache``. Only the whole request from one block per family is served here: a request that needs a new
    /// block, a borrowed one or several blocks goes the full path (``autoAssign(_:)``), as does any request when
    /// this IPAM has no cache.
    public func assignInOneTransaction(_ request: AutoAssignRequest) async throws -> OneTransactionOutcome {
        guard let cache, let view = cache.view(request.host) else { return .unavailable }
        var configuration = view.configuration ?? IPAMConfigurationSpec()
        configuration.applyDefaults(metadata: ObjectMeta(name: "default"))
        let pools = view.pools.map { pool -> IPPool in
            var pool = pool
            pool.applyDefaults()
            return pool
        }.sorted { ($0.metadata.name ?? "") < ($1.metadata.name ?? "") }
        let context = AssignContext(pools: pools, configuration: configuration, labels: view.nodeLabels)
        let handleKey = IPAMKeys.handle(request.handle)
        for _ in 0..<Self.fastTries {
            var writes: [Write] = []
            var written: [(key: String, value: [UInt8], block: Block)] = []
            var handle = IPAMHandle(handleID: request.handle, block: [:])
            var assignment = Assignment()
            for family in IPFamily.allCases {
                let count = family == .v4 ? request.num4 : request.num6
                guard count > 0 else { continue }
                // The pool errors (none selects the node, a requested pool is missing) are the full path's to say,
                // from a fresh read.
                guard
                    let usable = try? await determinePools(
                        family: family, requested: family == .v4 ? request.ipv4Pools : request.ipv6Pools,
                        host: request.host, use: request.intendedUse, context: context)
                else { return .unavailable }
                var found = false
                for cidr in view.affineBlocks
                where cidr.family == family && usable.contains(where: { $0.spec.network!.contains(cidr) }) {
                    let key = IPAMKeys.block(cidr)
                    // A block decoded already is judged by its free list; only its bytes by a scan of them.
                    guard let stored = try await cache.block(key, store: store),
                        !(stored.decoded.map { $0.unallocated.isEmpty } ?? Block.isFull(encoded: stored.value))
                    else { continue }
                    var block = try stored.decoded ?? decode(Block.self, stored.value, key: key)
                    guard block.host == request.host else { continue }
                    let addresses = block.assign(count: count, handle: request.handle, attributes: request.attributes)
                    guard addresses.count == count else { continue }
                    let value = encode(block)
                    writes.append(.update(key: key, value: value, ifRevision: stored.modRevision))
                    written.append((key, value, block))
                    handle.block[cidr.description] = count
                    let cidrs = addresses.map { try! CIDR(address: $0, prefixLength: cidr.prefixLength) }
                    if family == .v4 { assignment.ipv4 = cidrs } else { assignment.ipv6 = cidrs }
                    found = true
                    break
                }
                if !found { return .unavailable }
            }
            guard !writes.isEmpty else { return .unavailable }
            writes.append(.create(key: handleKey, value: encode(handle)))
            do {
                let revision = try await store.transact(writes)
                for (key, value, block) in written {
                    cache.remember(key, IPAMCache.StoredBlock(value: value, modRevision: revision, decoded: block))
                }
                cache.remember(handle: handleKey, handle, modRevision: revision)
                return .assigned(assignment)
            } catch {
                switch error {
                case .alreadyExists(let key) where key == handleKey: return .handleExists
                case .revisionMismatch(let key, _, _), .notFound(let key), .alreadyExists(let key):
                    cache.forget(key)
                default:
                    throw IPAMError.datastore("\(error)")
                }
            }
        }
        return .unavailable
    }

    /// Releases everything `handle` holds in one transaction with the handle's deletion, from the cached blocks
    /// and, when this process created the handle, the cached handle (else it is read first); false when that cannot
    /// be done (a block or the handle changed under it three times, or a block is gone): the caller takes the full
    /// path.
    func releaseInOneTransaction(_ handle: String, cache: IPAMCache) async throws -> Bool {
        let handleKey = IPAMKeys.handle(handle)
        for _ in 0..<Self.fastTries {
            let record: IPAMHandle
            let handleRevision: Int64
            if let held = cache.handle(handleKey) {
                (record, handleRevision) = held
            } else {
                guard let stored = try await store.get(handleKey) else { return true }
                record = try decode(IPAMHandle.self, stored.value, key: handleKey)
                handleRevision = stored.modRevision
            }
            if record.block.isEmpty { return false }
            var writes: [Write] = []
            var written: [(key: String, value: [UInt8], block: Block)] = []
            for blockText in record.block.keys.sorted() {
                guard let cidr = try? CIDR(blockText) else { return false }
                let key = IPAMKeys.block(cidr)
                guard let held = try await cache.block(key, store: store) else { return false }
                var block = try held.decoded ?? decode(Block.self, held.value, key: key)
                let freed = block.release { _, attribute in attribute.handle_id == handle }
                // The handle's count and the block disagree (the block changed since it was cached): read again.
                guard freed[handle] == record.block[blockText] else {
                    cache.forget(key)
                    cache.forget(handleKey)
                    writes = []
                    break
                }
                let value = encode(block)
                writes.append(.update(key: key, value: value, ifRevision: held.modRevision))
                written.append((key, value, block))
            }
            if writes.isEmpty { continue }
            writes.append(.delete(key: handleKey, ifRevision: handleRevision))
            do {
                let revision = try await store.transact(writes)
                for (key, value, block) in written {
                    cache.remember(key, IPAMCache.StoredBlock(value: value, modRevision: revision, decoded: block))
                }
                cache.forget(handleKey)
                return true
            } catch {
                switch error {
                case .revisionMismatch(let key, _, _), .notFound(let key), .alreadyExists(let key): cache.forget(key)
                default: throw IPAMError.datastore("\(error)")
                }
            }
        }
        return false
    }
}
