import Synchronization

/// A datastore held in memory with etcd's semantics (revisions, atomic transactions with compares, ordered watches
/// with history, compaction), and faults injected on demand: the N-th call of an operation fails, is delayed,
/// conflicts, or is applied with its answer lost; and a gate can hold calls (to line up a race). It sits below the
/// ``Datastore`` seam for tests of IPAM, the agent and the CLI that need error paths the real stores do not produce
/// on demand; SQLite and etcd are tested for real beside it.
///
/// Opened by URL as `memory://NAME`: every opening of the same name in one process shares one store.
public final class MemoryDatastore: Datastore, Sendable {
    /// The calls a fault can target.
    public enum Operation: String, Sendable, CaseIterable {
        case get, list, transact, currentRevision
    }

    /// What happens to the targeted call.
    public enum Effect: Sendable {
        /// Fails with this error, nothing applied.
        case fail(DatastoreError)
        /// Waits, then proceeds.
        case delay(Duration)
        /// A transaction is applied, but its caller is told the backend failed (an answer lost on the way back,
        /// as when etcd commits and the connection drops).
        case drop
        /// A transaction fails as if another writer had changed its first key (a lost compare-and-swap).
        case conflict
    }

    /// One injected fault: `effect` on the `nth` call (1-based, counted per operation since the store was made) of
    /// `operation`; `nth` nil: every call.
    public struct Fault: Sendable {
        public var operation: Operation
        public var nth: Int?
        public var effect: Effect
        public init(_ operation: Operation, nth: Int? = nil, _ effect: Effect) {
            self.operation = operation
            self.nth = nth
            self.effect = effect
        }
    }

    /// Runs before every call with the operation, the key or prefix it reads (empty for the others) and a
    /// transaction's writes; a test can hold a call here to line up a race.
    public typealias Gate = @Sendable (Operation, String, [Write]) async -> Void

    private struct Watcher {
        var prefix: String
        var continuation: AsyncThrowingStream<WatchEvent, any Error>.Continuation
    }

    private struct State {
        var revision: Int64 = 0
        var keys: [String: KeyValue] = [:]
        /// Every event since `compactedBefore`, in revision order.
        var history: [WatchEvent] = []
        var compactedBefore: Int64 = 1
        var calls: [Operation: Int] = [:]
        var faults: [Fault] = []
        var watchers: [Int: Watcher] = [:]
        var nextWatcher = 0
    }

    private let state = Mutex(State())
    private let gate: Mutex<Gate?> = Mutex(nil)

    public init() {}

    /// Adds faults; they apply to calls counted from the store's creation.
    public func inject(_ faults: [Fault]) { state.withLock { $0.faults += faults } }
    /// Removes every fault.
    public func clearFaults() { state.withLock { $0.faults = [] } }
    /// Sets (or clears) the gate every call passes first.
    public func setGate(_ gate: Gate?) { self.gate.withLock { $0 = gate } }
    /// How many calls of `operation` were made.
    public func calls(_ operation: Operation) -> Int { state.withLock { $0.calls[operation] ?? 0 } }

    /// Drops the history before `revision`, as etcd's compaction does: watches from earlier revisions fail with
    /// ``DatastoreError/compacted(requested:oldestAvailable:)``.
    public func compact(before revision: Int64) {
        state.withLock { state in
            state.history.removeAll { $0.keyValue.modRevision < revision }
            state.compactedBefore = max(state.compactedBefore, revision)
        }
    }

    /// Counts the call and returns the effect of the first fault that targets it.
    private func begin(
        _ operation: Operation, _ target: String = "", _ writes: [Write] = []
    ) async throws(DatastoreError) -> Effect? {
        if let gate = gate.withLock({ $0 }) { await gate(operation, target, writes) }
        let effect = state.withLock { state -> Effect? in
            let count = (state.calls[operation] ?? 0) + 1
            state.calls[operation] = count
            return state.faults.first { $0.operation == operation && ($0.nth == nil || $0.nth == count) }?.effect
        }
        switch effect {
        case .fail(let error): throw error
        case .delay(let duration):
            try? await Task.sleep(for: duration)
            return nil
        default: return effect
        }
    }

    public func get(_ key: String) async throws(DatastoreError) -> KeyValue? {
        _ = try await begin(.get, key)
        return state.withLock { $0.keys[key] }
    }

    public func list(prefix: String) async throws(DatastoreError) -> (items: [KeyValue], revision: Int64) {
        _ = try await begin(.list, prefix)
        return state.withLock { state in
            (state.keys.values.filter { $0.key.hasPrefix(prefix) }.sorted { $0.key < $1.key }, state.revision)
        }
    }

    public func currentRevision() async throws(DatastoreError) -> Int64 {
        _ = try await begin(.currentRevision)
        return state.withLock { $0.revision }
    }

    @discardableResult
    public func transact(_ writes: [Write]) async throws(DatastoreError) -> Int64 {
        let effect = try await begin(.transact, "", writes)
        if case .conflict = effect, let first = writes.first {
            throw .revisionMismatch(key: first.key, expected: 0, actual: -1)
        }
        let result: Result<Int64, DatastoreError> = state.withLock { state in
            // Every compare first: all or nothing.
            for write in writes {
                let existing = state.keys[write.key]
                switch write {
                case .create(let key, _):
                    if existing != nil { return .failure(.alreadyExists(key: key)) }
                case .update(let key, _, let revision):
                    guard let existing else { return .failure(.notFound(key: key)) }
                    if existing.modRevision != revision {
                        return .failure(.revisionMismatch(key: key, expected: revision, actual: existing.modRevision))
                    }
                case .delete(let key, let revision?):
                    guard let existing else { return .failure(.notFound(key: key)) }
                    if existing.modRevision != revision {
                        return .failure(.revisionMismatch(key: key, expected: revision, actual: existing.modRevision))
                    }
                case .delete, .put: break
                }
            }
            let changes = writes.contains { write in
                if case .delete(let key, _) = write { return state.keys[key] != nil }
                return true
            }
            guard changes else { return .success(state.revision) }
            state.revision += 1
            let revision = state.revision
            var events: [WatchEvent] = []
            for write in writes {
                switch write {
                case .create(let key, let value), .update(let key, let value, _), .put(let key, let value):
                    let previous = state.keys[key]
                    let stored = KeyValue(
                        key: key, value: value, createRevision: previous?.createRevision ?? revision,
                        modRevision: revision, version: (previous?.version ?? 0) + 1)
                    state.keys[key] = stored
                    events.append(WatchEvent(kind: .put, keyValue: stored))
                case .delete(let key, _):
                    guard let previous = state.keys.removeValue(forKey: key) else { continue }
                    events.append(
                        WatchEvent(
                            kind: .delete,
                            keyValue: KeyValue(
                                key: key, value: [], createRevision: previous.createRevision, modRevision: revision,
                                version: 0)))
                }
            }
            state.history += events
            for watcher in state.watchers.values {
                for event in events where event.keyValue.key.hasPrefix(watcher.prefix) {
                    watcher.continuation.yield(event)
                }
            }
            return .success(revision)
        }
        let revision = try result.get()
        if case .drop = effect { throw .backend("the answer to a transaction was lost (injected fault)") }
        return revision
    }

    public func watch(prefix: String, fromRevision: Int64) -> AsyncThrowingStream<WatchEvent, any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: WatchEvent.self)
        let id = state.withLock { state -> Int? in
            if state.compactedBefore > 1 && fromRevision < state.compactedBefore {
                continuation.finish(
                    throwing: DatastoreError.compacted(requested: fromRevision, oldestAvailable: state.compactedBefore))
                return nil
            }
            // History and registration under one lock: no event is missed or seen twice.
            for event in state.history
            where event.keyValue.modRevision >= fromRevision && event.keyValue.key.hasPrefix(prefix) {
                continuation.yield(event)
            }
            let id = state.nextWatcher
            state.nextWatcher += 1
            state.watchers[id] = Watcher(prefix: prefix, continuation: continuation)
            return id
        }
        if let id {
            continuation.onTermination = { [weak self] _ in
                _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) }
            }
        }
        return stream
    }

    // MARK: Named stores

    private static let named = Mutex<[String: MemoryDatastore]>([:])

    /// The process's store called `name`, made on first use.
    public static func named(_ name: String) -> MemoryDatastore {
        named.withLock { stores in
            if let store = stores[name] { return store }
            let store = MemoryDatastore()
            stores[name] = store
            return store
        }
    }
}
